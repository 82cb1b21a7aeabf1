/**
 * The optimiser step over every parameter: global-norm clipping, then AdamW
 * (decoupled weight decay) with a constant-with-warm-up learning rate.
 * Moments are f32 buffers beside each parameter part (a tensor over one
 * storage binding is updated part by part, with its own moment buffers).
 */
import type { Gpu } from "../gpu/index.ts";
import { clipFactor, loadAdamW, lrAt, type AdamW } from "../kernels/adamw.ts";
import type { Param, ParamPart } from "./model.ts";

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
  /** Moments per parameter, one buffer per part: m[i][k] belongs to params[i].parts[k]. */
  readonly m: GPUBuffer[][];
  readonly v: GPUBuffer[][];
  private readonly parts: ParamPart[];
  private readonly normOut: GPUBuffer;

  private constructor(
    private readonly gpu: Gpu,
    private readonly params: Param[],
    readonly cfg: OptimConfig,
    private readonly adam: AdamW,
  ) {
    const moments = (kind: string) => params.map((p) => p.parts.map((part, k) => gpu.buffer(part.size * 4, `adam.${kind}.${p.name}${p.parts.length > 1 ? `#${k}` : ""}`)));
    this.m = moments("m");
    this.v = moments("v");
    this.parts = params.flatMap((p) => p.parts);
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
    this.adam.gradNormSq(b, this.parts.map((p) => p.grad), this.parts.map((p) => p.size), this.normOut);
    b.submit();
    const sq = (await this.gpu.readF32(this.normOut, 1))[0];
    const gradNorm = Math.sqrt(sq) * gradScale;
    const lr = lrAt(this.step + 1, { lr: this.cfg.lr, warmupSteps: this.cfg.warmupSteps });
    if (!Number.isFinite(gradNorm)) return { gradNorm, lr, clip: 0, skipped: true };
    const clip = this.cfg.maxGradNorm > 0 ? clipFactor(gradNorm, this.cfg.maxGradNorm) : 1;
    this.step++;
    const u = this.gpu.batch();
    this.params.forEach((p, i) =>
      p.parts.forEach((part, k) =>
        this.adam.step(u, part.value, part.grad, this.m[i][k], this.v[i][k], part.size, {
          lr,
          beta1: this.cfg.beta1,
          beta2: this.cfg.beta2,
          eps: this.cfg.eps,
          weightDecay: this.cfg.weightDecay,
          step: this.step,
          gradScale: gradScale * clip,
        }),
      ),
    );
    u.submit();
    return { gradNorm, lr, clip, skipped: false };
  }

  /** One moment tensor of parameter i, its parts joined (checkpoints write tensor by tensor). */
  async readMoment(i: number, which: "m" | "v"): Promise<Float32Array> {
    const p = this.params[i];
    const out = new Float32Array(p.size);
    for (const [k, part] of p.parts.entries()) out.set(await this.gpu.readF32(this[which][i][k], part.size), part.offset);
    return out;
  }

  /** Upload one moment tensor of parameter i (split over its parts). */
  loadMoment(i: number, which: "m" | "v", data: Float32Array): void {
    const p = this.params[i];
    if (data.length !== p.size) throw new Error(`optimiser state for ${p.name} (${which}): ${data.length} values, the parameter has ${p.size}`);
    p.parts.forEach((part, k) => this.gpu.write(this[which][i][k], data.subarray(part.offset, part.offset + part.size)));
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
    [...this.m.flat(), ...this.v.flat(), this.normOut].forEach((b) => b.destroy());
  }
}
