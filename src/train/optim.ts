/**
 * The optimiser step over every parameter: global-norm clipping, then AdamW
 * (decoupled weight decay) with a constant-with-warm-up learning rate.
 * Moments are f32 buffers beside each parameter.
 */
import type { Gpu } from "../gpu/index.ts";
import { clipFactor, loadAdamW, lrAt, type AdamW } from "../kernels/adamw.ts";
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

export class Optimizer {
  step = 0; // optimiser steps taken
  readonly m: GPUBuffer[];
  readonly v: GPUBuffer[];
  private readonly normOut: GPUBuffer;

  private constructor(
    private readonly gpu: Gpu,
    private readonly params: Param[],
    readonly cfg: OptimConfig,
    private readonly adam: AdamW,
  ) {
    this.m = params.map((p) => gpu.buffer(p.size * 4, `adam.m.${p.name}`));
    this.v = params.map((p) => gpu.buffer(p.size * 4, `adam.v.${p.name}`));
    this.normOut = gpu.buffer(16, "adam.gradnorm");
  }

  static async create(gpu: Gpu, params: Param[], cfg: OptimConfig): Promise<Optimizer> {
    return new Optimizer(gpu, params, cfg, await loadAdamW(gpu));
  }

  /**
   * One update from the accumulated gradients. `gradScale` divides the sums
   * (e.g. 1 when the loss already averages). A non-finite gradient norm
   * skips the update and is reported.
   */
  async update(gradScale = 1): Promise<OptimStats> {
    const b = this.gpu.batch();
    this.adam.gradNormSq(b, this.params.map((p) => p.grad), this.params.map((p) => p.size), this.normOut);
    b.submit();
    const sq = (await this.gpu.readF32(this.normOut, 1))[0];
    const gradNorm = Math.sqrt(sq) * gradScale;
    const lr = lrAt(this.step + 1, { lr: this.cfg.lr, warmupSteps: this.cfg.warmupSteps });
    if (!Number.isFinite(gradNorm)) return { gradNorm, lr, clip: 0, skipped: true };
    const clip = this.cfg.maxGradNorm > 0 ? clipFactor(gradNorm, this.cfg.maxGradNorm) : 1;
    this.step++;
    const u = this.gpu.batch();
    this.params.forEach((p, i) =>
      this.adam.step(u, p.value, p.grad, this.m[i], this.v[i], p.size, {
        lr,
        beta1: this.cfg.beta1,
        beta2: this.cfg.beta2,
        eps: this.cfg.eps,
        weightDecay: this.cfg.weightDecay,
        step: this.step,
        gradScale: gradScale * clip,
      }),
    );
    u.submit();
    return { gradNorm, lr, clip, skipped: false };
  }

  async readState(): Promise<{ m: Float32Array[]; v: Float32Array[]; step: number }> {
    const m: Float32Array[] = [];
    const v: Float32Array[] = [];
    for (let i = 0; i < this.params.length; i++) {
      m.push(await this.gpu.readF32(this.m[i], this.params[i].size));
      v.push(await this.gpu.readF32(this.v[i], this.params[i].size));
    }
    return { m, v, step: this.step };
  }

  loadState(s: { m: Float32Array[]; v: Float32Array[]; step: number }): void {
    if (s.m.length !== this.params.length) throw new Error(`optimiser state has ${s.m.length} tensors, the model ${this.params.length}`);
    this.params.forEach((p, i) => {
      if (s.m[i].length !== p.size || s.v[i].length !== p.size) throw new Error(`optimiser state for ${p.name}: wrong size`);
      this.gpu.write(this.m[i], s.m[i]);
      this.gpu.write(this.v[i], s.v[i]);
    });
    this.step = s.step;
  }

  destroy(): void {
    [...this.m, ...this.v, this.normOut].forEach((b) => b.destroy());
  }
}
