// The multi-tensor optimiser: the parameter arena's layout, AdamW over whole
// arena chunks with the global-norm clip decided on the GPU, against the
// per-tensor references (adamwRef with the f64 clip factor, tensor by tensor)
// element by element; and a tiny model trained a few steps by it against the
// same model trained by the per-tensor path (one gradNormSq slice and one
// AdamW dispatch per tensor part, the clip factor read back to the CPU).
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Gpu } from "../src/gpu/index.ts";
import { adamwRef, clipFactor, loadAdamW, lrAt, normSqRef } from "../src/kernels/adamw.ts";
import { loadReferenceModel } from "../src/model/reference.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { arenaChunks, planArena, type Slice } from "../src/train/arena.ts";
import { packSequences, TrainModel, type Param, type ParamPart } from "../src/train/model.ts";
import { Optimizer, type OptimConfig } from "../src/train/optim.ts";
import { expectClose, gpuOrSkip, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-optim-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));

describe("parameter arena layout (CPU)", () => {
  test("aligned offsets in order, a new chunk when the next tensor does not fit, errors naming the tensor", () => {
    // 256-byte alignment = 64 elements; chunks of at most 1 KiB = 256 elements.
    const p = planArena([1, 63, 64, 65, 256, 3], 1024, 256);
    expect(p.slots).toEqual([
      { chunk: 0, offset: 0, size: 1 },
      { chunk: 0, offset: 64, size: 63 },
      { chunk: 0, offset: 128, size: 64 },
      { chunk: 1, offset: 0, size: 65 }, // 65 pads to 128: 192 + 128 > 256
      { chunk: 2, offset: 0, size: 256 },
      { chunk: 3, offset: 0, size: 3 },
    ]);
    expect(p.chunkElems).toEqual([192, 128, 256, 64]);
    expect(() => planArena([10, 257], 1024, 256)).toThrow(/tensor 1 \(1028 bytes in f32\) does not fit a chunk of 1024 bytes/);
    expect(() => planArena([10, 0], 1024, 256)).toThrow(/tensor 1 has 0 elements/);
    expect(() => planArena([10], 1024, 6)).toThrow(/alignment 6/);
  });

  test("glued tensors stay back to back in one chunk (a new chunk for the pair when it does not fit)", () => {
    // 64-element alignment, 256-element chunks: 100 (padded to 128), then the glued pair 128 + 64
    // (192, more than the 128 left) opens chunk 1 as a unit; 5 fills chunk 1's last 64.
    const p = planArena([100, 128, 64, 5], 1024, 256, [false, true, false, false]);
    expect(p.slots).toEqual([
      { chunk: 0, offset: 0, size: 100 },
      { chunk: 1, offset: 0, size: 128 },
      { chunk: 1, offset: 128, size: 64 },
      { chunk: 1, offset: 192, size: 5 },
    ]);
    expect(p.chunkElems).toEqual([128, 256]);
    expect(() => planArena([10, 64], 1024, 256, [true])).toThrow(/tensor 0 \(10 elements\) cannot be glued/);
    expect(() => planArena([64], 1024, 256, [true])).toThrow(/cannot be glued/);
    expect(() => planArena([192, 128], 1024, 256, [true])).toThrow(/tensors 0-1 \(glued, 1280 bytes\) do not fit a chunk of 1024 bytes/);
  });
});

/** Hand-built parameters in an arena: sizes per tensor, each split into `split[i]` row parts. */
function arenaParams(gpu: Gpu, tensors: { name: string; rows: number; cols: number; parts: number }[], maxChunkBytes: number, init: (i: number, n: number) => Float32Array) {
  const layout = tensors.map((t) => {
    const per = Math.ceil(t.rows / t.parts);
    return Array.from({ length: t.parts }, (_, k) => ({ row0: k * per, rows: Math.min(per, t.rows - k * per), cols: t.cols }));
  });
  const plan = planArena(layout.flat().map((p) => p.rows * p.cols), maxChunkBytes, gpu.limits.minStorageBufferOffsetAlignment);
  const chunks = plan.chunkElems.map((n, k) => ({ value: gpu.buffer(n * 4, `t.params#${k}`), grad: gpu.buffer(n * 4, `t.grads#${k}`) }));
  let slot = 0;
  const params: Param[] = tensors.map((t, i) => {
    const data = init(i, t.rows * t.cols);
    const parts = layout[i].map((l): ParamPart => {
      const { chunk, offset } = plan.slots[slot++];
      const size = l.rows * l.cols;
      const at = (buffer: GPUBuffer): Slice => ({ buffer, offset: offset * 4, size: size * 4 });
      const part = { row0: l.row0, rows: l.rows, offset: l.row0 * l.cols, size, value: at(chunks[chunk].value), grad: at(chunks[chunk].grad) };
      gpu.write(part.value.buffer, data.subarray(part.offset, part.offset + size), part.value.offset);
      return part;
    });
    return { name: t.name, shape: [t.rows, t.cols], size: t.rows * t.cols, parts, value: parts[0].value, grad: parts[0].grad };
  });
  return { params, chunks, plan };
}

