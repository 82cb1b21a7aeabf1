// Training kernels: AdamW, the gradient norm, the f16 compute copy, the GRPO
// policy loss, the supervised loss and the log-softmax backward. Every
// element of every output is compared with its CPU reference (AdamW also
// with its closed form, the log-softmax backward also with finite
// differences).
import { describe, expect, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import { adamwRef, clipFactor, loadAdamW, lrAt, normSqRef, type AdamWOptions } from "../src/kernels/adamw.ts";
import { f16BitsToF32, roundToF16 } from "../src/kernels/f16.ts";
import { loadLoss, logsoftmaxBackwardRef, sftRef, STAT, STATS_LEN } from "../src/kernels/loss.ts";
import type { RowVariant } from "../src/kernels/rmsnorm.ts";
import { policyLoss } from "../src/rl/policy_loss.ts";
import { expectClose, gpuOrSkip, hasGpu, policyStatsOf, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();

function tol(name: string) {
  const t = TOL[name];
  if (!t) throw new Error(`tests/tolerances.ts has no entry "${name}"`);
  return t;
}

function check(got: ArrayLike<number>, want: ArrayLike<number>, tolName: string, what: string): void {
  const t = tol(tolName);
  expectClose(got, want, t.atol, t.rtol, what);
}

const readAll = (gpu: Gpu, bufs: GPUBuffer[], n: number) => Promise.all(bufs.map((x) => gpu.readF32(x, n)));

describe("optimiser helpers (CPU)", () => {
  test("lrAt: linear warm-up from lr/warmup at t = 1, then constant", () => {
    expect(lrAt(1, { lr: 1e-6, warmupSteps: 4 })).toBeCloseTo(0.25e-6, 20);
    expect(lrAt(2, { lr: 1e-6, warmupSteps: 4 })).toBeCloseTo(0.5e-6, 20);
    expect(lrAt(4, { lr: 1e-6, warmupSteps: 4 })).toBe(1e-6);
    expect(lrAt(1000, { lr: 1e-6, warmupSteps: 4 })).toBe(1e-6);
    expect(lrAt(1, { lr: 3e-4, warmupSteps: 0 })).toBe(3e-4);
    expect(() => lrAt(0, { lr: 1, warmupSteps: 1 })).toThrow(/step 0 .*1-based/);
    expect(() => lrAt(1, { lr: 1, warmupSteps: -1 })).toThrow(/warmupSteps/);
  });

  test("clipFactor: 1 under the cap, maxNorm/(norm+1e-6) over it, error on NaN/Inf", () => {
    expect(clipFactor(0.5, 1)).toBe(1);
    expect(clipFactor(0, 1)).toBe(1);
    expect(clipFactor(4, 1)).toBeCloseTo(1 / (4 + 1e-6), 15);
    expect(clipFactor(1e9, Infinity)).toBe(1);
    expect(() => clipFactor(NaN, 1)).toThrow(/NaN or Inf/);
    expect(() => clipFactor(Infinity, 1)).toThrow(/NaN or Inf/);
    expect(() => clipFactor(1, 0)).toThrow(/maxNorm/);
  });

  test("adamwRef: first step with wd = 0 moves each parameter by -lr·g/(|g|+eps) ≈ -lr·sign(g)", () => {
    const g = Float32Array.of(0.3, -2, 1e-3, -5e-2);
    const p = Float32Array.of(1, -1, 0.5, 0);
    const p0 = p.slice();
    adamwRef(p, g, new Float32Array(4), new Float32Array(4), { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1 });
    for (let i = 0; i < 4; i++) expect(p[i]).toBeCloseTo(p0[i] - 0.01 * Math.sign(g[i]), 6);
  });
});

describe.skipIf(!GPU)("adamw.step", () => {
  const base: Omit<AdamWOptions, "step"> = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, gradScale: 1 };

  /** Runs `steps` GPU steps with a constant gradient; returns params after each. */
  async function constantGrad(gpu: Gpu, p0: Float32Array, g: Float32Array, o: Omit<AdamWOptions, "step">, steps: number) {
    const opt = await loadAdamW(gpu);
    const n = p0.length;
    const [p, gb, m, v] = [gpu.buffer(p0, "p"), gpu.buffer(g, "g"), gpu.buffer(n * 4, "m"), gpu.buffer(n * 4, "v")];
    const after: Float32Array[] = [];
    for (let t = 1; t <= steps; t++) {
      const b = gpu.batch();
      opt.step(b, p, gb, m, v, n, { ...o, step: t });
      b.submit();
      after.push(await gpu.readF32(p, n));
    }
    for (const x of [p, gb, m, v]) x.destroy();
    return after;
  }

  test("closed form, constant gradient, wd = 0: p_t = p0 − t·lr·g/(|g| + eps)", async () => {
    // With a constant g the bias corrections are exact: m̂_t = g, v̂_t = g².
    const gpu = await gpuOrSkip();
    const n = 300;
    const p0 = randn(n, 11, 1);
    const g = randn(n, 12, 0.5);
    const after = await constantGrad(gpu, p0, g, base, 4);
    after.forEach((p, k) => {
      const t = k + 1;
      const want = Float32Array.from(p0, (x, i) => x - (t * base.lr * g[i]) / (Math.abs(g[i]) + base.eps));
      check(p, want, "adamw_closed_form", `adamw closed form t=${t}`);
    });
    // The first step is -lr·sign(g) up to eps/|g| (|g| >= ~1e-3 here) and f32 rounding.
    const signStep = Float32Array.from(p0, (x, i) => x - base.lr * Math.sign(g[i]));
    expectClose(after[0], signStep, 1e-6 + base.lr * 1e-4, 0, "adamw first step ≈ -lr·sign(g)");
  });

  test("closed form with weight decay and gradScale: p_t = c^t·p0 − u·(1 − c^t)/(1 − c)", async () => {
    // c = 1 − lr·wd, u = lr·s·g/(|s·g| + eps); eps is not negligible here, so gradScale must be applied before it.
    const gpu = await gpuOrSkip();
    const n = 257;
    const o = { ...base, weightDecay: 0.1, gradScale: 0.25, eps: 1e-3 };
    const p0 = randn(n, 21, 2);
    const g = randn(n, 22, 0.02);
    const after = await constantGrad(gpu, p0, g, o, 5);
    const c = 1 - o.lr * o.weightDecay;
    after.forEach((p, k) => {
      const t = k + 1;
      const ct = c ** t;
      const want = Float32Array.from(p0, (x, i) => {
        const sg = o.gradScale * g[i];
        const u = (o.lr * sg) / (Math.abs(sg) + o.eps);
        return ct * x - (u * (1 - ct)) / (1 - c);
      });
      check(p, want, "adamw_closed_form", `adamw closed form wd gradScale t=${t}`);
    });
  });

  test("varying gradients, 6 steps: param, m and v against the reference every step, sliced bindings", async () => {
    const gpu = await gpuOrSkip();
    // maxBindingBytes 2 KiB → 512-element slices, so n = 1500 takes three dispatches per step.
    const opt = await loadAdamW(gpu, { maxBindingBytes: 2048 });
    const n = 1500;
    const p = randn(n, 31, 1);
    const m = new Float32Array(n);
    const v = new Float32Array(n);
    const bufs = [gpu.buffer(p, "p"), gpu.buffer(n * 4, "g"), gpu.buffer(n * 4, "m"), gpu.buffer(n * 4, "v")];
    for (let t = 1; t <= 6; t++) {
      const g = randn(n, 40 + t, t % 2 ? 1 : 1e-3);
      const o: AdamWOptions = { lr: 3e-3 * t, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.01, step: t, gradScale: 0.5 };
      gpu.write(bufs[1], g);
      const b = gpu.batch();
      opt.step(b, bufs[0], bufs[1], bufs[2], bufs[3], n, o);
      b.submit();
      adamwRef(p, g, m, v, o);
      const [gp, , gm, gv] = await readAll(gpu, bufs, n);
      check(gp, p, "adamw_f32", `adamw param t=${t}`);
      check(gm, m, "adamw_f32", `adamw m t=${t}`);
      check(gv, v, "adamw_f32", `adamw v t=${t}`);
      // Keep the reference on the GPU's state so differences do not compound.
      p.set(gp);
      m.set(gm);
      v.set(gv);
    }
    for (const x of bufs) x.destroy();
  });

  test("offset bindings: only the bound range changes", async () => {
    const gpu = await gpuOrSkip();
    const opt = await loadAdamW(gpu);
    const total = 200; // elements; the tensor sits at element 64 (256 bytes), 70 long
    const off = 64;
    const n = 70;
    const p = randn(total, 51, 1);
    const g = randn(total, 52, 1);
    const bufs = [gpu.buffer(p, "p"), gpu.buffer(g, "g"), gpu.buffer(total * 4, "m"), gpu.buffer(total * 4, "v")];
    const at = (x: GPUBuffer) => ({ buffer: x, offset: off * 4, size: n * 4 });
    const o: AdamWOptions = { ...base, step: 1 };
    const b = gpu.batch();
    opt.step(b, at(bufs[0]), at(bufs[1]), at(bufs[2]), at(bufs[3]), n, o);
    b.submit();
    const want = p.slice();
    const m = new Float32Array(total);
    const v = new Float32Array(total);
    adamwRef(want.subarray(off, off + n), g.subarray(off, off + n), m.subarray(off, off + n), v.subarray(off, off + n), o);
    const [gp, , gm, gv] = await readAll(gpu, bufs, total);
    check(gp, want, "adamw_f32", "adamw offset param");
    check(gm, m, "adamw_f32", "adamw offset m");
    check(gv, v, "adamw_f32", "adamw offset v");
    for (const x of bufs) x.destroy();
  });

  test("bad options and bindings are refused, naming the field or tensor", async () => {
    const gpu = await gpuOrSkip();
    const opt = await loadAdamW(gpu);
    const [a, c, d, e] = [0, 1, 2, 3].map(() => gpu.buffer(64, "x"));
    const o: AdamWOptions = { ...base, step: 1 };
    expect(() => opt.step(gpu.batch(), a, c, d, e, 16, { ...o, step: 0 })).toThrow(/step = 0/);
    expect(() => opt.step(gpu.batch(), a, c, d, e, 16, { ...o, beta2: 1 })).toThrow(/beta2/);
    expect(() => opt.step(gpu.batch(), a, c, d, e, 16, { ...o, gradScale: NaN })).toThrow(/gradScale/);
    expect(() => opt.step(gpu.batch(), a, c, d, e, 17, o)).toThrow(/adamw\.step: param binds 64 bytes/);
    expect(() => opt.step(gpu.batch(), a, c, a, e, 16, o)).toThrow(/param and m share a buffer/);
    for (const x of [a, c, d, e]) x.destroy();
  });
});

describe.skipIf(!GPU)("adamw.copyToF16", () => {
  test("rounds to nearest even, odd length keeps the neighbour's half, sliced", async () => {
    const gpu = await gpuOrSkip();
    const opt = await loadAdamW(gpu, { maxBindingBytes: 512 }); // 128-element slices
    const n = 301; // odd
    const x = randn(n, 61, 3);
    // Exact ties between two halves (1 + 2^-11 lies halfway between 1 and 1 + 2^-10), a subnormal, overflow.
    x[0] = 1 + 2 ** -11;
    x[1] = 1 + 3 * 2 ** -11;
    x[2] = 3e-6;
    x[3] = 1e6;
    x[4] = -7e4;
    const src = gpu.buffer(x, "master");
    const words = Math.ceil(n / 2) + 2;
    const init = new Uint16Array(words * 2).fill(0xabcd);
    const out = gpu.buffer(init, "out16");
    const b = gpu.batch();
    opt.copyToF16(b, src, out, n);
    b.submit();
    const got = new Uint16Array(await gpu.read(out, words * 4));
    const clamped = Float32Array.from(x, (y) => Math.min(65504, Math.max(-65504, y)));
    check(f16BitsToF32(got.subarray(0, n)), roundToF16(clamped), "exact", "copyToF16 values");
    expect([...got.subarray(n)]).toEqual(new Array(words * 2 - n).fill(0xabcd));
    src.destroy();
    out.destroy();
  });
});

describe.skipIf(!GPU)("adamw.gradNormSq", () => {
  test("several tensors, sliced, offset, empty: Σ x² against f64, bit-identical on a rerun", async () => {
    const gpu = await gpuOrSkip();
    const opt = await loadAdamW(gpu, { maxBindingBytes: 16384 }); // 4096-element slices
    const sizes = [1, 4095, 4096, 4097, 10000, 0, 333];
    const xs = sizes.map((n, k) => randn(n, 70 + k, k === 4 ? 10 : 1));
    const bufs = xs.map((x, k) => gpu.buffer(x.length ? x : new Float32Array(1), `g${k}`));
    // One more tensor as a range of a bigger buffer (offset 512 bytes).
    const big = randn(600, 90, 2);
    const bigBuf = gpu.buffer(big, "big");
    const out = gpu.buffer(16, "normSq");
    const bindings = [...bufs, { buffer: bigBuf, offset: 512, size: 100 * 4 }];
    const ns = [...sizes, 100];
    const want = normSqRef([...xs, big.subarray(128, 228)]);
    const run = async () => {
      const b = gpu.batch();
      opt.gradNormSq(b, bindings, ns, out);
      b.submit();
      return (await gpu.readF32(out, 1))[0];
    };
    const got = await run();
    check([got], [want], "grad_norm_sq", "gradNormSq");
    expect(await run()).toBe(got);
    expect(() => opt.gradNormSq(gpu.batch(), bindings, ns.slice(1), out)).toThrow(/8 gradient bindings but 7/);
    for (const x of [...bufs, bigBuf, out]) x.destroy();
  });

  test("a NaN gradient makes the norm NaN (and clipFactor refuses it)", async () => {
    const gpu = await gpuOrSkip();
    const opt = await loadAdamW(gpu);
    const x = randn(5000, 3, 1);
    x[4321] = NaN;
    const buf = gpu.buffer(x, "g");
    const out = gpu.buffer(16, "normSq");
    const b = gpu.batch();
    opt.gradNormSq(b, [buf], [5000], out);
    b.submit();
    const got = (await gpu.readF32(out, 1))[0];
    expect(Number.isNaN(got)).toBe(true);
    expect(() => clipFactor(Math.sqrt(got), 1)).toThrow(/NaN/);
    buf.destroy();
    out.destroy();
  });
});

// ---------------------------------------------------------------- losses

interface PolicyCase {
  logpNew: Float32Array;
  logpOld: Float32Array;
  advantages: Float32Array;
  mask: Float32Array;
}

/**
 * N tokens cycling through ten kinds, each log-ratio at least 0.03 from a
 * clip boundary (log 0.8 = -0.223, log 1.28 = 0.247) so f32 and f64 agree on
 * the branch: masked; A > 0 clipped high; A > 0 inside; A > 0 below (r·A is
 * the min, unclipped); A < 0 clipped low; A < 0 above (unclipped); A < 0
 * inside; A = 0; |log r| > 20 (the clamp stops the gradient); any A inside.
 */
function policyCase(N: number, seed: number): PolicyCase {
  const u = randn(4 * N, seed, 1);
  const logpNew = new Float32Array(N);
  const logpOld = new Float32Array(N);
  const advantages = new Float32Array(N);
  const mask = new Float32Array(N).fill(1);
  const within = (x: number, lo: number, hi: number) => lo + ((x + 1) / 2) * (hi - lo);
  for (let i = 0; i < N; i++) {
    const [a, b, c] = [u[4 * i], u[4 * i + 1], u[4 * i + 2]];
    const mag = 0.1 + 2 * Math.abs(a);
    let lr = within(b, -0.19, 0.21);
    let adv = mag;
    switch (i % 10) {
      case 0: mask[i] = 0; adv = a * 3; lr = b * 2; break;
      case 1: lr = within(b, 0.28, 0.7); break;
      case 2: break;
      case 3: lr = within(b, -1.5, -0.26); break;
      case 4: adv = -mag; lr = within(b, -1.5, -0.26); break;
      case 5: adv = -mag; lr = within(b, 0.28, 1.0); break;
      case 6: adv = -mag; break;
      case 7: adv = 0; break;
      case 8: adv = a > 0 ? mag : -mag; lr = (b > 0 ? 1 : -1) * within(c, 21, 25); break;
      case 9: adv = 2 * a; break;
    }
    logpOld[i] = -0.01 - 8 * Math.abs(c);
    logpNew[i] = logpOld[i] + lr;
    advantages[i] = adv;
  }
  return { logpNew, logpOld, advantages, mask };
}

const EPS = { epsLow: 0.2, epsHigh: 0.28, clipRatioC: 3 };

describe.skipIf(!GPU)("loss.policy", () => {
  async function run(gpu: Gpu, c: PolicyCase, denom: number, statsInit?: Float32Array, accumulate = false) {
    const loss = await loadLoss(gpu);
    const N = c.logpNew.length;
    const ins = [c.logpNew, c.logpOld, c.advantages, c.mask].map((x, k) => gpu.buffer(x, `in${k}`));
    const dlogp = gpu.buffer(new Float32Array(N).fill(-99), "dlogp");
    const stats = gpu.buffer(statsInit ?? new Float32Array(STATS_LEN).fill(-99), "stats");
    const b = gpu.batch();
    loss.policy(b, ins[0], ins[1], ins[2], ins[3], dlogp, stats, N, { ...EPS, denom, accumulate });
    b.submit();
    const out = { dlogp: await gpu.readF32(dlogp, N), stats: await gpu.readF32(stats, STATS_LEN) };
    for (const x of [...ins, dlogp, stats]) x.destroy();
    return out;
  }

  test("hand-computed: clip-high, unclipped above with A < 0, clip-low, unclipped below with A > 0, dual-clip, masked", async () => {
    const gpu = await gpuOrSkip();
    // r = 1.5, A = +1: min(1.5, 1.28) = 1.28, clipped high, term -1.28, grad 0
    // r = 1.5, A = -1: min(-1.5, -1.28) = -1.5, unclipped, term 1.5, grad -A·r = 1.5
    // r = 0.5, A = -2: min(-1, -1.6) = -1.6, clipped low, term 1.6, grad 0
    // r = 0.5, A = +2: min(1, 1.6) = 1, unclipped, term -1, grad -A·r = -1
    // r = 4, A = -1: clip-higher gives 4 (unclipped), over -A·c = 3: dual-clipped, term 3, grad 0
    // masked token: nothing. denom 5 → loss (-1.28 + 1.5 + 1.6 - 1 + 3) / 5 = 0.764
    const l15 = Math.log(1.5);
    const l05 = Math.log(0.5);
    const l4 = Math.log(4);
    const c: PolicyCase = {
      logpNew: Float32Array.of(l15 - 1, l15 - 2, l05 - 1, l05 - 3, l4 - 5, 7),
      logpOld: Float32Array.of(-1, -2, -1, -3, -5, 0),
      advantages: Float32Array.of(1, -1, -2, 2, -1, 5),
      mask: Float32Array.of(1, 1, 1, 1, 1, 0),
    };
    const { dlogp, stats } = await run(gpu, c, 5);
    check(dlogp, [0, 1.5 / 5, 0, -1 / 5, 0, 0], "loss_policy_grad", "policy hand dlogp");
    // KL k3 = Σ (r - 1 - log r) = 2(0.5 - log 1.5) + 2(-0.5 - log 0.5) + (3 - log 4); Σ r = 8;
    // one dual-clipped token; Σ TIS weights = 5 (off: each weight is 1).
    const kl = 2 * (0.5 - l15) + 2 * (-0.5 - l05) + (3 - l4);
    check(stats, [0.764, 5, 1, 1, kl, 8, 1, 5], "loss_stats", "policy hand stats");
  });

  test("700 tokens of every kind against policyLoss (token-mean, denom above the token count)", async () => {
    const gpu = await gpuOrSkip();
    const c = policyCase(701, 5);
    const tokens = c.mask.reduce((x, y) => x + y, 0);
    const denom = tokens + 37; // the mini-batch has more tokens than this micro-batch
    const ref = policyLoss(c, { ...EPS, tokenCount: denom });
    // Every kind is present, so the branches are all exercised.
    expect(ref.stats.clipFracLow * tokens).toBeGreaterThan(60);
    expect(ref.stats.clipFracHigh * tokens).toBeGreaterThan(60);
    const { dlogp, stats } = await run(gpu, c, denom);
    check(dlogp, ref.grad, "loss_policy_grad", "policy dlogp");
    const want = policyStatsOf(ref);
    check(stats.subarray(1, 4), want.subarray(1, 4), "exact", "policy counts");
    check([stats[STAT.clipDual]], [want[STAT.clipDual]], "exact", "policy dual-clip count");
    expect(want[STAT.clipDual]).toBeGreaterThan(10); // kind 8 with A < 0 and log r > 20
    check(stats, want, "loss_stats", "policy stats");
  });

  test("dlogp against central differences of policyLoss's loss", async () => {
    // Each log-ratio is >= 0.03 from a clip boundary and h = 1e-4, so the
    // difference never crosses a kink: it is exact up to f64 rounding
    // (1e-16·|loss|/h ~ 1e-12), far under the f32 kernel's own error.
    const gpu = await gpuOrSkip();
    const c = policyCase(300, 9);
    // Tokens past the ±20 clamp (kind 8) stay in: the dual-clip bounds their
    // terms (without it, A < 0 gives terms ~1e9 whose f64 rounding would swamp
    // the differences), and the clamp makes the loss flat there (gradient 0).
    const denom = c.mask.reduce((x, y) => x + y, 0);
    const { dlogp } = await run(gpu, c, denom);
    // policyLoss only indexes its arrays, so f64 log-probs give it perturbations
    // that are not rounded to f32.
    const f64 = (x: Float32Array) => Float64Array.from(x) as unknown as Float32Array;
    const h = 1e-4;
    const fd = new Float32Array(c.logpNew.length);
    for (let i = 0; i < fd.length; i++) {
      const at = (d: number) => {
        const logpNew = f64(c.logpNew);
        logpNew[i] += d;
        return policyLoss({ ...c, logpNew, logpOld: f64(c.logpOld) }, { ...EPS, tokenCount: denom }).loss;
      };
      fd[i] = (at(h) - at(-h)) / (2 * h);
    }
    check(dlogp, fd, "loss_policy_fd", "policy dlogp vs finite differences");
  });

  test("micro-batches accumulate into one stats buffer; seq-mean-token-mean by folding weights into A", async () => {
    const gpu = await gpuOrSkip();
    const c = policyCase(400, 13);
    const denom = c.mask.reduce((x, y) => x + y, 0);
    const ref = policyLoss(c, { ...EPS, tokenCount: denom });
    const half = (k: 0 | 1): PolicyCase => {
      const [a, b] = k === 0 ? [0, 150] : [150, 400];
      return { logpNew: c.logpNew.slice(a, b), logpOld: c.logpOld.slice(a, b), advantages: c.advantages.slice(a, b), mask: c.mask.slice(a, b) };
    };
    const first = await run(gpu, half(0), denom);
    const second = await run(gpu, half(1), denom, first.stats, true);
    const grad = new Float32Array(400);
    grad.set(first.dlogp, 0);
    grad.set(second.dlogp, 150);
    check(grad, ref.grad, "loss_policy_grad", "policy dlogp over two micro-batches");
    check(second.stats, policyStatsOf(ref), "loss_stats", "policy stats accumulated over two micro-batches");

    // Sequences of 7 tokens (the last one shorter): A_i / count(seq_i), denom = sequence count.
    const seqOfToken = Uint32Array.from({ length: 400 }, (_, i) => Math.floor(i / 7));
    const count = new Map<number, number>();
    seqOfToken.forEach((s, i) => c.mask[i] && count.set(s, (count.get(s) ?? 0) + 1));
    const seqRef = policyLoss({ ...c, seqOfToken }, { ...EPS, aggregation: "seq-mean-token-mean" });
    const folded = Float32Array.from(c.advantages, (a, i) => (c.mask[i] ? a / count.get(seqOfToken[i])! : 0));
    const seq = await run(gpu, { ...c, advantages: folded }, count.size);
    check(seq.dlogp, seqRef.grad, "loss_policy_grad", "policy dlogp seq-mean-token-mean");
    check([seq.stats[STAT.loss]], [seqRef.loss], "loss_stats", "policy loss seq-mean-token-mean");
  });

  test("bad options and shared output buffers are refused", async () => {
    const gpu = await gpuOrSkip();
    const loss = await loadLoss(gpu);
    const x = [0, 1, 2, 3, 4, 5].map((k) => gpu.buffer(64, `x${k}`));
    const call = (o: Partial<typeof EPS & { denom: number }>, bufs = x, N = 16) =>
      loss.policy(gpu.batch(), bufs[0], bufs[1], bufs[2], bufs[3], bufs[4], bufs[5], N, { ...EPS, denom: 16, ...o });
    expect(() => call({ denom: -1 })).toThrow(/loss\.policy: denom -1/);
    expect(() => call({ epsLow: 1 })).toThrow(/epsLow/);
    expect(() => call({}, x, 17)).toThrow(/logpNew binds 64 bytes/);
    expect(() => call({}, [x[0], x[1], x[2], x[3], x[0], x[5]])).toThrow(/dlogp and logpNew share a buffer/);
    for (const b of x) b.destroy();
  });
});

describe.skipIf(!GPU)("loss.sft", () => {
  test("mean NLL over masked tokens, gradient −mask/denom, accumulation", async () => {
    const gpu = await gpuOrSkip();
    const loss = await loadLoss(gpu);
    const N = 530;
    const logp = Float32Array.from(randn(N, 3, 1), (x) => -6 * Math.abs(x));
    const mask = Float32Array.from(randn(N, 4, 1), (x) => (x > -0.4 ? 1 : 0));
    const denom = mask.reduce((x, y) => x + y, 0) + 11;
    const ref = sftRef(logp, mask, denom);
    const [lb, mb] = [gpu.buffer(logp, "logp"), gpu.buffer(mask, "mask")];
    const dlogp = gpu.buffer(new Float32Array(N).fill(-99), "dlogp");
    const stats = gpu.buffer(new Float32Array(STATS_LEN).fill(-99), "stats");
    let b = gpu.batch();
    loss.sft(b, lb, mb, dlogp, stats, N, denom);
    b.submit();
    // −mask/denom is f32(1/denom) on both sides: exact.
    check(await gpu.readF32(dlogp, N), ref.dlogp, "exact", "sft dlogp");
    const got = await gpu.readF32(stats, STATS_LEN);
    check(got.subarray(1), ref.stats.subarray(1), "exact", "sft token count and unused slots");
    check(got, ref.stats, "loss_stats", "sft stats");
    // Hand check of the definition on the CPU reference: loss = −Σ mask·logp / denom.
    let nll = 0;
    for (let i = 0; i < N; i++) if (mask[i]) nll -= logp[i];
    expect(ref.stats[STAT.loss]).toBeCloseTo(nll / denom, 5);
    // A second micro-batch (the same tokens again) accumulates.
    b = gpu.batch();
    loss.sft(b, lb, mb, dlogp, stats, N, denom, true);
    b.submit();
    const twice = Float32Array.from(ref.stats, (x) => 2 * x);
    check(await gpu.readF32(stats, STATS_LEN), twice, "loss_stats", "sft stats accumulated");
    for (const x of [lb, mb, dlogp, stats]) x.destroy();
  });
});

function randomTargets(T: number, V: number, seed: number): Uint32Array {
  return Uint32Array.from(randn(T, seed, 1), (v) => Math.min(V - 1, Math.floor(((v + 1) / 2) * V)));
}

describe.skipIf(!GPU)("loss.logsoftmaxBackward", () => {
  async function run(gpu: Gpu, logits: Float32Array, targets: Uint32Array, dlogp: Float32Array, T: number, V: number, temp: number, subgroups = false, variant?: RowVariant) {
    const loss = await loadLoss(gpu, { subgroups, variant: variant ?? (subgroups ? "workgroup" : undefined) });
    const bufs = [gpu.buffer(logits, "logits"), gpu.buffer(targets, "targets"), gpu.buffer(dlogp, "dlogp")];
    const out = gpu.buffer(new Float32Array(T * V).fill(-99), "dlogits");
    const b = gpu.batch();
    loss.logsoftmaxBackward(b, bufs[0], bufs[1], bufs[2], out, T, V, temp);
    b.submit();
    const got = await gpu.readF32(out, T * V);
    for (const x of [...bufs, out]) x.destroy();
    return got;
  }

  // Every variant: the shared-memory tree, subgroups first (off by default; src/kernels/loss.ts), one invocation per row (CPU adapters).
  for (const [subgroups, variant] of [[false, "workgroup"], [true, "workgroup"], [false, "row"]] as const)
  test(`every element against the reference (${variant}${subgroups ? ", subgroup reductions" : ""}): V below and above the workgroup, temperatures, big logits, a zero row`, async () => {
    const gpu = await gpuOrSkip();
    for (const [T, V, temp, scale] of [[3, 5, 1, 2], [9, 700, 0.6, 4], [4, 257, 1.0, 60], [2, 1000, 1.3, 1], [3, 151936, 1, 8]]) {
      const logits = randn(T * V, T + V, scale);
      const targets = randomTargets(T, V, 7 * V);
      targets[0] = V - 1;
      const dlogp = randn(T, V, 1);
      dlogp[T - 1] = 0; // a masked token: its row of dlogits is exactly 0
      const want = logsoftmaxBackwardRef(logits, targets, dlogp, T, V, temp);
      const got = await run(gpu, logits, targets, dlogp, T, V, temp, subgroups, variant);
      check(got, want, "loss_lsm_backward", `logsoftmaxBackward T=${T} V=${V} τ=${temp} scale=${scale} ${variant}${subgroups ? " subgroups" : ""}`);
      check(got.subarray((T - 1) * V).map(Math.abs), new Float32Array(V), "exact", "zero dlogp row");
    }
  });

  test("finite differences of Σ_t dlogp[t]·logp_t(logits) in f64", async () => {
    // Central differences with h = 1e-3 on an f64 log-softmax: truncation
    // h²/6·|∂³f| <= h²/6·|dlogp|/τ³ ~ 3e-7 at τ = 0.7, rounding 1e-16/h. The
    // kernel's own f32 error (~1e-6 of |dlogp|/τ) dominates; the bound on
    // the relative L2 error, 1e-5, is ten times what that allows.
    const gpu = await gpuOrSkip();
    const [T, V, temp] = [3, 40, 0.7];
    const logits = randn(T * V, 17, 3);
    const targets = randomTargets(T, V, 18);
    const dlogp = randn(T, 19, 1);
    const got = await run(gpu, logits, targets, dlogp, T, V, temp);
    const rowLogp = (t: number, row: Float64Array) => {
      let m = -Infinity;
      for (const x of row) m = Math.max(m, x / temp);
      let s = 0;
      for (const x of row) s += Math.exp(x / temp - m);
      return dlogp[t] * (row[targets[t]] / temp - m - Math.log(s));
    };
    const h = 1e-3;
    const fd = new Float32Array(T * V);
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < V; j++) {
        const row = Float64Array.from(logits.subarray(t * V, (t + 1) * V));
        row[j] += h;
        const up = rowLogp(t, row);
        row[j] -= 2 * h;
        fd[t * V + j] = (up - rowLogp(t, row)) / (2 * h);
      }
    }
    check(got, fd, "loss_lsm_backward_fd", "logsoftmaxBackward vs finite differences");
    let num = 0;
    let den = 0;
    for (let i = 0; i < fd.length; i++) {
      num += (got[i] - fd[i]) ** 2;
      den += fd[i] ** 2;
    }
    expect(Math.sqrt(num / den)).toBeLessThan(1e-5);
  });

  test("more rows than one grid dimension holds (2-D grid)", async () => {
    const gpu = await gpuOrSkip();
    const T = gpu.limits.maxComputeWorkgroupsPerDimension + 5;
    const V = 3;
    const logits = randn(T * V, 23, 2);
    const targets = randomTargets(T, V, 24);
    const dlogp = randn(T, 25, 1);
    const got = await run(gpu, logits, targets, dlogp, T, V, 1);
    check(got, logsoftmaxBackwardRef(logits, targets, dlogp, T, V, 1), "loss_lsm_backward", "logsoftmaxBackward 2-D grid");
  });

  test("a bad target gives a NaN row; bad shapes are refused", async () => {
    const gpu = await gpuOrSkip();
    const got = await run(gpu, randn(8, 1, 1), Uint32Array.of(1, 4), Float32Array.of(1, 1), 2, 4, 1);
    expect(got.subarray(4).every(Number.isNaN)).toBe(true);
    expect(got.subarray(0, 4).some(Number.isNaN)).toBe(false);
    const loss = await loadLoss(gpu);
    const x = gpu.buffer(64, "x");
    const y = gpu.buffer(64, "y");
    expect(() => loss.logsoftmaxBackward(gpu.batch(), x, x, x, y, 4, 5, 1)).toThrow(/logsoftmaxBackward: logits binds 64 bytes, needs 20/);
    expect(() => loss.logsoftmaxBackward(gpu.batch(), x, x, x, y, 2, 2, 0)).toThrow(/temperature 0/);
    expect(() => loss.logsoftmaxBackward(gpu.batch(), x, x, x, x, 2, 2, 1)).toThrow(/dlogits and logits share a buffer/);
    x.destroy();
    y.destroy();
  });
});
