// Backward kernels of the small Qwen2 ops: embedding scatter-add, RMSNorm,
// RoPE, SwiGLU. Each is compared element by element with its CPU reference,
// and checked against central finite differences of the f32 forward for a
// random linear functional L = Σ r·y (the GPU backward gets dy = r).
// Weight gradients (dw, dTable) must accumulate; activation gradients are
// overwritten.
import { describe, expect, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import { addRef, loadElementwise, swigluBackwardRef, swigluRef } from "../src/kernels/elementwise.ts";
import { embeddingBackwardRef, gatherRef, groupTokens, loadEmbedding } from "../src/kernels/embedding.ts";
import { loadRmsNorm, rmsnormBackwardRef, rmsnormRef, type RowVariant } from "../src/kernels/rmsnorm.ts";
import { loadRope, ropeBackwardRef, ropeRef } from "../src/kernels/rope.ts";
import { expectClose, gpuOrSkip, hasF16, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
const EPS = 1e-6; // DeepSeek-R1-Distill-Qwen rms_norm_eps
const THETA = 10000;
/** Finite-difference step; see the fd_* entries in tests/tolerances.ts. */
const FD_H = 1e-2;

function tol(name: string) {
  const t = TOL[name];
  if (!t) throw new Error(`tests/tolerances.ts has no entry "${name}"`);
  return t;
}

const buf = (gpu: Gpu, data: Float32Array | Uint32Array, label: string) => gpu.buffer(data, label);

function randomIds(n: number, vocab: number, seed: number): Uint32Array {
  return Uint32Array.from(randn(n, seed, 1), (v) => Math.min(vocab - 1, Math.floor(((v + 1) / 2) * vocab)));
}

/** L = Σ r·y in f64 over the f32 outputs y of the forward. */
function dot(r: Float32Array, y: Float32Array): number {
  if (r.length !== y.length) throw new Error(`dot: ${r.length} vs ${y.length}`);
  let s = 0;
  for (let i = 0; i < r.length; i++) s += r[i] * y[i];
  return s;
}

/**
 * Central differences of L(x) = Σ r·forward() with respect to every element
 * of `x` (perturbed in place and restored). The step actually taken is
 * f32(x + h) − f32(x − h), not 2h, so rounding the perturbed input costs nothing.
 */
function fdGrad(x: Float32Array, h: number, r: Float32Array, forward: () => Float32Array): Float32Array {
  const g = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i];
    x[i] = x0 + h;
    const xp = x[i];
    const lp = dot(r, forward());
    x[i] = x0 - h;
    const xm = x[i];
    const lm = dot(r, forward());
    x[i] = x0;
    g[i] = (lp - lm) / (xp - xm);
  }
  return g;
}

