// Matmul backward (kernels/matmul_grad.wgsl) against the f64 CPU references,
// every element; accumulation, row-chunked weights, determinism; and a
// finite-difference check of all three gradients through the CPU forward.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import { f32ToF16Bits } from "../src/kernels/f16.ts";
import { matmulRef } from "../src/kernels/matmul.ts";
import {
  loadMatmulGrad,
  matmulDBiasRef,
  matmulDInputRef,
  matmulDWeightRef,
  type MatmulGrad,
} from "../src/kernels/matmul_grad.ts";
import { expectClose, gpuOrSkip, hasF16, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
// lavapipe compiles each pipeline on its first dispatch (seconds)
setDefaultTimeout(120_000);

function tol(name: string) {
  const t = TOL[name];
  if (!t) throw new Error(`tests/tolerances.ts has no entry "${name}"`);
  return t;
}

function check(got: ArrayLike<number>, want: ArrayLike<number>, tolName: string, what: string): void {
  const t = tol(tolName);
  expectClose(got, want, t.atol, t.rtol, what);
}

let loaded: Promise<MatmulGrad> | null = null;
async function setup(): Promise<{ gpu: Gpu; mg: MatmulGrad }> {
  const gpu = await gpuOrSkip();
  loaded ??= loadMatmulGrad(gpu);
  return { gpu, mg: await loaded };
}

const Ms = [1, 7, 70];
const Ns = [5, 67];
const Ks = [3, 45, 130];
const shapes = Ms.flatMap((M) => Ns.flatMap((N) => Ks.map((K) => ({ M, N, K }))));

describe("matmul_grad CPU references", () => {
  test("tiny hand-computed case", () => {
    // dy [2,2], W [2,3], x [2,3]
    const dy = Float32Array.of(1, 2, 3, 4);
    const w = Float32Array.of(1, 0, -1, 2, 1, 0);
    const x = Float32Array.of(1, 2, 3, -1, 0, 1);
    expect([...matmulDInputRef(dy, w, 2, 2, 3)]).toEqual([5, 2, -1, 11, 4, -3]);
    expect([...matmulDWeightRef(dy, x, 2, 2, 3)]).toEqual([-2, 2, 6, -2, 4, 10]);
    expect([...matmulDBiasRef(dy, 2, 2)]).toEqual([4, 6]);
    expect([...matmulDBiasRef(dy, 2, 2, Float32Array.of(1, -1))]).toEqual([5, 5]);
    expect(() => matmulDInputRef(dy, w, 2, 3, 3)).toThrow(/matmulDInputRef/);
  });
});

describe.skipIf(!GPU)("matmul_grad on the GPU", () => {
  test("dInput: every element, all shapes, accumulate off (dx starts NaN) and on", async () => {
    const { gpu, mg } = await setup();
    const b = gpu.batch();
    const runs = shapes.flatMap(({ M, N, K }, s) =>
      [false, true].map((accumulate) => {
        const dy = randn(M * N, 100 + s, 1);
        const w = randn(N * K, 200 + s, 0.5);
        const dx0 = accumulate ? randn(M * K, 300 + s, 2) : new Float32Array(M * K).fill(NaN);
        const bufs = [gpu.buffer(dy, "dy"), gpu.buffer(w, "W"), gpu.buffer(dx0, "dx")];
        mg.dInput(b, bufs[0], bufs[1], bufs[2], M, N, K, { accumulate });
        const want = matmulDInputRef(dy, w, M, N, K, accumulate ? dx0 : null);
        return { M, N, K, accumulate, bufs, want };
      }),
    );
    b.submit();
    for (const r of runs) {
      const got = await gpu.readF32(r.bufs[2], r.M * r.K);
      r.bufs.forEach((x) => x.destroy());
      check(got, r.want, "matmul_grad_f32", `dInput M ${r.M} N ${r.N} K ${r.K} accumulate ${r.accumulate}`);
    }
  });

  test("dWeight and dBias: every element, all shapes, accumulating onto a random start, twice", async () => {
    const { gpu, mg } = await setup();
    const b = gpu.batch();
    const runs = shapes.map(({ M, N, K }, s) => {
      const dy = randn(M * N, 400 + s, 1);
      const x = randn(M * K, 500 + s, 1);
      const dw0 = randn(N * K, 600 + s, 3);
      const db0 = randn(N, 700 + s, 3);
      const bufs = [gpu.buffer(dy, "dy"), gpu.buffer(x, "x"), gpu.buffer(dw0, "dw"), gpu.buffer(db0, "db")];
      for (let t = 0; t < 2; t++) {
        mg.dWeight(b, bufs[0], bufs[1], bufs[2], M, N, K);
        mg.dBias(b, bufs[0], bufs[3], M, N);
      }
      const dw1 = matmulDWeightRef(dy, x, M, N, K);
      const db1 = matmulDBiasRef(dy, M, N);
      const wantW = dw0.map((v, i) => v + 2 * dw1[i]);
      const wantB = db0.map((v, i) => v + 2 * db1[i]);
      return { M, N, K, bufs, wantW, wantB };
    });
    b.submit();
    for (const r of runs) {
      const gotW = await gpu.readF32(r.bufs[2], r.N * r.K);
      const gotB = await gpu.readF32(r.bufs[3], r.N);
      r.bufs.forEach((x) => x.destroy());
      check(gotW, r.wantW, "matmul_grad_f32", `dWeight twice M ${r.M} N ${r.N} K ${r.K}`);
      check(gotB, r.wantB, "matmul_grad_f32", `dBias twice M ${r.M} N ${r.N}`);
    }
  });

  test("other tile configurations (the hardware default, a non-square one): every element", async () => {
    const { gpu } = await setup();
    const configs = [
      { WX: 16, WY: 16, TM: 4, TN: 4, BR: 16, BX: 64, BY: 4 },
      { WX: 4, WY: 8, TM: 8, TN: 4, BR: 8, BX: 8, BY: 16 },
    ];
    for (const cfg of configs) {
      const mg = await loadMatmulGrad(gpu, cfg);
      const b = gpu.batch();
      const runs = [
        { M: 1, N: 5, K: 3 },
        { M: 70, N: 67, K: 130 },
        { M: 7, N: 67, K: 45 },
      ].map(({ M, N, K }, s) => {
        const dy = randn(M * N, 800 + s, 1);
        const w = randn(N * K, 810 + s, 0.5);
        const x = randn(M * K, 820 + s, 1);
        const dx0 = randn(M * K, 830 + s, 1);
        const dw0 = randn(N * K, 840 + s, 1);
        const db0 = randn(N, 850 + s, 1);
        const bufs = [dy, w, x, dx0, dw0, db0].map((a) => gpu.buffer(a, "cfg"));
        mg.dInput(b, bufs[0], bufs[1], bufs[3], M, N, K, { accumulate: true });
        mg.dWeight(b, bufs[0], bufs[2], bufs[4], M, N, K);
        mg.dBias(b, bufs[0], bufs[5], M, N);
        const want = [
          matmulDInputRef(dy, w, M, N, K, dx0),
          matmulDWeightRef(dy, x, M, N, K, dw0),
          matmulDBiasRef(dy, M, N, db0),
        ];
        return { M, N, K, bufs, want };
      });
      b.submit();
      for (const r of runs) {
        const got = [
          await gpu.readF32(r.bufs[3], r.M * r.K),
          await gpu.readF32(r.bufs[4], r.N * r.K),
          await gpu.readF32(r.bufs[5], r.N),
        ];
        r.bufs.forEach((x) => x.destroy());
        ["dx", "dw", "db"].forEach((name, i) =>
          check(got[i], r.want[i], "matmul_grad_f32", `${name} M ${r.M} N ${r.N} K ${r.K} config ${JSON.stringify(cfg)}`),
        );
      }
    }
  });

  test("rows form (CPU adapters) = tiled form bit for bit, and the references: K multiples of 4, dy columns by ldy/col0, f32 and f16 operands", async () => {
    const { gpu } = await setup();
    for (const half of hasF16(gpu) ? [false, true] : [false]) {
      const [rows, tiled] = await Promise.all(
        (["rows", "tiled"] as const).map((form) => loadMatmulGrad(gpu, { WX: 8, WY: 8, TM: 4, TN: 4, BR: 16, RM: 8, RWG: 16, form }, { f16Operands: half })),
      );
      // M rows of C in dInput (N in dWeight) around the 8-row tile; K around the 64-column workgroup.
      for (const [M, N, K, s] of [[1, 5, 4, 1], [70, 67, 64, 2], [9, 13, 132, 3], [16, 8, 68, 4]]) {
        const ldy = N + 3;
        const col0 = 2;
        const dy = randn(M * ldy, 900 + s, 1);
        const w = randn(N * K, 910 + s, 0.5);
        const x = randn(M * K, 920 + s, 1);
        const dx0 = randn(M * K, 930 + s, 1);
        const dw0 = randn(N * K, 940 + s, 1);
        const run = async (mg: MatmulGrad) => {
          const wIn = half ? gpu.buffer(f32ToF16Bits(w), "W f16") : gpu.buffer(w, "W");
          const bufs = [gpu.buffer(dy, "dy"), wIn, gpu.buffer(x, "x"), gpu.buffer(dx0, "dx"), gpu.buffer(dw0, "dw")];
          const b = gpu.batch();
          mg.dInput(b, bufs[0], bufs[1], bufs[3], M, N, K, { ldy, col0, accumulate: true });
          mg.dWeight(b, bufs[0], bufs[2], bufs[4], M, N, K, { ldy, col0 });
          b.submit();
          const out = [await gpu.readF32(bufs[3], M * K), await gpu.readF32(bufs[4], N * K)];
          bufs.forEach((z) => z.destroy());
          return out;
        };
        const [gotRows, gotTiled] = [await run(rows), await run(tiled)];
        const what = `M ${M} N ${N} K ${K}${half ? " f16 operands" : ""}`;
        expectClose(gotRows[0], gotTiled[0], 0, 0, `dInput rows vs tiled ${what}`);
        expectClose(gotRows[1], gotTiled[1], 0, 0, `dWeight rows vs tiled ${what}`);
        if (!half) {
          // The references read dy as [M, N]: its columns col0 .. col0 + N of each row.
          const dyN = Float32Array.from({ length: M * N }, (_, i) => dy[Math.floor(i / N) * ldy + col0 + (i % N)]);
          check(gotRows[0], matmulDInputRef(dyN, w, M, N, K, dx0), "matmul_grad_f32", `dInput rows ${what}`);
          check(gotRows[1], matmulDWeightRef(dyN, x, M, N, K, dw0), "matmul_grad_f32", `dWeight rows ${what}`);
        }
      }
    }
  });

  test("from zero, accumulating twice is exactly 2x once; repeated runs are bit-identical", async () => {
    const { gpu, mg } = await setup();
    const M = 70;
    const N = 67;
    const K = 130;
    const dy = randn(M * N, 11, 1);
    const x = randn(M * K, 12, 1);
    const w = randn(N * K, 13, 0.5);
    const bDy = gpu.buffer(dy, "dy");
    const bX = gpu.buffer(x, "x");
    const bW = gpu.buffer(w, "W");
    const once = [gpu.buffer(N * K * 4, "dw1"), gpu.buffer(N * 4, "db1"), gpu.buffer(M * K * 4, "dx1")];
    const twice = [gpu.buffer(N * K * 4, "dw2"), gpu.buffer(N * 4, "db2"), gpu.buffer(M * K * 4, "dx2")];
    const again = [gpu.buffer(N * K * 4, "dw3"), gpu.buffer(N * 4, "db3"), gpu.buffer(M * K * 4, "dx3")];
    const b = gpu.batch();
    for (const [out, times] of [[once, 1], [twice, 2], [again, 1]] as const) {
      for (let t = 0; t < times; t++) {
        mg.dWeight(b, bDy, bX, out[0], M, N, K);
        mg.dBias(b, bDy, out[1], M, N);
        mg.dInput(b, bDy, bW, out[2], M, N, K, { accumulate: t > 0 });
      }
    }
    b.submit();
    const [o, t2, a] = await Promise.all(
      [once, twice, again].map((bs) =>
        Promise.all([gpu.readF32(bs[0], N * K), gpu.readF32(bs[1], N), gpu.readF32(bs[2], M * K)]),
      ),
    );
    const names = ["dw", "db", "dx"];
    for (let i = 0; i < 3; i++) {
      check(t2[i], o[i].map((v) => 2 * v), "exact", `${names[i]} accumulated twice vs 2x once`);
      check(a[i], o[i], "exact", `${names[i]} second identical run`);
    }
    check(o[0], matmulDWeightRef(dy, x, M, N, K), "matmul_grad_f32", "dw once");
    check(o[1], matmulDBiasRef(dy, M, N), "matmul_grad_f32", "db once");
    check(o[2], matmulDInputRef(dy, w, M, N, K), "matmul_grad_f32", "dx once");
    for (const buf of [bDy, bX, bW, ...once, ...twice, ...again]) buf.destroy();
  });

  test("row-chunked weight: W, dw, db bound as byte ranges, dy columns by ldy/col0", async () => {
    const { gpu, mg } = await setup();
    // K = 64 makes a row 256 bytes, so every row boundary is a valid storage
    // offset; the bias chunk split at row 64 is 256-byte aligned too.
    const M = 7;
    const N = 67;
    const K = 64;
    const split = 64;
    const dy = randn(M * N, 21, 1);
    const x = randn(M * K, 22, 1);
    const w = randn(N * K, 23, 0.5);
    const dw0 = randn(N * K, 24, 1);
    const db0 = randn(N, 25, 1);
    const dx0 = new Float32Array(M * K).fill(NaN);
    const [bDy, bX, bW, bDw, bDb, bDx] = [dy, x, w, dw0, db0, dx0].map((a, i) => gpu.buffer(a, `t${i}`));
    const b = gpu.batch();
    for (const [n0, n1] of [[0, split], [split, N]]) {
      const Nc = n1 - n0;
      const opts = { ldy: N, col0: n0 };
      const wRange = { buffer: bW, offset: n0 * K * 4, size: Nc * K * 4 };
      const dwRange = { buffer: bDw, offset: n0 * K * 4, size: Nc * K * 4 };
      const dbRange = { buffer: bDb, offset: n0 * 4, size: Nc * 4 };
      mg.dInput(b, bDy, wRange, bDx, M, Nc, K, { ...opts, accumulate: n0 > 0 });
      mg.dWeight(b, bDy, bX, dwRange, M, Nc, K, opts);
      mg.dBias(b, bDy, dbRange, M, Nc, opts);
    }
    b.submit();
    const gotDx = await gpu.readF32(bDx, M * K);
    const gotDw = await gpu.readF32(bDw, N * K);
    const gotDb = await gpu.readF32(bDb, N);
    for (const buf of [bDy, bX, bW, bDw, bDb, bDx]) buf.destroy();
    check(gotDx, matmulDInputRef(dy, w, M, N, K), "matmul_grad_f32", "dInput over two chunks");
    check(gotDw, matmulDWeightRef(dy, x, M, N, K, dw0), "matmul_grad_f32", "dWeight per chunk");
    check(gotDb, matmulDBiasRef(dy, M, N, db0), "matmul_grad_f32", "dBias per chunk");
  });

  test("finite differences: y = x·Wᵀ + b, L = Σ r·y; every element of dx, dW, db", async () => {
    const { gpu, mg } = await setup();
    const M = 3;
    const N = 4;
    const K = 5;
    const x = randn(M * K, 31, 1);
    const w = randn(N * K, 32, 1);
    const bias = randn(N, 33, 1);
    const r = randn(M * N, 34, 1); // dL/dy
    /** L in f64 over the f32 outputs of the CPU forward. */
    const loss = () => matmulRef(x, w, bias, M, N, K).reduce((s, y, i) => s + r[i] * y, 0);
    /** Central difference of L in one f32 element; h is a power of two so p ± h stays exact for |p| < 1. */
    const fd = (t: Float32Array, i: number) => {
      const h = 2 ** -4;
      const p = t[i];
      t[i] = p + h;
      const up = t[i];
      const lp = loss();
      t[i] = p - h;
      const dn = t[i];
      const lm = loss();
      t[i] = p;
      return (lp - lm) / (up - dn);
    };
    const want = [x, w, bias].map((t) => Float32Array.from(t, (_, i) => fd(t, i)));
    const [bR, bX, bW, bDx, bDw, bDb] = [r, x, w, new Float32Array(M * K).fill(NaN), new Float32Array(N * K), new Float32Array(N)].map(
      (a, i) => gpu.buffer(a, `fd${i}`),
    );
    const b = gpu.batch();
    mg.dInput(b, bR, bW, bDx, M, N, K);
    mg.dWeight(b, bR, bX, bDw, M, N, K);
    mg.dBias(b, bR, bDb, M, N);
    b.submit();
    const got = [await gpu.readF32(bDx, M * K), await gpu.readF32(bDw, N * K), await gpu.readF32(bDb, N)];
    for (const buf of [bR, bX, bW, bDx, bDw, bDb]) buf.destroy();
    ["dx", "dW", "db"].forEach((name, i) => check(got[i], want[i], "matmul_grad_fd", `${name} vs central differences`));
  });

  test("bad shapes and bindings are reported with the kernel and binding named", async () => {
    const { gpu, mg } = await setup();
    const small = gpu.buffer(16, "small");
    const big = gpu.buffer(4096, "big");
    const b = gpu.batch();
    expect(() => mg.dInput(b, big, small, big, 4, 4, 4)).toThrow(/matmul_grad\.dInput .*binding W has 16 bytes, needs 64/);
    expect(() => mg.dWeight(b, small, big, big, 4, 4, 4)).toThrow(/matmul_grad\.dWeight .*binding dy has 16 bytes, needs 64/);
    expect(() => mg.dBias(b, big, big, 4, 4, { ldy: 4, col0: 2 })).toThrow(/col0 2 \+ N 4 exceed its row stride ldy 4/);
    expect(() => mg.dBias(b, big, big, 1.5, 4)).toThrow(/matmul_grad\.dBias: M = 1.5 is not a u32/);
    b.submit();
    small.destroy();
    big.destroy();
  });
});
