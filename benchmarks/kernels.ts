#!/usr/bin/env bun
/**
 * Kernel benchmark: `bun benchmarks/kernels.ts [--quick] [--json] [--only SUBSTR] [--rounds N]`.
 *
 * Every case is checked against its CPU reference before it is timed; a case
 * that fails its check is reported as failed and not timed. Timing: one
 * sample is one submission of R repetitions, wall clock, minus one submission
 * of a single repetition (cancels submit + readback latency), divided by
 * R - 1. The cases of one shape (ours, naive, TF.js) are sampled interleaved,
 * N rounds (default 7, 3 with --quick), so load from other processes on a
 * shared machine hits them alike; a case's time is the median of its samples
 * (with the range), and a speed-up is the median of the per-round ratios
 * (with the range). Where the adapter has timestamp queries our own kernels
 * also report the median GPU time per dispatch. Units: ms, GFLOP/s, GB/s
 * (bytes each kernel must move at least once; both from the median wall
 * time) and % of the adapter's measured copy bandwidth (copyBufferToBuffer,
 * read + write bytes). The last line of stdout is one JSON object with
 * everything.
 *
 * Adding a kernel family: push `BenchCase`s (a plain object: name, flops,
 * bytes, setup returning record/check/dispose) from a function like
 * `matmulCases` below.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Gpu, params, track, type Batch } from "../src/gpu/index.ts";
import { loadMatmul, matmulRef } from "../src/kernels/matmul.ts";
import { compare, randn } from "../tests/helpers.ts";
import { TOL } from "../tests/tolerances.ts";

export interface BenchInstance {
  /** Record one repetition into a batch (our kernels). */
  record?(b: Batch): void;
  /** Or time R repetitions itself, returning wall ms for all R (peers). */
  runWall?(reps: number): Promise<number>;
  /** Compare against the CPU reference; called before any timing. */
  check(): Promise<{ ok: boolean; maxAbs: number; detail: string }>;
  dispose(): void;
}

export interface BenchCase {
  name: string; // e.g. "matmul f32 1x1536x1536"
  impl: string; // "ours", "naive", "tfjs", ...
  flops: number;
  bytes: number;
  setup(gpu: Gpu): Promise<BenchInstance>;
}

export interface BenchResult {
  name: string;
  impl: string;
  ok: boolean;
  check: string;
  reps: number;
  ms: number | null; // wall-clock per repetition, median over rounds
  msMin: number | null;
  msMax: number | null;
  samples: number[]; // ms per repetition, one per round
  gpuMs: number | null; // median timestamp per dispatch (ours only)
  gflops: number | null;
  gbps: number | null;
  pctCopyBw: number | null;
}

/** A speed-up of ours over another impl from paired (same-round) samples. */
export interface Ratio {
  median: number;
  min: number;
  max: number;
  ofMedians: number;
}
export interface Speedup {
  vsTfjs: Ratio | null;
  vsNaive: Ratio | null;
}

const args = new Set(process.argv.slice(2));
const QUICK = args.has("--quick");
const JSON_ONLY = args.has("--json");
const onlyIdx = process.argv.indexOf("--only");
const ONLY = onlyIdx > 0 ? process.argv[onlyIdx + 1] : "";
const roundsIdx = process.argv.indexOf("--rounds");
const ROUNDS = roundsIdx > 0 ? Number(process.argv[roundsIdx + 1]) : QUICK ? 3 : 7;
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error(`benchmarks/kernels.ts: --rounds must be a positive integer`);
const log = (s: string) => {
  if (!JSON_ONLY) console.log(s);
};

// ------------------------------------------------------------------ matmul --

interface MatmulShape {
  M: number;
  N: number;
  K: number;
}

/** Rows used for the CPU check of a big shape (keeps the kernel path: tiled stays tiled). */
function checkRows(M: number, gemvMaxM: number): number {
  if (M <= gemvMaxM) return M;
  return Math.min(M, Math.max(gemvMaxM + 1, 48));
}

export async function checkMatmul(
  gpu: Gpu,
  shape: MatmulShape,
  rows: number,
  run: (b: Batch | null, A: GPUBuffer, W: GPUBuffer, C: GPUBuffer, M: number) => Promise<Float32Array>,
) {
  const { N, K } = shape;
  const a = randn(rows * K, 11);
  const w = randn(N * K, 12, 0.5);
  const A = gpu.buffer(a, "check-A");
  const W = gpu.buffer(w, "check-W");
  const C = gpu.buffer(rows * N * 4, "check-C");
  const got = await run(null, A, W, C, rows);
  for (const x of [A, W, C]) x.destroy();
  const want = matmulRef(a, w, null, rows, N, K);
  const tol = TOL.f32_matmul;
  const r = compare(got, want, tol.atol, tol.rtol);
  return {
    ok: r.ok,
    maxAbs: r.maxAbs,
    detail: `${rows}x${N}x${K} every element, max |diff| ${r.maxAbs.toExponential(2)}${r.ok ? "" : ` ${r.mismatches.slice(0, 3).join("; ")}`}`,
  };
}

