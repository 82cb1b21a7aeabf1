// Bounded staleness over the broker: the learner's acceptance window and re-issue of too-old completions,
// the worker serving a request from its minVersion up, and a learner with two workers at staleness 1 that
// prefetches the next step before each update, stopped (Ctrl-C) with a step prefetched and resumed.
import { beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Broker, type CompletionMsg, type RequestMsg } from "../src/dist/broker.ts";
import { collect, emptyRecord } from "../src/dist/collect.ts";
import { outsideWindow, renewed } from "../src/dist/learner.ts";
import { prunable } from "../src/dist/weights.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { readMetrics } from "../src/train/metrics.ts";
import { hasGpu } from "./helpers.ts";
import { brokerFixture, completionReader, queued, redisMissing, requestMsg, served, startRedis, TINY_RUN, until } from "./redis.ts";

const NO_REDIS = redisMissing();
const GPU = await hasGpu();
const fx = brokerFixture("siri-stale-", NO_REDIS);
const ROOT = fx.root;
const siri = fx.siri;

const request = (run: string, id: string, version: number, minVersion?: number): RequestMsg =>
  requestMsg({ run, id, version, key: id.length, ...(minVersion === undefined ? {} : { minVersion }) });
const completion = (run: string, id: string, version: number): CompletionMsg => ({ kind: "completion", proto: 1, run, version, id, tokens: [5], logprobs: [-0.5], stopReason: "stop", worker: "fake" });

