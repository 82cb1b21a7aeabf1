/**
 * Training losses on the GPU (kernels/loss.wgsl): the policy loss SIRI ran
 * (verl's vanilla PPO loss: clamped log-ratio, DAPO's clip-higher, dual-clip,
 * optional truncated importance sampling), the supervised negative log-likelihood, and the
 * log-softmax backward that turns d loss / d logp(chosen token) into
 * d loss / d logits.
 *
 * Legend: N loss tokens (a micro-batch's packed sequences), T rows of
 * logits, V vocabulary. All buffers are f32 (the LM head writes f32 logits);
 * the mask is f32 0/1 as in src/rl/policy_loss.ts.
 *
 * The policy reference is `policyLoss` in src/rl/policy_loss.ts. Its
 * "seq-mean-token-mean" aggregation runs here too: every branch of the term
 * is A times a function of r (clip-higher and dual-clip alike), so for a
 * positive weight w the term of wA is w times the term of A; pass
 * A_i / count(seq_i) as the advantage and the sequence count as `denom`.
 */
import type { Batch } from "../gpu/batch.ts";
import type { Binding, Gpu } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import { checkBinding, checkCount, grid, sameBuffer } from "./common.ts";
import { type RowVariant, rowVariant } from "./rmsnorm.ts";

const WG = 256; // power of two (tree reductions)
const WG_ROW = 64; // rows per workgroup in the log-softmax backward's one-invocation-per-row variant

/** Slots of the f32 statistics buffer the policy and sft kernels write. */
export const STAT = { loss: 0, tokens: 1, clipLow: 2, clipHigh: 3, klSum: 4, ratioSum: 5, clipDual: 6, tisWeightSum: 7 } as const;
/** Length of the statistics buffer in f32 (32 bytes). */
export const STATS_LEN = 8;

export interface PolicyKernelOptions {
  /** Lower clip 1 − ε_low; 0.2. */
  epsLow: number;
  /** Upper clip 1 + ε_high; 0.28 (DAPO's clip-higher). */
  epsHigh: number;
  /** Token-mean denominator: the mini-batch's response-token count (CPU side); 0 gives zero loss and gradient. */
  denom: number;
  /** Add to the statistics already in the buffer (micro-batches of one mini-batch). */
  accumulate?: boolean;
  /** Dual-clip constant c > 1 (verl's clip_ratio_c, 3); null: off. */
  clipRatioC: number | null;
  /** Truncated importance sampling: weight min(exp(logpOld − logpRollout), tisCap) per token; null (default): off. */
  tisCap?: number | null;
  /** [N] the sampler's log-probs; required when tisCap is set. */
  logpRollout?: Binding;
}

/** Supervised loss reference: loss = −Σ mask·logp / denom, dlogp = −mask / denom; stats as the kernel lays them out. */
export function sftRef(logp: Float32Array, mask: Float32Array, denom: number): { dlogp: Float32Array; stats: Float32Array } {
  if (logp.length !== mask.length) throw new Error(`sftRef: logp has ${logp.length} elements, mask ${mask.length}`);
  const inv = denom > 0 ? 1 / denom : 0;
  const dlogp = new Float32Array(logp.length);
  let nll = 0;
  let tokens = 0;
  for (let i = 0; i < logp.length; i++) {
    if (mask[i] === 0) continue;
    dlogp[i] = -inv;
    nll -= logp[i];
    tokens++;
  }
  const stats = new Float32Array(STATS_LEN);
  stats[STAT.loss] = nll * inv;
  stats[STAT.tokens] = tokens;
  return { dlogp, stats };
}

/**
 * Log-softmax backward reference (f64 over z = f32(logit / τ), as the GPU
 * divides in f32): dlogits[t, j] = dlogp[t] · (δ_j,target − softmax(z)_j) / τ.
 */