describe.skipIf(!GPU)("rmsnorm backward", () => {
  /** x with rows of different scales (one tiny, where eps matters); w around 1. */
  function inputs(rows: number, dim: number, seed: number) {
    const x = randn(rows * dim, seed, 2);
    for (let r = 0; r < rows; r++) {
      const scale = r % 3 === 1 ? 1e-2 : r % 3 === 2 ? 30 : 1;
      for (let i = 0; i < dim; i++) x[r * dim + i] = x[r * dim + i] * scale + 0.3 * scale;
    }
    const w = Float32Array.from(randn(dim, seed + 1, 0.5), (v) => 1 + v);
    const dy = randn(rows * dim, seed + 2, 1);
    return { x, w, dy };
  }

  /** Records rmsnormBackward `times` times into one batch; returns dx and dw. */
  async function run(gpu: Gpu, x: Float32Array, w: Float32Array, dy: Float32Array, dw0: Float32Array, rows: number, dim: number, times = 1, variant: RowVariant = "workgroup") {
    const norm = await loadRmsNorm(gpu, "f32", variant);
    const [xb, wb, dyb, dwb] = [buf(gpu, x, "x"), buf(gpu, w, "w"), buf(gpu, dy, "dy"), buf(gpu, dw0, "dw")];
    const dxb = buf(gpu, new Float32Array(rows * dim).fill(Number.NaN), "dx"); // must be overwritten
    const b = gpu.batch();
    for (let i = 0; i < times; i++) norm.rmsnormBackward(b, xb, wb, dyb, dxb, dwb, rows, dim, EPS);
    b.submit();
    const dx = await gpu.readF32(dxb, rows * dim);
    const dw = await gpu.readF32(dwb, dim);
    for (const z of [xb, wb, dyb, dwb, dxb]) z.destroy();
    return { dx, dw };
  }

  for (const variant of ["workgroup", "row"] as const) test(`${variant} form: dx and dw vs the CPU reference, every element; rows span several chunks, dim several workgroup strides`, async () => {
    const gpu = await gpuOrSkip();
    const t = tol("rmsnorm_backward_f32");
    for (const [rows, dim] of [[1, 8], [3, 37], [70, 300], [2, 1536], [33, 1]]) {
      const { x, w, dy } = inputs(rows, dim, rows * 7 + dim);
      const dw0 = randn(dim, 99 + dim, 1);
      const { dx, dw } = await run(gpu, x, w, dy, dw0, rows, dim, 1, variant);
      const want = rmsnormBackwardRef(x, w, dy, rows, dim, EPS);
      expectClose(dx, want.dx, t.atol, t.rtol, `rmsnorm backward dx rows=${rows} dim=${dim}`);
      expectClose(dw, want.dw.map((v, i) => v + dw0[i]), t.atol, t.rtol, `rmsnorm backward dw (added to its start) rows=${rows} dim=${dim}`);
    }
  });

  test("dw accumulates over calls (twice -> start + 2·dw); dx is overwritten", async () => {
    const gpu = await gpuOrSkip();
    const t = tol("rmsnorm_backward_f32");
    const [rows, dim] = [40, 24];
    const { x, w, dy } = inputs(rows, dim, 5);
    const dw0 = randn(dim, 6, 1);
    const { dx, dw } = await run(gpu, x, w, dy, dw0, rows, dim, 2);
    const want = rmsnormBackwardRef(x, w, dy, rows, dim, EPS);
    expectClose(dx, want.dx, t.atol, t.rtol, "rmsnorm backward dx after two calls");
    expectClose(dw, want.dw.map((v, i) => dw0[i] + 2 * v), t.atol, t.rtol, "rmsnorm backward dw after two calls");
  });

  test("accumulate (the fused residual add): dx = dx0 + the reference's dx, as addInPlace after the unfused backward", async () => {
    const gpu = await gpuOrSkip();
    const t = tol("rmsnorm_backward_f32");
    for (const [rows, dim, variant] of [[3, 37, "workgroup"], [70, 300, "workgroup"], [70, 300, "row"]] as const) {
      const norm = await loadRmsNorm(gpu, "f32", variant);
      const { x, w, dy } = inputs(rows, dim, 17 + dim);
      const dx0 = randn(rows * dim, 18 + dim, 3);
      const [xb, wb, dyb, dxb, dwb] = [buf(gpu, x, "x"), buf(gpu, w, "w"), buf(gpu, dy, "dy"), buf(gpu, dx0, "dx"), buf(gpu, new Float32Array(dim), "dw")];
      const b = gpu.batch();
      norm.rmsnormBackward(b, xb, wb, dyb, dxb, dwb, rows, dim, EPS, { accumulate: true });
      b.submit();
      const dx = await gpu.readF32(dxb, rows * dim);
      for (const z of [xb, wb, dyb, dwb, dxb]) z.destroy();
      const want = addRef(dx0, rmsnormBackwardRef(x, w, dy, rows, dim, EPS).dx);
      expectClose(dx, want, t.atol, t.rtol, `rmsnorm backward accumulate ${variant} rows=${rows} dim=${dim}`);
    }
  });

  test("finite differences of the f32 forward in x and w", async () => {
    const gpu = await gpuOrSkip();
    const t = tol("fd_rmsnorm_f32");
    for (const [rows, dim] of [[3, 8], [2, 37]]) {
      // Rows of RMS ~0.6, 1 and 3: the step h stays small next to |x|, so the
      // truncation error O(h²/rms³) is small (the tiny rows are covered above).
      const x = randn(rows * dim, 11 + dim, 1);
      for (let i = 0; i < x.length; i++) x[i] = (x[i] + 0.3) * [1, 0.6, 3][Math.floor(i / dim) % 3] * 1.5;
      const w = Float32Array.from(randn(dim, 10 + dim, 0.5), (v) => 1 + v);
      const r = randn(rows * dim, 12 + dim, 1);
      const { dx, dw } = await run(gpu, x, w, r, new Float32Array(dim), rows, dim);
      const fwd = () => rmsnormRef(x, w, rows, dim, EPS);
      expectClose(fdGrad(x, FD_H, r, fwd), dx, t.atol, t.rtol, `rmsnorm d/dx finite differences rows=${rows} dim=${dim}`);
      expectClose(fdGrad(w, FD_H, r, fwd), dw, t.atol, t.rtol, `rmsnorm d/dw finite differences rows=${rows} dim=${dim}`);
    }
  });

  test("f16 loaders and bad arguments are refused with the kernel's name", async () => {
    const gpu = await gpuOrSkip();
    const norm = await loadRmsNorm(gpu, "f32");
    const a = gpu.buffer(64, "a");
    const c = gpu.buffer(64, "c");
    const d = gpu.buffer(64, "d");
    expect(() => norm.rmsnormBackward(gpu.batch(), a, a, a, c, d, 2, 16, EPS)).toThrow(/rmsnorm\.backward: x binds 64 bytes/);
    expect(() => norm.rmsnormBackward(gpu.batch(), a, a, a, a, d, 1, 4, EPS)).toThrow(/dx shares a buffer with x/);
    expect(() => norm.rmsnormBackward(gpu.batch(), a, a, a, c, c, 1, 4, EPS)).toThrow(/shares a buffer/);
    expect(() => norm.rmsnormBackward(gpu.batch(), a, a, a, c, d, 1, 4, 0)).toThrow(/eps/);
    if (hasF16(gpu)) {
      const half = await loadRmsNorm(gpu, "f16");
      expect(() => half.rmsnormBackward(gpu.batch(), a, a, a, c, d, 1, 4, EPS)).toThrow(/f32-only/);
    }
    for (const z of [a, c, d]) z.destroy();
  });
});

