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
}

export class BrokerRollouts implements RolloutSource {
  readonly run = randomUUID();
  version = 0;
  private calls = 0;
  private announced: WeightsMsg | null = null;
  /** The broker's epoch when the current version was announced (a restart since: announce again). */
  private announcedEpoch = -1;
  /** What each round collected (tests, metrics). */
  readonly rounds: RoundRecord[] = [];

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

  async generate(problems: TaskProblem[], prompt: (p: TaskProblem) => string, G: number, cap: number, sampling: SamplingOptions, stats: RolloutStats) {
    const t0 = performance.now();
    const prompts = problems.map((p) => this.local.tokenizer.encode(prompt(p)));
    const tag = `${this.version}.${this.calls++}`;
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
