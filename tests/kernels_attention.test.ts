// Paged-KV attention (kernels/attention.wgsl) against the CPU references, every element.
import { describe, expect, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import {
  attentionRef,
  denseAttentionRef,
  loadAttention,
  writeKVRef,
  type Attention,
  type AttentionShape,
  type Dtype,
} from "../src/kernels/attention.ts";
import { f16BitsToF32, f32ToF16Bits, roundToF16 } from "../src/kernels/f16.ts";
import { expectClose, gpuOrSkip, hasGpu, randn } from "./helpers.ts";
import { TOL, type Tolerance } from "./tolerances.ts";

const GPU = await hasGpu();

/** A sequence slot: `ctx` positions end up in the cache; queries at `queries`. */
interface SeqSpec {
  slot: number;
  ctx: number;
  queries: number[];
}

interface Scenario {
  s: AttentionShape; // T = number of query tokens
  numBlocks: number;
  maxSeqs: number;
  table: Uint32Array;
  // every position of every sequence, written in a shuffled order
  wT: number;
  wk: Float32Array;
  wv: Float32Array;
  wSeq: Uint32Array;
  wPos: Uint32Array;
  // query tokens
  q: Float32Array;
  tokSeq: Uint32Array;
  tokPos: Uint32Array;
  dense: Map<number, { k: Float32Array; v: Float32Array }>; // per slot [ctx, nKv, hd]
}

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

function shuffle<T>(a: T[], r: () => number): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

/**
 * Builds a paged cache layout: each sequence gets its blocks from a shuffled
 * pool (non-contiguous, out of order, spare blocks left over), unused table
 * entries hold 0xffffffff so a read through them would be caught by the
 * reference. Query tokens of all sequences are interleaved when `interleave`.
 */
function scenario(
  seqs: SeqSpec[],
  dims: { nh: number; nKv: number; hd: number; blockSize: number },
  seed: number,
  opts: { interleave?: boolean; qkScale?: number; dtype: Dtype },
): Scenario {
  const r = rng(seed);
  const { nh, nKv, hd, blockSize } = dims;
  const need = seqs.map((x) => Math.ceil(x.ctx / blockSize));
  const maxBlocks = Math.max(...need) + 1;
  const numBlocks = need.reduce((a, b) => a + b, 0) + 3;
  const maxSeqs = Math.max(...seqs.map((x) => x.slot)) + 1;
  const table = new Uint32Array(maxSeqs * maxBlocks).fill(0xffffffff);
  const pool = shuffle(range(0, numBlocks), r);
  seqs.forEach((x, i) => {
    for (let b = 0; b < need[i]; b++) table[x.slot * maxBlocks + b] = pool.pop()!;
  });
  const round = (a: Float32Array) => (opts.dtype === "f16" ? roundToF16(a) : a);
  const sc = opts.qkScale ?? 1;
  const dense = new Map<number, { k: Float32Array; v: Float32Array }>();
  const writes: [number, number][] = [];
  seqs.forEach((x, i) => {
    dense.set(x.slot, {
      k: round(randn(x.ctx * nKv * hd, seed * 31 + i * 2 + 1, sc)),
      v: round(randn(x.ctx * nKv * hd, seed * 31 + i * 2 + 2, 1)),
    });
    for (let p = 0; p < x.ctx; p++) writes.push([x.slot, p]);
  });
  shuffle(writes, r);
  const per = nKv * hd;
  const wk = new Float32Array(writes.length * per);
  const wv = new Float32Array(writes.length * per);
  writes.forEach(([slot, p], t) => {
    const d = dense.get(slot)!;
    wk.set(d.k.subarray(p * per, (p + 1) * per), t * per);
    wv.set(d.v.subarray(p * per, (p + 1) * per), t * per);
  });
  let toks: [number, number][] = seqs.flatMap((x) => x.queries.map((p) => [x.slot, p] as [number, number]));
  if (opts.interleave) toks = shuffle(toks, r);
  const T = toks.length;
  return {
    s: { T, nh, nKv, hd, blockSize, maxBlocks },
    numBlocks,
    maxSeqs,
    table,
    wT: writes.length,
    wk,
    wv,
    wSeq: Uint32Array.from(writes.map((w) => w[0])),
    wPos: Uint32Array.from(writes.map((w) => w[1])),
    q: round(randn(T * nh * hd, seed * 31 + 99, sc)),
    tokSeq: Uint32Array.from(toks.map((t) => t[0])),
    tokPos: Uint32Array.from(toks.map((t) => t[1])),
    dense,
  };
}

function cacheLen(sc: Scenario): number {
  return sc.numBlocks * sc.s.blockSize * sc.s.nKv * sc.s.hd;
}

/** The CPU caches after writing every position (unwritten rows: `fill`). */
function cpuCaches(sc: Scenario, fill = 0): { kc: Float32Array; vc: Float32Array } {
  const kc = new Float32Array(cacheLen(sc)).fill(fill);
  const vc = new Float32Array(cacheLen(sc)).fill(fill);
  writeKVRef(sc.wk, sc.wv, kc, vc, sc.table, sc.wSeq, sc.wPos, { ...sc.s, T: sc.wT });
  return { kc, vc };
}

function upload(gpu: Gpu, x: Float32Array, dtype: Dtype, label: string): GPUBuffer {
  return gpu.buffer(dtype === "f16" ? f32ToF16Bits(x) : x, label);
}

async function readOut(gpu: Gpu, buf: GPUBuffer, n: number, dtype: Dtype): Promise<Float32Array> {
  if (dtype === "f32") return gpu.readF32(buf, n);
  return f16BitsToF32(new Uint16Array(await gpu.read(buf, Math.ceil((n * 2) / 4) * 4)).subarray(0, n));
}

/**
 * On the GPU: caches poisoned with `poison`, every position written with
 * writeKV, then prefill or decode, all in one batch. Returns out and caches.
 */
async function runGpu(
  gpu: Gpu,
  attn: Attention,
  sc: Scenario,
  dtype: Dtype,
  mode: "prefill" | "decode",
  scale: number,
  opts: { poison?: number; chunkLen?: number } = {},
): Promise<{ out: Float32Array; kc: Float32Array; vc: Float32Array }> {
  const { T, nh, nKv, hd, blockSize, maxBlocks } = sc.s;
  const poison = new Float32Array(cacheLen(sc)).fill(opts.poison ?? NaN);
  const bufs = {
    kc: upload(gpu, poison, dtype, "kcache"),
    vc: upload(gpu, poison, dtype, "vcache"),
    table: gpu.buffer(sc.table, "blockTable"),
    wk: upload(gpu, sc.wk, dtype, "k"),
    wv: upload(gpu, sc.wv, dtype, "v"),
    wSeq: gpu.buffer(sc.wSeq, "wSeq"),
    wPos: gpu.buffer(sc.wPos, "wPos"),
    q: upload(gpu, sc.q, dtype, "q"),
    tokSeq: gpu.buffer(sc.tokSeq, "tokSeq"),
    tokPos: gpu.buffer(sc.tokPos, "tokPos"),
    out: upload(gpu, new Float32Array(T * nh * hd).fill(NaN), dtype, "out"),
  };
  const b = gpu.batch();
  attn.writeKV(b, bufs.wk, bufs.wv, bufs.kc, bufs.vc, bufs.table, bufs.wSeq, bufs.wPos, sc.wT, nKv, hd, blockSize, maxBlocks);
  const args = [b, bufs.q, bufs.kc, bufs.vc, bufs.table, bufs.tokSeq, bufs.tokPos, bufs.out, T, nh, nKv, hd, blockSize, maxBlocks, scale] as const;
  if (mode === "prefill") attn.prefill(...args);
  else attn.decode(...args, opts.chunkLen);
  b.submit();
  const out = await readOut(gpu, bufs.out, T * nh * hd, dtype);
  const kc = await readOut(gpu, bufs.kc, cacheLen(sc), dtype);
  const vc = await readOut(gpu, bufs.vc, cacheLen(sc), dtype);
  for (const x of Object.values(bufs)) x.destroy();
  return { out, kc, vc };
}

const attnTol = (dtype: Dtype): Tolerance => (dtype === "f32" ? TOL.attention_f32 : TOL.attention_f16);

/** GPU prefill or decode of a scenario vs attentionRef, every element. */
async function check(attn: Attention, sc: Scenario, dtype: Dtype, mode: "prefill" | "decode", what: string, chunkLen?: number, tol = attnTol(dtype)) {
  const gpu = await gpuOrSkip();
  const scale = 1 / Math.sqrt(sc.s.hd);
  const { kc, vc } = cpuCaches(sc);
  const want = attentionRef(sc.q, kc, vc, sc.table, sc.tokSeq, sc.tokPos, sc.s, scale);
  const got = await runGpu(gpu, attn, sc, dtype, mode, scale, { chunkLen });
  expectClose(got.out, want, tol.atol, tol.rtol, `${dtype} ${mode} ${what}`);
}

// ---------------------------------------------------------------- CPU

describe("attention references", () => {
  test("paged reference matches dense attention (several sequences, shuffled blocks, GQA)", () => {
    const seqs: SeqSpec[] = [
      { slot: 1, ctx: 37, queries: range(0, 37) },
      { slot: 0, ctx: 5, queries: range(2, 5) },
      { slot: 3, ctx: 70, queries: range(60, 70) },
    ];
    for (const [nh, nKv] of [[4, 2], [4, 1], [3, 3]]) {
      const sc = scenario(seqs, { nh, nKv, hd: 8, blockSize: 16 }, 7 + nh + nKv, { interleave: true, dtype: "f32" });
      const { kc, vc } = cpuCaches(sc, NaN); // an unwritten row read would give NaN
      const scale = 0.3;
      const paged = attentionRef(sc.q, kc, vc, sc.table, sc.tokSeq, sc.tokPos, sc.s, scale);
      for (const x of seqs) {
        const idx = range(0, sc.s.T).filter((t) => sc.tokSeq[t] === x.slot);
        const per = nh * 8;
        const q = new Float32Array(idx.length * per);
        idx.forEach((t, i) => q.set(sc.q.subarray(t * per, (t + 1) * per), i * per));
        const d = sc.dense.get(x.slot)!;
        const want = denseAttentionRef(q, d.k, d.v, idx.map((t) => sc.tokPos[t]), nh, nKv, 8, scale);
        const got = new Float32Array(idx.length * per);
        idx.forEach((t, i) => got.set(paged.subarray(t * per, (t + 1) * per), i * per));
        expectClose(got, want, TOL.f32_elementwise.atol, TOL.f32_elementwise.rtol, `paged vs dense, slot ${x.slot}, ${nh}/${nKv} heads`);
      }
    }
  });

  test("references reject a position outside the block table", () => {
    const sc = scenario([{ slot: 0, ctx: 20, queries: [19] }], { nh: 2, nKv: 1, hd: 4, blockSize: 16 }, 3, { dtype: "f32" });
    const { kc, vc } = cpuCaches(sc);
    // position 40 is in logical block 2, which the table leaves unassigned (0xffffffff)
    expect(() => attentionRef(sc.q, kc, vc, sc.table, sc.tokSeq, Uint32Array.of(40), sc.s, 1)).toThrow(/block 4294967295, outside the cache/);
    // with 2 blocks per slot, position 32 has no table entry at all
    expect(() => attentionRef(sc.q, kc, vc, sc.table, sc.tokSeq, Uint32Array.of(32), { ...sc.s, maxBlocks: 2 }, 1)).toThrow(/logical block 2/);
    expect(() => writeKVRef(sc.q, sc.q, kc, vc, sc.table, sc.tokSeq, Uint32Array.of(32), { ...sc.s, nKv: 1, hd: 4, maxBlocks: 2 })).toThrow(/writeKVRef.*logical block 2/);
  });
});

// ---------------------------------------------------------------- GPU

for (const dtype of ["f32", "f16"] as Dtype[]) {
  describe.skipIf(!GPU)(`attention ${dtype}`, () => {
    let attnP: Promise<Attention> | null = null;
    const attention = async () => (attnP ??= gpuOrSkip().then((g) => loadAttention(g, dtype)));
    // Both decode forms (tiled: flash-decoding split + combine; rows: one invocation per (token, head)), whatever this adapter picks.
    let formsP: Promise<Attention[]> | null = null;
    const decodeForms = async () => (formsP ??= gpuOrSkip().then((g) => Promise.all((["tiled", "rows"] as const).map((f) => loadAttention(g, dtype, f)))));

    test("writeKV puts every token's k, v at its (slot, position), nothing else changes", async () => {
      const gpu = await gpuOrSkip();
      const attn = await attention();
      for (const [bs, nKv, hd] of [[16, 2, 16], [32, 1, 8]]) {
        const seqs = [
          { slot: 2, ctx: 50, queries: [] },
          { slot: 0, ctx: 7, queries: [] },
        ];
        const sc = scenario(seqs, { nh: nKv, nKv, hd, blockSize: bs }, 11 + bs, { dtype });
        const sentinel = 7.25; // exact in f16
        const { kc, vc } = cpuCaches(sc, sentinel);
        const got = await runGpu(gpu, attn, { ...sc, s: { ...sc.s, T: 0 } }, dtype, "prefill", 1, { poison: sentinel });
        expectClose(got.kc, kc, TOL.exact.atol, TOL.exact.rtol, `${dtype} writeKV kcache bs ${bs}`);
        expectClose(got.vc, vc, TOL.exact.atol, TOL.exact.rtol, `${dtype} writeKV vcache bs ${bs}`);
      }
    });

    test("prefill: one sequence, GQA 4/2, hd 16, block 16, shuffled blocks", async () => {
      const sc = scenario([{ slot: 0, ctx: 45, queries: range(0, 45) }], { nh: 4, nKv: 2, hd: 16, blockSize: 16 }, 21, { dtype });
      await check(await attention(), sc, dtype, "prefill", "one sequence");
    });

    test("prefill: three sequences of different lengths, interleaved tokens, a continuation, MQA, block 32", async () => {
      const seqs = [
        { slot: 2, ctx: 70, queries: range(50, 70) }, // positions 0..49 already cached
        { slot: 0, ctx: 5, queries: range(0, 5) },
        { slot: 1, ctx: 33, queries: range(0, 33) },
      ];
      const sc = scenario(seqs, { nh: 4, nKv: 1, hd: 8, blockSize: 32 }, 22, { interleave: true, dtype });
      await check(await attention(), sc, dtype, "prefill", "mixed sequences");
    });

    test("prefill: hd 64, 4 heads / 4 kv heads, block 32, sequences in order", async () => {
      const seqs = [
        { slot: 0, ctx: 100, queries: range(60, 100) },
        { slot: 1, ctx: 19, queries: range(0, 19) },
      ];
      const sc = scenario(seqs, { nh: 4, nKv: 4, hd: 64, blockSize: 32 }, 23, { dtype });
      await check(await attention(), sc, dtype, "prefill", "hd 64");
    });

    test("prefill: 1.5B head shape (12 heads, 2 kv heads, hd 128), block 16", async () => {
      const sc = scenario([{ slot: 1, ctx: 130, queries: range(0, 130) }], { nh: 12, nKv: 2, hd: 128, blockSize: 16 }, 24, { dtype });
      await check(await attention(), sc, dtype, "prefill", "hd 128");
    });

    test("decode: sequences of 1, 17 and 300 positions, GQA 4/2, hd 16, block 16 (heuristic and 16-key chunks)", async () => {
      const seqs = [
        { slot: 3, ctx: 300, queries: [299] },
        { slot: 0, ctx: 1, queries: [0] },
        { slot: 1, ctx: 17, queries: [16] },
      ];
      const sc = scenario(seqs, { nh: 4, nKv: 2, hd: 16, blockSize: 16 }, 31, { dtype });
      for (const attn of await decodeForms()) {
        await check(attn, sc, dtype, "decode", "heuristic chunks");
        await check(attn, sc, dtype, "decode", "16-key chunks", attn.decodeTileKeys);
        await check(attn, sc, dtype, "decode", "one chunk", 320);
      }
    });

    test("decode: 4100-position context with the 1.5B head shape (hd 128, 12/2 heads), block 16", async () => {
      const seqs = [
        { slot: 0, ctx: 4100, queries: [4099] },
        { slot: 1, ctx: 777, queries: [776] },
      ];
      const sc = scenario(seqs, { nh: 12, nKv: 2, hd: 128, blockSize: 16 }, 32, { dtype });
      for (const attn of await decodeForms()) await check(attn, sc, dtype, "decode", "long context");
    });

    test("decode: MQA with 12 query heads on one kv head (two row groups), hd 64, block 32", async () => {
      const seqs = [
        { slot: 0, ctx: 500, queries: [499] },
        { slot: 2, ctx: 40, queries: [39] },
      ];
      const sc = scenario(seqs, { nh: 12, nKv: 1, hd: 64, blockSize: 32 }, 33, { dtype });
      for (const attn of await decodeForms()) await check(attn, sc, dtype, "decode", "MQA");
    });

    test("decode also serves several query tokens of one sequence (causal)", async () => {
      const sc = scenario([{ slot: 0, ctx: 40, queries: [3, 39, 20] }], { nh: 4, nKv: 2, hd: 8, blockSize: 16 }, 34, { dtype });
      for (const attn of await decodeForms()) await check(attn, sc, dtype, "decode", "multi-token");
    });

    test("scores of magnitude ~1e3 stay finite and exact (online softmax)", async () => {
      const attn = await attention();
      const gpu = await gpuOrSkip();
      const seqs = [
        { slot: 0, ctx: 90, queries: range(0, 90) },
        { slot: 1, ctx: 200, queries: [199] },
      ];
      const sc = scenario(seqs, { nh: 4, nKv: 2, hd: 16, blockSize: 16 }, 41, { qkScale: 8, dtype });
      const scale = 4;
      const { kc, vc } = cpuCaches(sc);
      // the test only means something when the scores really are large
      let maxScore = 0;
      for (let t = 0; t < sc.s.T; t++) {
        const d = sc.dense.get(sc.tokSeq[t])!;
        for (let p = 0; p <= sc.tokPos[t]; p++) {
          let dot = 0;
          for (let i = 0; i < 16; i++) dot += sc.q[t * 64 + i] * d.k[p * 32 + i];
          maxScore = Math.max(maxScore, Math.abs(dot * scale));
        }
      }
      expect(maxScore).toBeGreaterThan(1000);
      const want = attentionRef(sc.q, kc, vc, sc.table, sc.tokSeq, sc.tokPos, sc.s, scale);
      const tol = dtype === "f32" ? TOL.attention_f32_large_scores : TOL.attention_f16_large_scores;
      const pre = await runGpu(gpu, attn, sc, dtype, "prefill", scale);
      expectClose(pre.out, want, tol.atol, tol.rtol, `${dtype} prefill, scores up to ${maxScore.toFixed(0)}`);
      for (const form of await decodeForms()) {
        const dec = await runGpu(gpu, form, sc, dtype, "decode", scale, { chunkLen: form.decodeTileKeys });
        expectClose(dec.out, want, tol.atol, tol.rtol, `${dtype} decode, scores up to ${maxScore.toFixed(0)}`);
      }
    });
  });
}

describe.skipIf(!GPU)("attention wrapper", () => {
  test("decode scratch (tiled form) is allocated once and grows only for a larger shape", async () => {
    const gpu = await gpuOrSkip();
    const attn = await loadAttention(gpu, "f32", "tiled");
    const big = scenario([{ slot: 0, ctx: 300, queries: [299] }, { slot: 1, ctx: 10, queries: [9] }], { nh: 4, nKv: 2, hd: 16, blockSize: 16 }, 51, { dtype: "f32" });
    const small = scenario([{ slot: 0, ctx: 20, queries: [19] }], { nh: 4, nKv: 2, hd: 16, blockSize: 16 }, 52, { dtype: "f32" });
    expect(attn.scratchBytes()).toBe(0);
    await check(attn, small, "f32", "decode", "small");
    const first = attn.scratchBytes();
    expect(first).toBeGreaterThan(0);
    await check(attn, small, "f32", "decode", "small again");
    expect(attn.scratchBytes()).toBe(first);
    await check(attn, big, "f32", "decode", "big");
    const grown = attn.scratchBytes();
    expect(grown).toBeGreaterThan(first);
    await check(attn, small, "f32", "decode", "small after big");
    expect(attn.scratchBytes()).toBe(grown);
    attn.destroy();
  });

  test("bad shapes and bindings are errors naming the kernel and tensor", async () => {
    const gpu = await gpuOrSkip();
    const attn = await loadAttention(gpu, "f32", "tiled");
    const buf = gpu.buffer(1 << 16, "x");
    const small = gpu.buffer(16, "small");
    const b = gpu.batch();
    const call = (q: GPUBuffer, nh: number, nKv: number, hd: number) => () =>
      attn.prefill(b, q, buf, buf, buf, buf, buf, buf, 4, nh, nKv, hd, 16, 4, 1);
    expect(call(buf, 4, 2, 256)).toThrow(/attention\.prefill: head_dim 256/);
    expect(call(buf, 5, 2, 16)).toThrow(/n_heads 5 is not a multiple of n_kv_heads 2/);
    expect(call(small, 4, 2, 16)).toThrow(/attention\.prefill: tensor q binds 16 bytes/);
    expect(() => attn.decode(b, buf, buf, buf, buf, buf, buf, buf, 1, 4, 2, 16, 16, 4, 1, 24)).toThrow(/chunkLen 24/);
    expect(() => attn.writeKV(b, buf, small, buf, buf, buf, buf, buf, 4, 2, 16, 16, 4)).toThrow(/attention\.write_kv: tensor v/);
    b.submit();
    buf.destroy();
    small.destroy();
    attn.destroy();
  });
});