describe.skipIf(!GPU)("rope backward", () => {
  function positions(T: number, seed: number): Uint32Array {
    const p = Uint32Array.from(randn(T, seed, 1), (v) => Math.floor(((v + 1) / 2) * 32768));
    p[0] = 0;
    if (T > 1) p[1] = 32768;
    return p;
  }

  async function run(gpu: Gpu, dy: Float32Array, pos: Uint32Array, T: number, H: number, hd: number, theta: number) {
    const rope = await loadRope(gpu, "f32");
    const gb = buf(gpu, dy, "dx");
    const pb = buf(gpu, pos, "pos");
    const b = gpu.batch();
    rope.ropeBackward(b, gb, pb, T, H, hd, theta);
    b.submit();
    const dx = await gpu.readF32(gb, T * H * hd);
    gb.destroy();
    pb.destroy();
    return dx;
  }

  test("vs the CPU reference, every element; positions up to 32768; and rope∘backward = identity", async () => {
    const gpu = await gpuOrSkip();
    const t = tol("rope_backward_f32");
    for (const [T, H, hd, theta] of [[1, 1, 2, THETA], [5, 3, 8, THETA], [17, 2, 64, THETA], [9, 2, 128, 1e6]]) {
      const dy = randn(T * H * hd, T * 5 + hd, 1);
      const pos = positions(T, hd + T);
      const dx = await run(gpu, dy, pos, T, H, hd, theta);
      expectClose(dx, ropeBackwardRef(dy, pos, T, H, hd, theta), t.atol, t.rtol, `rope backward T=${T} H=${H} hd=${hd} theta=${theta}`);
      // The adjoint of a rotation is its inverse: rotating dx forward gives dy back.
      expectClose(ropeRef(dx, pos, T, H, hd, theta), dy, t.atol, t.rtol, `rope(rope backward(dy)) = dy, T=${T} hd=${hd}`);
    }
  });

  test("finite differences of the f32 forward", async () => {
    const gpu = await gpuOrSkip();
    const t = tol("fd_linear_f32");
    const [T, H, hd] = [4, 2, 8];
    const x = randn(T * H * hd, 3, 1);
    const pos = Uint32Array.of(0, 1, 7, 30000);
    const r = randn(T * H * hd, 4, 1);
    const dx = await run(gpu, r, pos, T, H, hd, THETA);
    expectClose(fdGrad(x, FD_H, r, () => ropeRef(x, pos, T, H, hd, THETA)), dx, t.atol, t.rtol, "rope d/dx finite differences");
  });

  test("fused q+k backward (rope_qk_backward) = ropeBackward of dq and of dk, bit for bit; vs the reference and finite differences", async () => {
    const gpu = await gpuOrSkip();
    const rope = await loadRope(gpu, "f32");
    const t = tol("rope_backward_f32");
    for (const [T, nh, nkv, hd] of [[1, 1, 1, 2], [7, 4, 2, 16], [5, 6, 1, 8], [3, 2, 2, 64]]) {
      const dq = randn(T * nh * hd, T + nh, 1);
      const dk = randn(T * nkv * hd, T + nkv + 50, 1);
      const pos = positions(T, hd + 3 * T);
      const bufs = [buf(gpu, dq, "dq"), buf(gpu, dk, "dk"), buf(gpu, pos, "pos")];
      const b = gpu.batch();
      rope.ropeQkBackward(b, bufs[0], bufs[1], bufs[2], { T, nh, nkv, hd, theta: THETA });
      b.submit();
      const [gq, gk] = [await gpu.readF32(bufs[0], dq.length), await gpu.readF32(bufs[1], dk.length)];
      bufs.forEach((x) => x.destroy());
      const what = `T=${T} nh=${nh} nkv=${nkv} hd=${hd}`;
      expectClose(gq, await run(gpu, dq, pos, T, nh, hd, THETA), 0, 0, `rope_qk_backward dq = ropeBackward(dq), ${what}`);
      expectClose(gk, await run(gpu, dk, pos, T, nkv, hd, THETA), 0, 0, `rope_qk_backward dk = ropeBackward(dk), ${what}`);
      expectClose(gq, ropeBackwardRef(dq, pos, T, nh, hd, THETA), t.atol, t.rtol, `rope_qk_backward dq vs reference, ${what}`);
      expectClose(gk, ropeBackwardRef(dk, pos, T, nkv, hd, THETA), t.atol, t.rtol, `rope_qk_backward dk vs reference, ${what}`);
    }
    // Finite differences of the forward on q and on k, through the fused backward.
    const [T, nh, nkv, hd] = [3, 2, 1, 8];
    const pos = Uint32Array.of(0, 5, 30000);
    const [q, k] = [randn(T * nh * hd, 81, 1), randn(T * nkv * hd, 82, 1)];
    const [rq, rk] = [randn(T * nh * hd, 83, 1), randn(T * nkv * hd, 84, 1)];
    const bufs = [buf(gpu, rq, "dq"), buf(gpu, rk, "dk"), buf(gpu, pos, "pos")];
    const b = gpu.batch();
    rope.ropeQkBackward(b, bufs[0], bufs[1], bufs[2], { T, nh, nkv, hd, theta: THETA });
    b.submit();
    const [gq, gk] = [await gpu.readF32(bufs[0], q.length), await gpu.readF32(bufs[1], k.length)];
    bufs.forEach((x) => x.destroy());
    const fd = tol("fd_linear_f32");
    expectClose(fdGrad(q, FD_H, rq, () => ropeRef(q, pos, T, nh, hd, THETA)), gq, fd.atol, fd.rtol, "rope_qk d/dq finite differences");
    expectClose(fdGrad(k, FD_H, rk, () => ropeRef(k, pos, T, nkv, hd, THETA)), gk, fd.atol, fd.rtol, "rope_qk d/dk finite differences");
    const a = gpu.buffer(64, "a");
    expect(() => rope.ropeQkBackward(gpu.batch(), a, a, a, { T: 1, nh: 1, nkv: 1, hd: 4, theta: THETA })).toThrow(/q and k share a buffer/);
    expect(() => rope.ropeQkBackward(gpu.batch(), a, gpu.buffer(16, "k"), a, { T: 2, nh: 2, nkv: 1, hd: 8, theta: THETA })).toThrow(/rope\.rope_qk_backward: q binds 64 bytes/);
    a.destroy();
    rope.destroy();
  });

  test("f16 loaders and bad shapes are refused", async () => {
    const gpu = await gpuOrSkip();
    const rope = await loadRope(gpu, "f32");
    const a = gpu.buffer(64, "a");
    expect(() => rope.ropeBackward(gpu.batch(), a, a, 2, 2, 8, THETA)).toThrow(/rope\.rope_backward: x binds 64 bytes/);
    expect(() => rope.ropeBackward(gpu.batch(), a, a, 1, 1, 3, THETA)).toThrow(/even/);
    if (hasF16(gpu)) {
      const half = await loadRope(gpu, "f16");
      expect(() => half.ropeBackward(gpu.batch(), a, a, 1, 1, 2, THETA)).toThrow(/f32-only/);
      half.destroy();
    }
    a.destroy();
    rope.destroy();
  });
});

