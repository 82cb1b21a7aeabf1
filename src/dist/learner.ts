/**
 * The learner's side of distributed rollouts: a RolloutSource that publishes
 * a round's requests (prompts x G at the cap) to the broker and collects
 * exactly one completion per request from whichever workers serve them.
 *
 * On-policy (staleness 0): a completion counts only if it is for this run,
 * this weight version and a request of the current round; a second
 * completion of a request (a worker presumed dead that finished after all, a
 * request re-claimed) is dropped. After each update `sync` writes the new
 * version's weights to the shared folder and announces it; requests are
 * published only after their version is announced.
 *
 * Zero workers: a round that starts with no live worker on the broker (no
 * heartbeat, src/dist/worker.ts) waits `graceMs` for one, then is generated
 * by the learner's own engine, as a single-process run would: nothing is
 * published, so nothing is generated twice, and per-request random streams
 * make each completion the one a worker would have returned. The decision is
 * per round, at its start; a round handed to workers stays theirs (a dead
 * worker's requests go to another after the visibility timeout).
 *
 * Bounded staleness k > 0 (TrainConfig.dist.staleness): before step t's
 * update the loop prefetches the first rounds of steps t+1..t+k (a round is
 * a function of (seed, step) only, src/train/loop.ts), so workers generate
 * them with the weights they hold while the learner trains. Their requests
 * carry `minVersion` = the version the step will be trained at minus k, and
 * a worker serves them with any version from there up. A prefetched round is
 * collected when its step comes: completions from versions policy-k..policy
 * are accepted, an older one is dropped with a log line and its request
 * published again (collect.ts). Only one round is collected at a time;
 * completions of later prefetched rounds read meanwhile are kept for them.
 * With no live worker nothing is prefetched (the step's round is then asked
 * for when it comes, and generated locally as above); a prefetched round
 * stays the workers'. Rounds prefetched for steps never reached (Ctrl-C, an
 * error) are deleted from the broker by `destroy`; after a SIGKILL a resumed
 * run has a new run id, so workers reject them as another run's.
 */
import { randomUUID } from "node:crypto";
import type { SamplingOptions } from "../engine/generate.ts";
import type { TaskProblem } from "../tasks/task.ts";
import { groupCompletions, rolloutRequests, type Rollouts, type RolloutSource, type RolloutStats } from "../train/rollouts.ts";
import { Broker, PROTO, type CompletionMsg, type RequestMsg, type WeightsMsg } from "./broker.ts";
import { collect, emptyRecord, type RoundRecord } from "./collect.ts";
import { writeRolloutWeights } from "./weights.ts";

export type { RoundRecord } from "./collect.ts";

export interface LearnerOptions {
  url: string;
  /** Shared folder for the versioned rollout weights (every worker must see it at the same path), or s3://BUCKET/PREFIX. */
  weightsDir: string;
  /** Say how many completions are still missing every this many ms (default 10 s). */
  waitLogMs?: number;
  /** Give up on a round after this long without a new completion (default: wait for workers indefinitely). */
  timeoutMs?: number;
  /** With no live worker at a round's start, generate it locally (default true); false: always wait for workers. */
  local?: boolean;
  /** How long a round waits for a worker to appear before generating locally (ms, default WORKERS_GRACE_MS). */
  graceMs?: number;
  /** Bounded staleness k (TrainConfig.dist.staleness; default 0, on-policy). */
  staleness?: number;
}

/** A round published ahead of its step (bounded staleness). */
interface Prefetched {
  tag: string;
  /** The learner's version when it was published. */
  version: number;
  prompts: number[][];
  requests: RequestMsg[];
  index: Map<string, number>;
  entryIds: string[];
  /** The broker's epoch before publishing (a restart since: the round's lost requests are published again). */
  epoch: number;
  /** Its completions read while an earlier round was collected. */
  early: CompletionMsg[];
}

export const WORKERS_GRACE_MS = 10_000;
/** How often the learner looks for a worker during the grace period (ms). */
const PRESENCE_POLL_MS = 250;

export class BrokerRollouts implements RolloutSource {
  readonly run = randomUUID();
  version = 0;
  private calls = 0;
  private announced: WeightsMsg | null = null;
  /** The broker's epoch when the current version was announced (a restart since: announce again). */
  private announcedEpoch = -1;
  /** What each round collected (tests, metrics); `local`: completions the learner generated itself (no worker was alive). */
  readonly rounds: (RoundRecord & { local?: number })[] = [];
  private readonly prefetched = new Map<string, Prefetched>();
  /** The prefetched round each outstanding request id belongs to. */
  private readonly owner = new Map<string, Prefetched>();

  private constructor(
    private readonly local: Rollouts,
    private readonly broker: Broker,
    private readonly configJson: string,
    private readonly o: LearnerOptions,
    private readonly log: (s: string) => void,
  ) {}

