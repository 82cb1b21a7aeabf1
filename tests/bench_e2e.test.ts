// `siri bench` end to end: the harness with a scripted completion source
// (known answers, so avg@n / pass@k / maj@k have hand-computed values),
// resume after an interruption, compare's table and SVG, the CLI; then the
// same on a tiny random model through the GPU engine.
import { afterAll, describe, expect, test } from "bun:test";
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { DatasetSummary, SampleRecord, Summary } from "../src/bench/metrics.ts";
import { formatDuration, progressBar } from "../src/bench/progress.ts";
import { compare, readSamples } from "../src/bench/report.ts";
import { engineSource, runBench, type BenchCompletion, type BenchConfig, type BenchRequest, type CompletionSource, type Sampling } from "../src/bench/run.ts";
import { repeated } from "../src/commands/common.ts";
import { loadDataset } from "../src/data/download.ts";
import { renderPrompt } from "../src/data/prompt.ts";
import { loadModel } from "../src/engine/load.ts";
import { extractAnswer, gradeResponse } from "../src/grade/index.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { gpuOrSkip, hasGpu } from "./helpers.ts";

const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-bench-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));
const REPO = join(import.meta.dir, "..");
const FIXTURE = join(REPO, "datasets/fixtures/tiny.jsonl");
let dirCount = 0;
const freshDir = (tag: string) => join(ROOT, `${tag}-${dirCount++}`);

/**
 * Scripted responses for the first three fixture problems (golds 42, \frac{3}{4}, \sqrt{2}), n = 4.
 * [text, response tokens, stop reason].
 */
const SCRIPT: Record<string, [string, number, "stop" | "length"][]> = {
  "tiny/1": [
    ["So the product is \\boxed{42}.", 10, "stop"],
    ["I get \\boxed{41}.", 20, "stop"],
    ["I am not sure.", 30, "stop"],
    ["first \\boxed{7}, then \\boxed{42} and then the budget ran o", 40, "length"],
  ],
  "tiny/2": [
    ["\\boxed{0.7}", 11, "stop"],
    ["\\boxed{\\frac{6}{8}}", 21, "stop"],
    ["The answer is $\\boxed{0.75}$.", 31, "stop"],
    ["\\boxed{\\dfrac{3}{4}}", 41, "stop"],
  ],
  "tiny/3": [
    ["\\boxed{2}", 12, "stop"],
    ["", 22, "stop"],
    ["\\boxed{1.41}", 32, "stop"],
    ["\\boxed{-\\sqrt{2}}", 42, "stop"],
  ],
};
const PROMPT_TOKENS = 5;

/** A fake source: answers from SCRIPT, yielded out of order (odd ids first, then even, reversed). */
function scripted(seenSampling: Sampling[] = [], seenRequests: BenchRequest[][] = []): CompletionSource {
  return async function* (requests, sampling) {
    seenSampling.push(sampling);
    seenRequests.push(requests);
    const order = [...requests.filter((r) => r.id % 2 === 1), ...requests.filter((r) => r.id % 2 === 0).reverse()];
    for (const r of order) {
      const s = SCRIPT[r.problem.id];
      if (!s) throw new Error(`scripted source: no script for ${r.problem.id}`);
      const [text, responseTokens, stopReason] = s[r.sample];
      const c: BenchCompletion = { id: r.id, text, promptTokens: PROMPT_TOKENS, responseTokens, stopReason, maxTokens: r.maxTokens };
      yield c;
    }
  };
}

function fakeConfig(out: string, over: Partial<BenchConfig> = {}): BenchConfig {
  return { datasets: [FIXTURE], limit: 3, n: 4, maxTokens: 40, temperature: 0.6, topP: 0.95, topK: 0, seed: 0, afterThink: false, out, model: "scripted", ...over };
}

