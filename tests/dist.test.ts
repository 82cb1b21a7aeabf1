// Distributed rollouts over a Redis broker: the message checks, the visibility timeout, and a learner with
// worker processes on the software adapter giving the very weights of a single-process run, even when a
// worker is SIGKILLed in the middle of a step.
import { beforeAll, describe, expect, test } from "bun:test";
import { S3Client } from "bun";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readSamples } from "../src/bench/report.ts";
import { Broker, checkMsg, type RequestMsg, WEIGHTS_KEPT } from "../src/dist/broker.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { loadCheckpoint } from "../src/train/checkpoint.ts";
import { hasGpu } from "./helpers.ts";
import { startS3 } from "./s3.ts";
import { brokerFixture, completionReader, queued, redisMissing, requestMsg, served, startRedis, TINY_RUN, until } from "./redis.ts";

const NO_REDIS = redisMissing();
const GPU = await hasGpu();
const fx = brokerFixture("siri-dist-", NO_REDIS);
const ROOT = fx.root;
const request = requestMsg;

describe.skipIf(NO_REDIS !== null)("broker", () => {
  test("messages are checked field by field; a malformed one is named, not thrown", () => {
    expect(checkMsg("request", request())).toBeNull();
    expect(checkMsg("request", request({ prompt: [] }))).toMatch(/^prompt/);
    expect(checkMsg("request", { ...request(), version: -1 })).toMatch(/^version/);
    expect(checkMsg("request", { ...request(), run: 3 })).toMatch(/^run/);
    expect(checkMsg("request", { ...request(), kind: "completion" })).toMatch(/^kind/);
    expect(checkMsg("request", { ...request(), proto: 2 })).toMatch(/^proto is 2, this siri speaks message format 1/);
    expect(checkMsg("request", { ...request(), proto: undefined })).toMatch(/^proto/);
    expect(checkMsg("completion", { kind: "completion", proto: 1, run: "r", version: 1, id: "a", tokens: [1, 2], logprobs: [0], stopReason: "stop", worker: "w" })).toMatch(/^logprobs/);
    const engine = { maxBatch: 4, maxSeqLen: 64, cacheTokens: 256, blockSize: 16, prefillChunk: 64, vocabLimit: 300 };
    const sizing = { maxBatch: 4, promptTokens: 30, newTokens: 8, prefillChunk: 256, vocabLimit: 300 };
    const weights = { kind: "weights", proto: 1, run: "r", version: 1, dir: "/x", dtype: "f16" };
    expect(checkMsg("weights", { ...weights, engine })).toBeNull();
    expect(checkMsg("weights", { ...weights, dtype: "auto", sizing })).toBeNull();
    expect(checkMsg("weights", { ...weights, dtype: "bf16", engine })).toMatch(/^dtype/);
    expect(checkMsg("weights", { ...weights, engine, sizing })).toMatch(/^engine or sizing/);
    expect(checkMsg("weights", weights)).toMatch(/^engine or sizing/);
    expect(checkMsg("weights", { ...weights, engine: { ...engine, cacheTokens: 0 } })).toMatch(/^engine:/);
    expect(checkMsg("weights", { ...weights, sizing: { ...sizing, newTokens: 1.5 } })).toMatch(/^sizing:/);
    // Without the tokenizer's size a worker could sample a padded vocabulary row: refused.
    expect(checkMsg("weights", { ...weights, engine: { ...engine, vocabLimit: undefined } })).toMatch(/^engine: .*vocabLimit/);
    expect(checkMsg("weights", { ...weights, sizing: { ...sizing, vocabLimit: undefined } })).toMatch(/^sizing: .*vocabLimit/);
    expect(checkMsg("request", null)).toBe("not a JSON object");
  });

  test("each request goes to one worker; one left pending past the timeout goes to another; bad payloads come back as errors", async () => {
    const a = await Broker.connect(fx.redis().url, { prefix: "claims", log: () => undefined });
    const b = await Broker.connect(fx.redis().url, { prefix: "claims", log: () => undefined });
    try {
      await a.publishRequests([request({ id: "1" }), request({ id: "2" })]);
      await a.addRaw("requests", "{not json");
      const first = await a.claim("wa", 10, 100, 60_000);
      expect(first.map((e) => e.msg?.id ?? e.error)).toEqual(["1", "2", "field m is not JSON"]);
      expect(await b.claim("wb", 10, 100, 60_000)).toEqual([]); // nothing new, nothing idle long enough
      await a.ack([first[0].id, first[2].id]); // wa finished "1" and rejected the bad one, then went silent
      await Bun.sleep(300);
      const stolen = await b.claim("wb", 10, 100, 200);
      expect(stolen.map((e) => e.msg?.id)).toEqual(["2"]);
      await b.ack([stolen[0].id]);
      expect((await b.workers()).map((w) => [w.name, w.pending])).toEqual([
        ["wa", 0],
        ["wb", 0],
      ]);
    } finally {
      a.close();
      b.close();
    }
  });

  test("a worker's presence: alive while its heartbeat is fresh, gone when it says so or when the heartbeat times out", async () => {
    const b = await Broker.connect(fx.redis().url, { prefix: "presence", log: () => undefined });
    try {
      expect(await b.liveWorkers()).toEqual([]);
      await b.alive("wa", 60_000);
      await b.alive("wb", 300);
      expect(await b.liveWorkers()).toEqual(["wa", "wb"]);
      await b.gone("wa");
      expect(await b.liveWorkers()).toEqual(["wb"]);
      await until(async () => (await b.liveWorkers()).length === 0, 10_000, "wb's heartbeat to time out");
    } finally {
      b.close();
    }
  });
});