describe.skipIf(NO_REDIS !== null)("the learner's staleness window", () => {
  test("a completion more than k versions old is dropped with a log line and its request published again; one of a later round is kept for it; a prefetched round a restarted broker lost is published again", async () => {
    const learner = await Broker.connect(fx.redis().url, { prefix: "window", log: () => undefined });
    const worker = await Broker.connect(fx.redis().url, { prefix: "window", log: () => undefined });
    const run = "r-window";
    const [k, policy] = [1, 5];
    const window = { versionRejected: (v: number) => outsideWindow(v, policy, k), renew: (r: RequestMsg) => renewed(r, policy) };
    try {
      // Published one update ahead, at version 4, for the policy at 5.
      const requests = ["a", "b", "c"].map((id) => request(run, id, 4, 4));
      const logs: string[] = [];
      const kept: CompletionMsg[] = [];
      const rec = emptyRecord(policy);
      const got: string[] = [];
      const keep = (c: CompletionMsg) => c.id === "later" && kept.push(c) > 0;
      const round = (async () => {
        for await (const { c } of collect({ broker: learner, run, version: policy, requests, announce: async () => undefined, log: (s) => logs.push(s), who: "learner", keep, ...window }, rec)) got.push(`${c.id}@${c.version}`);
      })();
      // A fake worker takes the three requests and answers from weights of several ages.
      const claimed: string[] = [];
      await until(async () => claimed.push(...(await worker.claim("fw", 10, 100, 60_000)).map((e) => e.id)) === 3, 30_000, "the round's 3 requests");
      await worker.complete(completion(run, "a", 3)); // two versions old: outside the window
      await worker.complete(completion(run, "b", 4)); // one version old: inside
      await worker.complete(completion(run, "later", 4)); // a later round's, read early
      await worker.complete(completion(run, "c", 5));
      await worker.complete(completion(run, "b", 5)); // a second completion of b
      await worker.ack(claimed);
      // "a" is asked for again, by the policy at 5, of its own weights.
      const again: { id: string; msg?: RequestMsg }[] = [];
      await until(async () => again.push(...(await worker.claim("fw", 10, 100, 60_000))) === 1, 30_000, "request a published again");
      expect(again[0].msg).toEqual({ ...requests[0], version: 5, minVersion: 5 });
      await worker.complete(completion(run, "a", 5));
      await worker.ack([again[0].id]);
      await round;
      expect(got).toEqual(["b@4", "c@5", "a@5"]);
      expect(rec).toEqual({ version: 5, accepted: ["b", "c", "a"], versions: [4, 5, 5], duplicates: 1, rejected: 1, stale: 1, reissued: 0 });
      expect(logs.filter((l) => l.includes("dropped completion"))).toEqual([
        expect.stringMatching(/^learner: dropped completion \S+: request a: it came from version 3, more than 1 update\(s\) older than the policy at 5 \(staleness 1\); published again for version 5 or newer$/),
      ]);
      expect(kept.map((c) => c.id)).toEqual(["later"]);
      // The kept completion, handed to its own (prefetched) round as read earlier, is accepted there.
      const later = request(run, "later", 4, 4);
      const published = { entryIds: await learner.publishRequests([later]), epoch: learner.epoch };
      const rec2 = emptyRecord(policy);
      const got2: string[] = [];
      for await (const { c } of collect({ broker: learner, run, version: policy, requests: [later], published, early: kept, announce: async () => undefined, log: (s) => logs.push(s), who: "learner", ...window }, rec2)) got2.push(`${c.id}@${c.version}`);
      expect(got2).toEqual(["later@4"]);
      // A prefetched round whose broker restarted (and lost it) before its step came: announced again, published again.
      const lost = request(run, "lost", 4, 4);
      const gone = { entryIds: await learner.publishRequests([lost]), epoch: learner.epoch - 1 };
      await learner.discard(gone.entryIds);
      let announced = 0;
      const rec3 = emptyRecord(policy);
      const round3 = (async () => {
        for await (const _ of collect({ broker: learner, run, version: policy, requests: [lost], published: gone, announce: async () => void announced++, log: (s) => logs.push(s), who: "learner", ...window }, rec3));
      })();
      const redo: { id: string; msg?: RequestMsg }[] = [];
      await until(async () => redo.push(...(await worker.claim("fw", 10, 100, 60_000))) === 1, 30_000, "the lost request published again");
      expect(redo[0].msg).toEqual(lost);
      await worker.complete(completion(run, "lost", 5));
      await worker.ack([redo[0].id]);
      await round3;
      expect([announced, rec3.reissued, rec3.accepted]).toEqual([1, 1, ["lost"]]);
      expect(logs).toContain("learner: the broker restarted: weights of version 5 announced again; 1 of 1 unanswered requests re-issued (the broker still held 0)");
      // Nothing left behind: every request entry deleted (served, or the prefetched one no worker took).
      expect(await learner.length("requests")).toBe(0);
      // The window itself: k versions back from the policy, never ahead of it.
      expect([2, 3, 4, 5, 6].map((v) => outsideWindow(v, 5, 2) === null)).toEqual([false, true, true, true, false]);
      expect(outsideWindow(6, 5, 2)).toBe("it came from version 6, newer than the policy at 5");
    } finally {
      learner.close();
      worker.close();
    }
  });
});

test("rollout weight folders: the newest two up to the version written are kept; any numbered past it (an earlier run's) goes", () => {
  const names = ["v000001", "v000002", "v000003", "v000004", "v000004.tmp-1", "notes"];
  expect(prunable(names, 4, 2)).toEqual(["v000001", "v000002"]);
  // A run resumed in the same folder counts from 0 again: the dead run's newer folders must not outlive its own.
  expect(prunable(["v000000", "v000002", "v000003"], 0, 2)).toEqual(["v000002", "v000003"]);
  expect(prunable(["v000000", "v000001"], 1, 2)).toEqual([]);
});