describe.skipIf(!GPU)("swiglu backward", () => {
  async function run(gpu: Gpu, gate: Float32Array, upv: Float32Array, dout: Float32Array) {
    const ew = await loadElementwise(gpu, "f32");
    const n = gate.length;
    const [gb, ub, db] = [buf(gpu, gate, "gate"), buf(gpu, upv, "up"), buf(gpu, dout, "dout")];
    const dgb = buf(gpu, new Float32Array(n).fill(Number.NaN), "dgate");
    const dub = buf(gpu, new Float32Array(n).fill(Number.NaN), "dup");
    const b = gpu.batch();
    ew.swigluBackward(b, gb, ub, db, dgb, dub, n);
    b.submit();
    const out = { dgate: await gpu.readF32(dgb, n), dup: await gpu.readF32(dub, n) };
    for (const z of [gb, ub, db, dgb, dub]) z.destroy();
    return out;
  }

  test("vs the CPU reference, every element; gate from -40 to 40 (sigmoid tails)", async () => {
    const gpu = await gpuOrSkip();
    const t = tol("swiglu_backward_f32");
    for (const n of [1, 257, 5000]) {
      const gate = randn(n, n, 8);
      if (n > 4) gate.set([-40, 40, 0, -1e-3]);
      const upv = randn(n, n + 1, 2);
      const dout = randn(n, n + 2, 1);
      const got = await run(gpu, gate, upv, dout);
      const want = swigluBackwardRef(gate, upv, dout);
      expectClose(got.dgate, want.dgate, t.atol, t.rtol, `swiglu backward dgate n=${n}`);
      expectClose(got.dup, want.dup, t.atol, t.rtol, `swiglu backward dup n=${n}`);
    }
  });

  test("finite differences of the f32 forward in gate and up", async () => {
    const gpu = await gpuOrSkip();
    const t = tol("fd_elementwise_f32");
    const n = 64;
    const gate = randn(n, 21, 4);
    const upv = randn(n, 22, 2);
    const r = randn(n, 23, 1);
    const got = await run(gpu, gate, upv, r);
    const fwd = () => swigluRef(gate, upv);
    expectClose(fdGrad(gate, FD_H, r, fwd), got.dgate, t.atol, t.rtol, "swiglu d/dgate finite differences");
    expectClose(fdGrad(upv, FD_H, r, fwd), got.dup, t.atol, t.rtol, "swiglu d/dup finite differences");
  });

  test("stacked gate/up (swiglu_gu_backward over gu [rows, 2w]) = swiglu_backward of gate and up apart, bit for bit; finite differences", async () => {
    const gpu = await gpuOrSkip();
    const ew = await loadElementwise(gpu, "f32");
    const stackRows = (g: Float32Array, u: Float32Array, rows: number, w: number) => {
      const gu = new Float32Array(2 * rows * w);
      for (let r = 0; r < rows; r++) {
        gu.set(g.subarray(r * w, (r + 1) * w), 2 * r * w);
        gu.set(u.subarray(r * w, (r + 1) * w), (2 * r + 1) * w);
      }
      return gu;
    };
    const stacked = async (gu: Float32Array, dout: Float32Array, rows: number, w: number) => {
      const [gb, db] = [buf(gpu, gu, "gu"), buf(gpu, dout, "dout")];
      const dgb = buf(gpu, new Float32Array(2 * rows * w).fill(Number.NaN), "dgu");
      const b = gpu.batch();
      ew.swigluGuBackward(b, gb, db, dgb, rows, w);
      b.submit();
      const out = await gpu.readF32(dgb, 2 * rows * w);
      for (const z of [gb, db, dgb]) z.destroy();
      return out;
    };
    for (const [rows, w] of [[1, 1], [3, 7], [17, 300]]) {
      const gate = randn(rows * w, rows + w, 8);
      if (rows * w > 4) gate.set([-40, 40, 0, -1e-3]);
      const upv = randn(rows * w, rows + w + 1, 2);
      const dout = randn(rows * w, rows + w + 2, 1);
      const got = await stacked(stackRows(gate, upv, rows, w), dout, rows, w);
      const apart = await run(gpu, gate, upv, dout);
      expectClose(got, stackRows(apart.dgate, apart.dup, rows, w), 0, 0, `swiglu_gu_backward = swiglu_backward, rows ${rows} w ${w}`);
    }
    // Finite differences of out = silu(gate)·up over the stacked input.
    const [rows, w] = [4, 16];
    const gu = stackRows(randn(rows * w, 31, 4), randn(rows * w, 32, 2), rows, w);
    const r = randn(rows * w, 33, 1);
    const fwd = () => {
      const out = new Float32Array(rows * w);
      for (let i = 0; i < rows * w; i++) {
        const j = Math.floor(i / w) * 2 * w + (i % w);
        out[i] = swigluRef(gu.subarray(j, j + 1), gu.subarray(j + w, j + w + 1))[0];
      }
      return out;
    };
    const t = tol("fd_elementwise_f32");
    expectClose(fdGrad(gu, FD_H, r, fwd), await stacked(gu, r, rows, w), t.atol, t.rtol, "swiglu_gu d/dgu finite differences");
    const a = gpu.buffer(64, "a");
    expect(() => ew.swigluGuBackward(gpu.batch(), a, a, a, 2, 2)).toThrow(/dgu shares a buffer with gu or dout/);
    expect(() => ew.swigluGuBackward(gpu.batch(), a, gpu.buffer(64, "d"), gpu.buffer(64, "o"), 4, 4)).toThrow(/swiglu_gu_backward: gu binds 64 bytes, needs 32 × 4/);
    a.destroy();
  });

  test("f16 loaders and aliased outputs are refused", async () => {
    const gpu = await gpuOrSkip();
    const ew = await loadElementwise(gpu, "f32");
    const a = gpu.buffer(64, "a");
    const c = gpu.buffer(64, "c");
    const d = gpu.buffer(64, "d");
    expect(() => ew.swigluBackward(gpu.batch(), a, a, a, c, d, 32)).toThrow(/swiglu_backward: gate binds 64 bytes/);
    expect(() => ew.swigluBackward(gpu.batch(), a, a, c, c, d, 4)).toThrow(/dgate shares a buffer with dout/);
    expect(() => ew.swigluBackward(gpu.batch(), a, a, a, c, c, 4)).toThrow(/dgate and dup share/);
    if (hasF16(gpu)) {
      const half = await loadElementwise(gpu, "f16");
      expect(() => half.swigluBackward(gpu.batch(), a, a, a, c, d, 4)).toThrow(/f32-only/);
    }
    for (const z of [a, c, d]) z.destroy();
  });
});