/** 2 steps of the tiny run (tests/redis.ts). */
const CONFIG = { ...TINY_RUN, steps: 2 };

function weights(run: string, step: number) {
  return loadCheckpoint(join(run, "checkpoints", `step-${String(step).padStart(6, "0")}`)).weights;
}

function sameWeights(a: Map<string, Float32Array>, b: Map<string, Float32Array>): boolean {
  if (a.size !== b.size) return false;
  for (const [n, w] of a) {
    const v = b.get(n);
    if (!v || !Buffer.from(w.buffer, w.byteOffset, w.byteLength).equals(Buffer.from(v.buffer, v.byteOffset, v.byteLength))) return false;
  }
  return true;
}

const siri = fx.siri;
const trainArgs = (out: string) => ["train", "--config", join(ROOT, "config.json"), "--out", out, "--no-progress"];
const worker = (url: string, name: string, extra: string[] = [], env: Record<string, string> = {}) => siri(name, ["worker", "--broker", url, "--name", name, ...extra], env);

/** The learner's per-round lines: completions, distinct ones, duplicates dropped. */
function rounds(log: string): { got: number; distinct: number; dups: number }[] {
  return [...log.matchAll(/learner: round \S+: (\d+) of 8 completions \((\d+) distinct\), (\d+) duplicates dropped/g)].map((m) => ({ got: Number(m[1]), distinct: Number(m[2]), dups: Number(m[3]) }));
}

