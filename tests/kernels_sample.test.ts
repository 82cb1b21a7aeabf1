// Sampling kernel (kernels/sample.wgsl): greedy, temperature, top-k, top-p.
// Exactness against the CPU reference, goodness of fit of the draws against
// the exact (f64) distributions, reproducibility and independence of the RNG.
import { describe, expect, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import {
  loadSampler,
  logitKey,
  sampleRef,
  sampleUniform,
  samplingDistribution,
  type SampleOptions,
  type Sampler,
} from "../src/kernels/sample.ts";
import { expectClose, gpuOrSkip, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
// Per-test limit: the first test also compiles the pipelines (seconds on a
// cold software adapter), and 20k-row dispatches take seconds there.
const SLOW = 120_000;

// ---------------------------------------------------------------- statistics

/** ln Γ(a) for a a positive multiple of 1/2 (all chi-square needs), exactly. */
function lnGammaHalf(a: number): number {
  if (!Number.isInteger(2 * a) || a <= 0) throw new Error(`lnGammaHalf: ${a} is not a positive multiple of 1/2`);
  let s = Number.isInteger(a) ? 0 : 0.5 * Math.log(Math.PI); // Γ(1) = 1, Γ(1/2) = √π
  for (let x = Number.isInteger(a) ? 1 : 0.5; x < a; x += 1) s += Math.log(x);
  return s;
}

/** Upper regularised incomplete gamma Q(a, x): series below a+1, continued fraction above. */
function gammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  const front = Math.exp(-x + a * Math.log(x) - lnGammaHalf(a));
  if (x < a + 1) {
    let term = 1 / a;
    let sum = term;
    for (let n = 1; n < 10000 && term > sum * 1e-16; n++) {
      term *= x / (a + n);
      sum += term;
    }
    return 1 - sum * front;
  }
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 10000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-16) break;
  }
  return front * h;
}

