// Fused kernels against the composition of the references they replace.
// Fused matmul variants (kernels/matmul.wgsl: norm prologue, SwiGLU and
// residual epilogues) against the composition of the references they
// replace (rmsnormRef → matmulRef [→ swigluRef] [→ addRef]), every element,
// on every kernel path (gemv with and without the K split, rows, tiled) and
// both unit sizes (vec4 when K % 4 == 0, scalar otherwise).
import { describe, setDefaultTimeout, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import { loadElementwise } from "../src/kernels/elementwise.ts";
import { f16BitsToF32, f32ToF16Bits, roundToF16 } from "../src/kernels/f16.ts";
import { loadMatmul, matmulFusedRef, type Dtype, type Matmul, type MatmulConfig } from "../src/kernels/matmul.ts";
import { loadAttention } from "../src/kernels/attention.ts";
import { loadRope, ropeKvAttendRef, ropeKvRef, ropeRef } from "../src/kernels/rope.ts";
import { expectClose, gpuOrSkip, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
setDefaultTimeout(300_000);

type Fusion = "norm+bias" | "norm" | "norm+swiglu" | "residual";
const FUSIONS: Fusion[] = ["norm+bias", "norm", "norm+swiglu", "residual"];

function up(gpu: Gpu, x: Float32Array, dtype: Dtype, label: string): GPUBuffer {
  return gpu.buffer(dtype === "f16" ? f32ToF16Bits(x) : x, label);
}

async function check(gpu: Gpu, mm: Matmul, dtype: Dtype, f: Fusion, M: number, N: number, K: number, path: "decode" | "prefill", seed: number) {
  const r = (x: Float32Array) => (dtype === "f16" ? roundToF16(x) : x);
  // rows of A with different scales, so the per-row norm matters
  const a = r(randn(M * K, seed, 1).map((v, i) => v * (0.5 + ((i / K) | 0) % 3)));
  const w = r(randn(N * K, seed + 1, 0.5));
  const u = r(randn(N * K, seed + 2, 0.5));
  const bias = f === "norm+bias" ? r(randn(N, seed + 3, 1)) : null;
  const gain = r(randn(K, seed + 4, 0.5).map((v) => 1 + v));
  const c0 = r(randn(M * N, seed + 5, 2));
  const eps = 1e-6;
  const norm = f.startsWith("norm");
  const bufs = [up(gpu, a, dtype, "A"), up(gpu, w, dtype, "W"), up(gpu, u, dtype, "U"), up(gpu, gain, dtype, "G"), up(gpu, c0, dtype, "C")];
  const [bA, bW, bU, bG, bC] = bufs;
  const bB = bias ? up(gpu, bias, dtype, "bias") : null;
  const b = gpu.batch();
  mm.matmul(b, bA, bW, bB, bC, M, N, K, {
    path,
    norm: norm ? { gain: bG, eps } : undefined,
    up: f === "norm+swiglu" ? bU : undefined,
    residual: f === "residual",
  });
  b.submit();
  const got =
    dtype === "f32" ? await gpu.readF32(bC, M * N) : f16BitsToF32(new Uint16Array(await gpu.read(bC, Math.ceil((M * N) / 2) * 4)).subarray(0, M * N));
  [...bufs, bB].forEach((x) => x?.destroy());
  const want = matmulFusedRef(a, w, bias, M, N, K, {
    norm: norm ? { gain, eps } : undefined,
    up: f === "norm+swiglu" ? u : undefined,
    residual: f === "residual" ? c0 : undefined,
  });
  const tol = dtype === "f16" ? TOL.f16_matmul : TOL.f32_matmul;
  expectClose(got, want, tol.atol, tol.rtol, `matmul ${f} ${dtype} ${path} M ${M} N ${N} K ${K}`);
}

const CONFIGS: [string, Partial<MatmulConfig>][] = [
  ["gemv (one thread per column) + rows", { prefill: "rows", WG: 64, KS: 1, NC: 2, MT: 4, RM: 8, RN: 4, RWG: 32 }],
  ["gemv (K split over 8 threads) + tiled", { prefill: "tiled", WX: 8, WY: 8, TM: 4, TN: 4, BK: 16, WG: 32, KS: 8, NC: 2, MT: 2 }],
];

for (const dtype of ["f32", "f16"] as const) {
  describe.skipIf(!GPU)(`fused matmul ${dtype} vs the unfused references`, () => {
    for (const [name, cfg] of CONFIGS) {
      for (const f of FUSIONS) {
        test(`${f}: ${name}`, async () => {
          const gpu = await gpuOrSkip();
          const mm = await loadMatmul(gpu, dtype, cfg);
          let seed = 1;
          for (const [M, K] of [[1, 64], [3, 45], [5, 128]]) await check(gpu, mm, dtype, f, M, 67, K, "decode", seed++);
          for (const [M, K] of [[40, 64], [37, 45], [130, 96]]) await check(gpu, mm, dtype, f, M, 67, K, "prefill", seed++);
        });
      }
    }
  });
}

// gemv with one row per pass (singleRowGemv, what a decode step at batch 1 runs) against the
// MT-row gemv it replaces for M = 1, bit for bit, for every variant the engine records (plain,
// bias, each fusion, the LM head's f32 output), vec4 and scalar K; and against the references.
for (const dtype of ["f32", "f16"] as const) {
  describe.skipIf(!GPU)(`gemv ${dtype}, one row per pass (M = 1) vs the MT-row kernel`, () => {
    for (const [name, cfg] of CONFIGS) {
      test(name, async () => {
        const gpu = await gpuOrSkip();
        const [rows, single] = await Promise.all([loadMatmul(gpu, dtype, cfg), loadMatmul(gpu, dtype, cfg, { singleRowGemv: true })]);
        const r = (x: Float32Array) => (dtype === "f16" ? roundToF16(x) : x);
        const N = 67;
        let seed = 40;
        for (const K of [64, 45]) {
          const kinds: [string, Fusion | "plain" | "bias" | "lm head"][] = [...FUSIONS.map((f): [string, Fusion] => [f, f]), ["plain", "plain"], ["bias", "bias"], ...(dtype === "f16" ? [["lm head", "lm head"] as [string, "lm head"]] : [])];
          for (const [label, kind] of kinds) {
            seed++;
            const a = r(randn(K, seed, 1));
            const w = r(randn(N * K, seed + 1, 0.5));
            const u = r(randn(N * K, seed + 2, 0.5));
            const bias = r(randn(N, seed + 3, 1));
            const gain = r(randn(K, seed + 4, 0.5).map((v) => 1 + v));
            const c0 = r(randn(N, seed + 5, 2));
            const outF32 = kind === "lm head";
            const opts = {
              path: "decode" as const,
              norm: kind.startsWith("norm") || outF32 ? { gain: up(gpu, gain, dtype, "G"), eps: 1e-6 } : undefined,
              up: kind === "norm+swiglu" ? up(gpu, u, dtype, "U") : undefined,
              residual: kind === "residual",
              outF32,
            };
            const bA = up(gpu, a, dtype, "A");
            const bW = up(gpu, w, dtype, "W");
            const bB = kind === "bias" || kind === "norm+bias" ? up(gpu, bias, dtype, "bias") : null;
            const outs = [0, 1].map((i) => (outF32 ? gpu.buffer(N * 4, `C${i}`) : up(gpu, c0, dtype, `C${i}`)));
            const b = gpu.batch();
            rows.matmul(b, bA, bW, bB, outs[0], 1, N, K, opts);
            single.matmul(b, bA, bW, bB, outs[1], 1, N, K, opts);
            b.submit();
            const [want, got] = await Promise.all(outs.map((o) => gpu.read(o)));
            expectClose(new Uint32Array(got), new Uint32Array(want), TOL.exact.atol, TOL.exact.rtol, `gemv ${dtype} ${label} K ${K}: one row per pass vs ${cfg.MT} rows (bits)`);
            for (const x of [bA, bW, bB, ...outs, opts.norm?.gain, opts.up]) x?.destroy();
          }
        }
        // And against the references, through the fused checks' path (M = 1 picks the one-row kernel).
        let s2 = 90;
        for (const f of FUSIONS) await check(gpu, single, dtype, f, 1, 67, 64, "decode", s2++);
      });
    }
  });
}

// rope_kv (RoPE of q and k + the KV-cache write in one pass) vs ropeRef on q
// and k and writeKVRef: q compared with the rope tolerance, the whole caches
// (untouched entries keep their sentinel) with it too (v is copied exactly).
for (const dtype of ["f32", "f16"] as const) {
  describe.skipIf(!GPU)(`rope_kv ${dtype} vs rope + write_kv references`, () => {
    for (const [nh, nKv, hd, bs] of [[4, 2, 16, 4], [6, 1, 8, 16], [2, 2, 64, 16]]) {
      test(`nh ${nh}, nkv ${nKv}, hd ${hd}, block ${bs}`, async () => {
        const gpu = await gpuOrSkip();
        const rope = await loadRope(gpu, dtype);
        const r = (x: Float32Array) => (dtype === "f16" ? roundToF16(x) : x);
        // 3 slots; tokens of slot 0 at positions 0..4, slot 2 at 7 and 300 (large angles), slot 1 at 2
        const tokSeq = Uint32Array.of(0, 0, 0, 0, 0, 2, 2, 1);
        const tokPos = Uint32Array.of(0, 1, 2, 3, 4, 7, 300, 2);
        const T = tokSeq.length;
        const maxBlocks = Math.ceil(301 / bs);
        const blocks = 3 * maxBlocks;
        // slot s's logical block j -> physical block (blocks - 1 - (s * maxBlocks + j)): reversed, so the table matters
        const table = Uint32Array.from({ length: 3 * maxBlocks }, (_, i) => blocks - 1 - i);
        const qkv = r(randn(T * (nh + 2 * nKv) * hd, nh * 10 + hd, 1));
        const cacheLen = blocks * bs * nKv * hd;
        const kc = new Float32Array(cacheLen).fill(0.5);
        const vc = new Float32Array(cacheLen).fill(-0.25);
        const shape = { T, nh, nKv, hd, theta: 10000, blockSize: bs, maxBlocks };
        const bufs = {
          qkv: up(gpu, qkv, dtype, "qkv"),
          q: up(gpu, new Float32Array(T * nh * hd), dtype, "q"),
          kcache: up(gpu, kc, dtype, "kc"),
          vcache: up(gpu, vc, dtype, "vc"),
          blockTable: gpu.buffer(table, "table"),
          tokSeq: gpu.buffer(tokSeq, "seq"),
          tokPos: gpu.buffer(tokPos, "pos"),
        };
        const b = gpu.batch();
        rope.ropeKv(b, bufs, shape);
        b.submit();
        const read = async (buf: GPUBuffer, n: number) =>
          dtype === "f32" ? gpu.readF32(buf, n) : f16BitsToF32(new Uint16Array(await gpu.read(buf, Math.ceil(n / 2) * 4)).subarray(0, n));
        const [q, gk, gv] = [await read(bufs.q, T * nh * hd), await read(bufs.kcache, cacheLen), await read(bufs.vcache, cacheLen)];
        Object.values(bufs).forEach((x) => x.destroy());
        rope.destroy();
        const wantQ = ropeKvRef(qkv, kc, vc, table, tokSeq, tokPos, shape);
        const t = TOL[`rope_${dtype}`];
        expectClose(q, wantQ, t.atol, t.rtol, `rope_kv ${dtype} q`);
        expectClose(gk, kc, t.atol, t.rtol, `rope_kv ${dtype} k cache`);
        expectClose(gv, vc, TOL.exact.atol, TOL.exact.rtol, `rope_kv ${dtype} v cache`);
      });
    }
  });
}

// rope_kv_attend (decode on CPU adapters: rope_kv + attention's one-pass
// decode in one dispatch) vs the two dispatches it replaces, bit for bit
// (output and both caches), and vs ropeKvRef + attentionRef.
for (const dtype of ["f32", "f16"] as const) {
  describe.skipIf(!GPU)(`rope_kv_attend ${dtype} vs rope_kv + attention.decode (rows)`, () => {
    for (const [nh, nKv, hd, bs] of [[4, 2, 16, 4], [6, 1, 8, 16], [2, 2, 64, 16]]) {
      test(`nh ${nh}, nkv ${nKv}, hd ${hd}, block ${bs}`, async () => {
        const gpu = await gpuOrSkip();
        const [rope, attn] = await Promise.all([loadRope(gpu, dtype), loadAttention(gpu, dtype, "rows")]);
        const r = (x: Float32Array) => (dtype === "f16" ? roundToF16(x) : x);
        // One token per sequence (a decode step): slots 0..4 at positions 0, 5, 17, 300 (large angles)
        // and 2; the caches hold earlier positions' keys and values (random), so attention reads both.
        const tokSeq = Uint32Array.of(0, 1, 2, 3, 4);
        const tokPos = Uint32Array.of(0, 5, 17, 300, 2);
        const T = tokSeq.length;
        const maxBlocks = Math.ceil(301 / bs);
        const blocks = 5 * maxBlocks;
        const table = Uint32Array.from({ length: 5 * maxBlocks }, (_, i) => blocks - 1 - i); // reversed
        // The last token's q/k/v are ~1e-4: many rotated values are f16 subnormals (the kernel rounds them itself).
        const width = (nh + 2 * nKv) * hd;
        const qkv = r(randn(T * width, nh * 10 + hd + 1, 1).map((v, i) => (i >= (T - 1) * width ? v * 1e-4 : v)));
        const cacheLen = blocks * bs * nKv * hd;
        const kc = r(randn(cacheLen, hd + 3, 1));
        const vc = r(randn(cacheLen, hd + 4, 1));
        const shape = { T, nh, nKv, hd, theta: 10000, blockSize: bs, maxBlocks };
        const scale = 1 / Math.sqrt(hd);
        const common = { blockTable: gpu.buffer(table, "table"), tokSeq: gpu.buffer(tokSeq, "seq"), tokPos: gpu.buffer(tokPos, "pos"), qkv: up(gpu, qkv, dtype, "qkv") };
        const side = (name: string) => ({ kcache: up(gpu, kc, dtype, `kc.${name}`), vcache: up(gpu, vc, dtype, `vc.${name}`), out: up(gpu, new Float32Array(T * nh * hd), dtype, `out.${name}`) });
        const [fused, two] = [side("fused"), side("two")];
        const q = up(gpu, new Float32Array(T * nh * hd), dtype, "q");
        const b = gpu.batch();
        rope.ropeKvAttend(b, { ...common, ...fused }, shape, scale);
        rope.ropeKv(b, { ...common, q, kcache: two.kcache, vcache: two.vcache }, shape);
        attn.decode(b, q, two.kcache, two.vcache, common.blockTable, common.tokSeq, common.tokPos, two.out, T, nh, nKv, hd, bs, maxBlocks, scale);
        b.submit();
        const bits = async (buf: GPUBuffer) => new Uint32Array(await gpu.read(buf));
        for (const key of ["out", "kcache", "vcache"] as const) {
          expectClose(await bits(fused[key]), await bits(two[key]), TOL.exact.atol, TOL.exact.rtol, `rope_kv_attend ${dtype} ${key} bits`);
        }
        const read = async (buf: GPUBuffer, n: number) =>
          dtype === "f32" ? gpu.readF32(buf, n) : f16BitsToF32(new Uint16Array(await gpu.read(buf, Math.ceil(n / 2) * 4)).subarray(0, n));
        const [out, gk] = [await read(fused.out, T * nh * hd), await read(fused.kcache, cacheLen)];
        for (const x of [...Object.values(common), ...Object.values(fused), ...Object.values(two), q]) x.destroy();
        rope.destroy();
        attn.destroy();
        const want = ropeKvAttendRef({ qkv, kcache: kc, vcache: vc, blockTable: table, tokSeq, tokPos }, shape, scale);
        const t = TOL[`rope_attention_${dtype}`];
        expectClose(out, want, t.atol, t.rtol, `rope_kv_attend ${dtype} out vs reference`);
        expectClose(gk, kc, TOL[`rope_${dtype}`].atol, TOL[`rope_${dtype}`].rtol, `rope_kv_attend ${dtype} k cache vs reference`);
      });
    }
  });
}

// rope_qk (training: RoPE of q and of k in one dispatch) vs two `rope` dispatches
// (the same bits) and vs ropeRef on each.
for (const dtype of ["f32", "f16"] as const) {
  describe.skipIf(!GPU)(`rope_qk ${dtype} vs rope of q and rope of k`, () => {
    test("shapes with nh = nkv, GQA and MQA; positions to 32768", async () => {
      const gpu = await gpuOrSkip();
      const rope = await loadRope(gpu, dtype);
      const r = (x: Float32Array) => (dtype === "f16" ? roundToF16(x) : x);
      const read = async (buf: GPUBuffer, n: number) =>
        dtype === "f32" ? gpu.readF32(buf, n) : f16BitsToF32(new Uint16Array(await gpu.read(buf, Math.ceil(n / 2) * 4)).subarray(0, n));
      for (const [T, nh, nkv, hd] of [[1, 1, 1, 2], [9, 4, 4, 16], [6, 6, 2, 8], [4, 4, 1, 64]]) {
        const q = r(randn(T * nh * hd, T * 3 + hd, 1));
        const k = r(randn(T * nkv * hd, T * 5 + hd, 1));
        const pos = Uint32Array.from({ length: T }, (_, i) => (i === T - 1 ? 32768 : i * 97));
        const pb = gpu.buffer(pos, "pos");
        const fused = [up(gpu, q, dtype, "q"), up(gpu, k, dtype, "k")];
        const apart = [up(gpu, q, dtype, "q2"), up(gpu, k, dtype, "k2")];
        const b = gpu.batch();
        rope.ropeQk(b, fused[0], fused[1], pb, { T, nh, nkv, hd, theta: 10000 });
        rope.rope(b, apart[0], pb, T, nh, hd, 10000);
        rope.rope(b, apart[1], pb, T, nkv, hd, 10000);
        b.submit();
        const [fq, fk, aq, ak] = [await read(fused[0], q.length), await read(fused[1], k.length), await read(apart[0], q.length), await read(apart[1], k.length)];
        [...fused, ...apart, pb].forEach((x) => x.destroy());
        const what = `${dtype} T=${T} nh=${nh} nkv=${nkv} hd=${hd}`;
        expectClose(fq, aq, TOL.exact.atol, TOL.exact.rtol, `rope_qk q = rope(q), ${what}`);
        expectClose(fk, ak, TOL.exact.atol, TOL.exact.rtol, `rope_qk k = rope(k), ${what}`);
        const t = TOL[`rope_${dtype}`];
        expectClose(fq, ropeRef(q, pos, T, nh, hd, 10000), t.atol, t.rtol, `rope_qk q vs reference, ${what}`);
        expectClose(fk, ropeRef(k, pos, T, nkv, hd, 10000), t.atol, t.rtol, `rope_qk k vs reference, ${what}`);
      }
      rope.destroy();
    });
  });
}

// swiglu_gu (training's recompute: SwiGLU over the stacked gate/up product gu [rows, 2w])
// vs swiglu of gate and up apart: the same bits.
for (const dtype of ["f32", "f16"] as const) {
  describe.skipIf(!GPU)(`swiglu_gu ${dtype} vs swiglu of gate and up apart`, () => {
    test("rows x widths, gate tails", async () => {
      const gpu = await gpuOrSkip();
      const ew = await loadElementwise(gpu, dtype);
      const r = (x: Float32Array) => (dtype === "f16" ? roundToF16(x) : x);
      const read = async (buf: GPUBuffer, n: number) =>
        dtype === "f32" ? gpu.readF32(buf, n) : f16BitsToF32(new Uint16Array(await gpu.read(buf, Math.ceil(n / 2) * 4)).subarray(0, n));
      for (const [rows, w] of [[1, 1], [5, 9], [33, 128]]) {
        const gate = r(randn(rows * w, rows * 3 + w, 8));
        if (rows * w > 2) gate.set([-40, 40]);
        const upv = r(randn(rows * w, rows * 5 + w, 2));
        const gu = new Float32Array(2 * rows * w);
        for (let i = 0; i < rows; i++) {
          gu.set(gate.subarray(i * w, (i + 1) * w), 2 * i * w);
          gu.set(upv.subarray(i * w, (i + 1) * w), (2 * i + 1) * w);
        }
        const bufs = [up(gpu, gu, dtype, "gu"), up(gpu, new Float32Array(rows * w + 1), dtype, "out"), up(gpu, gate, dtype, "g"), up(gpu, upv, dtype, "u"), up(gpu, new Float32Array(rows * w + 1), dtype, "out2")];
        const b = gpu.batch();
        ew.swigluGu(b, bufs[0], bufs[1], rows, w);
        ew.swiglu(b, bufs[2], bufs[3], bufs[4], rows * w);
        b.submit();
        const [got, want] = [await read(bufs[1], rows * w), await read(bufs[4], rows * w)];
        bufs.forEach((x) => x.destroy());
        expectClose(got, want, TOL.exact.atol, TOL.exact.rtol, `swiglu_gu ${dtype} rows ${rows} w ${w}`);
      }
    });
  });
}
