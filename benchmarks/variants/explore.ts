#!/usr/bin/env bun
/**
 * Scratch tuner for matmul variants: `bun benchmarks/variants/explore.ts SHAPE... -- CONFIG...`
 * where SHAPE is MxNxK and CONFIG is `rowtile:TM,TN,WG` (variants/matmul_rowtile.wgsl),
 * `ours` or `tfjs`. Every config is checked against the CPU reference, then timed
 * interleaved (config 1, 2, ..., 1, 2, ...) ROUNDS times; prints the median and range.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Gpu, params, track, type Batch } from "../../src/gpu/index.ts";
import { loadMatmul } from "../../src/kernels/matmul.ts";
import { randn } from "../../tests/helpers.ts";
import { checkMatmul, tfjs } from "../kernels.ts";

const argv = process.argv.slice(2);
const sep = argv.indexOf("--");
const shapes = argv.slice(0, sep).map((s) => s.split("x").map(Number) as [number, number, number]);
const configs = argv.slice(sep + 1);
const ROUNDS = Number(process.env.ROUNDS ?? 5);

const gpu = await Gpu.open();
console.log(`adapter ${gpu.adapter.description} fallback=${gpu.adapter.isFallback}`);

type Runner = { check: () => Promise<string>; wall: (reps: number) => Promise<number>; dispose: () => void };

async function make(cfg: string, M: number, N: number, K: number): Promise<Runner> {
  const A = gpu.buffer(randn(M * K, 1), "A");
  const W = gpu.buffer(randn(N * K, 2, 0.5), "W");
  const C = gpu.buffer(M * N * 4, "C");
  const dispose = () => [A, W, C].forEach((x) => x.destroy());
  const timeRec = (rec: (b: Batch) => void) => async (reps: number) => {
    const t0 = performance.now();
    const b = gpu.batch();
    for (let i = 0; i < reps; i++) rec(b);
    b.submit();
    await gpu.sync();
    return performance.now() - t0;
  };
  const chk = async (run: (A: GPUBuffer, W: GPUBuffer, C: GPUBuffer, rows: number) => Promise<Float32Array>) => {
    const r = await checkMatmul(gpu, { M, N, K }, Math.min(M, 48), async (_, a, w, c, rows) => run(a, w, c, rows));
    return `${r.ok ? "ok" : "FAIL"} ${r.detail}`;
  };
  if (cfg.startsWith("ours")) {
    // ours: the default path for M; ours-decode / ours-prefill force one
    const mm = await loadMatmul(gpu, "f32");
    const forced = cfg === "ours-decode" ? "decode" : cfg === "ours-prefill" ? "prefill" : null;
    const path = forced ?? (M <= mm.config.gemvMaxM ? "decode" : "prefill");
    const rec = (b: Batch, a: GPUBuffer, w: GPUBuffer, c: GPUBuffer, rows: number) => mm.matmul(b, a, w, null, c, rows, N, K, { path });
    return {
      check: () => chk(async (a, w, c, rows) => { const b = gpu.batch(); rec(b, a, w, c, rows); b.submit(); return gpu.readF32(c, rows * N); }),
      wall: timeRec((b) => rec(b, A, W, C, M)),
      dispose,
    };
  }
  if (cfg === "tfjs") {
    const tf = await tfjs(gpu);
    const a = tf.tensor2d(randn(M * K, 1), [M, K]);
    const w = tf.tensor2d(randn(N * K, 2, 0.5), [N, K]);
    return {
      check: () => chk(async (_a, _w, _c, rows) => {
        const aa = tf.tensor2d(randn(rows * K, 11), [rows, K]);
        const ww = tf.tensor2d(randn(N * K, 12, 0.5), [N, K]);
        const out = tf.matMul(aa, ww, false, true);
        const got = (await track(out.data())) as Float32Array;
        tf.dispose([aa, ww, out]);
        return got;
      }),
      async wall(reps) {
        const t0 = performance.now();
        let out = tf.matMul(a, w, false, true);
        for (let i = 1; i < reps; i++) { out.dispose(); out = tf.matMul(a, w, false, true); }
        await track(out.data());
        const ms = performance.now() - t0;
        out.dispose();
        return ms;
      },
      dispose: () => { tf.dispose([a, w]); dispose(); },
    };
  }
  const [variant, rest] = cfg.split(":");
  const nums = rest.split(",").map(Number);
  const src = readFileSync(join(import.meta.dir, `matmul_${variant}.wgsl`), "utf8");
  const V = K % 4 === 0 ? 4 : 1;
  if (variant === "rowtile") {
    const [TM, TN, WG] = nums;
    const k = await gpu.kernels.get(`matmul_${variant}`, variant, { TM, TN, WG, V, VT: V === 4 ? "vec4<f32>" : "f32", IF_V4: V === 4 ? "" : "//", IF_V1: V === 4 ? "//" : "" }, src);
    const rec = (b: Batch, a: GPUBuffer, w: GPUBuffer, c: GPUBuffer, rows: number) =>
      b.dispatch(k, { params: params().u32(rows).u32(N).u32(K).u32(N).u32(0), buffers: [a, w, c], groups: [Math.ceil(N / (WG * TN)), Math.ceil(rows / TM)] });
    return {
      check: () => chk(async (a, w, c, rows) => { const b = gpu.batch(); rec(b, a, w, c, rows); b.submit(); return gpu.readF32(c, rows * N); }),
      wall: timeRec((b) => rec(b, A, W, C, M)),
      dispose,
    };
  }
  if (variant === "rowunroll") {
    const [TM, TN, WG] = nums;
    const k = await gpu.kernels.get(`matmul_${variant}`, variant, { TM, TN, WG, V, VT: V === 4 ? "vec4<f32>" : "f32", IF_V4: V === 4 ? "" : "//", IF_V1: V === 4 ? "//" : "", ...unrolled(TM, TN) }, src);
    const rec = (b: Batch, a: GPUBuffer, w: GPUBuffer, c: GPUBuffer, rows: number) =>
      b.dispatch(k, { params: params().u32(rows).u32(N).u32(K).u32(N).u32(0), buffers: [a, w, c], groups: [Math.ceil(N / (WG * TN)), Math.ceil(rows / TM)] });
    return {
      check: () => chk(async (a, w, c, rows) => { const b = gpu.batch(); rec(b, a, w, c, rows); b.submit(); return gpu.readF32(c, rows * N); }),
      wall: timeRec((b) => rec(b, A, W, C, M)),
      dispose,
    };
  }
  throw new Error(`unknown config ${cfg}`);
}

function unrolled(TM: number, TN: number) {
  const d: string[] = [];
  const body: string[] = [];
  const st: string[] = [];
  for (let j = 0; j < TN; j++) d.push(`  let wr${j} = min(n0 + ${j}u * WG, N - 1u) * KU;`);
  for (let i = 0; i < TM; i++) d.push(`  let ar${i} = min(m0 + ${i}u, M - 1u) * KU;`);
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) d.push(`  var c${i}_${j} = 0.0;`);
  for (let j = 0; j < TN; j++) body.push(`    let w${j} = W[wr${j} + k];`);
  for (let i = 0; i < TM; i++) {
    body.push(`    let a${i} = A[ar${i} + k];`);
    for (let j = 0; j < TN; j++) body.push(`    c${i}_${j} = dotv(a${i}, w${j}, c${i}_${j});`);
  }
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) st.push(`  store(m0 + ${i}u, n0 + ${j}u * WG, c${i}_${j});`);
  return { DECLS: d.join("\n"), BODY: body.join("\n"), STORES: st.join("\n") };
}

for (const [M, N, K] of shapes) {
  const runners: [string, Runner][] = [];
  for (const cfg of configs) {
    const r = await make(cfg, M, N, K);
    console.log(`${M}x${N}x${K} ${cfg}: ${await r.check()}`);
    await r.wall(1);
    runners.push([cfg, r]);
  }
  const reps = Math.max(3, Math.ceil(Number(process.env.TARGET_MS ?? 600) / Math.max(1, await runners[0][1].wall(1))));
  const times: number[][] = runners.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < runners.length; i++) {
      const r = runners[i][1];
      const one = await r.wall(1);
      const many = await r.wall(reps);
      times[i].push(Math.max(0, many - one) / (reps - 1));
    }
  }
  const flops = 2 * M * N * K;
  const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
  for (let i = 0; i < runners.length; i++) {
    const t = times[i];
    console.log(`${M}x${N}x${K} ${runners[i][0].padEnd(18)} median ${med(t).toFixed(2)} ms  [${Math.min(...t).toFixed(2)}, ${Math.max(...t).toFixed(2)}]  ${(flops / med(t) / 1e6).toFixed(2)} GFLOP/s`);
    runners[i][1].dispose();
  }
}
gpu.destroy();
process.exit(0);