/** The chi-square critical value: P(X >= x) = alpha for df degrees of freedom (bisection). */
function chiSquareCritical(df: number, alpha: number): number {
  let lo = 0;
  let hi = 10 * df + 100;
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2;
    if (gammaQ(df / 2, mid / 2) > alpha) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** Significance level of every goodness-of-fit test here. */
const ALPHA = 1e-4;

/**
 * Pearson's chi-square of token counts against probabilities `p`. Tokens of
 * probability 0 must never be drawn. Cells expected below 5 are pooled.
 */
function chiSquareFit(tokens: Uint32Array, p: Float64Array, what: string): { stat: number; df: number; crit: number } {
  const n = tokens.length;
  const counts = new Float64Array(p.length);
  for (const t of tokens) {
    if (t >= p.length) throw new Error(`${what}: token ${t} out of range 0..${p.length - 1}`);
    if (p[t] === 0) throw new Error(`${what}: drew token ${t}, which has probability 0 (outside the kept set)`);
    counts[t]++;
  }
  // Pool every cell expected below 5 draws, then (if the pool is still
  // short) the next smallest cells until it expects at least 5.
  const order = [...p.keys()].filter((i) => p[i] > 0).sort((a, b) => p[a] - p[b]);
  const cells: [number, number][] = [];
  let poolObs = 0;
  let poolExp = 0;
  let pooled = 0;
  for (const i of order) {
    if (n * p[i] < 5 || (pooled > 0 && poolExp < 5)) {
      poolObs += counts[i];
      poolExp += n * p[i];
      pooled++;
    } else cells.push([counts[i], n * p[i]]);
  }
  if (pooled > 0) {
    if (poolExp < 5) throw new Error(`${what}: all cells pooled expect only ${poolExp} < 5 draws; use more draws`);
    cells.push([poolObs, poolExp]);
  }
  const df = cells.length - 1;
  if (df < 2) throw new Error(`${what}: only ${cells.length} cells; the test would be too weak`);
  let stat = 0;
  for (const [o, e] of cells) stat += ((o - e) * (o - e)) / e;
  return { stat, df, crit: chiSquareCritical(df, ALPHA) };
}

/** Exact log-softmax of a row at temperature T (f64), the logp the trainer needs. */
function logSoftmaxF64(row: Float32Array, T: number): Float64Array {
  let m = -Infinity;
  for (const x of row) m = Math.max(m, x);
  let z = 0;
  for (const x of row) z += Math.exp((x - m) / T);
  const out = new Float64Array(row.length);
  for (let j = 0; j < row.length; j++) out[j] = (row[j] - m) / T - Math.log(z);
  return out;
}

// A fixed 24-entry logit vector; ranks 5 and 6 are tied (2.0), so top-k = 5
// keeps six tokens (HF keeps every token tied with the k-th).
const FIXED = new Float32Array([
  0.5, 2.6, -1.0, 1.2, 2.0, -0.3, 0.9, 3.0, -2.0, 1.7, 0.1, -0.7, 2.0, 1.4, -1.5, 0.3, 2.3, -0.1, 0.7, 1.0, -2.5, 0.2, 2.1,
  -0.4,
]);

function tile(row: Float32Array, B: number): Float32Array {
  const out = new Float32Array(B * row.length);
  for (let r = 0; r < B; r++) out.set(row, r * row.length);
  return out;
}

/** Run the sampler once on `logits` [B, V]; one batch, one submit. */
async function runSample(
  gpu: Gpu,
  s: Sampler,
  logits: Float32Array,
  B: number,
  V: number,
  opts: StepOptions,
): Promise<{ tokens: Uint32Array; logp: Float32Array }> {
  const L = gpu.buffer(logits, "sample-logits");
  const T = gpu.buffer(B * 4, "sample-tokens");
  const P = gpu.buffer(B * 4, "sample-logp");
  const S = gpu.buffer(rowStreams(B, opts.step), "sample-streams");
  try {
    const b = gpu.batch();
    s.sample(b, L, T, P, B, V, opts, S);
    b.submit();
    return { tokens: await gpu.readU32(T, B), logp: await gpu.readF32(P, B) };
  } finally {
    L.destroy();
    T.destroy();
    P.destroy();
    S.destroy();
  }
}

/** Options with a decoding step: row r draws from the stream (key r, index step). */
type StepOptions = SampleOptions & { step: number };
const opt = (o: Partial<StepOptions>): StepOptions => ({ temperature: 1, topK: 0, topP: 1, seed: 1234, step: 0, ...o });
/** Streams [B, 2] = (row, step): request key = row, token index = step. */
function rowStreams(B: number, step: number): Uint32Array {
  const s = new Uint32Array(2 * B);
  for (let r = 0; r < B; r++) s.set([r, step], 2 * r);
  return s;
}

// ---------------------------------------------------------------- CPU-only checks

describe("sampling statistics helpers (CPU)", () => {
  test("chi-square critical values match the published table", () => {
    // Standard table values (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.4).
    expect(chiSquareCritical(1, 0.05)).toBeCloseTo(3.841, 3);
    expect(chiSquareCritical(10, 0.001)).toBeCloseTo(29.588, 3);
    expect(chiSquareCritical(5, 0.01)).toBeCloseTo(15.086, 3);
    expect(chiSquareCritical(30, 0.001)).toBeCloseTo(59.703, 2);
  });

  test("the fixed vector's truncated distributions are what the tests claim", () => {
    const k = samplingDistribution(FIXED, opt({ topK: 5 }));
    expect([...k].filter((x) => x > 0).length).toBe(6); // tie at rank 5/6 kept
    const p = samplingDistribution(FIXED, opt({ topP: 0.7 }));
    const kept = [...p].filter((x) => x > 0).length;
    expect(kept).toBeGreaterThanOrEqual(4);
    expect(kept).toBeLessThan(FIXED.length);
  });

  test("logit key preserves order and folds -0 onto +0", () => {
    const xs = [-Infinity, -1e30, -2.5, -1e-40, 0, 1e-40, 1, 3.5, 1e30, Infinity];
    for (let i = 1; i < xs.length; i++) expect(logitKey(xs[i]) > logitKey(xs[i - 1])).toBe(true);
    expect(logitKey(-0)).toBe(logitKey(0));
  });

  test("the CPU reference draws from the exact truncated distribution", () => {
    const B = 20480;
    for (const o of [opt({ topK: 5, step: 9 }), opt({ topP: 0.7, temperature: 0.8, step: 10 })]) {
      const { tokens } = sampleRef(tile(FIXED, B), B, FIXED.length, o, rowStreams(B, o.step));
      const fit = chiSquareFit(tokens, samplingDistribution(FIXED, o), `sampleRef ${JSON.stringify(o)}`);
      expect(fit.stat).toBeLessThan(fit.crit);
    }
  });

  test("bad options are rejected, naming the field", () => {
    const x = new Float32Array(4);
    expect(() => sampleRef(x, 1, 4, opt({ topP: 0 }), rowStreams(1, 0))).toThrow(/topP/);
    expect(() => sampleRef(x, 1, 4, opt({ topP: 1.5 }), rowStreams(1, 0))).toThrow(/topP/);
    expect(() => sampleRef(x, 1, 4, opt({ temperature: -1 }), rowStreams(1, 0))).toThrow(/temperature/);
    expect(() => sampleRef(x, 1, 4, opt({ temperature: NaN }), rowStreams(1, 0))).toThrow(/temperature/);
    expect(() => sampleRef(x, 1, 4, opt({ topK: 1.5 }), rowStreams(1, 0))).toThrow(/topK/);
    expect(() => sampleRef(x, 1, 4, opt({ seed: -1 }), rowStreams(1, 0))).toThrow(/seed/);
    expect(() => sampleRef(x, 1, 4, opt({}), rowStreams(2, 0))).toThrow(/streams/);
    expect(() => sampleRef(x, 2, 4, opt({}), rowStreams(2, 0))).toThrow(/B\*V/);
  });
});

// ---------------------------------------------------------------- GPU

// Both reduction variants (kernels/sample.wgsl: shared-memory trees, and subgroups first). The
// subgroup variant runs the reference, greedy, top-p fit, full-vocabulary, masked and
// seed tests; the rest (statistics across steps, padding, splitting, checks of the
// wrapper) do not depend on how a workgroup reduces and run once.
for (const subgroups of [false, true]) {
describe.skipIf(!GPU)(`sample kernel${subgroups ? ", subgroup reductions" : ""}`, () => {
  let sampler: Sampler | null = null;
  const getSampler = async (): Promise<Sampler> => (sampler ??= await loadSampler(await gpuOrSkip(), { subgroups }));
  /** A test both variants run, or (`once`) only the tree variant. */
  const both = test;
  const once = (name: string, fn: () => Promise<void>, ms?: number) => {
    if (!subgroups) test(name, fn, ms);
  };

  test("greedy = first argmax, logp = log-softmax, ties included", async () => {
    const gpu = await gpuOrSkip();
    const s = await getSampler();
    for (const V of [1000, 5000]) {
      const B = 48;
      const x = randn(B * V, 11 + V, 4);
      // Plant ties on the max: every third row has the max twice, every fifth
      // row has it at three places, the first being the smaller index.
      for (let r = 0; r < B; r++) {
        const row = x.subarray(r * V, (r + 1) * V);
        const a = (r * 37) % V;
        const bIdx = (r * 101 + V / 2) % V;
        if (r % 3 === 0) row[a] = row[bIdx] = 4.5;
        if (r % 5 === 0) row[1] = row[V - 1] = row[(a + 7) % V] = 5;
      }
      const got = await runSample(gpu, s, x, B, V, opt({ temperature: 0 }));
      const wantTok = new Uint32Array(B);
      const wantLp = new Float32Array(B);
      for (let r = 0; r < B; r++) {
        const row = x.subarray(r * V, (r + 1) * V);
        let arg = 0;
        for (let j = 1; j < V; j++) if (row[j] > row[arg]) arg = j;
        wantTok[r] = arg;
        wantLp[r] = logSoftmaxF64(row, 1)[arg];
      }
      expect(wantTok[0]).toBe(1); // the planted three-way tie resolves to its lowest index
      expectClose(got.tokens, wantTok, TOL.exact.atol, TOL.exact.rtol, `greedy tokens V=${V}`);
      expectClose(got.logp, wantLp, TOL.sample_logp.atol, TOL.sample_logp.rtol, `greedy logp V=${V}`);
    }
  }, SLOW);

  test("matches the CPU reference token for token; logp = log-softmax(l/T) before truncation", async () => {
    const gpu = await gpuOrSkip();
    const s = await getSampler();
    const cases: [number, number, StepOptions][] = [
      [64, 700, opt({ temperature: 1, seed: 7, step: 3 })],
      [64, 700, opt({ temperature: 0.6, topP: 0.95, seed: 7, step: 4 })],
      [64, 3000, opt({ temperature: 0.7, topK: 40, seed: 8, step: 5 })],
      [64, 3000, opt({ temperature: 1.3, topK: 100, topP: 0.8, seed: 9, step: 6 })],
      [32, 3000, opt({ temperature: 0.5, topK: 1, seed: 10, step: 7 })],
    ];
    for (const [B, V, o] of cases) {
      const x = randn(B * V, B + V + o.step, 3);
      const got = await runSample(gpu, s, x, B, V, o);
      const ref = sampleRef(x, B, V, o, rowStreams(B, o.step));
      const what = `B=${B} V=${V} ${JSON.stringify(o)}`;
      expectClose(got.tokens, ref.tokens, TOL.exact.atol, TOL.exact.rtol, `tokens ${what}`);
      const want = new Float32Array(B);
      for (let r = 0; r < B; r++) {
        const row = x.subarray(r * V, (r + 1) * V);
        const dist = samplingDistribution(row, o);
        if (!(dist[got.tokens[r]] > 0)) throw new Error(`${what}: row ${r} drew token ${got.tokens[r]} outside the kept set`);
        want[r] = logSoftmaxF64(row, o.temperature)[got.tokens[r]];
      }
      expectClose(got.logp, want, TOL.sample_logp.atol, TOL.sample_logp.rtol, `logp ${what}`);
    }
  }, SLOW);

  // 20480 rows of the same logits in one dispatch: row index drives the RNG.
  const fits: [string, StepOptions][] = [
    ["full softmax, T = 1", opt({ seed: 42, step: 0 })],
    ["full softmax, T = 0.7", opt({ temperature: 0.7, seed: 43, step: 0 })],
    ["top-k = 5 (tie at rank 5 kept)", opt({ topK: 5, seed: 44, step: 0 })],
    ["top-p = 0.7", opt({ topP: 0.7, seed: 45, step: 0 })],
  ];
  for (const [name, o] of fits) {
    (name.startsWith("top-p") ? both : once)(`chi-square fit at p < ${ALPHA}: ${name}`, async () => {
      const gpu = await gpuOrSkip();
      const s = await getSampler();
      const B = 20480;
      const V = FIXED.length;
      const { tokens } = await runSample(gpu, s, tile(FIXED, B), B, V, o);
      const fit = chiSquareFit(tokens, samplingDistribution(FIXED, o), name);
      if (!(fit.stat < fit.crit)) {
        throw new Error(`${name}: chi-square ${fit.stat.toFixed(2)} >= critical ${fit.crit.toFixed(2)} (df ${fit.df}, alpha ${ALPHA})`);
      }
    }, SLOW);
  }

  once(`chi-square fit at p < ${ALPHA} across steps: top-k = 8 with top-p = 0.9, 20 steps x 1024 rows`, async () => {
    const gpu = await gpuOrSkip();
    const s = await getSampler();
    const B = 1024;
    const V = FIXED.length;
    const o = opt({ topK: 8, topP: 0.9, temperature: 1.2, seed: 99 });
    const logits = tile(FIXED, B);
    const all = new Uint32Array(20 * B);
    for (let step = 0; step < 20; step++) all.set((await runSample(gpu, s, logits, B, V, { ...o, step })).tokens, step * B);
    const p = samplingDistribution(FIXED, o);
    const fit = chiSquareFit(all, p, "top-k 8 + top-p 0.9 over steps");
    expect(fit.stat).toBeLessThan(fit.crit);
    // The same row across consecutive steps agrees only by chance: rate sum(p^2).
    const q = p.reduce((a, x) => a + x * x, 0);
    let same = 0;
    const pairs = 19 * B;
    for (let i = 0; i < pairs; i++) if (all[i] === all[i + B]) same++;
    expect(Math.abs(same / pairs - q)).toBeLessThan(6 * Math.sqrt((q * (1 - q)) / pairs));
  }, SLOW);

  test("same seed and step give the same tokens; rows, steps and seeds are independent", async () => {
    const gpu = await gpuOrSkip();
    const s = await getSampler();
    const B = 8192;
    const V = FIXED.length;
    const logits = tile(FIXED, B);
    const o = opt({ seed: 5, step: 17 });
    const a = await runSample(gpu, s, logits, B, V, o);
    const again = await runSample(gpu, s, logits, B, V, o);
    expectClose(again.tokens, a.tokens, 0, 0, "same seed+step");
    expectClose(again.logp, a.logp, 0, 0, "same seed+step logp");
    const p = samplingDistribution(FIXED, o);
    const q = p.reduce((acc, x) => acc + x * x, 0); // chance agreement of two independent draws
    const bound = (n: number) => 6 * Math.sqrt((q * (1 - q)) / n);
    const agree = (x: Uint32Array, y: Uint32Array, shift = 0) => {
      let same = 0;
      for (let i = 0; i + shift < x.length; i++) if (x[i] === y[i + shift]) same++;
      return same / (x.length - shift);
    };
    expect(Math.abs(agree(a.tokens, a.tokens, 1) - q)).toBeLessThan(bound(B - 1)); // neighbouring rows
    const nextStep = await runSample(gpu, s, logits, B, V, { ...o, step: 18 });
    expect(Math.abs(agree(a.tokens, nextStep.tokens) - q)).toBeLessThan(bound(B));
    const otherSeed = await runSample(gpu, s, logits, B, V, { ...o, seed: 6 });
    expect(Math.abs(agree(a.tokens, otherSeed.tokens) - q)).toBeLessThan(bound(B));
    // And the uniforms themselves are distinct across rows (24-bit draws: a
    // handful of collisions in 8192 is chance, most must differ).
    const us = new Set<number>();
    for (let r = 0; r < B; r++) us.add(sampleUniform(5, r, 17));
    expect(us.size).toBeGreaterThan(B - 20);
  }, SLOW);

  test("V = 151936 (Qwen2 vocabulary): tokens and logp match the reference", async () => {
    const gpu = await gpuOrSkip();
    const s = await getSampler();
    const B = 4;
    const V = 151936;
    const x = randn(B * V, 3, 6);
    for (const o of [
      opt({ temperature: 0 }),
      opt({ temperature: 1, seed: 3, step: 100 }),
      opt({ temperature: 0.6, topP: 0.95, seed: 3, step: 101 }),
      opt({ temperature: 0.6, topK: 50, topP: 0.95, seed: 3, step: 102 }),
    ]) {
      const got = await runSample(gpu, s, x, B, V, o);
      const ref = sampleRef(x, B, V, o, rowStreams(B, o.step));
      const what = `V=${V} ${JSON.stringify(o)}`;
      expectClose(got.tokens, ref.tokens, TOL.exact.atol, TOL.exact.rtol, `tokens ${what}`);
      const want = new Float32Array(B);
      for (let r = 0; r < B; r++) want[r] = logSoftmaxF64(x.subarray(r * V, (r + 1) * V), o.temperature || 1)[got.tokens[r]];
      expectClose(got.logp, want, TOL.sample_logp.atol, TOL.sample_logp.rtol, `logp ${what}`);
    }
  }, SLOW);

  test("-inf logits (masked tokens) are never drawn and do not disturb logp", async () => {
    const gpu = await gpuOrSkip();
    const s = await getSampler();
    const B = 64;
    const V = 3000;
    const x = randn(B * V, 9, 3);
    for (let i = 0; i < x.length; i++) if (i % 3 === 1) x[i] = -Infinity;
    // topK 2500 > the 2000 finite tokens: the -inf tie at the threshold is kept, with mass 0.
    for (const o of [opt({ temperature: 0 }), opt({ temperature: 0.8, topK: 20, topP: 0.9, seed: 3 }), opt({ topK: 2500, seed: 4 })]) {
      const got = await runSample(gpu, s, x, B, V, o);
      const ref = sampleRef(x, B, V, o, rowStreams(B, o.step));
      const what = `masked ${JSON.stringify(o)}`;
      expectClose(got.tokens, ref.tokens, TOL.exact.atol, TOL.exact.rtol, `tokens ${what}`);
      const want = new Float32Array(B);
      for (let r = 0; r < B; r++) {
        if (got.tokens[r] % 3 === 1) throw new Error(`${what}: row ${r} drew masked token ${got.tokens[r]}`);
        want[r] = logSoftmaxF64(x.subarray(r * V, (r + 1) * V), o.temperature || 1)[got.tokens[r]];
      }
      expectClose(got.logp, want, TOL.sample_logp.atol, TOL.sample_logp.rtol, `logp ${what}`);
    }
  }, SLOW);

  once("padded vocabulary: ids >= vocabLimit are never drawn even when their logits dominate (T = 1)", async () => {
    const gpu = await gpuOrSkip();
    const s = await getSampler();
    // Qwen2-style padding: 151936 rows in the model, 151665 ids in the tokenizer.
    const B = 16;
    const V = 151936;
    const limit = 151665;
    const x = randn(B * V, 31, 1);
    // Bias the padded rows so an unmasked sampler would almost always draw one.
    for (let r = 0; r < B; r++) for (let j = limit; j < V; j++) x[r * V + j] = 12;
    const unmasked = await runSample(gpu, s, x, B, V, opt({ seed: 5, step: 1 }));
    const padded = [...unmasked.tokens].filter((t) => t >= limit).length;
    expect(padded).toBeGreaterThan(B / 2); // the case is real: without the mask most rows draw padding
    for (const o of [opt({ seed: 5, step: 1 }), opt({ temperature: 0 }), opt({ temperature: 0.6, topK: 20, topP: 0.95, seed: 6, step: 2 })]) {
      const om = { ...o, vocabLimit: limit };
      const got = await runSample(gpu, s, x, B, V, om);
      const ref = sampleRef(x, B, V, om, rowStreams(B, om.step));
      const what = `padded ${JSON.stringify(om)}`;
      for (let r = 0; r < B; r++) if (got.tokens[r] >= limit) throw new Error(`${what}: row ${r} drew padded id ${got.tokens[r]}`);
      expectClose(got.tokens, ref.tokens, TOL.exact.atol, TOL.exact.rtol, `tokens ${what}`);
      // logp is under softmax over the first `limit` logits only (what training uses).
      const want = new Float32Array(B);
      for (let r = 0; r < B; r++) want[r] = logSoftmaxF64(x.subarray(r * V, r * V + limit), o.temperature || 1)[got.tokens[r]];
      expectClose(got.logp, want, TOL.sample_logp.atol, TOL.sample_logp.rtol, `logp ${what}`);
    }
  }, SLOW);

  once(`chi-square fit at p < ${ALPHA} with a padded vocabulary: the draws follow softmax over the ids below the limit`, async () => {
    const gpu = await gpuOrSkip();
    const s = await getSampler();
    const B = 20480;
    const V = FIXED.length + 6;
    const row = new Float32Array(V).fill(9); // padded rows that would take almost all the mass
    row.set(FIXED);
    const o = opt({ seed: 46, step: 0, vocabLimit: FIXED.length });
    const { tokens } = await runSample(gpu, s, tile(row, B), B, V, o);
    const dist = samplingDistribution(row, o);
    for (let j = FIXED.length; j < V; j++) expect(dist[j]).toBe(0);
    const fit = chiSquareFit(tokens, dist, "padded");
    if (!(fit.stat < fit.crit)) throw new Error(`padded: chi-square ${fit.stat.toFixed(2)} >= critical ${fit.crit.toFixed(2)} (df ${fit.df})`);
  }, SLOW);

  once("rows split over several dispatches keep their global row index", async () => {
    const gpu = await gpuOrSkip();
    const split = await loadSampler(gpu, { rowsPerDispatch: 64 });
    const B = 200;
    const V = 300;
    const o = opt({ temperature: 0.9, topP: 0.9, seed: 77, step: 3 });
    const x = randn(B * V, 21, 3);
    const got = await runSample(gpu, split, x, B, V, o);
    const whole = await runSample(gpu, await getSampler(), x, B, V, o);
    const ref = sampleRef(x, B, V, o, rowStreams(B, o.step));
    expectClose(got.tokens, ref.tokens, TOL.exact.atol, TOL.exact.rtol, "split tokens vs reference");
    expectClose(got.tokens, whole.tokens, 0, 0, "split vs one dispatch");
    expectClose(got.logp, whole.logp, 0, 0, "split vs one dispatch logp");
  }, SLOW);

  once("undersized bindings and bad options are errors naming the tensor or field", async () => {
    const gpu = await gpuOrSkip();
    const s = await getSampler();
    const L = gpu.buffer(4 * 100);
    const T = gpu.buffer(16);
    const P = gpu.buffer(16);
    const S = gpu.buffer(16);
    try {
      const b = gpu.batch();
      expect(() => s.sample(b, L, T, P, 1, 100, opt({}), { buffer: S, size: 4 })).toThrow(/streams binding holds 4 bytes, needs 8/);
      expect(() => s.sample(b, L, T, P, 2, 100, opt({}), S)).toThrow(/logits binding holds 400 bytes, needs 800/);
      expect(() => s.sample(b, L, T, P, 1, 100, opt({ topP: 2 }), S)).toThrow(/topP/);
      expect(() => s.sample(b, L, T, P, 1, 100, opt({ vocabLimit: 101 }), S)).toThrow(/vocabLimit/);
      expect(() => s.sample(b, L, T, P, 1, 100, opt({ vocabLimit: 0 }), S)).toThrow(/vocabLimit/);
      expect(() => s.sample(b, L, { buffer: T, offset: 4 }, P, 1, 100, opt({}), S)).toThrow(/tokens binding offset 4/);
      await expect(loadSampler(gpu, { rowsPerDispatch: 10 })).rejects.toThrow(/rowsPerDispatch/);
      b.submit();
    } finally {
      L.destroy();
      T.destroy();
      P.destroy();
      S.destroy();
    }
  }, SLOW);
});
}