  /** Connect and announce version 0 (the weights the run starts from). */
  static async create(local: Rollouts, configJson: string, o: LearnerOptions, log: (s: string) => void): Promise<BrokerRollouts> {
    const broker = await Broker.connect(o.url, { log: (s) => log(`learner: ${s}`) });
    const b = new BrokerRollouts(local, broker, configJson, o, log);
    log(`learner: run ${b.run} on broker ${o.url}; rollout weights under ${o.weightsDir}`);
    await b.publishWeights();
    return b;
  }

  private async publishWeights(): Promise<void> {
    const dir = await writeRolloutWeights(this.o.weightsDir, this.version, this.local.roll, this.configJson);
    this.announced = { kind: "weights", proto: PROTO, run: this.run, version: this.version, dir, dtype: this.local.roll.model.dtype, engine: this.local.engine.opts };
    await this.announce();
  }

  private async announce(): Promise<void> {
    this.announcedEpoch = this.broker.epoch;
    await this.broker.announce(this.announced!);
  }

  async sync(): Promise<void> {
    await this.local.sync();
    this.version++;
    await this.publishWeights();
  }

  /** Whether no worker is alive on the broker, after waiting up to `graceMs` for one (false when local generation is off). */
  private async noWorkers(): Promise<boolean> {
    if (this.o.local === false) return false;
    const t0 = performance.now();
    for (;;) {
      if ((await this.broker.liveWorkers()).length) return false;
      if (performance.now() - t0 >= (this.o.graceMs ?? WORKERS_GRACE_MS)) return true;
      await Bun.sleep(PRESENCE_POLL_MS);
    }
  }

  private get staleness(): number {
    return this.o.staleness ?? 0;
  }

  /** A round's requests at the current version (with bounded staleness, servable from `minVersion` up). */
  private makeRound(prompts: number[][], G: number, cap: number, sampling: SamplingOptions, minVersion?: number) {
    const tag = `${this.version}.${this.calls++}`;
    const index = new Map<string, number>();
    const requests: RequestMsg[] = rolloutRequests(prompts, G, cap, this.local.stop).map((r) => {
      const id = `${tag}.${r.id}`;
      index.set(id, r.id);
      return { kind: "request", proto: PROTO, run: this.run, version: this.version, id, prompt: r.prompt, maxTokens: r.maxTokens, stop: r.stop, key: r.key, sampling, ...(minVersion === undefined ? {} : { minVersion }) };
    });
    return { tag, index, requests };
  }

  async prefetch(key: string, ahead: number, problems: TaskProblem[], prompt: (p: TaskProblem) => string, G: number, cap: number, sampling: SamplingOptions): Promise<void> {
    if (this.prefetched.has(key)) return;
    const k = this.staleness;
    if (!(ahead >= 1 && ahead <= k)) throw new Error(`prefetch: round ${key} is ${ahead} update(s) ahead; staleness ${k} allows 1..${k}`);
    // No live worker to generate it meanwhile: the round is asked for when its step comes (locally, if still none).
    if (this.o.local !== false && !(await this.broker.liveWorkers()).length) return;
    if (this.broker.epoch !== this.announcedEpoch) await this.announce();
    const prompts = problems.map((p) => this.local.tokenizer.encode(prompt(p)));
    // Trained at version + ahead: the oldest weights accepted then are k below that (never above the version held now).
    const minVersion = Math.max(0, this.version + ahead - k);
    const { tag, index, requests } = this.makeRound(prompts, G, cap, sampling, minVersion);
    const epoch = this.broker.epoch;
    const entryIds = await this.broker.publishRequests(requests);
    const p: Prefetched = { tag, version: this.version, prompts, requests, index, entryIds, epoch, early: [] };
    this.prefetched.set(key, p);
    for (const r of requests) this.owner.set(r.id, p);
    this.log(`learner: round ${tag} (step.round ${key}) prefetched ${ahead} update(s) ahead: ${requests.length} requests at version ${this.version}, servable by version ${minVersion} or newer`);
  }

  /** A completion of a later prefetched round, read while another round is collected: kept for it. */
  private keepEarly(c: CompletionMsg): boolean {
    const p = this.owner.get(c.id);
    p?.early.push(c);
    return p !== undefined;
  }

