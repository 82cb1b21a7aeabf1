/**
 * The divergence guard: after every update, before anything is saved, the
 * weights are checked, so a checkpoint is never written from weights that
 * failed, and the last one written is always the last one that passed
 * (rotation keeps the newest, so it is never deleted).
 *
 * Cheap: the squared L2 norm of all weights is one GPU reduction (the same
 * fixed-order sum as the gradient norm) and a 4-byte readback per step; the
 * gradient norm comes from the update's own statistics. It catches a run
 * before it reaches inf:
 *  - the weight norm is not finite, or has grown past `maxWeightGrowth`
 *    times its reference (the norm when RL started, kept in trainer_state so
 *    a resumed run keeps the same reference);
 *  - the gradient norm is not finite, or is more than `maxGradGrowth` times
 *    the median of the recent finite ones (a spike of that size precedes a
 *    blow-up; with clipping a single one moves the weights little, but it
 *    is the earliest sign).
 */
import type { Gpu } from "../gpu/index.ts";
import { loadAdamW, type AdamW } from "../kernels/adamw.ts";
import { median } from "../util/stats.ts";
import { arenaChunks } from "./arena.ts";
import type { Param } from "./model.ts";

export interface DivergenceLimits {
  /** Weight L2 norm over its reference; above this the run has diverged. */
  maxWeightGrowth: number;
  /** Gradient norm over the median of the last `window` finite ones. */
  maxGradGrowth: number;
  /** Recent gradient norms kept for the median (at least 3 before it is used). */
  window: number;
}

export const DEFAULT_DIVERGENCE: DivergenceLimits = { maxWeightGrowth: 10, maxGradGrowth: 1e4, window: 20 };

/** A failed check: what was measured, against what. */
export interface Divergence {
  what: "weights" | "gradient";
  value: number;
  reference: number;
  message: string;
}

const fmt = (x: number) => (Number.isFinite(x) ? x.toPrecision(4) : String(x));

/**
 * The verdict from the figures alone (pure, tested without a GPU): null when
 * they pass. `recentGrads` are earlier finite gradient norms.
 */
export function judge(weightNorm: number, weightRef: number, gradNorm: number, recentGrads: readonly number[], limits: DivergenceLimits = DEFAULT_DIVERGENCE): Divergence | null {
  if (!Number.isFinite(weightNorm)) {
    return { what: "weights", value: weightNorm, reference: weightRef, message: `the weights hold non-finite values (L2 norm ${fmt(weightNorm)}; ${fmt(weightRef)} when RL started)` };
  }
  if (weightRef > 0 && weightNorm > limits.maxWeightGrowth * weightRef) {
    return {
      what: "weights",
      value: weightNorm,
      reference: weightRef,
      message: `the weights' L2 norm ${fmt(weightNorm)} is ${fmt(weightNorm / weightRef)}x its ${fmt(weightRef)} when RL started (limit ${limits.maxWeightGrowth}x)`,
    };
  }
  const usable = recentGrads.filter((g) => Number.isFinite(g) && g > 0);
  if (Number.isFinite(gradNorm) && usable.length >= 3) {
    const med = median(usable);
    if (gradNorm > limits.maxGradGrowth * med) {
      return { what: "gradient", value: gradNorm, reference: med, message: `the gradient norm ${fmt(gradNorm)} is ${fmt(gradNorm / med)}x the median ${fmt(med)} of the last ${usable.length} steps (limit ${limits.maxGradGrowth}x)` };
    }
  }
  return null;
}

export class DivergenceGuard {
  private readonly recent: number[] = [];
  private readonly out: GPUBuffer;

  private constructor(
    private readonly gpu: Gpu,
    private readonly params: Param[],
    private readonly adam: AdamW,
    /** The weight norm the growth is measured against. */
    public reference: number,
    readonly limits: DivergenceLimits,
  ) {
    this.out = gpu.buffer(16, "divergence.weightnorm");
  }

  /** `reference`: a resumed run's recorded one; otherwise the weights' norm now. */
  static async create(gpu: Gpu, params: Param[], reference?: number, limits: DivergenceLimits = DEFAULT_DIVERGENCE): Promise<DivergenceGuard> {
    const g = new DivergenceGuard(gpu, params, await loadAdamW(gpu), 0, limits);
    g.reference = reference !== undefined && Number.isFinite(reference) && reference > 0 ? reference : await g.weightNorm();
    return g;
  }

  /** L2 norm of every weight, summed on the GPU over the arena chunks (zero padding adds nothing; one f32 read back). */
  async weightNorm(): Promise<number> {
    const b = this.gpu.batch();
    const chunks = arenaChunks(this.params.flatMap((p) => p.parts)); // every row part of the embedding / LM head too
    this.adam.gradNormSq(b, chunks.map((c) => c.value), chunks.map((c) => c.elems), this.out);
    b.submit();
    return Math.sqrt((await this.gpu.readF32(this.out, 1))[0]);
  }

  /**
   * Check the weights after an update whose (worst) gradient norm was
   * `gradNorm` (NaN/Inf for an update that was skipped: the skip already
   * kept the weights, so only the weights are judged then).
   */
  async check(gradNorm: number): Promise<Divergence | null> {
    const w = await this.weightNorm();
    const v = judge(w, this.reference, gradNorm, this.recent, this.limits);
    if (!v && Number.isFinite(gradNorm) && gradNorm > 0) {
      this.recent.push(gradNorm);
      if (this.recent.length > this.limits.window) this.recent.shift();
    }
    return v;
  }

  destroy(): void {
    this.out.destroy();
  }
}
