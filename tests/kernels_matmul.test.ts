// matmul kernels (kernels/matmul.wgsl) against the CPU reference, every element.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import { f16BitsToF32, f32ToF16Bit, f16BitToF32, f32ToF16Bits, roundToF16 } from "../src/kernels/f16.ts";
import { loadMatmul, matmulRef, type Dtype, type Matmul } from "../src/kernels/matmul.ts";
import { expectClose, gpuOrSkip, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
// lavapipe compiles each pipeline variant on its first dispatch (seconds)
setDefaultTimeout(120_000);

function upload(gpu: Gpu, x: Float32Array, dtype: Dtype, label: string): GPUBuffer {
  return gpu.buffer(dtype === "f16" ? f32ToF16Bits(x) : x, label);
}

async function readOut(gpu: Gpu, buf: GPUBuffer, n: number, asF32: boolean): Promise<Float32Array> {
  if (asF32) return gpu.readF32(buf, n);
  const bytes = Math.ceil((n * 2) / 4) * 4;
  return f16BitsToF32(new Uint16Array(await gpu.read(buf, bytes)).subarray(0, n));
}

interface Case {
  M: number;
  N: number;
  K: number;
  bias: boolean;
  ldc?: number;
  col0?: number;
  outF32?: boolean;
  path?: "decode" | "prefill";
}

/**
 * Run one product on the GPU and compare every element of C, including the
 * columns outside [col0, col0+N) of each row, which must keep their sentinel.
 */
async function check(gpu: Gpu, mm: Matmul, dtype: Dtype, cs: Case, seed: number): Promise<void> {
  const { M, N, K } = cs;
  const ldc = cs.ldc ?? N;
  const col0 = cs.col0 ?? 0;
  const outF32 = dtype === "f32" || !!cs.outF32;
  let a = randn(M * K, seed, 1);
  let w = randn(N * K, seed + 1, 0.5);
  let bias = cs.bias ? randn(N, seed + 2, 1) : null;
  if (dtype === "f16") {
    // the reference sees exactly what the f16 buffers hold
    a = roundToF16(a);
    w = roundToF16(w);
    bias = bias && roundToF16(bias);
  }
  const sentinel = 7.25; // exact in f16
  const cInit = new Float32Array(M * ldc).fill(sentinel);
  const bufA = upload(gpu, a, dtype, "A");
  const bufW = upload(gpu, w, dtype, "W");
  const bufB = bias ? upload(gpu, bias, dtype, "bias") : null;
  const bufC = upload(gpu, cInit, outF32 ? "f32" : "f16", "C");
  const b = gpu.batch();
  mm.matmul(b, bufA, bufW, bufB, bufC, M, N, K, { ldc: cs.ldc, col0: cs.col0, outF32: cs.outF32, path: cs.path });
  b.submit();
  const got = await readOut(gpu, bufC, M * ldc, outF32);
  for (const x of [bufA, bufW, bufB, bufC]) x?.destroy();
  const ref = matmulRef(a, w, bias, M, N, K);
  const want = cInit.slice();
  for (let m = 0; m < M; m++) want.set(ref.subarray(m * N, (m + 1) * N), m * ldc + col0);
  const tol = dtype === "f16" && !outF32 ? TOL.f16_matmul : dtype === "f16" ? TOL.f16_matmul_f32out : TOL.f32_matmul;
  expectClose(got, want, tol.atol, tol.rtol, `matmul ${dtype} ${JSON.stringify(cs)}`);
}

describe("f16 conversion", () => {
  test("round to nearest even, subnormals, Inf, NaN", () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [65520, 0x7c00], // halfway to the next binade: ties to even -> Inf
      [1e6, 0x7c00],
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // tie -> even (0)
      [3 * 2 ** -25, 0x0002], // tie -> even (2)
      [2 ** -14, 0x0400], // smallest normal
      [1 + 2 ** -11, 0x3c00], // tie -> even (down)
      [1 + 3 * 2 ** -11, 0x3c02], // tie -> even (up)
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
    ];
    for (const [v, bits] of cases) expect([v, f32ToF16Bit(v)]).toEqual([v, bits]);
    expect(Number.isNaN(f16BitToF32(f32ToF16Bit(NaN)))).toBe(true);
    // every finite half survives a round trip
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) === 0x7c00) continue;
      if (f32ToF16Bit(f16BitToF32(h)) !== h) throw new Error(`f16 round trip fails at 0x${h.toString(16)}`);
    }
  });
});

