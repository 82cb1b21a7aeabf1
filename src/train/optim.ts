/**
 * The optimiser step over every parameter: global-norm clipping, then AdamW
 * (decoupled weight decay) with a constant-with-warm-up learning rate.
 *
 * Multi-tensor: the parameters live in a few arena chunks (src/train/arena.ts)
 * and the moments in buffers of the same layout, so one step is one
 * sum-of-squares dispatch per gradient chunk, one final reduction, and one
 * AdamW dispatch per chunk that reads the squared norm from the GPU and
 * applies the clip factor itself: one submit, one readback (the norm, for
 * the statistics) after the update, none in between.
 */
import type { Batch, Gpu } from "../gpu/index.ts";
import { clipFactor, loadAdamW, lrAt, type AdamW, type AdamWOptions } from "../kernels/adamw.ts";
import { arenaChunks, type Slice } from "./arena.ts";
import type { Param } from "./model.ts";

export interface OptimConfig {
  lr: number;
  warmupSteps: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global gradient-norm clip; 0 = off. */
  maxGradNorm: number;
}

export const DEFAULT_OPTIM: OptimConfig = {
  lr: 1e-6, // SIRI / DeepScaleR
  warmupSteps: 0,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0.01,
  maxGradNorm: 1.0,
};

export interface OptimStats {
  gradNorm: number;
  lr: number;
  clip: number;
  skipped: boolean;
}

/** One arena chunk: its values, gradients and moments (the same layout, `elems` f32 each). */
export interface OptimChunk {
  value: GPUBuffer;
  grad: GPUBuffer;
  m: GPUBuffer;
  v: GPUBuffer;
  elems: number;
}

/**
 * Records one optimiser step over `chunks`: Σ g² over every gradient chunk
 * into `normSq`, then AdamW per chunk with the clip factor taken from it on
 * the GPU (`maxNorm` 0: no clipping). Dispatches: one partial sum per chunk
 * slice, one final sum, one AdamW per chunk slice.
 */
export function recordOptimizerStep(b: Batch, adam: AdamW, chunks: OptimChunk[], normSq: GPUBuffer, opts: AdamWOptions, maxNorm: number): void {
  adam.gradNormSq(b, chunks.map((c) => c.grad), chunks.map((c) => c.elems), normSq);
  for (const c of chunks) adam.stepClipped(b, c.value, c.grad, c.m, c.v, c.elems, opts, { normSq, maxNorm });
}

export class Optimizer {
  step = 0; // optimiser steps taken
  /** The arena chunks with their moment buffers (same layout as the values). */
  readonly chunks: OptimChunk[];
  private readonly chunkOf: Map<GPUBuffer, OptimChunk>;
  private readonly normOut: GPUBuffer;

  private constructor(
    private readonly gpu: Gpu,
    private readonly params: Param[],
    readonly cfg: OptimConfig,
    private readonly adam: AdamW,
  ) {
    this.chunks = arenaChunks(params.flatMap((p) => p.parts)).map((c, k) => ({
      ...c,
      m: gpu.buffer(c.elems * 4, `adam.m#${k}`),
      v: gpu.buffer(c.elems * 4, `adam.v#${k}`),
    }));
    this.chunkOf = new Map(this.chunks.map((c) => [c.value, c]));
    this.normOut = gpu.buffer(16, "adam.gradnorm");
  }

  static async create(gpu: Gpu, params: Param[], cfg: OptimConfig): Promise<Optimizer> {
    return new Optimizer(gpu, params, cfg, await loadAdamW(gpu));
  }

  /**
   * One update from the accumulated gradients. `gradScale` divides the sums
   * (e.g. 1 when the loss already averages). A non-finite gradient norm
   * leaves the weights and moments unchanged (the kernel checks it) and is
   * reported as skipped.
   */
  async update(gradScale = 1): Promise<OptimStats> {
    const lr = lrAt(this.step + 1, { lr: this.cfg.lr, warmupSteps: this.cfg.warmupSteps });
    const opts: AdamWOptions = {
      lr,
      beta1: this.cfg.beta1,
      beta2: this.cfg.beta2,
      eps: this.cfg.eps,
      weightDecay: this.cfg.weightDecay,
      step: this.step + 1,
      gradScale,
    };
    const b = this.gpu.batch();
    recordOptimizerStep(b, this.adam, this.chunks, this.normOut, opts, this.cfg.maxGradNorm);
    b.submit();
    const sq = (await this.gpu.readF32(this.normOut, 1))[0];
    const gradNorm = Math.sqrt(sq) * Math.abs(gradScale);
    if (!Number.isFinite(gradNorm)) return { gradNorm, lr, clip: 0, skipped: true };
    this.step++;
    const clip = this.cfg.maxGradNorm > 0 ? clipFactor(gradNorm, this.cfg.maxGradNorm) : 1;
    return { gradNorm, lr, clip, skipped: false };
  }

  /** Moment `which` of parameter i's part k: its range of the chunk's moment buffer. */
  private momentSlice(i: number, k: number, which: "m" | "v"): Slice {
    const part = this.params[i].parts[k];
    const c = this.chunkOf.get(part.value.buffer);
    if (!c) throw new Error(`optimiser: ${this.params[i].name} is not in this optimiser's arena`);
    return { buffer: c[which], offset: part.value.offset, size: part.value.size };
  }

  /** One moment tensor of parameter i, its parts joined (checkpoints write tensor by tensor). */
  async readMoment(i: number, which: "m" | "v"): Promise<Float32Array> {
    const p = this.params[i];
    const out = new Float32Array(p.size);
    for (const [k, part] of p.parts.entries()) {
      const s = this.momentSlice(i, k, which);
      out.set(await this.gpu.readF32(s.buffer, part.size, s.offset), part.offset);
    }
    return out;
  }

  /** Upload one moment tensor of parameter i (split over its parts). */
  loadMoment(i: number, which: "m" | "v", data: Float32Array): void {
    const p = this.params[i];
    if (data.length !== p.size) throw new Error(`optimiser state for ${p.name} (${which}): ${data.length} values, the parameter has ${p.size}`);
    p.parts.forEach((part, k) => {
      const s = this.momentSlice(i, k, which);
      this.gpu.write(s.buffer, data.subarray(part.offset, part.offset + part.size), s.offset);
    });
  }

  async readState(): Promise<{ m: Float32Array[]; v: Float32Array[]; step: number }> {
    const m: Float32Array[] = [];
    const v: Float32Array[] = [];
    for (let i = 0; i < this.params.length; i++) {
      m.push(await this.readMoment(i, "m"));
      v.push(await this.readMoment(i, "v"));
    }
    return { m, v, step: this.step };
  }

  loadState(s: { m: Float32Array[]; v: Float32Array[]; step: number }): void {
    if (s.m.length !== this.params.length) throw new Error(`optimiser state has ${s.m.length} tensors, the model ${this.params.length}`);
    this.params.forEach((_, i) => {
      this.loadMoment(i, "m", s.m[i]);
      this.loadMoment(i, "v", s.v[i]);
    });
    this.step = s.step;
  }

  destroy(): void {
    [...this.chunks.flatMap((c) => [c.m, c.v]), this.normOut].forEach((b) => b.destroy());
  }
}