describe.skipIf(NO_REDIS !== null || !GPU)("a worker under bounded staleness", () => {
  test("it serves a request with any version from its minVersion up, and still rejects an on-policy request of another version", async () => {
    const model = join(ROOT, "worker-model");
    const { config } = makeTinyModel(model, { seed: 4 });
    const r = await startRedis(); // a broker of its own: nothing else in its streams
    const b = await Broker.connect(r.url, { log: () => undefined });
    const run = "t-stale";
    try {
      await b.announce({ kind: "weights", proto: 1, run, version: 2, dir: model, dtype: "f32", sizing: { maxBatch: 4, promptTokens: 16, newTokens: 4, prefillChunk: 64, vocabLimit: config.vocabSize } });
      await b.publishRequests([request(run, "older", 1, 1), request(run, "own", 2, 1), request(run, "on-policy-older", 1), request(run, "too-new", 3, 3)]);
      const w = siri("stale-worker", ["worker", "--broker", r.url, "--name", "sw"]);
      const { got, read } = completionReader(b, run);
      await until(async () => (await read()) === 2, 120_000, "the two servable requests' completions");
      await until(() => (w.stderr().match(/rejected request/g) ?? []).length === 2, 60_000, "the worker to reject the other two");
      w.proc.kill("SIGINT");
      expect(await w.proc.exited).toBe(0);
      // Both served by the version the worker holds, 2: "older" one version above its minVersion.
      expect(got.map((c) => [c.id, c.version]).sort()).toEqual([
        ["older", 2],
        ["own", 2],
      ]);
      const log = w.stderr();
      expect(log).toMatch(/worker sw: rejected request \S+: request on-policy-older wants version 1, the announced version is 2 \(on-policy: only the newest is served\)/);
      expect(log).toMatch(/worker sw: rejected request \S+: request too-new wants version 3 or newer, the announced version is 2/);
      expect(log).toContain("worker stopped: 2 completions, 2 requests rejected");
      expect(await b.length("requests")).toBe(0);
    } finally {
      b.close();
      r.stop();
    }
  }, 300_000);
});

/** As tests/dist.test.ts's run, 4 steps. */
const CONFIG = { ...TINY_RUN, steps: 4 };

/** The learner's per-round lines under staleness: completions, distinct, duplicates, the versions seen, too-old ones. */
function staleRounds(log: string): { got: number; distinct: number; dups: number; policy: number; from: string; tooOld: number }[] {
  const re = /learner: round \S+: (\d+) of 8 completions \((\d+) distinct\), (\d+) duplicates dropped, \d+ rejected; policy at version (\d+), completions from ([^;]*?)(?: \(published at version \d+\))?, (\d+) too old/g;
  return [...log.matchAll(re)].map((m) => ({ got: Number(m[1]), distinct: Number(m[2]), dups: Number(m[3]), policy: Number(m[4]), from: m[5], tooOld: Number(m[6]) }));
}

/** The step.round keys the learner prefetched, with the version published at and the oldest servable one. */
const prefetched = (log: string) => [...log.matchAll(/learner: round \S+ \(step\.round (\S+)\) prefetched 1 update\(s\) ahead: 8 requests at version (\d+), servable by version (\d+) or newer/g)].map((m) => `${m[1]}@${m[2]}>=${m[3]}`);

