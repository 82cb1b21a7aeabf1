// Distributed rollouts over a Redis broker: the message checks, the visibility timeout, and a learner with
// worker processes on the software adapter giving the very weights of a single-process run, even when a
// worker is SIGKILLed in the middle of a step.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readSamples } from "../src/bench/report.ts";
import { Broker, checkMsg, type RequestMsg } from "../src/dist/broker.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { loadCheckpoint } from "../src/train/checkpoint.ts";
import { hasGpu } from "./helpers.ts";
import { redisMissing, startRedis, startSiri, type RedisServer, type WorkerProc } from "./redis.ts";

const NO_REDIS = redisMissing();
const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-dist-"));
let redis: RedisServer | null = null;
beforeAll(async () => {
  if (!NO_REDIS) redis = await startRedis();
});
afterAll(() => {
  for (const p of procs) p.proc.kill("SIGKILL");
  redis?.stop();
  rmSync(ROOT, { recursive: true, force: true });
});

const request = (over: Partial<RequestMsg> = {}): RequestMsg => ({
  kind: "request",
  proto: 1,
  run: "r1",
  version: 0,
  id: "0.0.0",
  prompt: [1, 2, 3],
  maxTokens: 4,
  stop: [0],
  key: 0,
  sampling: { temperature: 1, topP: 1, topK: 0, seed: 7 },
  ...over,
});

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
    const engine = { maxBatch: 4, maxSeqLen: 64, cacheTokens: 256, blockSize: 16, prefillChunk: 64 };
    const sizing = { maxBatch: 4, promptTokens: 30, newTokens: 8, prefillChunk: 256 };
    const weights = { kind: "weights", proto: 1, run: "r", version: 1, dir: "/x", dtype: "f16" };
    expect(checkMsg("weights", { ...weights, engine })).toBeNull();
    expect(checkMsg("weights", { ...weights, dtype: "auto", sizing })).toBeNull();
    expect(checkMsg("weights", { ...weights, dtype: "bf16", engine })).toMatch(/^dtype/);
    expect(checkMsg("weights", { ...weights, engine, sizing })).toMatch(/^engine or sizing/);
    expect(checkMsg("weights", weights)).toMatch(/^engine or sizing/);
    expect(checkMsg("weights", { ...weights, engine: { ...engine, cacheTokens: 0 } })).toMatch(/^engine:/);
    expect(checkMsg("weights", { ...weights, sizing: { ...sizing, newTokens: 1.5 } })).toMatch(/^sizing:/);
    expect(checkMsg("request", null)).toBe("not a JSON object");
  });

  test("each request goes to one worker; one left pending past the timeout goes to another; bad payloads come back as errors", async () => {
    const a = await Broker.connect(redis!.url, { prefix: "claims", log: () => undefined });
    const b = await Broker.connect(redis!.url, { prefix: "claims", log: () => undefined });
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
});

/**
 * 2 steps of 2 prompts x 4 rollouts on the tiny model, caps of a few tokens. A short warm start teaches it to
 * stop sometimes, and DAPO's soft overlong punishment makes the rewards differ by length, so an update moves the weights.
 */
const CONFIG = {
  model: "tiny:tiny",
  steps: 2,
  promptsPerStep: 2,
  groupSize: 4,
  schedule: { kind: "constant", cap: 12 },
  warmStart: { steps: 6, batchSize: 4, lr: 1e-2 },
  validation: { problems: 2 },
  checkpoint: { every: 2, keepLast: 2 },
  optim: { lr: 3e-2 },
  dapo: { softOverlong: true, overlongCache: 1 },
};

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

const procs: WorkerProc[] = [];
function siri(name: string, args: string[], env: Record<string, string> = {}): WorkerProc {
  const p = startSiri(ROOT, name, args, env);
  procs.push(p);
  return p;
}
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
    const url = redis!.url;
    const w = [worker(url, "w1", ["--batch", "4"]), worker(url, "w2", ["--batch", "4"])];
    const learner = siri("learner", [...trainArgs(join(ROOT, "two")), "--broker", url]);
    expect(await learner.proc.exited).toBe(0);
    expect(rounds(learner.stderr())).toEqual([
      { got: 8, distinct: 8, dups: 0 },
      { got: 8, distinct: 8, dups: 0 },
    ]);
    expect(sameWeights(weights(single, 2), weights(join(ROOT, "two"), 2))).toBe(true);
    for (const p of w) p.proc.kill("SIGINT");
    expect(await Promise.all(w.map((p) => p.proc.exited))).toEqual([0, 0]);
    const served = w.map((p) => Number(/worker stopped: (\d+) completions/.exec(p.stderr())?.[1]));
    expect(served[0] + served[1]).toBe(16);
  }, 300_000);

  test("a worker SIGKILLed mid-step: another takes its requests after the timeout; nothing lost, nothing trained twice", async () => {
    const url = redis!.url;
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
    expect(Number(/worker stopped: (\d+) completions/.exec(k2.stderr())?.[1])).toBe(8 - 2 + 8);
  }, 300_000);
});

/** report.md without its "Summarised <date>" line. */
const reportBody = (dir: string) =>
  readFileSync(join(dir, "report.md"), "utf8")
    .split("\n")
    .filter((l) => !l.startsWith("Summarised "))
    .join("\n");
const sortedSamples = (dir: string) => readSamples(join(dir, "samples.jsonl")).records.sort((a, b) => a.problem_id.localeCompare(b.problem_id) || a.sample - b.sample);
const served = (p: WorkerProc) => Number(/worker stopped: (\d+) completions/.exec(p.stderr())?.[1]);

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
    const url = redis!.url;
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