// Every process (learner, workers, the single-process run) is a real `siri` process: a process of the
// test runner that drives the GPU while it has child processes stalls (see tests/redis.ts).
describe.skipIf(NO_REDIS !== null || !GPU)("learner and workers", () => {
  const single = join(ROOT, "single");
  beforeAll(async () => {
    writeFileSync(join(ROOT, "config.json"), JSON.stringify(CONFIG));
    const p = siri("single", trainArgs(single));
    expect(await p.proc.exited).toBe(0);
    expect(sameWeights(weights(single, 0), weights(single, 2))).toBe(false); // the run trained
  }, 240_000);

  test("a learner with two workers trains the very weights of a single-process run", async () => {
    const url = fx.redis().url;
    // Each worker on adapter 0, as one per GPU would be started (index 0: the adapter the learner opens).
    const w = [worker(url, "w1", ["--batch", "4", "--adapter", "0"]), worker(url, "w2", ["--batch", "4", "--adapter", "0"])];
    const learner = siri("learner", [...trainArgs(join(ROOT, "two")), "--broker", url]);
    expect(await learner.proc.exited).toBe(0);
    expect(rounds(learner.stderr())).toEqual([
      { got: 8, distinct: 8, dups: 0 },
      { got: 8, distinct: 8, dups: 0 },
    ]);
    expect(sameWeights(weights(single, 2), weights(join(ROOT, "two"), 2))).toBe(true);
    for (const p of w) p.proc.kill("SIGINT");
    expect(await Promise.all(w.map((p) => p.proc.exited))).toEqual([0, 0]);
    expect(served(w[0]) + served(w[1])).toBe(16);
    for (const p of w) expect(p.stderr()).toMatch(/adapter: .* \(--adapter index 0 of \d+ \(".+"\)\)/);
    // Nothing left behind to grow the broker's memory: served requests deleted, the run's completions stream gone.
    const runId = /learner: run (\S+) on broker/.exec(learner.stderr())![1];
    const b = await Broker.connect(url, { log: () => undefined });
    try {
      expect([await b.length("requests"), await b.length(`completions:${runId}`)]).toEqual([0, 0]);
      expect(await b.length("weights")).toBeLessThanOrEqual(WEIGHTS_KEPT);
      expect(await b.liveWorkers()).toEqual([]); // each stopped worker took its heartbeat away
      expect(await b.entriesAdded("requests")).toBeGreaterThanOrEqual(16); // (the check the zero-worker test relies on can see requests)
    } finally {
      b.close();
    }
  }, 300_000);

  test("weights in an S3 bucket, no shared folder: a learner with a worker trains the very weights of a single-process run", async () => {
    const s3 = await startS3(); // tests/s3.ts: s3rver on 127.0.0.1; its variables go to the learner and the worker only
    const run = join(ROOT, "s3");
    const cache = join(ROOT, "s3-cache");
    try {
      const w = worker(fx.redis().url, "s3w", ["--batch", "4", "--cache-dir", cache], s3.env);
      const learner = siri("learner-s3", [...trainArgs(run), "--broker", fx.redis().url, "--weights-dir", "s3://siri/run"], s3.env);
      expect(await learner.proc.exited).toBe(0);
      expect(rounds(learner.stderr())).toEqual([
        { got: 8, distinct: 8, dups: 0 },
        { got: 8, distinct: 8, dups: 0 },
      ]);
      expect(sameWeights(weights(single, 2), weights(run, 2))).toBe(true);
      w.proc.kill("SIGINT");
      expect(await w.proc.exited).toBe(0);
      expect(served(w)).toBe(16);
      // Versions: 0 the start, 1 after the warm start, then one per step. The two that served the steps (1, 2) came
      // through the bucket and the worker's cache, which keeps only the newest.
      for (const v of ["v000001", "v000002"]) expect(w.stderr()).toContain(`worker s3w: downloaded s3://siri/run/${v} to ${join(cache, v)}-`);
      expect(readdirSync(cache).filter((n) => n.startsWith("v"))).toHaveLength(1);
      // The bucket keeps the newest two versions (2 and 3), each complete.
      const c = new S3Client({ bucket: "siri", accessKeyId: s3.env.S3_ACCESS_KEY_ID, secretAccessKey: s3.env.S3_SECRET_ACCESS_KEY, endpoint: s3.endpoint });
      expect(((await c.list({ prefix: "run/" })).contents ?? []).map((o) => o.key).sort()).toEqual(["v000002", "v000003"].flatMap((v) => ["complete.json", "config.json", "model.safetensors"].map((f) => `run/${v}/${f}`)));
    } finally {
      await s3.stop();
    }
  }, 300_000);

  test("no worker alive: the learner generates each round itself and trains the very weights of a single-process run", async () => {
    // A broker of its own: a worker killed by another test leaves its heartbeat until it times out.
    const r = await startRedis();
    const run = join(ROOT, "zero");
    try {
      const learner = siri("learner-zero", [...trainArgs(run), "--broker", r.url, "--workers-grace", "0.5"]);
      expect(await learner.proc.exited).toBe(0);
      const log = learner.stderr();
      expect(log.match(/learner: round \S+: no live worker on the broker after 0\.5 s: generating it locally/g)?.length).toBe(2);
      expect(log.match(/learner: round \S+: 8 of 8 completions generated locally/g)?.length).toBe(2);
      expect(rounds(log)).toEqual([]); // no round went to the broker
      expect(sameWeights(weights(single, 2), weights(run, 2))).toBe(true);
      // Nothing published: no worker arriving later could redo a round.
      const b = await Broker.connect(r.url, { log: () => undefined });
      try {
        expect(await b.entriesAdded("requests")).toBe(0);
      } finally {
        b.close();
      }
    } finally {
      r.stop();
    }
  }, 300_000);

  test("a worker SIGKILLed mid-step: another takes its requests after the timeout; nothing lost, nothing trained twice", async () => {
    const url = fx.redis().url;
    const run = join(ROOT, "killed");
    // k1 alone takes all 8 requests of step 0, publishes 3 completions and dies before acknowledging the third.
    const k1 = worker(url, "k1", ["--claim-after", "2"], { SIRI_WORKER_DIE_AFTER: "3" });
    const learner = siri("learner-killed", [...trainArgs(run), "--broker", url]);
    expect(await k1.proc.exited).toBe(137);
    const k2 = worker(url, "k2", ["--claim-after", "2"]);
    expect(await learner.proc.exited).toBe(0);
    // Step 0: 8 distinct completions, k1's third one arriving twice (k1 published it, k2 redid it) and dropped once.
    expect(rounds(learner.stderr())).toEqual([
      { got: 8, distinct: 8, dups: 1 },
      { got: 8, distinct: 8, dups: 0 },
    ]);
    expect(sameWeights(weights(single, 2), weights(run, 2))).toBe(true);
    k2.proc.kill("SIGINT");
    expect(await k2.proc.exited).toBe(0);
    expect(served(k2)).toBe(8 - 2 + 8);
  }, 300_000);

  test("the learner SIGKILLed mid-step and resumed: the abandoned step's requests are discarded, not mixed into the next", async () => {
    const url = fx.redis().url;
    const run = join(ROOT, "resumed");
    // --no-local: with no worker alive the learner would generate the round itself; here it must wait on the broker.
    const l1 = siri("learner-abandoned", [...trainArgs(run), "--broker", url, "--no-local"]);
    // Step 0 published (its checkpoint saved before), no worker yet: kill the learner there.
    await until(async () => (await queued(url)) === 8, 120_000, "the first learner's 8 requests of step 0");
    l1.proc.kill("SIGKILL");
    expect(await l1.proc.exited).toBe(137);
    const abandoned = /learner: run (\S+) on broker/.exec(l1.stderr())![1];
    const l2 = siri("learner-resumed", [...trainArgs(run), "--broker", url, "--resume", "--no-local"]);
    // The worker starts once the resumed learner's step is published beside the abandoned one.
    await until(async () => (await queued(url)) === 16, 120_000, "the resumed learner's 8 requests beside the 8 abandoned ones");
    const w = worker(url, "rw", ["--batch", "4"]);
    expect(await l2.proc.exited).toBe(0);
    expect(rounds(l2.stderr())).toEqual([
      { got: 8, distinct: 8, dups: 0 },
      { got: 8, distinct: 8, dups: 0 },
    ]);
    expect(sameWeights(weights(single, 2), weights(run, 2))).toBe(true);
    w.proc.kill("SIGINT");
    expect(await w.proc.exited).toBe(0);
    // Each abandoned request was rejected as another run's; the worker served only the resumed run's 16.
    expect(w.stderr().match(new RegExp(`is for run ${abandoned}, the announced run is`, "g"))?.length).toBe(8);
    expect(served(w)).toBe(16);
    expect(await queued(url)).toBe(0);
  }, 300_000);

  for (const persist of [false, true]) {
    test(`the broker restarted mid-step, its streams ${persist ? "kept (append-only file)" : "lost"}: learner and worker reconnect, the step completes, the same weights`, async () => {
      const r = await startRedis({ persist });
      const run = join(ROOT, `restart-${persist}`);
      try {
        // A worker connected, then frozen (SIGSTOP): it holds its connection and serves nothing.
        const w = worker(r.url, `rs-${persist}`);
        await until(() => w.stderr().includes("connected to"), 60_000, "the worker to connect");
        w.proc.kill("SIGSTOP");
        // --no-local: the frozen worker's heartbeat times out, and the round must still go through the broker.
        const learner = siri(`learner-restart-${persist}`, [...trainArgs(run), "--broker", r.url, "--no-local"]);
        await until(async () => (await queued(r.url)) === 8, 120_000, "step 0's 8 requests");
        await r.restart();
        await until(() => learner.stderr().includes("unanswered requests re-issued"), 60_000, "the learner to reconnect");
        w.proc.kill("SIGCONT");
        expect(await learner.proc.exited).toBe(0);
        const log = learner.stderr();
        expect(log).toMatch(/learner: broker \S+: connection lost \(.*\); reconnecting with back-off/);
        expect(log).toMatch(/learner: broker \S+: reconnected after [\d.]+ s/);
        // State lost: the learner re-issues the whole step; kept: the broker still has it.
        expect(log).toContain(persist ? "0 of 8 unanswered requests re-issued (the broker still held 8)" : "8 of 8 unanswered requests re-issued (the broker still held 0)");
        expect(rounds(log).map((x) => [x.got, x.distinct])).toEqual([
          [8, 8],
          [8, 8],
        ]);
        expect(sameWeights(weights(single, 2), weights(run, 2))).toBe(true);
        w.proc.kill("SIGINT");
        expect(await w.proc.exited).toBe(0);
        expect(w.stderr()).toMatch(/worker rs-\w+: broker \S+: connection lost/);
        expect(w.stderr()).toMatch(/worker rs-\w+: broker \S+: reconnected after/);
        expect(served(w)).toBe(16);
      } finally {
        r.stop();
      }
    }, 300_000);
  }
});