describe.skipIf(!GPU)("embedding backward (scatter-add)", () => {
  /**
   * Runs embeddingBackward over the table cut into chunks at `cuts` (as a
   * vocabulary too big for one binding is), `times` times into one batch;
   * returns the full dTable.
   */
  async function run(gpu: Gpu, ids: Uint32Array, dy: Float32Array, dTable0: Float32Array, D: number, cuts: number[], times = 1) {
    const emb = await loadEmbedding(gpu, "f32");
    const T = ids.length;
    const groups = groupTokens(ids);
    const idsBuf = buf(gpu, groups.index, "index");
    const dyBuf = buf(gpu, dy, "dy");
    const chunks = cuts.slice(0, -1).map((row0, c) => ({ row0, rows: cuts[c + 1] - row0 }));
    const bufs = chunks.map((ch) => buf(gpu, dTable0.slice(ch.row0 * D, (ch.row0 + ch.rows) * D), "dTable chunk"));
    const b = gpu.batch();
    for (let i = 0; i < times; i++) chunks.forEach((ch, c) => emb.embeddingBackward(b, idsBuf, groups.count, dyBuf, bufs[c], T, D, ch.row0, ch.rows));
    b.submit();
    const out = new Float32Array(dTable0.length);
    for (let c = 0; c < chunks.length; c++) out.set(await gpu.readF32(bufs[c], chunks[c].rows * D), chunks[c].row0 * D);
    for (const z of [idsBuf, dyBuf, ...bufs]) z.destroy();
    return out;
  }

  const cutsOf = (V: number) => [0, Math.floor(V / 3), Math.floor((2 * V) / 3) + 1, V];

  test("vs the CPU reference, every element; repeated ids, chunked table, untouched rows kept, D over a column block", async () => {
    const gpu = await gpuOrSkip();
    const t = tol("embedding_backward_f32");
    // [T, D, V]: a single token; many repeats (V << T); mostly unique; D = 1100 > WG·PER = 1024 columns.
    for (const [T, D, V] of [[1, 5, 3], [40, 37, 7], [33, 300, 101], [9, 1100, 13], [70, 64, 500]]) {
      const ids = randomIds(T, V, T + D);
      ids[0] = V - 1;
      if (T > 2) ids[T - 1] = ids[1]; // a repeat far apart
      const dy = randn(T * D, 3 + T, 1);
      const dTable0 = randn(V * D, 5 + V, 1); // accumulated into; rows without tokens must stay
      const got = await run(gpu, ids, dy, dTable0, D, cutsOf(V));
      const want = embeddingBackwardRef(ids, dy, dTable0.slice(), D);
      expectClose(got, want, t.atol, t.rtol, `embedding backward T=${T} D=${D} V=${V}`);
    }
  });

  test("only the chunk's ids are written: a chunk with row0 > 0 alone", async () => {
    const gpu = await gpuOrSkip();
    const t = tol("embedding_backward_f32");
    const [T, D, V] = [30, 16, 20];
    const ids = randomIds(T, V, 3);
    const dy = randn(T * D, 4, 1);
    const emb = await loadEmbedding(gpu, "f32");
    const [row0, rows] = [6, 9];
    const start = randn(rows * D, 5, 1);
    const groups = groupTokens(ids);
    const [idsBuf, dyBuf, chunk] = [buf(gpu, groups.index, "index"), buf(gpu, dy, "dy"), buf(gpu, start, "chunk")];
    const b = gpu.batch();
    emb.embeddingBackward(b, idsBuf, groups.count, dyBuf, chunk, T, D, row0, rows);
    b.submit();
    const want = embeddingBackwardRef(ids, dy, start.slice(), D, row0);
    expectClose(await gpu.readF32(chunk, rows * D), want, t.atol, t.rtol, "embedding backward single chunk row0=6");
    for (const z of [idsBuf, dyBuf, chunk]) z.destroy();
  });

  test("dTable accumulates over calls (twice -> start + 2·grad)", async () => {
    const gpu = await gpuOrSkip();
    const t = tol("embedding_backward_f32");
    const [T, D, V] = [25, 12, 9];
    const ids = randomIds(T, V, 8);
    const dy = randn(T * D, 9, 1);
    const dTable0 = randn(V * D, 10, 1);
    const got = await run(gpu, ids, dy, dTable0, D, cutsOf(V), 2);
    const grad = embeddingBackwardRef(ids, dy, new Float32Array(V * D), D);
    expectClose(got, dTable0.map((v, i) => v + 2 * grad[i]), t.atol, t.rtol, "embedding backward twice");
  });

  test("more id groups than one grid dimension holds (2-D grid), and few ids over many tokens", async () => {
    const gpu = await gpuOrSkip();
    const t = tol("embedding_backward_f32");
    const max = gpu.limits.maxComputeWorkgroupsPerDimension;
    // One workgroup per (id group, column block): V distinct ids > one grid dimension, each once or twice.
    const [D, V] = [2, max + 3];
    const ids = Uint32Array.from({ length: V + 50 }, (_, i) => (i < V ? (i * 7919) % V : (i * 31) % V));
    const dy = randn(ids.length * D, 78, 1);
    const got = await run(gpu, ids, dy, new Float32Array(V * D), D, [0, V]);
    expectClose(got, embeddingBackwardRef(ids, dy, new Float32Array(V * D), D), t.atol, t.rtol, "embedding backward 2-D grid");
    // Few distinct ids, each carried by ~200 tokens: one invocation per column sums a long group.
    const few = randomIds(600, 3, 79);
    const dyFew = randn(few.length * 70, 80, 1);
    const gotFew = await run(gpu, few, dyFew, new Float32Array(3 * 70), 70, [0, 3]);
    expectClose(gotFew, embeddingBackwardRef(few, dyFew, new Float32Array(3 * 70), 70), t.atol, t.rtol, "embedding backward, 3 ids over 600 tokens");
  }, 60_000);

  test("groupTokens: starts, ids in first-appearance order, positions ascending per id", () => {
    const ids = Uint32Array.from([5, 2, 5, 9, 2, 5]);
    const { index, count } = groupTokens(ids);
    expect(count).toBe(3);
    // starts [0, 3, 5, 6], ids [5, 2, 9], order [0 2 5 | 1 4 | 3]
    expect([...index]).toEqual([0, 3, 5, 6, 5, 2, 9, 0, 2, 5, 1, 4, 3]);
    expect(groupTokens(new Uint32Array(0))).toEqual({ index: Uint32Array.from([0]), count: 0 });
  });

  test("finite differences of the f32 forward in the table", async () => {
    const gpu = await gpuOrSkip();
    const t = tol("fd_linear_f32");
    const [T, D, V] = [12, 6, 5];
    const ids = randomIds(T, V, 31);
    const table = randn(V * D, 32, 1);
    const r = randn(T * D, 33, 1);
    const got = await run(gpu, ids, r, new Float32Array(V * D), D, cutsOf(V));
    const fwd = () => gatherRef(ids, table, new Float32Array(T * D), D);
    expectClose(fdGrad(table, FD_H, r, fwd), got, t.atol, t.rtol, "embedding d/dtable finite differences");
  });

  test("f16 loaders and bad bindings are refused", async () => {
    const gpu = await gpuOrSkip();
    const emb = await loadEmbedding(gpu, "f32");
    const a = gpu.buffer(64, "a");
    const c = gpu.buffer(64, "c");
    expect(() => emb.embeddingBackward(gpu.batch(), a, 1, a, c, 4, 8, 0, 2)).toThrow(/embedding\.scatter_add: dy binds 64 bytes/);
    expect(() => emb.embeddingBackward(gpu.batch(), a, 1, c, c, 2, 2, 0, 2)).toThrow(/dTable shares a buffer/);
    expect(() => emb.embeddingBackward(gpu.batch(), a, 3, a, c, 2, 2, 0, 2)).toThrow(/3 id groups for 2 tokens/);
    expect(() => emb.embeddingBackward(gpu.batch(), a, 5, a, c, 6, 1, 0, 2)).toThrow(/index binds 64 bytes/);
    const limit = gpu.limits.maxStorageBufferBindingSize;
    const huge = gpu.device.createBuffer({ size: limit + 256, usage: GPUBufferUsage.STORAGE, label: "huge" });
    expect(() => emb.embeddingBackward(gpu.batch(), a, 1, c, huge, 1, 4, 0, 2)).toThrow(/dTable binds .* over the adapter's maxStorageBufferBindingSize .* row chunks/);
    huge.destroy();
    if (hasF16(gpu)) {
      const half = await loadEmbedding(gpu, "f16");
      expect(() => half.embeddingBackward(gpu.batch(), a, 1, a, c, 1, 1, 0, 1)).toThrow(/f32-only/);
    }
    a.destroy();
    c.destroy();
  });
});
