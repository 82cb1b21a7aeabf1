// Cost of the load-time finiteness scan (src/model/safetensors.ts) and of the divergence
// guard's GPU weight norm (src/train/divergence.ts). Run: bun benchmarks/robustness.ts
import { firstNonFiniteF32, firstNonFiniteF16 } from "../src/model/safetensors.ts";
import { Gpu } from "../src/gpu/index.ts";
import { loadAdamW } from "../src/kernels/adamw.ts";
const N = 100_000_000;
const x = new Float32Array(N).fill(0.5);
const h = new Uint16Array(N).fill(0x3800);
for (let rep = 0; rep < 3; rep++) {
  let t = performance.now();
  firstNonFiniteF32(x);
  const f32ms = performance.now() - t;
  t = performance.now();
  firstNonFiniteF16(h);
  const f16ms = performance.now() - t;
  t = performance.now();
  new Float32Array(x); // a plain copy of the same bytes, for scale
  const copyms = performance.now() - t;
  console.log(`scan f32 ${N / 1e6}M: ${f32ms.toFixed(0)} ms (${(4 * N / f32ms / 1e6).toFixed(2)} GB/s); f16: ${f16ms.toFixed(0)} ms; copy f32: ${copyms.toFixed(0)} ms`);
}
const gpu = await Gpu.open();
console.log(gpu.adapter.description);
const adam = await loadAdamW(gpu);
for (const P of [110_000, 4_000_000, 16_000_000]) {
  const buf = gpu.buffer(P * 4, "w");
  gpu.write(buf, new Float32Array(P).fill(0.01));
  const out = gpu.buffer(16, "o");
  const ts: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t = performance.now();
    const b = gpu.batch();
    adam.gradNormSq(b, [buf], [P], out);
    b.submit();
    await gpu.readF32(out, 1);
    ts.push(performance.now() - t);
  }
  ts.sort((a, b) => a - b);
  console.log(`weight norm over ${P} f32: median ${ts[2].toFixed(2)} ms (min ${ts[0].toFixed(2)})`);
  buf.destroy(); out.destroy();
}
gpu.destroy();