describe.skipIf(NO_REDIS !== null || !GPU)("a learner at staleness 1", () => {
  beforeAll(() => writeFileSync(join(ROOT, "config.json"), JSON.stringify(CONFIG)));
  test("two workers generate the next step during each update; every step trains on exactly 8 completions at most 1 version old; Ctrl-C discards the prefetched step, --resume goes on", async () => {
    const url = fx.redis().url;
    const out = join(ROOT, "stale");
    const args = ["train", "--config", join(ROOT, "config.json"), "--out", out, "--no-progress", "--broker", url, "--staleness", "1"];
    const w = [siri("s1", ["worker", "--broker", url, "--name", "s1", "--batch", "4"]), siri("s2", ["worker", "--broker", url, "--name", "s2", "--batch", "4"])];
    // Ctrl-C during step 1: it finishes, step 2 was prefetched before its update and is never reached.
    const first = siri("stale-first", args, { SIRI_TRAIN_STOP_AT_STEP: "1" });
    expect(await first.proc.exited).toBe(130);
    const log1 = first.stderr();
    // Warm start: version 1. Step 1 went out before update 0 (at version 1), step 2 before update 1 (at version 2).
    expect(prefetched(log1)).toEqual(["1.0@1>=1", "2.0@2>=2"]);
    expect(log1).toContain("learner: 8 prefetched requests of 1 round(s) never reached are discarded");
    await until(async () => (await queued(url)) === 0, 60_000, "the discarded round's requests to leave the broker");
    const second = siri("stale-resumed", [...args, "--resume"]);
    expect(await second.proc.exited).toBe(0);
    const log2 = second.stderr();
    // The resumed run (a new run id, versions from 0 again) generates step 2 itself, prefetches step 3 only: nothing past the last step.
    expect(prefetched(log2)).toEqual(["3.0@0>=0"]);
    expect(log2).not.toContain("never reached");
    const rounds = [...staleRounds(log1), ...staleRounds(log2)];
    console.log(`[staleness 1] completions per step: ${rounds.map((r, i) => `step ${i} (policy v${r.policy}): ${r.from}`).join("; ")}`);
    expect(rounds.map((r) => [r.got, r.distinct, r.dups, r.policy, r.tooOld])).toEqual([
      [8, 8, 0, 1, 0],
      [8, 8, 0, 2, 0],
      [8, 8, 0, 0, 0],
      [8, 8, 0, 1, 0],
    ]);
    // Steps 0 and 2 (each process's first) on-policy; steps 1 and 3 from the version they were published at or the next.
    expect(rounds[0].from).toBe("version 1 ×8");
    expect(rounds[2].from).toBe("version 0 ×8");
    for (const i of [1, 3]) expect(rounds[i].from).toMatch(new RegExp(`^version ${rounds[i].policy - 1} ×\\d+(, version ${rounds[i].policy} ×\\d+)?$|^version ${rounds[i].policy} ×8$`));
    // metrics.jsonl: exactly prompts x G per step, the lag as the rounds saw it.
    const m = readMetrics(join(out, "metrics.jsonl"));
    expect(m.map((x) => x.step)).toEqual([0, 1, 2, 3]);
    expect(m.map((x) => x.rollouts)).toEqual([8, 8, 8, 8]);
    rounds.forEach((r, i) => {
      const lags = [...r.from.matchAll(/version (\d+) ×(\d+)/g)].flatMap((v) => Array<number>(Number(v[2])).fill(r.policy - Number(v[1])));
      expect([m[i].rollout_version_lag_max, m[i].rollout_version_lag_mean]).toEqual([Math.max(...lags), lags.reduce((a, x) => a + x, 0) / 8]);
      expect(m[i].rollout_version_lag_max).toBeLessThanOrEqual(1);
    });
    for (const p of w) p.proc.kill("SIGINT");
    expect(await Promise.all(w.map((p) => p.proc.exited))).toEqual([0, 0]);
    // Each request served once: 4 steps x 8, plus whatever of the discarded round the workers had taken before it went.
    const total = served(w[0]) + served(w[1]);
    expect(total).toBeGreaterThanOrEqual(32);
    expect(total).toBeLessThanOrEqual(40);
    expect(await queued(url)).toBe(0);
    expect(readFileSync(join(out, "config.json"), "utf8")).toContain('"staleness": 1');
  }, 300_000);

  test("no live worker: nothing is prefetched, each round is generated locally and on-policy", async () => {
    const out = join(ROOT, "stale-alone");
    const args = ["train", "--config", join(ROOT, "config.json"), "--out", out, "--no-progress", "--broker", fx.redis().url, "--staleness", "1", "--workers-grace", "0", "--steps", "2"];
    const learner = siri("stale-alone", args);
    expect(await learner.proc.exited).toBe(0);
    const log = learner.stderr();
    expect(log.match(/learner: round \S+: 8 of 8 completions generated locally/g)?.length).toBe(2);
    expect(prefetched(log)).toEqual([]);
    expect(readMetrics(join(out, "metrics.jsonl")).map((x) => [x.rollouts, x.rollout_version_lag_max])).toEqual([
      [8, 0],
      [8, 0],
    ]);
    expect(await queued(fx.redis().url)).toBe(0);
  }, 300_000);
});
