/**
 * Mixed-precision training (`precision = "f16-mixed"`): f16 operands in the
 * matrix products and attention, f32 everywhere else, and dynamic loss
 * scaling, as mixed-precision trainers do it.
 *
 * - f32 master weights, gradients and AdamW moments; each matrix weight also
 *   has an f16 copy (refreshed from the master after every update) that the
 *   matmuls and their input-gradient products read.
 * - Every activation / gradient operand of a matrix product and of attention
 *   is rounded to f16 as the kernel loads it (src/kernels/f16_operands.ts);
 *   products accumulate in f32. The residual stream, the norms, the softmax,
 *   the log-softmax and the loss stay f32 (Qwen-family residuals carry
 *   values beyond f16's range in a few channels).
 * - Loss scaling: d loss / d logp is multiplied by the scale S before the
 *   backward, so small gradient operands do not flush to zero in f16. The
 *   optimiser divides the accumulated f32 gradients by S (its `gradScale`)
 *   and computes their global norm on the GPU: a non-finite norm (an f16
 *   operand overflowed to Inf, or NaN) skips the update, and S halves; after
 *   `growthInterval` clean updates in a row S doubles (capped at 2^24, so the
 *   squared-gradient sum stays far inside f32's range).
 *
 * f32 is the default until a GPU run shows the f16 path's speed and stability.
 */
import type { TrainModel } from "./model.ts";
import type { Optimizer, OptimStats } from "./optim.ts";

export type Precision = "f32" | "f16-mixed";

export interface LossScaleConfig {
  /** Initial scale (PyTorch's GradScaler: 2^16). */
  init: number;
  /** Clean updates in a row before the scale doubles (GradScaler: 2000). */
  growthInterval: number;
}

export const DEFAULT_LOSS_SCALE: LossScaleConfig = { init: 65536, growthInterval: 2000 };

/** The largest scale: S²·Σg² of the scaled gradients stays within f32 for any sane gradient. */
export const MAX_LOSS_SCALE = 2 ** 24;

/** Dynamic loss scale: halve on overflow, double after `growthInterval` clean updates. */
export class LossScaler {
  scale: number;
  /** Clean updates since the last change of the scale. */
  clean = 0;

  constructor(readonly cfg: LossScaleConfig = DEFAULT_LOSS_SCALE) {
    checkLossScale(cfg, "lossScale");
    this.scale = cfg.init;
  }

  /** After an update: `finite` false (skipped) halves the scale; the growthInterval-th clean one in a row doubles it. */
  update(finite: boolean): void {
    if (!finite) {
      this.scale = Math.max(this.scale / 2, 2 ** -24);
      this.clean = 0;
      return;
    }
    if (++this.clean >= this.cfg.growthInterval) {
      this.scale = Math.min(this.scale * 2, MAX_LOSS_SCALE);
      this.clean = 0;
    }
  }

  get state(): { scale: number; clean: number } {
    return { scale: this.scale, clean: this.clean };
  }

  /** Restore a saved state (exact resume). */
  load(s: { scale: number; clean: number }, what = "loss scale state"): void {
    if (!(Number.isFinite(s.scale) && s.scale > 0 && s.scale <= MAX_LOSS_SCALE)) throw new Error(`${what}: scale must be in (0, 2^24], got ${s.scale}`);
    if (!(Number.isInteger(s.clean) && s.clean >= 0)) throw new Error(`${what}: clean must be an integer >= 0, got ${s.clean}`);
    this.scale = s.scale;
    this.clean = s.clean;
  }
}

export function checkLossScale(cfg: LossScaleConfig, field: string): void {
  if (!(Number.isFinite(cfg.init) && cfg.init >= 1 && cfg.init <= MAX_LOSS_SCALE)) throw new Error(`config: ${field}.init must be in [1, 2^24], got ${cfg.init}`);
  if (!(Number.isInteger(cfg.growthInterval) && cfg.growthInterval >= 1)) throw new Error(`config: ${field}.growthInterval must be an integer >= 1, got ${cfg.growthInterval}`);
}

/**
 * One optimiser step from the model's accumulated gradients: f32 as before;
 * f16-mixed unscales them (1/S), skips the update when their norm is not
 * finite and moves the scale. The model's f16 weight copies are refreshed
 * before its next forward.
 */
export async function optimizerStep(model: TrainModel, opt: Optimizer): Promise<OptimStats & { lossScale: number }> {
  const s = model.scaler;
  const lossScale = s ? s.scale : 1;
  const o = await opt.update(1 / lossScale);
  s?.update(!o.skipped);
  if (!o.skipped) model.weightsChanged();
  return { ...o, lossScale };
}