export function logsoftmaxBackwardRef(
  logits: Float32Array,
  targets: Uint32Array,
  dlogp: Float32Array,
  T: number,
  V: number,
  temperature: number,
): Float32Array {
  if (logits.length !== T * V || targets.length !== T || dlogp.length !== T) {
    throw new Error(`logsoftmaxBackwardRef: logits ${logits.length} (want ${T}×${V}), targets ${targets.length}, dlogp ${dlogp.length} (want ${T})`);
  }
  const temp = Math.fround(temperature);
  const out = new Float32Array(T * V);
  const z = new Float64Array(V);
  for (let t = 0; t < T; t++) {
    if (targets[t] >= V) throw new RangeError(`logsoftmaxBackwardRef: target ${targets[t]} at row ${t} is outside [0, ${V})`);
    let m = -Infinity;
    for (let j = 0; j < V; j++) {
      z[j] = Math.fround(logits[t * V + j] / temp);
      m = Math.max(m, z[j]);
    }
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(z[j] - m);
    const lse = m + Math.log(s);
    const g = dlogp[t] / temp;
    for (let j = 0; j < V; j++) out[t * V + j] = g * ((j === targets[t] ? 1 : 0) - Math.exp(z[j] - lse));
  }
  return out;
}

function checkDenom(denom: number, what: string): number {
  if (!(denom >= 0 && Number.isFinite(denom))) {
    throw new KernelError(`kernel ${what}: denom ${denom} must be a finite number >= 0 (the loss-token count, computed on the CPU)`);
  }
  return denom > 0 ? 1 / denom : 0;
}

/** Outputs must not share a buffer with any other binding (WebGPU cannot bind a buffer writable and again). */
function checkDistinct(what: string, outs: [Binding, string][], ins: [Binding, string][]): void {
  outs.forEach(([o, on], k) => {
    for (const [x, xn] of [...outs.slice(k + 1), ...ins]) {
      if (sameBuffer(o, x)) throw new KernelError(`kernel ${what}: ${on} and ${xn} share a buffer; an output needs its own buffer`);
    }
  });
}

/**
 * `variant` of the log-softmax backward: "workgroup" (one workgroup per row, a
 * tree merge; hardware GPUs) or "row" (one invocation per row: CPU-backed
 * adapters); default per adapter kind (`rowVariant`), "workgroup" when
 * subgroups are asked for.
 * `subgroups: true`: the log-softmax backward merges its (max, Σ) pairs within
 * subgroups before the shared-memory tree (kernels/loss.wgsl; adapters with
 * `subgroups`). Off by default on every adapter kind: the sweep over V
 * dominates as in logprob, and no GPU has measured it (benchmarks/RESULTS.md).
 */