function matmulBuffers(gpu: Gpu, { M, N, K }: MatmulShape) {
  return {
    A: gpu.buffer(randn(M * K, 1), "bench-A"),
    W: gpu.buffer(randn(N * K, 2, 0.5), "bench-W"),
    C: gpu.buffer(M * N * 4, "bench-C"),
  };
}

let sharedTf = false;

export async function tfjs(gpu: Gpu) {
  const tf = await import("@tensorflow/tfjs-core");
  const { WebGPUBackend } = await import("@tensorflow/tfjs-backend-webgpu");
  if (!sharedTf) {
    sharedTf = true;
    const info = { vendor: gpu.adapter.vendor, architecture: gpu.adapter.architecture, device: gpu.adapter.device, description: gpu.adapter.description };
    // tf's constructor only checks that navigator.gpu exists; it gets our device, so the same adapter
    const nav = globalThis.navigator as unknown as Record<string, unknown>;
    if (!nav.gpu) Object.defineProperty(nav, "gpu", { value: { getPreferredCanvasFormat: () => "rgba8unorm" }, configurable: true });
    // tf's kernels are registered under "webgpu": replace that backend's factory with one on our device
    if (tf.findBackendFactory("webgpu")) tf.removeBackend("webgpu");
    tf.registerBackend("webgpu", () => new WebGPUBackend(gpu.device, info as GPUAdapterInfo));
    await track(tf.setBackend("webgpu") as unknown as Promise<boolean>);
  }
  return tf;
}

function matmulCases(gpu: Gpu, shapes: MatmulShape[], peerShapes: Set<string>): BenchCase[] {
  const cases: BenchCase[] = [];
  const naiveSrc = readFileSync(join(import.meta.dir, "variants", "matmul_naive.wgsl"), "utf8");
  for (const s of shapes) {
    const { M, N, K } = s;
    const name = `matmul f32 ${M}x${N}x${K}`;
    const flops = 2 * M * N * K;
    const bytes = 4 * (M * K + N * K + M * N);
    cases.push({
      name,
      impl: "ours",
      flops,
      bytes,
      async setup(gpu) {
        const mm = await loadMatmul(gpu, "f32");
        const buf = matmulBuffers(gpu, s);
        return {
          record: (b) => mm.matmul(b, buf.A, buf.W, null, buf.C, M, N, K),
          check: () =>
            checkMatmul(gpu, s, checkRows(M, mm.config.gemvMaxM), async (_, A, W, C, rows) => {
              const b = gpu.batch();
              mm.matmul(b, A, W, null, C, rows, N, K);
              b.submit();
              return gpu.readF32(C, rows * N);
            }),
          dispose: () => Object.values(buf).forEach((x) => x.destroy()),
        };
      },
    });
    cases.push({
      name,
      impl: "naive",
      flops,
      bytes,
      async setup(gpu) {
        const k = await gpu.kernels.get("matmul_naive", "naive", { WX: 16, WY: 4 }, naiveSrc);
        const buf = matmulBuffers(gpu, s);
        const rec = (b: Batch, A: GPUBuffer, W: GPUBuffer, C: GPUBuffer, rows: number) =>
          b.dispatch(k, {
            params: params().u32(rows).u32(N).u32(K).u32(N).u32(0),
            buffers: [A, W, C],
            groups: [Math.ceil(N / 16), Math.ceil(rows / 4)],
            label: "naive",
          });
        return {
          record: (b) => rec(b, buf.A, buf.W, buf.C, M),
          check: () =>
            checkMatmul(gpu, s, Math.min(M, 48), async (_, A, W, C, rows) => {
              const b = gpu.batch();
              rec(b, A, W, C, rows);
              b.submit();
              return gpu.readF32(C, rows * N);
            }),
          dispose: () => Object.values(buf).forEach((x) => x.destroy()),
        };
      },
    });
    if (!peerShapes.has(`${M}x${N}x${K}`)) continue;
    cases.push({
      name,
      impl: "tfjs",
      flops,
      bytes,
      async setup(gpu) {
        const tf = await tfjs(gpu);
        const a = tf.tensor2d(randn(M * K, 1), [M, K]);
        const w = tf.tensor2d(randn(N * K, 2, 0.5), [N, K]);
        return {
          async runWall(reps) {
            const t0 = performance.now();
            let out = tf.matMul(a, w, false, true);
            for (let i = 1; i < reps; i++) {
              out.dispose();
              out = tf.matMul(a, w, false, true);
            }
            await track(out.data()); // tf's own awaits of dawn promises run while this is tracked
            const ms = performance.now() - t0;
            out.dispose();
            return ms;
          },
          async check() {
            const rows = Math.min(M, 48);
            return checkMatmul(gpu, s, rows, async () => {
              const aa = tf.tensor2d(randn(rows * K, 11), [rows, K]);
              const ww = tf.tensor2d(randn(N * K, 12, 0.5), [N, K]);
              const out = tf.matMul(aa, ww, false, true);
              const got = (await track(out.data())) as Float32Array;
              tf.dispose([aa, ww, out]);
              return got;
            });
          },
          dispose: () => tf.dispose([a, w]),
        };
      },
    });
  }
  return cases;
}