/** report.md without its "Summarised <date>" line. */
const reportBody = (dir: string) =>
  readFileSync(join(dir, "report.md"), "utf8")
    .split("\n")
    .filter((l) => !l.startsWith("Summarised "))
    .join("\n");
const sortedSamples = (dir: string) => readSamples(join(dir, "samples.jsonl")).records.sort((a, b) => a.problem_id.localeCompare(b.problem_id) || a.sample - b.sample);
describe.skipIf(NO_REDIS !== null || !GPU)("bench over the broker", () => {
  const model = join(ROOT, "bench-model");
  const FIXTURE = join(import.meta.dir, "..", "datasets/fixtures/tiny.jsonl");
  const benchArgs = (out: string) => ["bench", "--model", model, "--dataset", FIXTURE, "--limit", "3", "--n", "4", "--max-tokens", "16", "--temperature", "1", "--seed", "5", "--out", out];

  test("two workers split a benchmark's samples; the report is the single-process run's", async () => {
    makeTinyModel(model, { seed: 3 });
    // The same folder name (the report's title) under two parents.
    const single = join(ROOT, "bench-single", "bench");
    const one = siri("bench-single", benchArgs(single));
    expect(await one.proc.exited).toBe(0);
    const url = fx.redis().url;
    const w = [worker(url, "b1", ["--batch", "3"]), worker(url, "b2", ["--batch", "3"])];
    const two = join(ROOT, "bench-two", "bench");
    const coord = siri("bench-two", [...benchArgs(two), "--broker", url]);
    expect(await coord.proc.exited).toBe(0);
    expect(coord.stderr()).toContain("bench: 12 sample(s) from the workers, 0 duplicates dropped, 0 rejected");
    expect(coord.stderr()).toContain("12 new sample(s), 0 already done");
    // Sample for sample (the response texts, token counts, stop reasons), then the report.
    expect(sortedSamples(two)).toEqual(sortedSamples(single));
    expect(reportBody(two)).toBe(reportBody(single));
    for (const p of w) p.proc.kill("SIGINT");
    expect(await Promise.all(w.map((p) => p.proc.exited))).toEqual([0, 0]);
    expect(served(w[0]) + served(w[1])).toBe(12);
    // Every request was deleted once served, and the run's completions stream went with the run.
    const b = await Broker.connect(url, { log: () => undefined });
    try {
      expect(await b.length("requests")).toBe(0);
    } finally {
      b.close();
    }
  }, 300_000);
});