export async function loadLoss(gpu: Gpu, opts: { subgroups?: boolean; variant?: RowVariant } = {}) {
  const sg = opts.subgroups === true;
  if (sg && !gpu.features.subgroups) throw new KernelError(`loss: subgroups asked for, but adapter "${gpu.adapter.description}" lacks the feature`);
  const row = (opts.variant ?? (sg ? "workgroup" : rowVariant(gpu))) === "row";
  if (row && sg) throw new KernelError("loss: subgroups apply to the log-softmax backward's workgroup variant, not the row variant");
  const c = { WG, WG_ROW, SG: sg ? "" : "//" };
  const [kPolicy, kSft, kLsm] = await Promise.all([
    gpu.kernel("loss", "policy", c),
    gpu.kernel("loss", "sft", c),
    gpu.kernel("loss", row ? "lsm_backward_row" : "lsm_backward", c),
  ]);
  const maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;
  return {
    /**
     * The policy loss over N tokens (reference: `policyLoss`): dlogp[i] =
     * d loss / d logpNew[i], stats (STATS_LEN f32) as in `STAT`. One
     * workgroup (see loss.wgsl).
     */
    policy(
      b: Batch,
      logpNew: Binding,
      logpOld: Binding,
      adv: Binding,
      mask: Binding,
      dlogp: Binding,
      stats: Binding,
      N: number,
      opts: PolicyKernelOptions,
    ): void {
      const what = "loss.policy";
      checkCount(N, "N", what);
      if (!(opts.epsLow >= 0 && opts.epsLow < 1)) throw new KernelError(`kernel ${what}: epsLow ${opts.epsLow} must be in [0, 1)`);
      if (!(opts.epsHigh >= 0 && Number.isFinite(opts.epsHigh))) throw new KernelError(`kernel ${what}: epsHigh ${opts.epsHigh} must be >= 0`);
      const c = opts.clipRatioC;
      if (c !== null && !(c > 1 && Number.isFinite(c))) throw new KernelError(`kernel ${what}: clipRatioC ${c} must be > 1 (or null for off)`);
      const tisCap = opts.tisCap ?? null;
      if (tisCap !== null && !(tisCap >= 1 && Number.isFinite(tisCap))) throw new KernelError(`kernel ${what}: tisCap ${tisCap} must be >= 1 (or null for off)`);
      if (tisCap !== null && !opts.logpRollout) throw new KernelError(`kernel ${what}: tisCap needs logpRollout (the sampler's log-probs)`);
      const inv = checkDenom(opts.denom, what);
      const ins: [Binding, string][] = [[logpNew, "logpNew"], [logpOld, "logpOld"], [adv, "adv"], [mask, "mask"], [dlogp, "dlogp"]];
      // Off, the rollout binding is never read; logpOld stands in (a buffer may be bound read-only twice).
      const rollout = tisCap !== null ? opts.logpRollout! : logpOld;
      if (tisCap !== null) ins.push([rollout, "logpRollout"]);
      for (const [x, name] of ins) checkBinding(x, N, 4, name, what);
      checkBinding(stats, STATS_LEN, 4, "stats", what);
      checkDistinct(what, [[dlogp, "dlogp"], [stats, "stats"]], ins.filter(([, n]) => n !== "dlogp"));
      b.dispatch(kPolicy, {
        params: params()
          .u32(N)
          .f32(opts.epsLow)
          .f32(opts.epsHigh)
          .f32(inv)
          .u32(opts.accumulate ? 1 : 0)
          .f32(c ?? 0)
          .f32(tisCap !== null ? Math.log(tisCap) : 0)
          .u32(tisCap !== null ? 1 : 0),
        buffers: [logpNew, logpOld, adv, mask, dlogp, stats, rollout],
        groups: [1],
        label: "loss.policy",
      });
    },

    /** Mean negative log-likelihood over masked tokens: loss = −Σ mask·logp / denom. */
    sft(b: Batch, logp: Binding, mask: Binding, dlogp: Binding, stats: Binding, N: number, denom: number, accumulate = false): void {
      const what = "loss.sft";
      checkCount(N, "N", what);
      const inv = checkDenom(denom, what);
      const ins: [Binding, string][] = [[logp, "logp"], [mask, "mask"], [dlogp, "dlogp"]];
      for (const [x, name] of ins) checkBinding(x, N, 4, name, what);
      checkBinding(stats, STATS_LEN, 4, "stats", what);
      checkDistinct(what, [[dlogp, "dlogp"], [stats, "stats"]], [[logp, "logp"], [mask, "mask"]]);
      b.dispatch(kSft, {
        params: params().u32(N).f32(inv).u32(accumulate ? 1 : 0),
        buffers: [logp, mask, dlogp, stats],
        groups: [1],
        label: "loss.sft",
      });
    },

    /**
     * dlogits[t, :] = dlogp[t] · (onehot(targets[t]) − softmax(logits[t, :] / τ)) / τ.
     * A target ≥ V yields a NaN row (check targets on the CPU first).
     */
    logsoftmaxBackward(
      b: Batch,
      logits: Binding,
      targets: Binding,
      dlogp: Binding,
      dlogits: Binding,
      T: number,
      V: number,
      temperature: number,
    ): void {
      const what = "loss.logsoftmaxBackward";
      checkCount(T, "T", what);
      checkCount(V, "V", what);
      if (V === 0) throw new KernelError(`kernel ${what}: V = 0 (no vocabulary)`);
      if (!(temperature > 0 && Number.isFinite(temperature))) {
        throw new KernelError(`kernel ${what}: temperature ${temperature} must be a positive number`);
      }
      if (T * V > 0xffffffff) throw new KernelError(`kernel ${what}: T·V = ${T * V} overflows u32; chunk the rows`);
      checkBinding(logits, T * V, 4, "logits", what);
      checkBinding(targets, T, 4, "targets", what);
      checkBinding(dlogp, T, 4, "dlogp", what);
      checkBinding(dlogits, T * V, 4, "dlogits", what);
      checkDistinct(what, [[dlogits, "dlogits"]], [[logits, "logits"], [targets, "targets"], [dlogp, "dlogp"]]);
      if (T === 0) return;
      b.dispatch(kLsm, {
        params: params().u32(T).u32(V).f32(temperature),
        buffers: [logits, targets, dlogp, dlogits],
        groups: grid(row ? Math.ceil(T / WG_ROW) : T, maxGroups, what),
        label: "loss.lsm_backward",
      });
    },
  };
}

export type Loss = Awaited<ReturnType<typeof loadLoss>>;
