// f16 operands in the training kernels (mixed precision, src/kernels/f16_operands.ts):
// matmul with an f16 weight copy, its backward, and training attention, each
// with f32 inputs rounded to f16 as they are loaded, against the f64
// references run on the same inputs rounded on the CPU; overflow past f16's
// range gives ±Inf; the loss-scale kernel against its reference.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import { loadAttention, trainAttentionBackwardRef, trainAttentionRef, type AttentionForm } from "../src/kernels/attention.ts";
import { f32ToF16Bits, roundToF16 } from "../src/kernels/f16.ts";
import { loadLossScale, scaleRef } from "../src/kernels/loss_scale.ts";
import { loadMatmul, matmulRef } from "../src/kernels/matmul.ts";
import { loadMatmulGrad, matmulDInputRef, matmulDWeightRef } from "../src/kernels/matmul_grad.ts";
import { expectClose, gpuOrSkip, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
setDefaultTimeout(120_000);

const f16Buf = (gpu: Gpu, x: Float32Array, label: string) => gpu.buffer(f32ToF16Bits(x), label);

describe.skipIf(!GPU)("matmul with f16 operands", () => {
  // M 3: gemv; 37, 70: prefill, both kernels on every adapter. K 45: scalar units, 64: vec4.
  const cases = [3, 37, 70].flatMap((M) => [45, 64].flatMap((K) => (["rows", "tiled"] as const).map((prefill) => ({ M, N: 19, K, prefill }))));
  for (const { M, N, K, prefill } of cases) {
    for (const variant of ["bias", "residual"] as const) {
      if (M === 3 && prefill === "tiled") continue; // gemv either way
      test(`M ${M} N ${N} K ${K} ${variant} (${M === 3 ? "gemv" : prefill}): A rounded at load, W an f16 copy, f32 out`, async () => {
        const gpu = await gpuOrSkip();
        const mm = await loadMatmul(gpu, "f32", { prefill }, { f16Operands: true });
        const a = randn(M * K, M + K, 3); // f32 values, not representable in f16
        const w = randn(N * K, M + K + 1, 0.5);
        const bias = randn(N, M + K + 2, 1);
        const c0 = randn(M * N, M + K + 3, 1);
        const bufC = gpu.buffer(c0, "C");
        const b = gpu.batch();
        const biasBuf = variant === "bias" ? gpu.buffer(bias, "bias") : null;
        mm.matmul(b, gpu.buffer(a, "A"), f16Buf(gpu, w, "W16"), biasBuf, bufC, M, N, K, { residual: variant === "residual" });
        b.submit();
        const got = await gpu.readF32(bufC, M * N);
        const prod = matmulRef(roundToF16(a), roundToF16(w), variant === "bias" ? bias : null, M, N, K);
        const want = variant === "residual" ? prod.map((v, i) => v + c0[i]) : prod;
        expectClose(got, want, TOL.f32_matmul.atol, TOL.f32_matmul.rtol, `f16-operand matmul ${M}x${N}x${K} ${variant}`);
        // and the rounding is real: unrounded A gives a different product
        const exact = matmulRef(a, roundToF16(w), variant === "bias" ? bias : null, M, N, K);
        expect(Math.max(...prod.map((v, i) => Math.abs(v - exact[i])))).toBeGreaterThan(1e-3);
      });
    }
  }

  test("an A element past f16's range makes its row non-finite, one just inside stays finite; subnormals round", async () => {
    const gpu = await gpuOrSkip();
    const mm = await loadMatmul(gpu, "f32", {}, { f16Operands: true });
    for (const M of [3, 40]) {
      const K = 8;
      const N = 4;
      const a = new Float32Array(M * K).fill(0.5);
      a[0] = 65519; // rounds to 65504
      a[K] = 70000; // row 1: Inf
      // row 2: f16 subnormals (below 2^-14), rounded to multiples of 2^-24
      for (let k = 0; k < K; k++) a[2 * K + k] = (k + 0.3) * 1.7e-7 * (k % 2 ? -1 : 1);
      const sub = roundToF16(a.subarray(2 * K, 3 * K)).reduce((s, v) => s + v * 0.25, 0);
      const w = new Float32Array(N * K).fill(0.25);
      const c = gpu.buffer(M * N * 4, "C");
      const b = gpu.batch();
      mm.matmul(b, gpu.buffer(a, "A"), f16Buf(gpu, w, "W16"), null, c, M, N, K);
      b.submit();
      const got = await gpu.readF32(c, M * N);
      for (let n = 0; n < N; n++) {
        expect(got[n]).toBe(0.25 * (65504 + 0.5 * 7));
        expect(got[N + n]).toBe(Infinity);
        expect(Math.abs(got[2 * N + n] - sub)).toBeLessThan(1e-12);
      }
      expect(sub).not.toBe(a.subarray(2 * K, 3 * K).reduce((s, v) => s + v * 0.25, 0));
    }
  });
});

describe.skipIf(!GPU)("matmul backward with f16 operands", () => {
  for (const [M, N, K] of [[7, 5, 45], [70, 67, 130]]) {
    test(`dInput and dWeight ${M}x${N}x${K}: dy, x rounded at load, W an f16 copy, f32 accumulation`, async () => {
      const gpu = await gpuOrSkip();
      const mg = await loadMatmulGrad(gpu, {}, { f16Operands: true });
      const dy = randn(M * N, M, 2);
      const w = randn(N * K, M + 1, 0.5);
      const x = randn(M * K, M + 2, 3);
      const dw0 = randn(N * K, M + 3, 1);
      const dx = gpu.buffer(M * K * 4, "dx");
      const dw = gpu.buffer(dw0, "dw");
      const bufDy = gpu.buffer(dy, "dy");
      const b = gpu.batch();
      mg.dInput(b, bufDy, f16Buf(gpu, w, "W16"), dx, M, N, K);
      mg.dWeight(b, bufDy, gpu.buffer(x, "x"), dw, M, N, K);
      b.submit();
      const t = TOL.matmul_grad_f32;
      expectClose(await gpu.readF32(dx, M * K), matmulDInputRef(roundToF16(dy), roundToF16(w), M, N, K), t.atol, t.rtol, "dInput");
      expectClose(await gpu.readF32(dw, N * K), matmulDWeightRef(roundToF16(dy), roundToF16(x), M, N, K, dw0), t.atol * 4, t.rtol, "dWeight");
    });
  }
});

describe.skipIf(!GPU)("training attention with f16 operands", () => {
  const seg = Uint32Array.from([0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10]);
  const T = seg.length;
  const [nh, nKv, hd] = [4, 2, 16];
  for (const form of ["rows", "tiled"] as AttentionForm[]) {
    test(`${form}: out, lse, dq, dk, dv against the references on rounded q, k, v, dout`, async () => {
      const gpu = await gpuOrSkip();
      const attn = await loadAttention(gpu, "f32", form, { f16Operands: true });
      const q = randn(T * nh * hd, 11, 1.3);
      const k = randn(T * nKv * hd, 12, 1.3);
      const v = randn(T * nKv * hd, 13);
      const dout = randn(T * nh * hd, 14);
      const scale = 1 / Math.sqrt(hd);
      const bufs = {
        q: gpu.buffer(q, "q"),
        k: gpu.buffer(k, "k"),
        v: gpu.buffer(v, "v"),
        seg: gpu.buffer(seg, "seg"),
        out: gpu.buffer(T * nh * hd * 4, "out"),
        lse: gpu.buffer(T * nh * 4, "lse"),
        dout: gpu.buffer(dout, "dout"),
        dq: gpu.buffer(T * nh * hd * 4, "dq"),
        dk: gpu.buffer(T * nKv * hd * 4, "dk"),
        dv: gpu.buffer(T * nKv * hd * 4, "dv"),
      };
      const b = gpu.batch();
      attn.trainForward(b, bufs.q, bufs.k, bufs.v, bufs.seg, bufs.out, bufs.lse, T, nh, nKv, hd, scale);
      attn.trainBackward(b, bufs.q, bufs.k, bufs.v, bufs.seg, bufs.out, bufs.dout, bufs.lse, bufs.dq, bufs.dk, bufs.dv, T, nh, nKv, hd, scale);
      b.submit();
      const s = { T, nh, nKv, hd };
      const [rq, rk, rv, rd] = [q, k, v, dout].map(roundToF16);
      const want = trainAttentionRef(rq, rk, rv, seg, s, scale);
      const out = await gpu.readF32(bufs.out, T * nh * hd);
      expectClose(out, want.out, TOL.attention_train_f32.atol, TOL.attention_train_f32.rtol, `${form} out`);
      const lse = TOL.attention_train_lse;
      expectClose(await gpu.readF32(bufs.lse, T * nh), want.lse, lse.atol, lse.rtol, `${form} lse`);
      // D = Σ rounded dout · out, the out the kernel was given (f32)
      const g = trainAttentionBackwardRef(rq, rk, rv, seg, out, rd, s, scale);
      const t = TOL.attention_train_bwd_f32;
      expectClose(await gpu.readF32(bufs.dq, T * nh * hd), g.dq, t.atol, t.rtol, `${form} dq`);
      expectClose(await gpu.readF32(bufs.dk, T * nKv * hd), g.dk, t.atol, t.rtol, `${form} dk`);
      expectClose(await gpu.readF32(bufs.dv, T * nKv * hd), g.dv, t.atol, t.rtol, `${form} dv`);
      const unrounded = trainAttentionRef(q, k, v, seg, s, scale);
      expect(Math.max(...want.out.map((x, i) => Math.abs(x - unrounded.out[i])))).toBeGreaterThan(1e-4);
    });
  }
});

describe.skipIf(!GPU)("loss scale kernel", () => {
  test("x *= s, every element exact (one f32 product)", async () => {
    const gpu = await gpuOrSkip();
    const ls = await loadLossScale(gpu);
    const n = 1000;
    const x = randn(n, 5, 3);
    const buf = gpu.buffer(x, "x");
    const b = gpu.batch();
    ls.scale(b, buf, n, 65536);
    ls.scale(b, buf, n, 0.3);
    b.submit();
    expectClose(await gpu.readF32(buf, n), scaleRef(scaleRef(x, 65536), 0.3), 0, 0, "scale");
    expect(() => ls.scale(gpu.batch(), buf, n, Infinity)).toThrow(/not finite/);
  });
});
