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
import { Broker, type RequestMsg } from "./broker.ts";
import { writeRolloutWeights } from "./weights.ts";

export interface LearnerOptions {
  url: string;
  /** Shared folder for the versioned rollout weights (every worker must see it at the same path). */
  weightsDir: string;
  /** Say how many completions are still missing every this many ms (default 10 s). */
  waitLogMs?: number;
  /** Give up on a round after this long without a new completion (default: wait for workers indefinitely). */
  timeoutMs?: number;
}

export interface RoundRecord {
  version: number;
  /** Request ids whose completions were accepted (each exactly once). */
  accepted: string[];
  duplicates: number;
  rejected: number;
}

export class BrokerRollouts implements RolloutSource {
  readonly run = randomUUID();
  version = 0;
  private calls = 0;
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
    const broker = await Broker.connect(o.url);
    const b = new BrokerRollouts(local, broker, configJson, o, log);
    log(`learner: run ${b.run} on broker ${o.url}; rollout weights under ${o.weightsDir}`);
    await b.publishWeights();
    return b;
  }

  private async publishWeights(): Promise<void> {
    const dir = await writeRolloutWeights(this.o.weightsDir, this.version, this.local.roll, this.configJson);
    await this.broker.announce({ kind: "weights", run: this.run, version: this.version, dir, dtype: this.local.roll.model.dtype, engine: this.local.engine.opts });
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
    const msgs: RequestMsg[] = rolloutRequests(prompts, G, cap, this.local.stop).map((r) => {
      const id = `${tag}.${r.id}`;
      index.set(id, r.id);
      return { kind: "request", run: this.run, version: this.version, id, prompt: r.prompt, maxTokens: r.maxTokens, stop: r.stop, key: r.key, sampling };
    });
    await this.broker.publishRequests(msgs);
    const done = new Map<number, { tokens: number[]; logprobs: number[]; finished: boolean }>();
    const rec: RoundRecord = { version: this.version, accepted: [], duplicates: 0, rejected: 0 };
    let after = "0-0";
    let lastNews = performance.now();
    let lastLog = lastNews;
    while (done.size < msgs.length) {
      const { entries, last } = await this.broker.completions(this.run, after, 1000);
      after = last;
      for (const e of entries) {
        const drop = (why: string) => {
          rec.rejected++;
          this.log(`learner: dropped completion ${e.id}: ${why}`);
        };
        if (!e.msg) drop(e.error);
        else if (e.msg.run !== this.run) drop(`it is for run ${e.msg.run}`);
        else if (e.msg.version !== this.version) drop(`request ${e.msg.id} came from version ${e.msg.version}, the policy is at ${this.version} (on-policy)`);
        else if (!index.has(e.msg.id)) drop(`request ${e.msg.id} is not one of this round's`);
        else if (done.has(index.get(e.msg.id)!)) rec.duplicates++; // idempotent by request id
        else {
          done.set(index.get(e.msg.id)!, { tokens: e.msg.tokens, logprobs: e.msg.logprobs, finished: e.msg.stopReason === "stop" });
          rec.accepted.push(e.msg.id);
          stats.tokens += e.msg.tokens.length;
          lastNews = performance.now();
        }
      }
      const now = performance.now();
      if (now - lastLog > (this.o.waitLogMs ?? 10_000)) {
        lastLog = now;
        const ws = await this.broker.workers();
        this.log(`learner: ${done.size} of ${msgs.length} completions of version ${this.version}; ${ws.length ? `workers: ${ws.map((w) => `${w.name} (${w.pending} pending, idle ${(w.idle / 1000).toFixed(0)} s)`).join(", ")}` : "no worker has joined the broker yet: start one with `siri worker --broker URL`"}`);
      }
      if (this.o.timeoutMs !== undefined && now - lastNews > this.o.timeoutMs) {
        throw new Error(`learner: no completion for ${(this.o.timeoutMs / 1000).toFixed(0)} s; ${done.size} of ${msgs.length} arrived for version ${this.version}; are workers running against ${this.o.url}?`);
      }
    }
    this.rounds.push(rec);
    this.log(`learner: round ${tag}: ${rec.accepted.length} of ${msgs.length} completions (${new Set(rec.accepted).size} distinct), ${rec.duplicates} duplicates dropped, ${rec.rejected} rejected`);
    stats.seconds += (performance.now() - t0) / 1000;
    return groupCompletions(problems, prompts, G, done);
  }

  destroy(): void {
    this.broker.close();
  }
}