  async generate(problems: TaskProblem[], prompt: (p: TaskProblem) => string, G: number, cap: number, sampling: SamplingOptions, stats: RolloutStats, key?: string) {
    const t0 = performance.now();
    const k = this.staleness;
    const pre = key === undefined ? undefined : this.prefetched.get(key);
    if (pre) {
      this.prefetched.delete(key!);
      for (const r of pre.requests) this.owner.delete(r.id);
      if (pre.prompts.length !== problems.length || pre.requests.length !== problems.length * G) throw new Error(`round ${key}: prefetched as ${pre.prompts.length} prompts x ${pre.requests.length / Math.max(pre.prompts.length, 1)}, asked for as ${problems.length} x ${G}`);
    }
    if (!pre && (await this.noWorkers())) {
      const tag = `${this.version}.${this.calls++}`;
      stats.seconds += (performance.now() - t0) / 1000; // the grace period; generate() adds its own time
      this.log(`learner: round ${tag}: no live worker on the broker after ${((this.o.graceMs ?? WORKERS_GRACE_MS) / 1000).toFixed(1)} s: generating it locally`);
      const groups = await this.local.generate(problems, prompt, G, cap, sampling, stats);
      const n = groups.reduce((a, g) => a + g.responses.length, 0);
      this.rounds.push({ ...emptyRecord(this.version), local: n });
      this.log(`learner: round ${tag}: ${n} of ${problems.length * G} completions generated locally`);
      return groups;
    }
    const prompts = pre?.prompts ?? problems.map((p) => this.local.tokenizer.encode(prompt(p)));
    // A round asked for now (not prefetched) is for the newest weights: a worker holding older ones loads them first.
    const { tag, index, requests } = pre ?? this.makeRound(prompts, G, cap, sampling, k > 0 ? this.version : undefined);
    // The broker restarted since the announcement (and may have lost it): say it again before asking.
    if (this.broker.epoch !== this.announcedEpoch) await this.announce();
    const done = new Map<number, { tokens: number[]; logprobs: number[]; finished: boolean }>();
    const rec = emptyRecord(this.version);
    const stale =
      k > 0
        ? {
            versionRejected: (v: number) => outsideWindow(v, this.version, k),
            renew: (r: RequestMsg) => renewed(r, this.version),
            keep: (c: CompletionMsg) => this.keepEarly(c),
            published: pre && { entryIds: pre.entryIds, epoch: pre.epoch },
            early: pre?.early,
          }
        : {};
    const round = collect({ broker: this.broker, run: this.run, version: this.version, requests, announce: () => this.announce(), log: this.log, who: "learner", waitLogMs: this.o.waitLogMs, timeoutMs: this.o.timeoutMs, ...stale }, rec);
    for await (const { c } of round) {
      done.set(index.get(c.id)!, { tokens: c.tokens, logprobs: c.logprobs, finished: c.stopReason === "stop" });
      stats.tokens += c.tokens.length;
      stats.completions++;
      stats.versionLagSum += this.version - c.version;
      stats.versionLagMax = Math.max(stats.versionLagMax, this.version - c.version);
    }
    this.rounds.push(rec);
    const lags = k > 0 ? `; policy at version ${this.version}, completions from ${versionCounts(rec.versions)}${pre ? ` (published at version ${pre.version})` : ""}, ${rec.stale} too old` : "";
    this.log(`learner: round ${tag}: ${rec.accepted.length} of ${requests.length} completions (${new Set(rec.accepted).size} distinct), ${rec.duplicates} duplicates dropped, ${rec.rejected} rejected${rec.reissued ? `, ${rec.reissued} re-issued after a broker restart` : ""}${lags}`);
    stats.seconds += (performance.now() - t0) / 1000;
    return groupCompletions(problems, prompts, G, done);
  }

  /** Rounds prefetched for steps never reached are deleted from the broker (best effort: it may be gone), then the run's completions. */
  async destroy(): Promise<void> {
    const left = [...this.prefetched.values()];
    this.prefetched.clear();
    this.owner.clear();
    if (left.length) this.log(`learner: ${left.reduce((a, p) => a + p.requests.length, 0)} prefetched requests of ${left.length} round(s) never reached are discarded`);
    await this.broker.closeRun(this.run, left.flatMap((p) => p.entryIds));
  }
}

/** Why a completion of version `v` may not be trained on by the policy at `policy` under staleness k, or null. */
export function outsideWindow(v: number, policy: number, k: number): string | null {
  if (v > policy) return `it came from version ${v}, newer than the policy at ${policy}`;
  if (v < policy - k) return `it came from version ${v}, more than ${k} update(s) older than the policy at ${policy} (staleness ${k})`;
  return null;
}

/** A request served with weights too old, asked for again by the policy at `policy`: of the newest weights, so its next completion is accepted whatever the bound. */
export function renewed(r: RequestMsg, policy: number): RequestMsg {
  return { ...r, version: policy, minVersion: policy };
}

/** "version 2 ×6, version 3 ×2": how many completions each weight version produced. */
function versionCounts(versions: number[]): string {
  const n = new Map<number, number>();
  for (const v of versions) n.set(v, (n.get(v) ?? 0) + 1);
  return [...n.entries()].sort((a, b) => a[0] - b[0]).map(([v, c]) => `version ${v} ×${c}`).join(", ") || "none";
}