// ---------------------------------------------------------------- harness --

/** Copy bandwidth (read + write bytes per second) of one big copyBufferToBuffer. */
async function copyBandwidth(gpu: Gpu): Promise<{ bytes: number; gbps: number }> {
  const bytes = Math.min(256 << 20, gpu.limits.maxBufferSize, gpu.adapter.isFallback ? 64 << 20 : 256 << 20);
  const src = gpu.buffer(bytes, "copy-src");
  const dst = gpu.buffer(bytes, "copy-dst");
  const time = async (reps: number) => {
    const t0 = performance.now();
    const b = gpu.batch();
    for (let i = 0; i < reps; i++) b.copy(src, 0, dst, 0, bytes);
    b.submit();
    await gpu.sync();
    return performance.now() - t0;
  };
  await time(1);
  let best = Infinity;
  for (let i = 0; i < 3; i++) best = Math.min(best, ((await time(5)) - (await time(1))) / 4);
  src.destroy();
  dst.destroy();
  return { bytes, gbps: (2 * bytes) / (best * 1e6) };
}

/** Wall ms of R repetitions: one submission of R recorded dispatches, or the peer's own loop. */
async function wall(gpu: Gpu, inst: BenchInstance, reps: number): Promise<number> {
  if (inst.runWall) return inst.runWall(reps);
  const t0 = performance.now();
  const b = gpu.batch();
  for (let i = 0; i < reps; i++) inst.record!(b);
  b.submit();
  await gpu.sync();
  return performance.now() - t0;
}

/** Repetitions per sample so one sample takes about `target` ms (after a warm-up that compiles). */
async function pickReps(gpu: Gpu, inst: BenchInstance): Promise<number> {
  const first = await wall(gpu, inst, 1); // warm-up (pipeline compile on lavapipe)
  const one = Math.min(first, await wall(gpu, inst, 1));
  const target = QUICK ? 300 : 1000;
  return Math.max(3, Math.min(50, Math.ceil(target / Math.max(one, 0.05))));
}

/** One sample: wall of R reps minus wall of 1 rep (cancels submit + readback latency), per rep. */
async function sample(gpu: Gpu, inst: BenchInstance, reps: number): Promise<number> {
  const w1 = await wall(gpu, inst, 1);
  const wr = await wall(gpu, inst, reps);
  return Math.max(wr - w1, 0) / (reps - 1);
}

/** Median GPU timestamp per dispatch over R recorded repetitions (our kernels, where supported). */
async function gpuTime(gpu: Gpu, inst: BenchInstance, reps: number): Promise<number | null> {
  if (!inst.record || !gpu.startProfiling(reps * 2)) return null;
  const b = gpu.batch();
  for (let i = 0; i < reps; i++) inst.record(b);
  b.submit();
  const t = (await gpu.stopProfiling()).map((x) => x.ms).sort((x, y) => x - y);
  return t[t.length >> 1];
}

