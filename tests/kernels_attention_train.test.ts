// Training attention (kernels/attention.wgsl train_*): packed causal GQA
// forward with lse, recompute-style backward; every element against the f64
// references, and a finite-difference check of the backward in f32.
import { describe, expect, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import {
  checkSegStart,
  denseAttentionRef,
  loadAttention,
  trainAttentionBackwardRef,
  trainAttentionRef,
  type Attention,
  type Dtype,
  type TrainShape,
} from "../src/kernels/attention.ts";
import { f16BitsToF32, f32ToF16Bits, roundToF16 } from "../src/kernels/f16.ts";
import { expectClose, gpuOrSkip, hasF16, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();

/** segStart [T] of sequences of the given lengths packed in order. */
function packed(lengths: number[]): Uint32Array {
  const seg: number[] = [];
  let start = 0;
  for (const n of lengths) {
    for (let i = 0; i < n; i++) seg.push(start);
    start += n;
  }
  return Uint32Array.from(seg);
}

interface Problem {
  s: TrainShape;
  seg: Uint32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  dout: Float32Array;
  scale: number;
}

function problem(lengths: number[], nh: number, nKv: number, hd: number, seed: number, dtype: Dtype, qkScale = 1): Problem {
  const seg = packed(lengths);
  const T = seg.length;
  const round = (a: Float32Array) => (dtype === "f16" ? roundToF16(a) : a);
  return {
    s: { T, nh, nKv, hd },
    seg,
    q: round(randn(T * nh * hd, seed * 7 + 1, qkScale)),
    k: round(randn(T * nKv * hd, seed * 7 + 2, qkScale)),
    v: round(randn(T * nKv * hd, seed * 7 + 3)),
    dout: round(randn(T * nh * hd, seed * 7 + 4)),
    scale: 1 / Math.sqrt(hd),
  };
}

function upload(gpu: Gpu, x: Float32Array, dtype: Dtype, label: string): GPUBuffer {
  return gpu.buffer(dtype === "f16" ? f32ToF16Bits(x) : x, label);
}

async function readOut(gpu: Gpu, buf: GPUBuffer, n: number, dtype: Dtype): Promise<Float32Array> {
  if (dtype === "f32") return gpu.readF32(buf, n);
  return f16BitsToF32(new Uint16Array(await gpu.read(buf, Math.ceil((n * 2) / 4) * 4)).subarray(0, n));
}

/**
 * Forward and backward on the GPU in one batch (outputs poisoned with NaN
 * first, so an element never written fails). Returns every output.
 */
async function runTrain(gpu: Gpu, attn: Attention, p: Problem, dtype: Dtype) {
  const { T, nh, nKv, hd } = p.s;
  const nan = (n: number) => new Float32Array(n).fill(NaN);
  const bufs = {
    q: upload(gpu, p.q, dtype, "q"),
    k: upload(gpu, p.k, dtype, "k"),
    v: upload(gpu, p.v, dtype, "v"),
    seg: gpu.buffer(p.seg, "segStart"),
    out: upload(gpu, nan(T * nh * hd), dtype, "out"),
    lse: gpu.buffer(nan(T * nh), "lse"),
    dout: upload(gpu, p.dout, dtype, "dout"),
    dq: upload(gpu, nan(T * nh * hd), dtype, "dq"),
    dk: upload(gpu, nan(T * nKv * hd), dtype, "dk"),
    dv: upload(gpu, nan(T * nKv * hd), dtype, "dv"),
  };
  const b = gpu.batch();
  attn.trainForward(b, bufs.q, bufs.k, bufs.v, bufs.seg, bufs.out, bufs.lse, T, nh, nKv, hd, p.scale);
  attn.trainBackward(b, bufs.q, bufs.k, bufs.v, bufs.seg, bufs.out, bufs.dout, bufs.lse, bufs.dq, bufs.dk, bufs.dv, T, nh, nKv, hd, p.scale);
  b.submit();
  const r = {
    out: await readOut(gpu, bufs.out, T * nh * hd, dtype),
    lse: await gpu.readF32(bufs.lse, T * nh),
    dq: await readOut(gpu, bufs.dq, T * nh * hd, dtype),
    dk: await readOut(gpu, bufs.dk, T * nKv * hd, dtype),
    dv: await readOut(gpu, bufs.dv, T * nKv * hd, dtype),
  };
  for (const x of Object.values(bufs)) x.destroy();
  return r;
}

/** GPU forward and backward vs the references, every element of out, lse, dq, dk, dv. */
async function check(attn: Attention, p: Problem, dtype: Dtype, what: string) {
  const gpu = await gpuOrSkip();
  const got = await runTrain(gpu, attn, p, dtype);
  const want = trainAttentionRef(p.q, p.k, p.v, p.seg, p.s, p.scale);
  const fwd = dtype === "f32" ? TOL.attention_train_f32 : TOL.attention_train_f16;
  const bwd = dtype === "f32" ? TOL.attention_train_bwd_f32 : TOL.attention_train_bwd_f16;
  expectClose(got.out, want.out, fwd.atol, fwd.rtol, `${dtype} ${what}: out`);
  expectClose(got.lse, want.lse, TOL.attention_train_lse.atol, TOL.attention_train_lse.rtol, `${dtype} ${what}: lse`);
  // D uses the out the kernel was given (the GPU's, f16-rounded in f16), as the kernel does.
  const g = trainAttentionBackwardRef(p.q, p.k, p.v, p.seg, got.out, p.dout, p.s, p.scale);
  expectClose(got.dq, g.dq, bwd.atol, bwd.rtol, `${dtype} ${what}: dq`);
  expectClose(got.dk, g.dk, bwd.atol, bwd.rtol, `${dtype} ${what}: dk`);
  expectClose(got.dv, g.dv, bwd.atol, bwd.rtol, `${dtype} ${what}: dv`);
}

/**
 * Central-difference step: f32 rounding of L (~1e-7 relative over ~100
 * terms) gives an error ~1e-6 / (2 h); the truncation error h^2 / 6 |L'''|.
 */
const FD_STEP = 1e-2;

/** sum_i w_i out_i in f64 (the functional whose gradient is checked). */
function dotF64(a: ArrayLike<number>, w: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * w[i];
  return s;
}

// ---------------------------------------------------------------- CPU

describe("training attention references", () => {
  test("forward matches the dense per-sequence reference; lse is the log-sum-exp of the scaled scores", () => {
    const lengths = [1, 5, 33, 70];
    for (const [nh, nKv] of [[4, 2], [4, 1], [3, 3]]) {
      const p = problem(lengths, nh, nKv, 8, 3 + nh + nKv, "f32");
      const { out, lse } = trainAttentionRef(p.q, p.k, p.v, p.seg, p.s, p.scale);
      let start = 0;
      for (const n of lengths) {
        const per = nh * 8;
        const kper = nKv * 8;
        const q = p.q.subarray(start * per, (start + n) * per);
        const want = denseAttentionRef(q, p.k.subarray(start * kper, (start + n) * kper), p.v.subarray(start * kper, (start + n) * kper), Array.from({ length: n }, (_, i) => i), nh, nKv, 8, p.scale);
        expectClose(out.subarray(start * per, (start + n) * per), want, TOL.f32_elementwise.atol, TOL.f32_elementwise.rtol, `out of sequence at ${start}, ${nh}/${nKv} heads`);
        start += n;
      }
      // lse by the direct formula log(sum exp(s)) (scores are small here)
      const G = nh / nKv;
      const direct = new Float32Array(p.s.T * nh);
      for (let t = 0; t < p.s.T; t++) {
        for (let h = 0; h < nh; h++) {
          let sum = 0;
          for (let j = p.seg[t]; j <= t; j++) {
            let dot = 0;
            for (let d = 0; d < 8; d++) dot += p.q[(t * nh + h) * 8 + d] * p.k[(j * nKv + Math.floor(h / G)) * 8 + d];
            sum += Math.exp(dot * p.scale);
          }
          direct[t * nh + h] = Math.log(sum);
        }
      }
      expectClose(lse, direct, TOL.f32_elementwise.atol, TOL.f32_elementwise.rtol, `lse ${nh}/${nKv} heads`);
    }
  });

  test("backward reference matches f64 central differences of the forward reference", () => {
    // Gradient of L = sum(dout * out) w.r.t. every element of q, k, v. The
    // reference computes in f64 but returns out in f32, so the step and the
    // bound are those of the GPU check below.
    const p = problem([3, 6], 4, 2, 4, 5, "f32");
    const { out } = trainAttentionRef(p.q, p.k, p.v, p.seg, p.s, p.scale);
    const g = trainAttentionBackwardRef(p.q, p.k, p.v, p.seg, out, p.dout, p.s, p.scale);
    const h = FD_STEP;
    for (const [name, x, grad] of [["q", p.q, g.dq], ["k", p.k, g.dk], ["v", p.v, g.dv]] as const) {
      const fd = new Float32Array(x.length);
      for (let i = 0; i < x.length; i++) {
        const x0 = x[i];
        x[i] = x0 + h;
        const up = dotF64(trainAttentionRef(p.q, p.k, p.v, p.seg, p.s, p.scale).out, p.dout);
        x[i] = x0 - h;
        const dn = dotF64(trainAttentionRef(p.q, p.k, p.v, p.seg, p.s, p.scale).out, p.dout);
        x[i] = x0;
        fd[i] = (up - dn) / (2 * h);
      }
      expectClose(grad, fd, TOL.attention_train_fd.atol, TOL.attention_train_fd.rtol, `reference d${name} vs central differences`);
    }
  });

  test("segStart must describe contiguous packed sequences", () => {
    expect(() => checkSegStart(packed([1, 5, 33]), 39, "t")).not.toThrow();
    expect(() => checkSegStart(Uint32Array.of(0, 0, 1), 3, "t")).toThrow(/segStart\[2\] = 1; expected 2 .* or 0/);
    expect(() => checkSegStart(Uint32Array.of(1, 1), 2, "t")).toThrow(/segStart\[0\] = 1; expected 0/);
    expect(() => checkSegStart(Uint32Array.of(0, 0), 3, "t")).toThrow(/segStart has 2 entries, T = 3/);
    const p = problem([2, 2], 2, 1, 4, 1, "f32");
    expect(() => trainAttentionRef(p.q, p.k, p.v, Uint32Array.of(0, 0, 0, 3), p.s, 1)).not.toThrow();
    expect(() => trainAttentionRef(p.q, p.k, p.v, Uint32Array.of(0, 0, 1, 1), p.s, 1)).toThrow(/trainAttentionRef: segStart\[2\]/);
    expect(() => trainAttentionRef(p.q, p.k.subarray(1), p.v, p.seg, p.s, 1)).toThrow(/trainAttentionRef: tensor k has 15 elements, expected 4 x 4/);
  });
});

// ---------------------------------------------------------------- GPU

// Both forms (tiled: K/V tiles in workgroup memory; rows: one invocation per row, for CPU adapters), whatever this adapter picks.
for (const [dtype, form] of (["f32", "f16"] as Dtype[]).flatMap((d) => (["tiled", "rows"] as const).map((f) => [d, f] as const))) {
  describe.skipIf(!GPU)(`training attention ${dtype}, ${form} form`, () => {
    let attnP: Promise<Attention> | null = null;
    const attention = async () => (attnP ??= gpuOrSkip().then((g) => loadAttention(g, dtype, form)));

    test("sequences of 1, 5, 33, 70 tokens, GQA 4/2, hd 16", async () => {
      await check(await attention(), problem([1, 5, 33, 70], 4, 2, 16, 11, dtype), dtype, "GQA 4/2 hd 16");
    });

    test("sequences of 70, 1, 33, 5 tokens, MQA 4/1, hd 8", async () => {
      await check(await attention(), problem([70, 1, 33, 5], 4, 1, 8, 12, dtype), dtype, "MQA 4/1 hd 8");
    });

    test("sequences of 5, 70, 1, 33 tokens, GQA 4/2, hd 64", async () => {
      await check(await attention(), problem([5, 70, 1, 33], 4, 2, 64, 13, dtype), dtype, "GQA 4/2 hd 64");
    });

    test("1.5B head shape (12 heads, 2 kv heads, hd 128), sequences of 40 and 1 tokens", async () => {
      await check(await attention(), problem([40, 1], 12, 2, 128, 14, dtype), dtype, "12/2 hd 128");
    });

    test("one token only, and a single sequence of 70 (MHA 2/2, hd 16)", async () => {
      const attn = await attention();
      await check(attn, problem([1], 4, 2, 16, 15, dtype), dtype, "T = 1");
      await check(attn, problem([70], 2, 2, 16, 16, dtype), dtype, "one sequence");
    });

    test("large scores (up to ~30: near one-hot softmax) keep the recomputed probabilities consistent", async () => {
      const p = problem([33, 70], 4, 2, 16, 17, dtype, 5);
      let maxScore = 0;
      const { T, nh, nKv, hd } = p.s;
      for (let t = 0; t < T; t++) {
        for (let j = p.seg[t]; j <= t; j++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += p.q[t * nh * hd + d] * p.k[j * nKv * hd + d];
          maxScore = Math.max(maxScore, Math.abs(dot * p.scale));
        }
      }
      expect(maxScore).toBeGreaterThan(20); // softmax close to one-hot: P far from uniform
      await check(await attention(), p, dtype, `scores up to ${maxScore.toFixed(0)}`);
    });

    test("backward is deterministic (bit-identical over two runs)", async () => {
      const gpu = await gpuOrSkip();
      const attn = await attention();
      const p = problem([33, 1, 20], 4, 1, 16, 18, dtype);
      const a = await runTrain(gpu, attn, p, dtype);
      const b = await runTrain(gpu, attn, p, dtype);
      for (const key of ["dq", "dk", "dv"] as const) expectClose(b[key], a[key], TOL.exact.atol, TOL.exact.rtol, `${dtype} ${key} run to run`);
    });
  });
}

describe.skipIf(!GPU)("training attention, rows form loaded for one head dim (trainHeadDim)", () => {
  test("= the generic rows form bit for bit, and the references (f32: hd 16 GQA, hd 8 MQA, hd 128; f16: hd 16)", async () => {
    const gpu = await gpuOrSkip();
    for (const dtype of hasF16(gpu) ? (["f32", "f16"] as Dtype[]) : (["f32"] as Dtype[])) {
      const generic = await loadAttention(gpu, dtype, "rows");
      // f16: the default run's shape only (each loader compiles every attention pipeline).
      const shapes = [[[1, 5, 33, 70], 4, 2, 16, 21], [[70, 1, 33], 4, 1, 8, 22], [[40, 1], 12, 2, 128, 23]] as const;
      for (const [lens, nh, nKv, hd, seed] of dtype === "f32" ? shapes : shapes.slice(0, 1)) {
        const fixed = await loadAttention(gpu, dtype, "rows", { trainHeadDim: hd });
        const p = problem([...lens], nh, nKv, hd, seed, dtype);
        await check(fixed, p, dtype, `rows, loaded for hd ${hd}`);
        const [a, b] = [await runTrain(gpu, fixed, p, dtype), await runTrain(gpu, generic, p, dtype)];
        // The same sums in the same order: only the loop bound is a constant.
        for (const key of ["out", "lse", "dq", "dk", "dv"] as const) expectClose(a[key], b[key], TOL.exact.atol, TOL.exact.rtol, `${dtype} hd ${hd} ${key}: fixed vs generic`);
      }
    }
  });

  test("a call with another head dim is refused, and so is a bad trainHeadDim", async () => {
    const gpu = await gpuOrSkip();
    const attn = await loadAttention(gpu, "f32", "rows", { trainHeadDim: 16 });
    const buf = gpu.buffer(1 << 16, "buf");
    expect(() => attn.trainForward(gpu.batch(), buf, buf, buf, buf, buf, buf, 4, 4, 2, 8, 1)).toThrow(/head_dim 8, but these kernels were loaded for head dim 16/);
    buf.destroy();
    expect(loadAttention(gpu, "f32", "rows", { trainHeadDim: 0 })).rejects.toThrow(/trainHeadDim 0 must be an integer in 1\.\.128/);
  });
});

describe.skipIf(!GPU)("training attention gradient check", () => {
  test("f32 backward vs central differences of the GPU forward, every element of q, k, v (T 9, 2 heads / 1 kv head, hd 4)", async () => {
    const gpu = await gpuOrSkip();
    const attn = await loadAttention(gpu, "f32");
    const lengths = [4, 1, 4];
    const p = problem(lengths, 2, 1, 4, 21, "f32");
    const { T, nh, nKv, hd } = p.s;
    const w = p.dout; // L = sum(w * out): dL/dout = w
    const grads = await runTrain(gpu, attn, p, "f32");

    // Every perturbed copy (each element of q, k, v, +h and -h) is packed as
    // its own group of sequences into one long call: one forward dispatch.
    const nq = T * nh * hd;
    const nk = T * nKv * hd;
    const nEl = nq + 2 * nk;
    const copies = 2 * nEl;
    const h = FD_STEP;
    const big = {
      q: new Float32Array(copies * nq),
      k: new Float32Array(copies * nk),
      v: new Float32Array(copies * nk),
      seg: packed(Array.from({ length: copies }, () => lengths).flat()),
    };
    for (let c = 0; c < copies; c++) {
      big.q.set(p.q, c * nq);
      big.k.set(p.k, c * nk);
      big.v.set(p.v, c * nk);
      const el = c >> 1;
      const d = c & 1 ? -h : h;
      if (el < nq) big.q[c * nq + el] += d;
      else if (el < nq + nk) big.k[c * nk + el - nq] += d;
      else big.v[c * nk + el - nq - nk] += d;
    }
    const BT = copies * T;
    const bufs = {
      q: gpu.buffer(big.q, "q"),
      k: gpu.buffer(big.k, "k"),
      v: gpu.buffer(big.v, "v"),
      seg: gpu.buffer(big.seg, "segStart"),
      out: gpu.buffer(BT * nh * hd * 4, "out"),
      lse: gpu.buffer(BT * nh * 4, "lse"),
    };
    const b = gpu.batch();
    attn.trainForward(b, bufs.q, bufs.k, bufs.v, bufs.seg, bufs.out, bufs.lse, BT, nh, nKv, hd, p.scale);
    b.submit();
    const out = await gpu.readF32(bufs.out, BT * nh * hd);
    for (const x of Object.values(bufs)) x.destroy();
    const fd = new Float32Array(nEl);
    for (let el = 0; el < nEl; el++) {
      const up = dotF64(out.subarray(2 * el * nq, (2 * el + 1) * nq), w);
      const dn = dotF64(out.subarray((2 * el + 1) * nq, (2 * el + 2) * nq), w);
      fd[el] = (up - dn) / (2 * h);
    }
    const tol = TOL.attention_train_fd;
    expectClose(grads.dq, fd.subarray(0, nq), tol.atol, tol.rtol, "dq vs finite differences");
    expectClose(grads.dk, fd.subarray(nq, nq + nk), tol.atol, tol.rtol, "dk vs finite differences");
    expectClose(grads.dv, fd.subarray(nq + nk), tol.atol, tol.rtol, "dv vs finite differences");
    // the check means something only if the gradients are not all tiny
    const norm = Math.sqrt(dotF64(fd, fd) / nEl);
    expect(norm).toBeGreaterThan(0.05);
    attn.destroy();
  });
});

describe.skipIf(!GPU)("training attention wrapper", () => {
  test("bad shapes and bindings are errors naming the kernel and tensor; scratch is freed", async () => {
    const gpu = await gpuOrSkip();
    const attn = await loadAttention(gpu, "f32");
    const buf = gpu.buffer(1 << 16, "x");
    const small = gpu.buffer(16, "small");
    const b = gpu.batch();
    const outs = Array.from({ length: 4 }, (_, i) => gpu.buffer(1 << 12, `grad${i}`)); // out, dq, dk, dv
    expect(() => attn.trainForward(b, buf, buf, buf, buf, buf, buf, 4, 4, 2, 256, 1)).toThrow(/attention\.train_forward: head_dim 256/);
    expect(() => attn.trainForward(b, buf, buf, buf, buf, buf, buf, 4, 5, 2, 16, 1)).toThrow(/n_heads 5 is not a multiple of n_kv_heads 2/);
    expect(() => attn.trainForward(b, buf, buf, buf, buf, buf, small, 8, 4, 2, 16, 1)).toThrow(/attention\.train_forward: tensor lse binds 16 bytes, needs at least 128/);
    expect(() => attn.trainBackward(b, buf, buf, buf, buf, buf, buf, buf, buf, small, buf, 8, 4, 2, 16, 1)).toThrow(/attention\.train_backward: tensor dk/);
    expect(() => attn.trainBackward(b, buf, buf, buf, buf, buf, buf, buf, buf, buf, buf, 8, 4, 2, 16, NaN)).toThrow(/scale NaN is not finite/);
    expect(attn.scratchBytes()).toBe(0);
    // zero inputs, segStart all 0 (one sequence): a valid call
    attn.trainBackward(b, buf, buf, buf, buf, outs[0], buf, buf, outs[1], outs[2], outs[3], 8, 4, 2, 16, 1);
    expect(attn.scratchBytes()).toBe(8 * 4 * 2 * 4);
    b.submit();
    await gpu.sync();
    attn.destroy();
    expect(attn.scratchBytes()).toBe(0);
    for (const x of [buf, small, ...outs]) x.destroy();
  });
});