async function readTensor(gpu: Gpu, p: Param, what: "value" | "grad"): Promise<Float32Array> {
  const out = new Float32Array(p.size);
  for (const part of p.parts) out.set(await gpu.readF32(part[what].buffer, part.size, part[what].offset), part.offset);
  return out;
}

describe.skipIf(!GPU)("multi-tensor AdamW over arena chunks", () => {
  test("odd sizes, a tensor split across parts and chunks, 5 steps: param, m, v per tensor against adamwRef with the f64 clip factor; padding stays zero", async () => {
    const gpu = await gpuOrSkip();
    // Chunks of at most 2 KiB (512 elements): the 7 tensors (9 parts) spread over several chunks,
    // and "split" (3 row parts of 5·37 elements) has parts in different chunks.
    const tensors = [
      { name: "one", rows: 1, cols: 1, parts: 1 },
      { name: "odd63", rows: 7, cols: 9, parts: 1 },
      { name: "split", rows: 15, cols: 37, parts: 3 },
      { name: "odd333", rows: 333, cols: 1, parts: 1 },
      { name: "even64", rows: 1, cols: 64, parts: 1 },
      { name: "odd129", rows: 3, cols: 43, parts: 1 },
      { name: "big", rows: 4, cols: 127, parts: 1 },
    ];
    const { params, chunks, plan } = arenaParams(gpu, tensors, 2048, (i, n) => randn(n, 100 + i, 1));
    expect(plan.chunkElems.length).toBeGreaterThan(3);
    const splitChunks = new Set(params[2].parts.map((p) => p.value.buffer));
    expect(splitChunks.size).toBeGreaterThan(1);
    const cfg: OptimConfig = { lr: 3e-2, warmupSteps: 2, beta1: 0.9, beta2: 0.95, eps: 1e-6, weightDecay: 0.1, maxGradNorm: 4 };
    const opt = await Optimizer.create(gpu, params, cfg);
    expect(opt.chunks.length).toBe(plan.chunkElems.length);
    // CPU state per whole tensor (the per-tensor reference never sees parts or chunks).
    const ref = await Promise.all(params.map(async (p) => ({ p: await readTensor(gpu, p, "value"), m: new Float32Array(p.size), v: new Float32Array(p.size) })));
    const gradScale = 0.5;
    let clipped = 0;
    for (let t = 1; t <= 5; t++) {
      // Steps 1, 3, 5 with large gradients (the clip acts), 2 and 4 small ones (it does not).
      const grads = params.map((p, i) => randn(p.size, 1000 * t + i, t % 2 ? 3 : 0.01));
      params.forEach((p, i) => p.parts.forEach((part) => gpu.write(part.grad.buffer, grads[i].subarray(part.offset, part.offset + part.size), part.grad.offset)));
      const stats = await opt.update(gradScale);
      const norm = Math.sqrt(normSqRef(grads)) * gradScale;
      const clip = clipFactor(norm, cfg.maxGradNorm);
      if (clip < 1) clipped++;
      expect(stats.skipped).toBe(false);
      expect(opt.step).toBe(t);
      expectClose([stats.gradNorm], [norm], 0, TOL.grad_norm_sq.rtol, `gradient norm t=${t}`);
      const o = { lr: lrAt(t, cfg), beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay, step: t, gradScale: gradScale * clip };
      for (const [i, p] of params.entries()) {
        const r = ref[i];
        adamwRef(r.p, grads[i], r.m, r.v, o);
        const [gp, gm, gv] = [await readTensor(gpu, p, "value"), await opt.readMoment(i, "m"), await opt.readMoment(i, "v")];
        expectClose(gp, r.p, TOL.adamw_multi.atol, TOL.adamw_multi.rtol, `${p.name} param t=${t}`);
        expectClose(gm, r.m, TOL.adamw_multi.atol, TOL.adamw_multi.rtol, `${p.name} m t=${t}`);
        expectClose(gv, r.v, TOL.adamw_multi.atol, TOL.adamw_multi.rtol, `${p.name} v t=${t}`);
        // Keep the reference on the GPU's state so differences do not compound.
        r.p.set(gp);
        r.m.set(gm);
        r.v.set(gv);
      }
    }
    expect(clipped).toBe(3);
    // Padding (everything outside the tensors' ranges) is still exactly zero in every chunk and moment.
    const used = chunks.map((c) => new Uint8Array(c.value.size / 4));
    for (const p of params) for (const part of p.parts) used[chunks.findIndex((c) => c.value === part.value.buffer)].fill(1, part.value.offset / 4, (part.value.offset + part.value.size) / 4);
    for (const [k, c] of opt.chunks.entries()) {
      for (const buf of [c.value, c.m, c.v]) {
        const x = await gpu.readF32(buf);
        let nonzero = 0;
        x.forEach((y, j) => {
          if (!used[k][j] && y !== 0) nonzero++;
        });
        expect(nonzero).toBe(0);
      }
    }
    opt.destroy();
    chunks.forEach((c) => [c.value, c.grad].forEach((b) => b.destroy()));
  });

  test("a NaN or Inf gradient anywhere skips the step on the GPU: weights and moments unchanged bit for bit, the step count too; clipping off (maxGradNorm 0)", async () => {
    const gpu = await gpuOrSkip();
    const tensors = [
      { name: "a", rows: 5, cols: 13, parts: 1 },
      { name: "b", rows: 10, cols: 31, parts: 2 },
    ];
    const { params, chunks } = arenaParams(gpu, tensors, 1024, (i, n) => randn(n, 7 + i, 1));
    const cfg: OptimConfig = { lr: 1e-2, warmupSteps: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 0 };
    const opt = await Optimizer.create(gpu, params, cfg);
    const put = (grads: Float32Array[]) => params.forEach((p, i) => p.parts.forEach((part) => gpu.write(part.grad.buffer, grads[i].subarray(part.offset, part.offset + part.size), part.grad.offset)));
    const snapshot = async () => Promise.all(opt.chunks.flatMap((c) => [c.value, c.m, c.v]).map((b) => gpu.read(b)));
    const g1 = params.map((p, i) => randn(p.size, 50 + i, 100)); // large: unclipped with maxGradNorm 0
    put(g1);
    const s1 = await opt.update();
    expect([s1.skipped, s1.clip, opt.step]).toEqual([false, 1, 1]);
    const refs = await Promise.all(params.map(async (p) => ({ p: await readTensor(gpu, p, "value"), m: await opt.readMoment(params.indexOf(p), "m"), v: await opt.readMoment(params.indexOf(p), "v") })));
    const before = await snapshot();
    for (const bad of [NaN, Infinity]) {
      const g = params.map((p, i) => randn(p.size, 60 + i, 1));
      g[1][g[1].length - 1] = bad; // in the second row part of "b"
      put(g);
      const s = await opt.update();
      expect(s.skipped).toBe(true);
      expect(opt.step).toBe(1);
      const after = await snapshot();
      after.forEach((x, k) => expect(Buffer.from(x).equals(Buffer.from(before[k]))).toBe(true));
    }
    // The next finite step is t = 2 (bias corrections), unclipped.
    const g2 = params.map((p, i) => randn(p.size, 70 + i, 50));
    put(g2);
    expect((await opt.update()).skipped).toBe(false);
    for (const [i, p] of params.entries()) {
      adamwRef(refs[i].p, g2[i], refs[i].m, refs[i].v, { lr: cfg.lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay, step: 2, gradScale: 1 });
      expectClose(await readTensor(gpu, p, "value"), refs[i].p, TOL.adamw_multi.atol, TOL.adamw_multi.rtol, `${p.name} after the skipped steps`);
    }
    opt.destroy();
    chunks.forEach((c) => [c.value, c.grad].forEach((b) => b.destroy()));
  });

  test("values and gradients in different layouts are refused", () => {
    const buf = (size: number, label: string) => ({ size, label }) as unknown as GPUBuffer;
    const [v, g, g2] = [buf(1024, "v"), buf(1024, "g"), buf(512, "g2")];
    expect(arenaChunks([{ value: { buffer: v, offset: 0, size: 64 }, grad: { buffer: g, offset: 0, size: 64 } }])).toEqual([{ value: v, grad: g, elems: 256 }]);
    expect(() => arenaChunks([{ value: { buffer: v, offset: 256, size: 64 }, grad: { buffer: g, offset: 0, size: 64 } }])).toThrow(/not at its value's place/);
    expect(() => arenaChunks([{ value: { buffer: v, offset: 0, size: 64 }, grad: { buffer: g2, offset: 0, size: 64 } }])).toThrow(/not at its value's place/);
  });
});

/**
 * The per-tensor optimiser the arena replaced: Σ g² over every part, the norm
 * read back, the clip factor on the CPU, then one AdamW dispatch per part.
 */
async function perTensorOptimizer(gpu: Gpu, params: Param[], cfg: OptimConfig) {
  const adam = await loadAdamW(gpu);
  const parts = params.flatMap((p) => p.parts);
  const mv = parts.map((p) => [gpu.buffer(p.size * 4, "ref.m"), gpu.buffer(p.size * 4, "ref.v")]);
  const out = gpu.buffer(16, "ref.norm");
  let step = 0;
  return {
    async update(): Promise<number> {
      const b = gpu.batch();
      adam.gradNormSq(b, parts.map((p) => p.grad), parts.map((p) => p.size), out);
      b.submit();
      const norm = Math.sqrt((await gpu.readF32(out, 1))[0]);
      step++;
      const u = gpu.batch();
      const o = { lr: lrAt(step, cfg), beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay, step, gradScale: clipFactor(norm, cfg.maxGradNorm) };
      parts.forEach((p, k) => adam.step(u, p.value, p.grad, mv[k][0], mv[k][1], p.size, o));
      u.submit();
      return norm;
    },
    destroy: () => [...mv.flat(), out].forEach((b) => b.destroy()),
  };
}

describe.skipIf(!GPU)("trainer: multi-tensor optimiser against the per-tensor path", () => {
  test("tiny model, embedding in row parts over several arena chunks, clipping active: 4 steps of weights within tolerance", async () => {
    const gpu = await gpuOrSkip();
    const dir = join(ROOT, "tiny");
    makeTinyModel(dir, { preset: "tiny-untied", seed: 5 });
    const ref = loadReferenceModel(dir);
    const H = ref.config.hiddenSize;
    const opts = { maxParamBytes: 96 * H * 4, maxArenaBytes: 64 * 1024 };
    const seqs = [{ tokens: [5, 9, 33, 61, 2, 17, 4, 99, 12], lossFrom: 3 }, { tokens: [7, 7, 150, 3, 88, 41], lossFrom: 1 }];
    const mb = packSequences(seqs);
    const T = mb.tokens.length;
    const r = randn(T, 9, 1);
    const cfg: OptimConfig = { lr: 1e-2, warmupSteps: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 0.05 };
    const models = [await TrainModel.create(gpu, ref.config, ref.weights, opts), await TrainModel.create(gpu, ref.config, ref.weights, opts)];
    expect(models[0].arena.length).toBeGreaterThan(2);
    expect(models[0].byName.get("model.embed_tokens.weight")!.parts.length).toBeGreaterThan(1);
    const multi = await Optimizer.create(gpu, models[0].params, cfg);
    const per = await perTensorOptimizer(gpu, models[1].params, cfg);
    const grads = async (m: TrainModel) => {
      const b = gpu.batch();
      m.recordZeroGrad(b);
      m.recordForward(b, mb);
      b.submit();
      gpu.write(m.buffers.dlogp, r.map((x, i) => x * mb.mask[i]));
      const bb = gpu.batch();
      m.recordBackward(bb, T);
      bb.submit();
    };
    for (let step = 1; step <= 4; step++) {
      await grads(models[0]);
      await grads(models[1]);
      const s = await multi.update();
      const norm = await per.update();
      expect(s.skipped).toBe(false);
      expect(s.clip).toBeLessThan(1); // the clip acts in every step
      expectClose([s.gradNorm], [norm], 0, TOL.grad_norm_sq.rtol, `gradient norm, step ${step}`);
      const [a, b] = [await models[0].readWeights(), await models[1].readWeights()];
      // Step 1 starts from bit-identical gradients (only the clip factor's ulps differ); later steps
      // from gradients of weights that differ by those ulps, which Adam amplifies where g is near 0.
      const t = step === 1 ? TOL.adamw_multi : TOL.optimizer_trajectory;
      for (const [name, w] of b) expectClose(a.get(name)!, w, t.atol, t.rtol, `${name} after step ${step}`);
    }
    const moved = (await models[0].readParam(models[0].byName.get("lm_head.weight")!)).some((x, i) => x !== ref.weights.get("lm_head.weight")![i]);
    expect(moved).toBe(true);
    multi.destroy();
    per.destroy();
    models.forEach((m) => m.destroy());
  }, 120_000);
});
