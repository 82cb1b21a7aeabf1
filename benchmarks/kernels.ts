#!/usr/bin/env bun
/**
 * Kernel benchmark: `bun benchmarks/kernels.ts [--quick] [--json] [--only SUBSTR]`.
 *
 * Every case is checked against its CPU reference before it is timed; a case
 * that fails its check is reported as failed and not timed. Timing: one
 * submission of R repetitions, wall clock, minus one submission of a single
 * repetition (cancels submit + readback latency), divided by R - 1; where the
 * adapter has timestamp queries our own kernels also report the median GPU
 * time per dispatch. Units: ms, GFLOP/s, GB/s (bytes each kernel must move at
 * least once) and % of the adapter's measured copy bandwidth
 * (copyBufferToBuffer, read + write bytes). The last line of stdout is one
 * JSON object with everything.
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
  ms: number | null; // wall-clock per repetition
  gpuMs: number | null; // median timestamp per dispatch (ours only)
  gflops: number | null;
  gbps: number | null;
  pctCopyBw: number | null;
}

const args = new Set(process.argv.slice(2));
const QUICK = args.has("--quick");
const JSON_ONLY = args.has("--json");
const onlyIdx = process.argv.indexOf("--only");
const ONLY = onlyIdx > 0 ? process.argv[onlyIdx + 1] : "";
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

async function timeCase(gpu: Gpu, inst: BenchInstance): Promise<{ reps: number; ms: number; gpuMs: number | null }> {
  const wall = async (reps: number): Promise<number> => {
    if (inst.runWall) return inst.runWall(reps);
    const t0 = performance.now();
    const b = gpu.batch();
    for (let i = 0; i < reps; i++) inst.record!(b);
    b.submit();
    await gpu.sync();
    return performance.now() - t0;
  };
  const first = await wall(1); // warm-up (pipeline compile on lavapipe)
  const one = Math.min(first, await wall(1));
  const target = QUICK ? 300 : 1000;
  const reps = Math.max(3, Math.min(50, Math.ceil(target / Math.max(one, 0.05))));
  let ms = Infinity;
  for (let trial = 0; trial < 2; trial++) {
    const w1 = await wall(1);
    const wr = await wall(reps);
    ms = Math.min(ms, Math.max(wr - w1, 0) / (reps - 1));
  }
  let gpuMs: number | null = null;
  if (inst.record && gpu.startProfiling(reps * 2)) {
    const b = gpu.batch();
    for (let i = 0; i < reps; i++) inst.record(b);
    b.submit();
    const t = (await gpu.stopProfiling()).map((x) => x.ms).sort((x, y) => x - y);
    gpuMs = t[t.length >> 1];
  }
  return { reps, ms, gpuMs };
}

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

  const results: BenchResult[] = [];
  for (const c of cases) {
    const inst = await c.setup(gpu);
    const chk = await inst.check();
    const r: BenchResult = {
      name: c.name,
      impl: c.impl,
      ok: chk.ok,
      check: chk.detail,
      reps: 0,
      ms: null,
      gpuMs: null,
      gflops: null,
      gbps: null,
      pctCopyBw: null,
    };
    if (chk.ok) {
      const t = await timeCase(gpu, inst);
      const ms = t.gpuMs ?? t.ms;
      Object.assign(r, {
        reps: t.reps,
        ms: t.ms,
        gpuMs: t.gpuMs,
        gflops: c.flops / (ms * 1e6),
        gbps: c.bytes / (ms * 1e6),
        pctCopyBw: (100 * c.bytes) / (ms * 1e6) / copy.gbps,
      });
    }
    inst.dispose();
    results.push(r);
    const f = (x: number | null, d = 2) => (x === null ? "-" : x.toFixed(d));
    log(
      `${c.name.padEnd(26)} ${c.impl.padEnd(6)} ${chk.ok ? "ok  " : "FAIL"} wall ${f(r.ms, 3).padStart(8)} ms  gpu ${f(r.gpuMs, 3).padStart(8)} ms  ` +
        `${f(r.gflops).padStart(7)} GFLOP/s ${f(r.gbps).padStart(7)} GB/s ${f(r.pctCopyBw, 1).padStart(5)}% copy  (${r.check})`,
    );
  }
  // ours vs the peer and the baseline, on the wall clock (the one clock all three share)
  const speedups: Record<string, { vsTfjs: number | null; vsNaive: number | null }> = {};
  for (const r of results.filter((x) => x.impl === "ours" && x.ms)) {
    const other = (impl: string) => results.find((x) => x.name === r.name && x.impl === impl && x.ms)?.ms ?? null;
    const t = other("tfjs");
    const n = other("naive");
    speedups[r.name] = { vsTfjs: t && t / r.ms!, vsNaive: n && n / r.ms! };
    log(`${r.name.padEnd(26)} ours vs tfjs ${t ? (t / r.ms!).toFixed(2) + "x" : "-"}  vs naive ${n ? (n / r.ms!).toFixed(2) + "x" : "-"}`);
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