// Hand-computed expectations (pass@k = 1 - C(n-c,k)/C(n,k); maj@k over consecutive blocks, ties to the first seen).
// tiny/1: c = 2 -> pass@1 1/2, pass@2 1 - 1/6 = 5/6, pass@4 1; maj@2: [42,41] tie -> 42 ok, [-,42] ok -> 1; maj@4: 42 x2 -> 1.
// tiny/2: c = 3 (6/8, 0.75, 3/4) -> pass@1 3/4, pass@2 1, pass@4 1; maj@2: [0.7, 6/8] tie -> 0.7 wrong, [0.75, 3/4] ok -> 1/2;
//         maj@4: {6/8, 0.75, 3/4} is one cluster under the grader's equivalence (3 votes) -> 1. Plain text matching would give 0.
// tiny/3: c = 0 -> all 0.
const WANT = {
  pass_at_1: (0.5 + 0.75 + 0) / 3,
  pass_at_k: { "1": (0.5 + 0.75) / 3, "2": (5 / 6 + 1) / 3, "4": 2 / 3 },
  maj_at_k: { "1": (0.5 + 0.75) / 3, "2": (1 + 0.5) / 3, "4": 2 / 3 },
  mean_response_tokens: (10 + 20 + 30 + 40 + 11 + 21 + 31 + 41 + 12 + 22 + 32 + 42) / 12,
  median_response_tokens: (22 + 30) / 2,
  truncation_rate: 1 / 12,
  no_answer_rate: 2 / 12,
};

function expectSummary(d: DatasetSummary): void {
  expect(d.problems).toBe(3);
  expect(d.problems_scored).toBe(3);
  expect(d.problems_incomplete).toBe(0);
  expect(d.samples).toBe(12);
  expect([d.n_min, d.n_max]).toEqual([4, 4]);
  expect(d.pass_at_1).toBeCloseTo(WANT.pass_at_1, 12);
  expect(Object.keys(d.pass_at_k).sort()).toEqual(["1", "2", "4"]);
  for (const k of ["1", "2", "4"] as const) {
    expect(d.pass_at_k[k]).toBeCloseTo(WANT.pass_at_k[k], 12);
    expect(d.maj_at_k[k]).toBeCloseTo(WANT.maj_at_k[k], 12);
  }
  expect(d.mean_response_tokens).toBeCloseTo(WANT.mean_response_tokens, 12);
  expect(d.median_response_tokens).toBe(WANT.median_response_tokens);
  expect(d.truncation_rate).toBeCloseTo(WANT.truncation_rate, 12);
  expect(d.no_answer_rate).toBeCloseTo(WANT.no_answer_rate, 12);
}

const sortRecs = (rs: SampleRecord[]) => [...rs].sort((a, b) => (a.problem_id < b.problem_id ? -1 : a.problem_id > b.problem_id ? 1 : a.sample - b.sample));
const withoutTime = (s: Summary) => ({ ...s, created: "" });
const readJson = (p: string) => JSON.parse(readFileSync(p, "utf8"));