describe("matmulRef", () => {
  test("a 2x3x2 product by hand", () => {
    const a = new Float32Array([1, 2, 3, 4]); // [2,2]
    const w = new Float32Array([1, 0, 0, 1, 1, 1]); // [3,2]
    const bias = new Float32Array([0.5, 0, -1]);
    expect([...matmulRef(a, w, bias, 2, 3, 2)]).toEqual([1.5, 2, 2, 3.5, 4, 6]);
  });
});

for (const dtype of ["f32", "f16"] as const) {
  describe.skipIf(!GPU)(`matmul ${dtype}`, () => {
    let mm: Matmul;
    const get = async () => {
      const gpu = await gpuOrSkip();
      mm ??= await loadMatmul(gpu, dtype);
      return { gpu, mm };
    };

    test("both kernel paths are exercised by the shapes below", async () => {
      const { mm } = await get();
      expect(mm.config.gemvMaxM).toBeGreaterThanOrEqual(3); // M 1, 3 take gemv; 130 takes tiled
      expect(mm.config.gemvMaxM).toBeLessThan(130);
    });

    for (const M of [1, 3, 40, 130]) {
      for (const bias of [false, true]) {
        test(`M ${M}, N 67, K 45, ${bias ? "bias" : "no bias"}`, async () => {
          const { gpu, mm } = await get();
          await check(gpu, mm, dtype, { M, N: 67, K: 45, bias }, 10 * M + +bias);
        });
      }
    }

    test("exact tile multiples and K larger than the tiles (M 64, N 128, K 256)", async () => {
      const { gpu, mm } = await get();
      await check(gpu, mm, dtype, { M: 64, N: 128, K: 256, bias: true }, 3);
    });

    test("long K on the gemv path, vec4 units (K 1536) and scalar (K 1537)", async () => {
      const { gpu, mm } = await get();
      await check(gpu, mm, dtype, { M: 2, N: 33, K: 1536, bias: true }, 4);
      await check(gpu, mm, dtype, { M: 2, N: 33, K: 1537, bias: true }, 4);
      await check(gpu, mm, dtype, { M: 3, N: 130, K: 64, bias: false }, 8);
    });

    test("tiny: M 1 N 1 K 1, and K 3", async () => {
      const { gpu, mm } = await get();
      await check(gpu, mm, dtype, { M: 1, N: 1, K: 1, bias: true }, 5);
      await check(gpu, mm, dtype, { M: 5, N: 2, K: 3, bias: false }, 6);
      await check(gpu, mm, dtype, { M: 17, N: 3, K: 3, bias: false }, 6);
    });

    for (const M of [2, 40]) {
      test(`col0/ldc: M ${M} writes columns 9..9+N of rows of stride 100`, async () => {
        const { gpu, mm } = await get();
        await check(gpu, mm, dtype, { M, N: 67, K: 45, bias: true, ldc: 100, col0: 9 }, 7 + M);
      });
    }

    test("a weight split in row chunks bound by offset (LM-head style) equals the whole product", async () => {
      const { gpu, mm } = await get();
      const M = 3;
      const K = 40;
      const N = 2 * 64 + 19; // chunks of 64 rows: 64 rows * K * esize is a multiple of 256 bytes
      const esize = dtype === "f16" ? 2 : 4;
      const chunk = 64;
      const a = roundIf(dtype, randn(M * K, 21));
      const w = roundIf(dtype, randn(N * K, 22, 0.5));
      const bufA = upload(gpu, a, dtype, "A");
      const bufW = upload(gpu, w, dtype, "W");
      const bufC = gpu.buffer(M * N * 4, "C");
      for (const rows of [M, 70]) {
        const aa = rows === M ? a : roundIf(dtype, randn(rows * K, 23));
        const bA = rows === M ? bufA : upload(gpu, aa, dtype, "A70");
        const bC = rows === M ? bufC : gpu.buffer(rows * N * 4, "C70");
        const b = gpu.batch();
        for (let n0 = 0; n0 < N; n0 += chunk) {
          const n = Math.min(chunk, N - n0);
          const offset = n0 * K * esize;
          expect(offset % 256).toBe(0);
          const wChunk = { buffer: bufW, offset, size: Math.ceil((n * K * esize) / 4) * 4 };
          mm.matmul(b, bA, wChunk, null, bC, rows, n, K, { ldc: N, col0: n0, outF32: true });
        }
        b.submit();
        const got = await gpu.readF32(bC, rows * N);
        const tol = dtype === "f16" ? TOL.f16_matmul_f32out : TOL.f32_matmul;
        expectClose(got, matmulRef(aa, w, null, rows, N, K), tol.atol, tol.rtol, `chunked ${dtype} M ${rows}`);
        if (rows !== M) {
          bA.destroy();
          bC.destroy();
        }
      }
      for (const x of [bufA, bufW, bufC]) x.destroy();
    });

    if (dtype === "f16") {
      for (const M of [1, 40]) {
        test(`outF32 with f16 inputs, M ${M}`, async () => {
          const { gpu, mm } = await get();
          await check(gpu, mm, dtype, { M, N: 67, K: 45, bias: true, outF32: true }, 30 + M);
        });
      }
    }

    test("the other tile configuration (gemv reducing over K in shared memory, the other prefill kernel) is right too", async () => {
      const gpu = await gpuOrSkip();
      const alt = gpu.adapter.isFallback
        ? { prefill: "tiled" as const, WX: 16, WY: 16, TM: 4, TN: 4, BK: 16, WG: 32, KS: 8, NC: 2, MT: 2, gemvMaxM: 16 }
        : { prefill: "rows" as const, RM: 8, RN: 4, RWG: 32, WG: 64, KS: 1, NC: 1, MT: 4, gemvMaxM: 8 };
      const mm2 = await loadMatmul(gpu, dtype, alt);
      for (const [M, K] of [[1, 45], [5, 64], [16, 1536], [40, 45], [130, 67]]) {
        await check(gpu, mm2, dtype, { M, N: 67, K, bias: true, ldc: 70, col0: 2 }, M + K);
      }
    });

    test("prefill in vec4 units (K % 4 == 0): ragged M and N, col0/ldc, several row blocks", async () => {
      const { gpu, mm } = await get();
      await check(gpu, mm, dtype, { M: 37, N: 70, K: 64, bias: true }, 61);
      await check(gpu, mm, dtype, { M: 130, N: 131, K: 36, bias: false, ldc: 140, col0: 5 }, 62);
      await check(gpu, mm, dtype, { M: 33, N: 1, K: 4, bias: true }, 63);
    });

    test("rows kernel with other register tiles (RM 3 x RN 1, RM 16 x RN 2) on both unit sizes", async () => {
      const gpu = await gpuOrSkip();
      for (const [RM, RN, RWG] of [[3, 1, 8], [16, 2, 16]]) {
        const mm2 = await loadMatmul(gpu, dtype, { prefill: "rows", RM, RN, RWG, gemvMaxM: 2 });
        for (const [M, K] of [[3, 44], [41, 45], [50, 128]]) {
          await check(gpu, mm2, dtype, { M, N: 67, K, bias: true, ldc: 71, col0: 3 }, 100 * RM + M + K);
        }
      }
    });

    test("path forces the kernel: decode at M 40, prefill at M 1", async () => {
      const { gpu, mm } = await get();
      await check(gpu, mm, dtype, { M: 40, N: 67, K: 48, bias: true, path: "decode" }, 51);
      await check(gpu, mm, dtype, { M: 1, N: 67, K: 48, bias: true, path: "prefill" }, 52);
    });

    test("bad shapes and short bindings are errors naming the binding", async () => {
      const { gpu, mm } = await get();
      const small = gpu.buffer(64, "small");
      const b = gpu.batch();
      expect(() => mm.matmul(b, small, small, null, small, 4, 64, 4)).toThrow(/binding W has 64 bytes, needs/);
      expect(() => mm.matmul(b, small, small, null, small, 1, 2, 2, { ldc: 2, col0: 1 })).toThrow(/exceed ldc/);
      expect(() => mm.matmul(b, small, small, null, small, 1.5, 2, 2)).toThrow(/M = 1.5/);
      b.submit();
      small.destroy();
      await expect(loadMatmul(gpu, dtype, { prefill: "shared" as "rows" })).rejects.toThrow(/prefill "shared"/);
      await expect(loadMatmul(gpu, dtype, { RN: 0 })).rejects.toThrow(/RN = 0/);
    });
  });
}

function roundIf(dtype: Dtype, x: Float32Array): Float32Array {
  return dtype === "f16" ? roundToF16(x) : x;
}
