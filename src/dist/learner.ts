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
 */
import { randomUUID } from "node:crypto";
import type { SamplingOptions } from "../engine/generate.ts";
import type { TaskProblem } from "../tasks/task.ts";
import { groupCompletions, rolloutRequests, type Rollouts, type RolloutSource, type RolloutStats } from "../train/rollouts.ts";
import { Broker, PROTO, type RequestMsg, type WeightsMsg } from "./broker.ts";
import { collect, emptyRecord, type RoundRecord } from "./collect.ts";
import { writeRolloutWeights } from "./weights.ts";

export type { RoundRecord } from "./collect.ts";

export interface LearnerOptions {
  url: string;
  /** Shared folder for the versioned rollout weights (every worker must see it at the same path). */
  weightsDir: string;
  /** Say how many completions are still missing every this many ms (default 10 s). */
  waitLogMs?: number;
  /** Give up on a round after this long without a new completion (default: wait for workers indefinitely). */
  timeoutMs?: number;
  /** With no live worker at a round's start, generate it locally (default true); false: always wait for workers. */
  local?: boolean;
  /** How long a round waits for a worker to appear before generating locally (ms, default WORKERS_GRACE_MS). */
  graceMs?: number;
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

  async generate(problems: TaskProblem[], prompt: (p: TaskProblem) => string, G: number, cap: number, sampling: SamplingOptions, stats: RolloutStats) {
    const t0 = performance.now();
    const tag = `${this.version}.${this.calls++}`;
    if (await this.noWorkers()) {
      stats.seconds += (performance.now() - t0) / 1000; // the grace period; generate() adds its own time
      this.log(`learner: round ${tag}: no live worker on the broker after ${((this.o.graceMs ?? WORKERS_GRACE_MS) / 1000).toFixed(1)} s: generating it locally`);
      const groups = await this.local.generate(problems, prompt, G, cap, sampling, stats);
      const n = groups.reduce((a, g) => a + g.responses.length, 0);
      this.rounds.push({ ...emptyRecord(this.version), local: n });
      this.log(`learner: round ${tag}: ${n} of ${problems.length * G} completions generated locally`);
      return groups;
    }
    const prompts = problems.map((p) => this.local.tokenizer.encode(prompt(p)));
    const index = new Map<string, number>();
    const requests: RequestMsg[] = rolloutRequests(prompts, G, cap, this.local.stop).map((r) => {
      const id = `${tag}.${r.id}`;
      index.set(id, r.id);
      return { kind: "request", proto: PROTO, run: this.run, version: this.version, id, prompt: r.prompt, maxTokens: r.maxTokens, stop: r.stop, key: r.key, sampling };
    });
    // The broker restarted since the announcement (and may have lost it): say it again before asking.
    if (this.broker.epoch !== this.announcedEpoch) await this.announce();
    const done = new Map<number, { tokens: number[]; logprobs: number[]; finished: boolean }>();
    const rec = emptyRecord(this.version);
    const round = collect({ broker: this.broker, run: this.run, version: this.version, requests, announce: () => this.announce(), log: this.log, who: "learner", waitLogMs: this.o.waitLogMs, timeoutMs: this.o.timeoutMs }, rec);
    for await (const { c } of round) {
      done.set(index.get(c.id)!, { tokens: c.tokens, logprobs: c.logprobs, finished: c.stopReason === "stop" });
      stats.tokens += c.tokens.length;
    }
    this.rounds.push(rec);
    this.log(`learner: round ${tag}: ${rec.accepted.length} of ${requests.length} completions (${new Set(rec.accepted).size} distinct), ${rec.duplicates} duplicates dropped, ${rec.rejected} rejected${rec.reissued ? `, ${rec.reissued} re-issued after a broker restart` : ""}`);
    stats.seconds += (performance.now() - t0) / 1000;
    return groupCompletions(problems, prompts, G, done);
  }

  destroy(): void {
    void this.broker.closeRun(this.run);
  }
}