describe.skipIf(NO_REDIS !== null || !GPU)("bad messages", () => {
  test("a worker rejects each bad message with a log line and goes on serving", async () => {
    const model = join(ROOT, "bad-model");
    const { config } = makeTinyModel(model, { seed: 4 });
    const r = await startRedis(); // a broker of its own: nothing else in its streams
    const b = await Broker.connect(r.url, { log: () => undefined });
    const run = "t-bad";
    try {
      await b.announce({ kind: "weights", proto: 1, run, version: 1, dir: model, dtype: "f32", sizing: { maxBatch: 4, promptTokens: 16, newTokens: 4, prefillChunk: 64, vocabLimit: config.vocabSize } });
      const req = (over: Partial<RequestMsg>) => request({ run, version: 1, maxTokens: 4, ...over });
      await b.addRaw("requests", "{not json");
      await b.addRaw("requests", JSON.stringify({ ...req({ id: "p2" }), proto: 2 }));
      await b.publishRequests([req({ id: "other", run: "another-run" }), req({ id: "v7", version: 7 }), req({ id: "vocab", prompt: [1, 99999] }), req({ id: "good" })]);
      const w = siri("bad-worker", ["worker", "--broker", r.url, "--name", "bw"]);
      const { got, read } = completionReader(b, run);
      await until(async () => (await read()) === 1, 120_000, "the good request's completion");
      // A malformed announcement, then another request: served with the weights loaded.
      await b.addRaw("weights", '{"kind":"weights"');
      await b.publishRequests([req({ id: "good2" })]);
      await until(async () => (await read()) === 2, 60_000, "the second good request's completion");
      // The worker may have claimed that request before looking at the announcements again: it does on its next pass.
      await until(() => w.stderr().includes("rejected weight announcement"), 60_000, "the worker to reject the malformed announcement");
      w.proc.kill("SIGINT");
      expect(await w.proc.exited).toBe(0);
      expect(got.map((c) => [c.id, c.version, c.worker])).toEqual([
        ["good", 1, "bw"],
        ["good2", 1, "bw"],
      ]);
      for (const c of got) expect(c.tokens.length).toBeGreaterThanOrEqual(1);
      for (const c of got) expect(c.tokens.length).toBeLessThanOrEqual(4);
      const log = w.stderr();
      for (const line of [
        /worker bw: rejected request \S+: field m is not JSON/,
        /worker bw: rejected request \S+: proto is 2, this siri speaks message format 1/,
        /worker bw: rejected request \S+: request other is for run another-run, the announced run is t-bad/,
        /worker bw: rejected request \S+: request v7 wants version 7, the announced version is 1/,
        /worker bw: rejected request \S+: the engine refuses it: request vocab: prompt token 1 = 99999 is outside the vocabulary/,
        /worker bw: rejected weight announcement \S+: field m is not JSON/,
      ])
        expect(log).toMatch(line);
      expect(log).toContain("worker stopped: 2 completions, 5 requests rejected");
      expect(await b.length("requests")).toBe(0);
    } finally {
      b.close();
      r.stop();
    }
  }, 300_000);
});