describe("bench harness with a scripted completion source", () => {
  test("grades each sample, writes samples.jsonl with every field, summary.json and report.md with the hand-computed metrics", async () => {
    const out = freshDir("scripted");
    const sampling: Sampling[] = [];
    const reqs: BenchRequest[][] = [];
    const r = await runBench(fakeConfig(out), scripted(sampling, reqs), { progress: false });
    expect(r.complete).toBe(true);
    expect([r.generated, r.resumed]).toEqual([12, 0]);
    // The source got every pair once, in one call (so the engine can keep its batch full), with the run's sampling.
    expect(reqs.length).toBe(1);
    expect(reqs[0].map((q) => `${q.problem.id}#${q.sample}`).sort()).toEqual(Object.keys(SCRIPT).flatMap((p) => [0, 1, 2, 3].map((s) => `${p}#${s}`)).sort());
    expect(sampling[0]).toEqual({ temperature: 0.6, topP: 0.95, topK: 0, seed: 0 });

    const file = readSamples(join(out, "samples.jsonl"));
    expect(file.records.length).toBe(12);
    const golds: Record<string, string> = { "tiny/1": "42", "tiny/2": "\\frac{3}{4}", "tiny/3": "\\sqrt{2}" };
    const wantExtracted: Record<string, (string | null)[]> = {
      "tiny/1": ["42", "41", null, "42"],
      "tiny/2": ["0.7", "\\frac{6}{8}", "0.75", "\\dfrac{3}{4}"],
      "tiny/3": ["2", null, "1.41", "-\\sqrt{2}"],
    };
    const wantCorrect: Record<string, boolean[]> = {
      "tiny/1": [true, false, false, true],
      "tiny/2": [false, true, true, true],
      "tiny/3": [false, false, false, false],
    };
    const keys = ["dataset", "problem_id", "sample", "tokens", "prompt_tokens", "response_tokens", "max_tokens", "stop_reason", "extracted", "correct", "gold", "response"];
    for (const rec of file.records) {
      expect(Object.keys(rec).sort()).toEqual([...keys].sort());
      const [text, len, stop] = SCRIPT[rec.problem_id][rec.sample];
      expect(rec.dataset).toBe("tiny");
      expect(rec.response).toBe(text);
      expect(rec.response_tokens).toBe(len);
      expect(rec.prompt_tokens).toBe(PROMPT_TOKENS);
      expect(rec.tokens).toBe(PROMPT_TOKENS + len);
      expect(rec.max_tokens).toBe(40);
      expect(rec.stop_reason).toBe(stop);
      expect(rec.gold).toBe(golds[rec.problem_id]);
      expect(rec.extracted).toBe(wantExtracted[rec.problem_id][rec.sample]);
      expect(rec.correct).toBe(wantCorrect[rec.problem_id][rec.sample]);
    }

    const summary = readJson(join(out, "summary.json")) as Summary;
    expect(summary.datasets.length).toBe(1);
    expectSummary(summary.datasets[0]);
    expectSummary(summary.overall);
    const p2 = summary.problems.find((p) => p.problem_id === "tiny/2")!;
    expect([p2.correct, p2.majority_correct]).toEqual([3, true]);
    expect(r.summary.datasets[0].pass_at_1).toBe(summary.datasets[0].pass_at_1);

    const report = readFileSync(join(out, "report.md"), "utf8");
    expect(r.report).toBe(report);
    // pass@1 41.7, pass@2 61.1, pass@4 66.7, maj@2 50.0, maj@4 66.7, mean 26, median 26, truncated 8.3, no answer 16.7;
    // SE over the problems' avg@n (.5, .75, 0): sqrt(((1/12)^2 + (1/3)^2 + (5/12)^2) / 2 / 3) = 0.2205
    expect(report).toContain("| tiny | 3 | 4 | 41.7 | 22.0 | 61.1 | 66.7 | 50.0 | 66.7 | 26 | 26 | 8.3 | 16.7 |");
    expect(report).toContain("| problem | correct / n | mean tokens | truncated |\n|---|---|---|---|\n| tiny/1 | 2 / 4 | 25 | 1 |\n| tiny/2 | 3 / 4 | 26 | 0 |\n| tiny/3 | 0 / 4 | 27 | 0 |");
    const cfg = readJson(join(out, "run.json"));
    expect(cfg).toMatchObject({ model: "scripted", n: 4, max_tokens: 40, temperature: 0.6, top_p: 0.95, seed: 0, limit: 3, after_think: false });
  });

  test("after-think takes the answer only after </think>", async () => {
    const out = freshDir("think");
    const texts = ["<think>maybe \\boxed{42}</think> so \\boxed{41}", "<think>it is \\boxed{42}</think>The answer is \\boxed{42}.", "<think>still thinking \\boxed{42}"];
    const src: CompletionSource = async function* (requests) {
      for (const r of requests) yield { id: r.id, text: texts[r.sample], promptTokens: 1, responseTokens: 3, stopReason: "stop", maxTokens: r.maxTokens };
    };
    const r = await runBench(fakeConfig(out, { limit: 1, n: 3, afterThink: true }), src, { progress: false });
    const recs = sortRecs(readSamples(join(out, "samples.jsonl")).records);
    expect(recs.map((x) => [x.extracted, x.correct])).toEqual([
      ["41", false],
      ["42", true],
      [null, false],
    ]);
    expect(r.summary.overall.pass_at_1).toBeCloseTo(1 / 3, 12);
  });

  test("resume after an interruption: each pair exactly once, same summary as an uninterrupted run", async () => {
    const full = freshDir("full");
    const a = await runBench(fakeConfig(full), scripted(), { progress: false });
    const part = freshDir("part");
    const seen: number[] = [];
    const b1 = await runBench(fakeConfig(part), scripted(), { progress: false, maxSamples: 5, onSample: (_r, done) => seen.push(done) });
    expect(seen).toEqual([1, 2, 3, 4, 5]);
    expect(b1.complete).toBe(false);
    expect(b1.generated).toBe(5);
    expect(readSamples(join(part, "samples.jsonl")).records.length).toBe(5);
    // The partial summary says it is unfinished.
    expect(b1.summary.datasets[0].samples).toBe(5);
    expect(b1.summary.datasets[0].problems_incomplete + (3 - b1.summary.datasets[0].problems_scored)).toBeGreaterThan(0);
    expect(b1.report).toContain("Unfinished");
    // A crash mid-write leaves a torn last line; the resume drops it.
    appendFileSync(join(part, "samples.jsonl"), '{"dataset":"tiny","problem_id":"tiny/3","sam');
    const reqs: BenchRequest[][] = [];
    const b2 = await runBench(fakeConfig(part), scripted([], reqs), { progress: false });
    expect([b2.generated, b2.resumed, b2.complete]).toEqual([7, 5, true]);
    expect(reqs[0].length).toBe(7); // only the missing pairs were asked for
    const recs = readSamples(join(part, "samples.jsonl")).records;
    expect(recs.length).toBe(12);
    expect(new Set(recs.map((x) => `${x.problem_id}#${x.sample}`)).size).toBe(12);
    expect(sortRecs(recs)).toEqual(sortRecs(readSamples(join(full, "samples.jsonl")).records));
    expect(withoutTime(b2.summary)).toEqual(withoutTime(a.summary));
    expect(withoutTime(readJson(join(part, "summary.json")))).toEqual(withoutTime(readJson(join(full, "summary.json"))));
    // A third run has nothing to do and never calls the source.
    const b3 = await runBench(fakeConfig(part), () => {
      throw new Error("source called on a finished run");
    }, { progress: false });
    expect([b3.generated, b3.resumed]).toEqual([0, 12]);
  });

  test("an aborted signal stops after the sample in flight", async () => {
    const out = freshDir("abort");
    const ac = new AbortController();
    const r = await runBench(fakeConfig(out), scripted(), { progress: false, onSample: (_r, done) => done === 3 && ac.abort(), signal: ac.signal });
    expect([r.generated, r.complete]).toEqual([3, false]);
  });

  test("resuming with other settings, bad settings, unknown datasets and a misbehaving source are clear errors", async () => {
    const out = freshDir("refuse");
    await runBench(fakeConfig(out), scripted(), { progress: false, maxSamples: 2 });
    await expect(runBench(fakeConfig(out, { n: 8 }), scripted(), { progress: false })).rejects.toThrow(/other settings \(n: 4 -> 8\)/);
    await expect(runBench(fakeConfig(out, { seed: 1 }), scripted(), { progress: false })).rejects.toThrow(/seed: 0 -> 1/);
    await expect(runBench(fakeConfig(freshDir("x"), { n: 0 }), scripted(), { progress: false })).rejects.toThrow(/n \(samples per problem\)/);
    await expect(runBench(fakeConfig(freshDir("x"), { topP: 0 }), scripted(), { progress: false })).rejects.toThrow(/top-p/);
    await expect(runBench(fakeConfig(freshDir("x"), { datasets: [] }), scripted(), { progress: false })).rejects.toThrow(/no dataset/);
    await expect(runBench(fakeConfig(freshDir("x"), { datasets: [join(ROOT, "missing.jsonl")] }), scripted(), { progress: false })).rejects.toThrow(/missing\.jsonl.*no such file/);
    await expect(runBench(fakeConfig(freshDir("x"), { datasets: ["aime24"], datasetDir: join(ROOT, "empty-cache") }), scripted(), { progress: false })).rejects.toThrow(
      /aime24.*datasets download aime24/,
    );
    const twice: CompletionSource = async function* (requests) {
      const c = { id: requests[0].id, text: "", promptTokens: 1, responseTokens: 1, stopReason: "stop" as const, maxTokens: 1 };
      yield c;
      yield c;
    };
    await expect(runBench(fakeConfig(freshDir("x")), twice, { progress: false })).rejects.toThrow(/returned request 0 twice/);
  });

  test("datasets with one stem in two formats are told apart; ids per dataset", async () => {
    const out = freshDir("two");
    const fx = (e: string) => join(REPO, `datasets/fixtures/tiny.${e}`);
    const r = await runBench(fakeConfig(out, { datasets: [fx("jsonl"), fx("parquet")] }), scripted(), { progress: false });
    expect(r.summary.datasets.map((d) => d.name)).toEqual(["tiny", "tiny.parquet"]);
    expect(r.summary.overall.samples).toBe(24);
    expectSummary(r.summary.datasets[1]);
    expect(r.summary.overall.pass_at_1).toBeCloseTo(WANT.pass_at_1, 12);
    expect(r.report).toContain("| overall | 6 | 4 |");
  });

  test("compare prints runs side by side and writes the accuracy-vs-tokens SVG", async () => {
    const a = freshDir("cmpA");
    const b = freshDir("cmpB");
    await runBench(fakeConfig(a, { name: "run-a" }), scripted(), { progress: false });
    // Run B: every answer right, a different length.
    const right: CompletionSource = async function* (requests) {
      const golds: Record<string, string> = { "tiny/1": "42", "tiny/2": "3/4", "tiny/3": "\\sqrt{2}" };
      for (const r of requests) yield { id: r.id, text: `\\boxed{${golds[r.problem.id]}}`, promptTokens: 5, responseTokens: 100, stopReason: "stop", maxTokens: r.maxTokens };
    };
    await runBench(fakeConfig(b, { name: "run-b" }), right, { progress: false });
    const svgPath = join(ROOT, "cmp.svg");
    const c = compare([a, b], svgPath);
    expect(c.table).toContain("| run-a | 41.7 ± 22.0 / 26 |");
    expect(c.table).toContain("| run-b | 100.0 ± 0.0 / 100 |");
    const svg = readFileSync(svgPath, "utf8");
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg).toContain(`data-run="run-a" data-dataset="tiny" data-accuracy="${WANT.pass_at_1}" data-tokens="26"`);
    expect(svg).toContain(`data-run="run-b" data-dataset="tiny" data-accuracy="1" data-tokens="100"`);

    // The same through the CLI (bench's compare subcommand; no GPU needed).
    const svg2 = join(ROOT, "cmp-cli.svg");
    const p = Bun.spawnSync([process.execPath, "src/cli.ts", "bench", "compare", a, b, "--svg", svg2], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
    expect(p.exitCode).toBe(0);
    expect(p.stdout.toString()).toContain("| run-b | 100.0 ± 0.0 / 100 |");
    expect(readFileSync(svg2, "utf8")).toBe(svg);
    // Without --out the plot goes beside the runs, not into the current directory.
    const q = Bun.spawnSync([process.execPath, "src/cli.ts", "bench", "compare", a, b], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
    expect(q.exitCode).toBe(0);
    expect(readFileSync(join(dirname(a), "compare.svg"), "utf8")).toBe(svg);
    expect(existsSync(join(REPO, "compare.svg"))).toBe(false);
  }, 60_000);

  test("CLI errors: missing model, missing dataset flag, unknown preset", () => {
    const run = (args: string[]) => {
      const p = Bun.spawnSync([process.execPath, "src/cli.ts", "bench", ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
      return { code: p.exitCode, text: p.stdout.toString() + p.stderr.toString() };
    };
    const noModel = run(["--model", join(ROOT, "no-model"), "--dataset", "aime24"]);
    expect(noModel.code).not.toBe(0);
    expect(noModel.text).toContain("no-model: no config.json");
    const model = join(ROOT, "cli-model");
    makeTinyModel(model);
    const noData = run(["--model", model]);
    expect(noData.code).not.toBe(0);
    expect(noData.text).toContain("--dataset is required");
    const badData = run(["--model", model, "--dataset", join(ROOT, "none.jsonl"), "--out", freshDir("cli")]);
    expect(badData.code).not.toBe(0);
    expect(badData.text).toContain("none.jsonl\": not a preset");
    const badPreset = run(["--model", model, "--dataset", FIXTURE, "--preset", "fast"]);
    expect(badPreset.code).not.toBe(0);
    expect(badPreset.text).toContain('unknown preset "fast"');
  }, 60_000);

  test("repeated --dataset flags and comma lists", () => {
    expect(repeated(["--dataset", "aime24,aime25", "--n", "4", "--dataset=math500", "--", "--dataset", "x"], "dataset")).toEqual(["aime24", "aime25", "math500"]);
    expect(() => repeated(["--dataset"], "dataset")).toThrow(/--dataset: expected a value/);
  });
});

describe("progress bar", () => {
  test("plain lines off a TTY, at most one per interval, with rate and ETA", () => {
    const lines: string[] = [];
    let t = 0;
    const bar = progressBar("bench", 10, 2, { unit: "samples", stream: { write: (s: string) => lines.push(s), isTTY: false }, intervalMs: 1000, now: () => t });
    t = 2000;
    bar.tick(2); // 4/10, 2 fresh in 2 s = 1/s, 6 left -> 6 s
    t = 2500;
    bar.tick(1); // within the interval: no line
    bar.done("12 tok/s");
    expect(lines[0]).toBe("bench 4/10 samples (40.0%) 1.00 samples/s, elapsed 2s, ETA 6s\n");
    expect(lines.length).toBe(2);
    expect(lines[1]).toBe("bench 5/10 samples (50.0%) 1.20 samples/s, elapsed 3s, ETA 4s, 12 tok/s\n");
  });

  test("redraws in place on a TTY", () => {
    let out = "";
    let t = 0;
    const bar = progressBar("x", 4, 0, { stream: { write: (s: string) => (out += s), isTTY: true, columns: 200 }, intervalMs: 0, now: () => t });
    t = 1000;
    bar.tick(4);
    bar.done();
    expect(out.startsWith("\r\x1b[2Kx [########################] 4/4")).toBe(true);
    expect(out.endsWith("\n")).toBe(true);
    expect(out.split("\n").length).toBe(2);
  });

  test("durations", () => {
    expect([formatDuration(5), formatDuration(185), formatDuration(3725), formatDuration(NaN)]).toEqual(["5s", "3m05s", "1h02m", "?"]);
  });
});

describe.skipIf(!GPU)("bench on a tiny model through the GPU engine", () => {
  const modelDir = join(ROOT, "tiny-model");
  makeTinyModel(modelDir, { seed: 5 });

  test("samples, grades and reports; counts, lengths and prompts are right", async () => {
    const gpu = await gpuOrSkip();
    const m = await loadModel(gpu, modelDir, "f32");
    const out = freshDir("gpu");
    try {
      const cfg = fakeConfig(out, { model: modelDir, n: 3, maxTokens: 10, limit: 3, seed: 11 });
      const r = await runBench(cfg, engineSource(m, { maxBatch: 4 }), { progress: false });
      expect([r.generated, r.complete]).toEqual([9, true]);
      const recs = readSamples(join(out, "samples.jsonl")).records;
      expect(recs.length).toBe(9);
      const problems = (await loadDataset(FIXTURE, { limit: 3 })).problems;
      const tok = m.tokenizer;
      for (const p of problems) {
        const mine = recs.filter((x) => x.problem_id === p.id);
        expect(mine.map((x) => x.sample).sort()).toEqual([0, 1, 2]);
        const promptLen = tok.encode(renderPrompt(p.problem, tok.chatTemplate!, { bos_token: tok.bosToken, eos_token: tok.eosToken })).length;
        for (const x of mine) {
          expect(x.prompt_tokens).toBe(promptLen);
          expect(x.tokens).toBe(promptLen + x.response_tokens);
          expect(x.response_tokens).toBeGreaterThanOrEqual(1);
          expect(x.response_tokens).toBeLessThanOrEqual(10);
          expect(x.max_tokens).toBe(10);
          // Shorter than the cap only by stopping at EOS.
          if (x.response_tokens < 10) expect(x.stop_reason).toBe("stop");
          expect(["stop", "length"]).toContain(x.stop_reason as string);
          expect(x.gold).toBe(p.answer);
          // The harness graded the text it recorded.
          const g = gradeResponse(x.response as string, p.answer);
          expect([x.extracted, x.correct]).toEqual([g.extracted, g.correct]);
          expect(x.extracted).toBe(extractAnswer(x.response as string));
        }
      }
      const summary = readJson(join(out, "summary.json")) as Summary;
      expect(summary.overall.samples).toBe(9);
      expect(summary.overall.problems_scored).toBe(3);
      const lens = recs.map((x) => x.response_tokens);
      expect(summary.overall.mean_response_tokens).toBeCloseTo(lens.reduce((a, b) => a + b, 0) / 9, 12);
      expect(summary.overall.truncation_rate).toBeCloseTo(recs.filter((x) => x.stop_reason === "length").length / 9, 12);
      expect(existsSync(join(out, "report.md"))).toBe(true);
    } finally {
      m.model.destroy();
    }
  }, 60_000);

  test("a sampled run is reproducible for the same seed and settings; another seed draws other tokens", async () => {
    const gpu = await gpuOrSkip();
    const m = await loadModel(gpu, modelDir, "f32");
    try {
      const cfg = (out: string, seed: number) => fakeConfig(out, { model: modelDir, n: 2, maxTokens: 8, limit: 3, seed, temperature: 1 });
      const texts = async (seed: number) => {
        const out = freshDir(`seed${seed}`);
        await runBench(cfg(out, seed), engineSource(m, { maxBatch: 4 }), { progress: false });
        return sortRecs(readSamples(join(out, "samples.jsonl")).records).map((x) => x.response);
      };
      const a = await texts(3);
      const b = await texts(3);
      const c = await texts(4);
      expect(a.length).toBe(6);
      expect(b).toEqual(a);
      expect(c).not.toEqual(a);
    } finally {
      m.model.destroy();
    }
  }, 60_000);

  test("resume after an interruption gives exactly the uninterrupted run, greedy and sampled", async () => {
    // Each sample draws from its own stream (seed, hash of dataset/problem/sample, token index),
    // so the resumed samples, generated in another batch (other companions, another max batch),
    // must be token for token those of the uninterrupted run.
    const gpu = await gpuOrSkip();
    const m = await loadModel(gpu, modelDir, "f32");
    try {
      for (const temperature of [0, 1]) {
        const cfg = (out: string) => fakeConfig(out, { model: modelDir, n: 2, maxTokens: 8, limit: 3, temperature, seed: 7 });
        const full = freshDir(`full-t${temperature}`);
        const a = await runBench(cfg(full), engineSource(m, { maxBatch: 4 }), { progress: false });
        const part = freshDir(`part-t${temperature}`);
        const b1 = await runBench(cfg(part), engineSource(m, { maxBatch: 4 }), { progress: false, maxSamples: 2 });
        expect([b1.generated, b1.complete]).toEqual([2, false]);
        const b2 = await runBench(cfg(part), engineSource(m, { maxBatch: 3 }), { progress: false });
        expect([b2.generated, b2.resumed, b2.complete]).toEqual([4, 2, true]);
        const recsB = readSamples(join(part, "samples.jsonl")).records;
        expect(recsB.length).toBe(6);
        expect(new Set(recsB.map((x) => `${x.problem_id}#${x.sample}`)).size).toBe(6);
        const recsA = readSamples(join(full, "samples.jsonl")).records;
        expect(sortRecs(recsB)).toEqual(sortRecs(recsA));
        expect(withoutTime(b2.summary)).toEqual(withoutTime(a.summary));
        // Sampled at T = 1, the samples of one problem differ (their streams differ).
        if (temperature === 1) expect(new Set(recsA.map((x) => x.response)).size).toBeGreaterThan(3);
      }
    } finally {
      m.model.destroy();
    }
  }, 60_000);

  test("siri bench through the CLI writes the run folder and prints the summary; a rerun resumes", () => {
    const out = freshDir("cli-gpu");
    const args = ["src/cli.ts", "bench", "--model", modelDir, "--dataset", FIXTURE, "--limit", "2", "--n", "2", "--max-tokens", "8", "--out", out, "--dtype", "f32"];
    const p = Bun.spawnSync([process.execPath, ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
    expect(p.exitCode).toBe(0);
    expect(p.stdout.toString()).toContain("| tiny | 2 | 2 |");
    expect(p.stderr.toString()).toContain("4 new sample(s), 0 already done");
    expect(readSamples(join(out, "samples.jsonl")).records.length).toBe(4);
    for (const f of ["run.json", "summary.json", "report.md"]) expect(existsSync(join(out, f))).toBe(true);
    const again = Bun.spawnSync([process.execPath, ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
    expect(again.exitCode).toBe(0);
    expect(again.stderr.toString()).toContain("0 new sample(s), 4 already done");
    expect(again.stderr.toString()).not.toContain("sample(s) to generate"); // the GPU was not even opened
  }, 240_000);
});
