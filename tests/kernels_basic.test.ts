// The small kernels of the Qwen2 forward: embedding gather, RMSNorm, RoPE,
// SwiGLU / residual adds, chosen-token log-prob + entropy. Every element of
// every output is compared with the CPU reference in src/kernels/.
import { describe, expect, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import { addRef, loadElementwise, swigluRef } from "../src/kernels/elementwise.ts";
import { grid, type Dtype } from "../src/kernels/common.ts";
import { checkIds, gatherRef, loadEmbedding } from "../src/kernels/embedding.ts";
import { f16BitsToF32, f32ToF16Bits, roundToF16 } from "../src/kernels/f16.ts";
import { loadLogprob, logprobRef } from "../src/kernels/logprob.ts";
import { loadRmsNorm, rmsnormRef } from "../src/kernels/rmsnorm.ts";
import { invFreqRef, loadRope, ropeRef, ropeRefF64 } from "../src/kernels/rope.ts";
import { expectClose, gpuOrSkip, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
const DTYPES: Dtype[] = ["f32", "f16"];
const EPS = 1e-6; // DeepSeek-R1-Distill-Qwen rms_norm_eps
const THETA = 10000; // rope_theta

/** A storage buffer holding `data` as `dtype`. */
function up(gpu: Gpu, data: Float32Array, dtype: Dtype, label: string): GPUBuffer {
  return gpu.buffer(dtype === "f16" ? f32ToF16Bits(data) : data, label);
}

async function down(gpu: Gpu, buf: GPUBuffer, n: number, dtype: Dtype): Promise<Float32Array> {
  if (dtype === "f32") return gpu.readF32(buf, n);
  return f16BitsToF32(new Uint16Array(await gpu.read(buf, n * 2)));
}

/** What a `dtype` buffer holds for `data` (the reference's inputs). */
const held = (data: Float32Array, dtype: Dtype) => (dtype === "f16" ? roundToF16(data) : data);

function tol(name: string) {
  const t = TOL[name];
  if (!t) throw new Error(`tests/tolerances.ts has no entry "${name}"`);
  return t;
}

function randomIds(n: number, vocab: number, seed: number): Uint32Array {
  const r = randn(n, seed, 1);
  return Uint32Array.from(r, (v) => Math.min(vocab - 1, Math.floor(((v + 1) / 2) * vocab)));
}

describe("grid and id checks (CPU)", () => {
  test("grid stays 1-D when it fits and covers every group when split", () => {
    expect(grid(5, 65535, "t")).toEqual([5, 1]);
    expect(grid(65535, 65535, "t")).toEqual([65535, 1]);
    const [x, y] = grid(200000, 65535, "t");
    expect(x).toBeLessThanOrEqual(65535);
    expect(x * y).toBeGreaterThanOrEqual(200000);
    expect(x * (y - 1)).toBeLessThan(200000);
    expect(() => grid(65536 * 65536, 65535, "big")).toThrow(/big/);
  });

  test("checkIds names the bad id and its position", () => {
    expect(() => checkIds([1, 2, 3], 4)).not.toThrow();
    expect(() => checkIds([1, 151936, 3], 151936)).toThrow(/id 151936 at position 1 .*\[0, 151936\)/);
    expect(() => checkIds(Uint32Array.of(0, 0, 7), 5, "prompt 3")).toThrow(/prompt 3: id 7 at position 2/);
    expect(() => checkIds([0, -1], 5)).toThrow(/id -1 at position 1/);
  });
});

describe.skipIf(!GPU)("embedding.gather", () => {
  for (const dtype of DTYPES) {
    test(`${dtype}: chunked table, every row of out checked, untouched rows kept`, async () => {
      const gpu = await gpuOrSkip();
      const emb = await loadEmbedding(gpu, dtype);
      for (const [T, D, V] of [[1, 37, 11], [7, 64, 50], [33, 37, 101], [20, 300, 23]]) {
        const table = held(randn(V * D, 3 + T, 2), dtype);
        const ids = randomIds(T, V, 9 + D);
        ids[0] = V - 1; // the last row of the last chunk
        if (T > 1) ids[T - 1] = 0;
        checkIds(ids, V);
        // Three chunks of uneven size, as a vocabulary too big for one binding is split.
        const cuts = [0, Math.floor(V / 3), Math.floor((2 * V) / 3) + 1, V];
        const sentinel = held(new Float32Array(T * D).fill(-7.5), dtype);
        const idsBuf = gpu.buffer(ids, "ids");
        const out = up(gpu, sentinel, dtype, "out");
        const chunks = cuts.slice(0, -1).map((r0, c) => ({ row0: r0, rows: cuts[c + 1] - r0 }));
        const chunkBufs = chunks.map((ch) => up(gpu, table.subarray(ch.row0 * D, (ch.row0 + ch.rows) * D), dtype, "chunk"));
        // Only the middle chunk first: rows with other ids must stay as they were.
        let b = gpu.batch();
        emb.gather(b, idsBuf, chunkBufs[1], out, T, D, chunks[1].row0, chunks[1].rows);
        b.submit();
        const partialWant = gatherRef(ids, table.subarray(chunks[1].row0 * D, (chunks[1].row0 + chunks[1].rows) * D), sentinel.slice(), D, chunks[1].row0);
        expectClose(await down(gpu, out, T * D, dtype), partialWant, TOL.exact.atol, TOL.exact.rtol, `embedding ${dtype} middle chunk T=${T} D=${D}`);
        b = gpu.batch();
        chunks.forEach((ch, c) => emb.gather(b, idsBuf, chunkBufs[c], out, T, D, ch.row0, ch.rows));
        b.submit();
        const want = gatherRef(ids, table, sentinel.slice(), D);
        expectClose(await down(gpu, out, T * D, dtype), want, TOL.exact.atol, TOL.exact.rtol, `embedding ${dtype} T=${T} D=${D} V=${V}`);
        for (const x of [idsBuf, out, ...chunkBufs]) x.destroy();
      }
    });
  }

  test("f32: more tokens than one grid dimension holds (2-D grid)", async () => {
    const gpu = await gpuOrSkip();
    const emb = await loadEmbedding(gpu, "f32");
    const T = gpu.limits.maxComputeWorkgroupsPerDimension + 3;
    const D = 3;
    const V = 17;
    const table = randn(V * D, 5, 1);
    const ids = randomIds(T, V, 77);
    const idsBuf = gpu.buffer(ids, "ids");
    const tBuf = gpu.buffer(table, "table");
    const out = gpu.buffer(T * D * 4, "out");
    const b = gpu.batch();
    emb.gather(b, idsBuf, tBuf, out, T, D, 0, V);
    b.submit();
    expectClose(await gpu.readF32(out, T * D), gatherRef(ids, table, new Float32Array(T * D), D), 0, 0, "embedding 2-D grid");
    for (const x of [idsBuf, tBuf, out]) x.destroy();
  });

  test("a table binding smaller than rows × D is refused, naming the tensor", async () => {
    const gpu = await gpuOrSkip();
    const emb = await loadEmbedding(gpu, "f32");
    const small = gpu.buffer(16, "small");
    expect(() => emb.gather(gpu.batch(), small, small, small, 1, 8, 0, 4)).toThrow(/embedding\.gather: table binds 16 bytes/);
    small.destroy();
  });
});

describe.skipIf(!GPU)("rmsnorm", () => {
  for (const [dtype, variant] of DTYPES.flatMap((d) => (["workgroup", "row"] as const).map((v) => [d, v] as const))) {
    test(`${dtype}, ${variant} form: dims 37, 1536, 8960; zero, tiny and large rows; eps 1e-6`, async () => {
      const gpu = await gpuOrSkip();
      const norm = await loadRmsNorm(gpu, dtype, variant);
      const t = tol(`rmsnorm_${dtype}`);
      for (const [rows, dim] of [[1, 37], [5, 37], [33, 37], [3, 1536], [2, 8960], [4, 1]]) {
        const x = randn(rows * dim, rows * 31 + dim, 3);
        x.fill(0, 0, dim); // row 0: all zeros -> 0 (eps keeps it finite)
        if (rows > 2) for (let i = 0; i < dim; i++) x[dim + i] *= 1e-3; // row 1: tiny, eps matters
        if (rows > 2) for (let i = 0; i < dim; i++) x[2 * dim + i] *= dtype === "f16" ? 2e3 : 1e5; // row 2: large
        const w = randn(dim, 7 + dim, 1.5);
        const xh = held(x, dtype);
        const wh = held(w, dtype);
        const xb = up(gpu, xh, dtype, "x");
        const wb = up(gpu, wh, dtype, "w");
        const ob = gpu.buffer(rows * dim * (dtype === "f16" ? 2 : 4), "out");
        const b = gpu.batch();
        norm.rmsnorm(b, xb, wb, ob, rows, dim, EPS);
        b.submit();
        expectClose(await down(gpu, ob, rows * dim, dtype), rmsnormRef(xh, wh, rows, dim, EPS), t.atol, t.rtol, `rmsnorm ${dtype} ${variant} rows=${rows} dim=${dim}`);
        for (const z of [xb, wb, ob]) z.destroy();
      }
    });
  }

  test("bad shapes are refused", async () => {
    const gpu = await gpuOrSkip();
    const norm = await loadRmsNorm(gpu, "f32");
    const buf = gpu.buffer(64, "x");
    const other = gpu.buffer(64, "o");
    expect(() => norm.rmsnorm(gpu.batch(), buf, buf, other, 2, 16, EPS)).toThrow(/rmsnorm: x binds 64 bytes/);
    expect(() => norm.rmsnorm(gpu.batch(), buf, buf, buf, 1, 4, EPS)).toThrow(/out must not share/);
    expect(() => norm.rmsnorm(gpu.batch(), buf, buf, other, 1, 4, 0)).toThrow(/eps/);
    buf.destroy();
    other.destroy();
  });
});

describe.skipIf(!GPU)("rope", () => {
  /** Positions 0..32768 including both ends and random ones in between. */
  function positions(T: number, seed: number): Uint32Array {
    const p = Uint32Array.from(randn(T, seed, 1), (v) => Math.floor(((v + 1) / 2) * 32768));
    p[0] = 0;
    if (T > 1) p[1] = 32768;
    if (T > 2) p[2] = 32767;
    if (T > 3) p[3] = 1;
    return p;
  }

  test("inv_freq follows HF's f32 steps and stays within 2 f32 ulp of the exact value", () => {
    for (const hd of [8, 64, 128]) {
      const inv = invFreqRef(hd, THETA);
      expect(inv[0]).toBe(1);
      for (let i = 0; i < hd / 2; i++) {
        const exact = Math.pow(THETA, -(2 * i) / hd);
        expect(Math.abs(inv[i] - exact)).toBeLessThanOrEqual(2 * 2 ** -24 * exact * 2);
      }
    }
  });

  for (const dtype of DTYPES) {
    test(`${dtype}: hd 8/64/128, T 1..33, positions up to 32768, theta 1e4 (and 1e6), every element`, async () => {
      const gpu = await gpuOrSkip();
      const rope = await loadRope(gpu, dtype);
      const t = tol(`rope_${dtype}`);
      for (const [T, H, hd, theta] of [[1, 1, 8, THETA], [5, 3, 8, THETA], [33, 2, 64, THETA], [17, 3, 128, THETA], [9, 2, 64, 1e6]]) {
        const x = held(randn(T * H * hd, T * 13 + hd, 1), dtype);
        const pos = positions(T, hd + T);
        const xb = up(gpu, x, dtype, "x");
        const pb = gpu.buffer(pos, "pos");
        const b = gpu.batch();
        rope.rope(b, xb, pb, T, H, hd, theta);
        b.submit();
        const got = await down(gpu, xb, T * H * hd, dtype);
        expectClose(got, ropeRef(x, pos, T, H, hd, theta), t.atol, t.rtol, `rope ${dtype} T=${T} H=${H} hd=${hd} theta=${theta}`);
        xb.destroy();
        pb.destroy();
      }
      rope.destroy();
    });
  }

  test("f32: against the exact (f64) rotation, within the bound f32 angles imply", async () => {
    // The f32 angle pos·inv_freq (HF's) differs from the exact one by at most
    // 3 f32 roundings relative (2 in inv_freq, 1 in the product): |δ| <=
    // 3·2^-24·pos since inv_freq <= 1. A rotation error δ moves each output by
    // at most δ·(|x1| + |x2|) <= 2δ for |x| <= 1; plus the kernel's own error.
    const gpu = await gpuOrSkip();
    const rope = await loadRope(gpu, "f32");
    const T = 33;
    const H = 2;
    const hd = 64;
    const x = randn(T * H * hd, 5, 1);
    const pos = positions(T, 99);
    const xb = gpu.buffer(x, "x");
    const pb = gpu.buffer(pos, "pos");
    const b = gpu.batch();
    rope.rope(b, xb, pb, T, H, hd, THETA);
    b.submit();
    const got = await gpu.readF32(xb, T * H * hd);
    const bound = 2 * 3 * 2 ** -24 * 32768 + tol("rope_f32").atol;
    expectClose(got, ropeRefF64(x, pos, T, H, hd, THETA), bound, 0, "rope f32 vs f64 exact");
    // And the f32-semantics reference really is what the kernel matches much more tightly.
    expectClose(got, ropeRef(x, pos, T, H, hd, THETA), tol("rope_f32").atol, tol("rope_f32").rtol, "rope f32 vs f32 semantics");
    xb.destroy();
    pb.destroy();
    rope.destroy();
  });

  test("odd head_dim is refused", async () => {
    const gpu = await gpuOrSkip();
    const rope = await loadRope(gpu, "f32");
    const buf = gpu.buffer(1024, "x");
    expect(() => rope.rope(gpu.batch(), buf, buf, 1, 1, 7, THETA)).toThrow(/head_dim 7 must be even/);
    buf.destroy();
  });
});

describe.skipIf(!GPU)("elementwise", () => {
  for (const dtype of DTYPES) {
    test(`${dtype}: swiglu, add, add aliased, addInPlace (n = 1, 37, 1000, 8960·3)`, async () => {
      const gpu = await gpuOrSkip();
      const ew = await loadElementwise(gpu, dtype);
      const t = tol(`elementwise_${dtype}`);
      const bytes = dtype === "f16" ? 2 : 4;
      for (const n of [1, 37, 1000, 8960 * 3]) {
        const g = randn(n, n + 1, 8);
        g[0] = -100; // silu(-100) ~ -4e-42: exp must not overflow
        if (n > 2) {
          g[1] = 100;
          g[2] = 0;
        }
        const gh = held(g, dtype);
        const uh = held(randn(n, n + 2, 3), dtype);
        const gb = up(gpu, gh, dtype, "gate");
        const ub = up(gpu, uh, dtype, "up");
        const sb = gpu.buffer(n * bytes, "swiglu");
        const ab = gpu.buffer(n * bytes, "sum");
        const xb = up(gpu, gh, dtype, "x"); // x += up, via add(out = x)
        const yb = up(gpu, uh, dtype, "y"); // y += gate, via addInPlace
        const b = gpu.batch();
        ew.swiglu(b, gb, ub, sb, n);
        ew.add(b, gb, ub, ab, n);
        ew.add(b, xb, ub, xb, n);
        ew.addInPlace(b, yb, gb, n);
        b.submit();
        const sum = addRef(gh, uh);
        expectClose(await down(gpu, sb, n, dtype), swigluRef(gh, uh), t.atol, t.rtol, `swiglu ${dtype} n=${n}`);
        expectClose(await down(gpu, ab, n, dtype), sum, t.atol, t.rtol, `add ${dtype} n=${n}`);
        expectClose(await down(gpu, xb, n, dtype), sum, t.atol, t.rtol, `add (out = x) ${dtype} n=${n}`);
        expectClose(await down(gpu, yb, n, dtype), sum, t.atol, t.rtol, `addInPlace ${dtype} n=${n}`);
        for (const z of [gb, ub, sb, ab, xb, yb]) z.destroy();
      }
    });
  }

  test("add with out aliasing y, and partial overlaps refused", async () => {
    const gpu = await gpuOrSkip();
    const ew = await loadElementwise(gpu, "f32");
    const n = 37;
    const x = randn(n, 1, 2);
    const y = randn(n, 2, 2);
    const xb = gpu.buffer(x, "x");
    const yb = gpu.buffer(y, "y");
    const b = gpu.batch();
    ew.add(b, xb, { buffer: yb, offset: 0, size: yb.size }, yb, n);
    b.submit();
    const t = tol("elementwise_f32");
    expectClose(await gpu.readF32(yb, n), addRef(x, y), t.atol, t.rtol, "add (out = y)");
    const big = gpu.buffer(1024, "big");
    expect(() => ew.add(gpu.batch(), { buffer: big, offset: 0, size: 256 }, yb, { buffer: big, offset: 256 }, 8)).toThrow(/overlaps/);
    expect(() => ew.addInPlace(gpu.batch(), { buffer: big, offset: 0, size: 256 }, { buffer: big, offset: 256 }, 8)).toThrow(/same buffer/);
    expect(() => ew.swiglu(gpu.batch(), xb, yb, xb, n)).toThrow(/shares a buffer/);
    expect(() => ew.add(gpu.batch(), xb, yb, big, 1000)).toThrow(/x binds/);
    for (const z of [xb, yb, big]) z.destroy();
  });
});

describe.skipIf(!GPU)("logprob.chosen", () => {
  async function run(gpu: Gpu, logits: Float32Array, targets: Uint32Array, T: number, V: number, temperature: number) {
    const lp = await loadLogprob(gpu);
    const lb = gpu.buffer(logits, "logits");
    const tb = gpu.buffer(targets, "targets");
    const pb = gpu.buffer(T * 4, "logp");
    const eb = gpu.buffer(T * 4, "entropy");
    const b = gpu.batch();
    lp.chosen(b, lb, tb, pb, eb, T, V, temperature);
    b.submit();
    const out = { logp: await gpu.readF32(pb, T), entropy: await gpu.readF32(eb, T) };
    for (const z of [lb, tb, pb, eb]) z.destroy();
    return out;
  }

  function check(got: { logp: Float32Array; entropy: Float32Array }, want: { logp: Float32Array; entropy: Float32Array }, what: string) {
    const t = tol("logprob");
    expectClose(got.logp, want.logp, t.atol, t.rtol, `${what} logp`);
    expectClose(got.entropy, want.entropy, t.atol, t.rtol, `${what} entropy`);
  }

  test("V 1000 and 50000, T 1..33, temperatures 1 and 0.6, every row", async () => {
    const gpu = await gpuOrSkip();
    for (const [T, V, temp, scale] of [[1, 1000, 1, 5], [33, 1000, 0.6, 10], [3, 50000, 1, 20], [2, 50000, 0.6, 3], [5, 1, 1, 4], [4, 7, 1, 2]]) {
      const logits = randn(T * V, T * 7 + V, scale);
      const targets = randomIds(T, V, V + T);
      // The argmax as target in row 0 (logp near 0).
      let arg = 0;
      for (let j = 1; j < V; j++) if (logits[j] > logits[arg]) arg = j;
      targets[0] = arg;
      check(await run(gpu, logits, targets, T, V, temp), logprobRef(logits, targets, T, V, temp), `logprob T=${T} V=${V} temp=${temp}`);
    }
  });

  test("extreme logits (±1e4), all-equal rows and a one-hot row", async () => {
    const gpu = await gpuOrSkip();
    const V = 50000;
    const T = 5;
    const logits = randn(T * V, 4242, 1e4); // row 0: uniform in ±1e4
    logits.fill(3.25, V, 2 * V); // row 1: all equal -> logp = −log V, entropy = log V
    logits.fill(-1e4, 2 * V, 3 * V); // row 2: all equal and very negative
    logits.fill(-1e4, 3 * V, 4 * V); // row 3: one token at +1e4 -> logp 0 / −2e4, entropy 0
    logits[3 * V + 123] = 1e4;
    for (let j = 0; j < V; j++) logits[4 * V + j] = j % 2 ? 1e4 : 1e4 - 1; // row 4: two levels near 1e4
    const targets = Uint32Array.of(17, 4, V - 1, 123, 8);
    const want = logprobRef(logits, targets, T, V, 1);
    expect(want.logp[1]).toBeCloseTo(-Math.log(V), 5);
    expect(want.entropy[1]).toBeCloseTo(Math.log(V), 5);
    check(await run(gpu, logits, targets, T, V, 1), want, "logprob extreme");
    const t2 = Uint32Array.of(17, 4, 0, 5, 9);
    check(await run(gpu, logits, t2, T, V, 0.6), logprobRef(logits, t2, T, V, 0.6), "logprob extreme temp 0.6");
  });

  test("a target outside the vocabulary gives NaN, not a silent number", async () => {
    const gpu = await gpuOrSkip();
    const V = 10;
    const got = await run(gpu, randn(2 * V, 3, 1), Uint32Array.of(3, V), 2, V, 1);
    expect(Number.isFinite(got.logp[0])).toBe(true);
    expect(Number.isNaN(got.logp[1])).toBe(true);
  });
});
