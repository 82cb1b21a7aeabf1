// Training kernels: AdamW, the gradient norm, the f16 compute copy, the GRPO
// policy loss, the supervised loss and the log-softmax backward. Every
// element of every output is compared with its CPU reference (AdamW also
// with its closed form, the log-softmax backward also with finite
// differences).
import { describe, expect, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import { adamwRef, clipFactor, loadAdamW, lrAt, normSqRef, type AdamWOptions } from "../src/kernels/adamw.ts";
import { f16BitsToF32, roundToF16 } from "../src/kernels/f16.ts";
import { expectClose, gpuOrSkip, hasGpu, randn } from "./helpers.ts";
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