const median = (x: number[]) => {
  const s = [...x].sort((p, q) => p - q);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main() {
  const gpu = await Gpu.open();
  const ad = gpu.adapter;
  const adapter = `${ad.description} (${ad.vendor}, ${ad.architecture}, ${ad.backend}${ad.isFallback ? ", software/fallback" : ""})`;
  log(`adapter  ${adapter}`);
  const copy = await copyBandwidth(gpu);
  log(`copy bandwidth  ${copy.gbps.toFixed(2)} GB/s (copyBufferToBuffer of ${copy.bytes >> 20} MiB, read+write)`);

  let shapes: MatmulShape[];
  let peer: MatmulShape[];
  if (ad.isFallback) {
    const sq = QUICK ? [256, 512] : [256, 512, 1024];
    peer = sq.map((n) => ({ M: n, N: n, K: n }));
    shapes = [{ M: 1, N: 1536, K: 1536 }, { M: 16, N: 1536, K: 1536 }, ...peer];
  } else {
    const H = 1536;
    const I = 8960;
    peer = [256, 512, 1024].map((n) => ({ M: n, N: n, K: n }));
    shapes = [
      ...[1, 16].flatMap((M) => [
        { M, N: H, K: H },
        { M, N: 256, K: H },
        { M, N: I, K: H },
        { M, N: H, K: I },
      ]),
      { M: 512, N: H, K: H },
      { M: 512, N: I, K: H },
      { M: 512, N: H, K: I },
      ...peer,
    ];
  }
  const fits = (s: MatmulShape) => 4 * Math.max(s.M * s.K, s.N * s.K, s.M * s.N) <= gpu.limits.maxStorageBufferBindingSize;
  const cases = matmulCases(gpu, shapes.filter(fits), new Set(peer.map((s) => `${s.M}x${s.N}x${s.K}`))).filter(
    (c) => !ONLY || `${c.name} ${c.impl}`.includes(ONLY),
  );

  // Cases of one shape are timed interleaved (ours, naive, tfjs, ours, ...) for ROUNDS
  // rounds, so load from other processes hits them alike; each ratio is taken per round
  // (adjacent samples) and reported as the median with its range.
  const results: BenchResult[] = [];
  const speedups: Record<string, Speedup> = {};
  const f = (x: number | null, d = 2) => (x === null ? "-" : x.toFixed(d));
  for (const name of [...new Set(cases.map((c) => c.name))]) {
    const group = cases.filter((c) => c.name === name);
    const live: { c: BenchCase; inst: BenchInstance; r: BenchResult; reps: number; samples: number[] }[] = [];
    for (const c of group) {
      const inst = await c.setup(gpu);
      const chk = await inst.check();
      const r: BenchResult = {
        name: c.name,
        impl: c.impl,
        ok: chk.ok,
        check: chk.detail,
        reps: 0,
        ms: null,
        msMin: null,
        msMax: null,
        samples: [],
        gpuMs: null,
        gflops: null,
        gbps: null,
        pctCopyBw: null,
      };
      results.push(r);
      if (chk.ok) live.push({ c, inst, r, reps: await pickReps(gpu, inst), samples: [] });
      else {
        inst.dispose();
        log(`${c.name.padEnd(26)} ${c.impl.padEnd(6)} FAIL  (${r.check})`);
      }
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const x of live) x.samples.push(await sample(gpu, x.inst, x.reps));
    }
    for (const x of live) {
      const { c, r } = x;
      const ms = median(x.samples);
      const gpuMs = await gpuTime(gpu, x.inst, x.reps);
      x.inst.dispose();
      Object.assign(r, {
        reps: x.reps,
        ms,
        msMin: Math.min(...x.samples),
        msMax: Math.max(...x.samples),
        samples: x.samples,
        gpuMs,
        gflops: c.flops / (ms * 1e6),
        gbps: c.bytes / (ms * 1e6),
        pctCopyBw: (100 * c.bytes) / (ms * 1e6) / copy.gbps,
      });
      log(
        `${c.name.padEnd(26)} ${c.impl.padEnd(6)} ok   wall ${f(r.ms, 3).padStart(8)} ms [${f(r.msMin, 2)}, ${f(r.msMax, 2)}]  gpu ${f(gpuMs, 3).padStart(8)} ms  ` +
          `${f(r.gflops).padStart(7)} GFLOP/s ${f(r.gbps).padStart(7)} GB/s ${f(r.pctCopyBw, 1).padStart(5)}% copy  (${r.check})`,
      );
    }
    // ours vs the peer and the baseline, on the wall clock (the one clock all three share)
    const ours = live.find((x) => x.c.impl === "ours");
    if (!ours) continue;
    const ratio = (impl: string): Ratio | null => {
      const o = live.find((x) => x.c.impl === impl);
      if (!o) return null;
      const per = o.samples.map((t, i) => t / Math.max(ours.samples[i], 1e-9));
      return { median: median(per), min: Math.min(...per), max: Math.max(...per), ofMedians: median(o.samples) / median(ours.samples) };
    };
    const sp = { vsTfjs: ratio("tfjs"), vsNaive: ratio("naive") };
    speedups[name] = sp;
    const show = (q: Ratio | null) => (q ? `${q.median.toFixed(2)}x [${q.min.toFixed(2)}, ${q.max.toFixed(2)}]` : "-");
    log(`${name.padEnd(26)} ours vs tfjs ${show(sp.vsTfjs)}  vs naive ${show(sp.vsNaive)}  (per-round ratios: median [min, max] of ${ROUNDS})`);
  }
  const failed = results.filter((r) => !r.ok).length;
  console.log(
    JSON.stringify({
      adapter,
      isFallback: ad.isFallback,
      date: new Date().toISOString(),
      command: `bun benchmarks/kernels.ts ${process.argv.slice(2).join(" ")}`.trim(),
      copyGBps: copy.gbps,
      results,
      speedups,
      failed,
    }),
  );
  gpu.destroy();
  process.exit(failed ? 1 : 0);
}

if (import.meta.main) await main();
