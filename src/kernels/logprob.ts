/**
 * Chosen-token log-probabilities and entropies (kernels/logprob.wgsl), the
 * per-token quantities GRPO's ratio and the logs need.
 *
 * Legend: T tokens (rows), V vocabulary (up to 151936). Logits are f32 (the
 * LM head writes f32 whatever the model dtype); a binding holds at most
 * 128 MiB, i.e. ~220 rows at V = 151936, so callers chunk T.
 */
import type { Batch } from "../gpu/batch.ts";
import type { Binding, Gpu } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import { checkBinding, checkCount, grid, sameBuffer } from "./common.ts";
import { type RowVariant, rowVariant } from "./rmsnorm.ts";

const WG = 256; // power of two (tree reduction)
const WG_ROW = 64; // rows per workgroup in the one-invocation-per-row variant

/**
 * f64 reference over z = f32(logit / temperature) (the GPU divides in f32):
 * logp[t] = log softmax(z)[targets[t]], entropy[t] = −Σ p log p.
 */
export function logprobRef(
  logits: Float32Array,
  targets: Uint32Array,
  T: number,
  V: number,
  temperature: number,
): { logp: Float32Array; entropy: Float32Array } {
  if (logits.length !== T * V || targets.length !== T) {
    throw new Error(`logprobRef: logits has ${logits.length} elements (want ${T}×${V}), targets ${targets.length} (want ${T})`);
  }
  const temp = Math.fround(temperature);
  const logp = new Float32Array(T);
  const entropy = new Float32Array(T);
  const z = new Float64Array(V);
  for (let t = 0; t < T; t++) {
    let m = -Infinity;
    for (let j = 0; j < V; j++) {
      z[j] = Math.fround(logits[t * V + j] / temp);
      if (z[j] > m) m = z[j];
    }
    let s = 0;
    let u = 0;
    for (let j = 0; j < V; j++) {
      const e = Math.exp(z[j] - m);
      s += e;
      u += e * (z[j] - m);
    }
    const tgt = targets[t];
    if (tgt >= V) throw new RangeError(`logprobRef: target ${tgt} at row ${t} is outside [0, ${V})`);
    logp[t] = z[tgt] - m - Math.log(s);
    entropy[t] = Math.log(s) - u / s;
  }
  return { logp, entropy };
}

/**
 * `variant`: "workgroup" (one workgroup per row, a tree merge; hardware GPUs)
 * or "row" (one invocation sweeps a row: CPU-backed adapters, where the
 * tree's barriers are what costs); default per adapter kind (`rowVariant`),
 * "workgroup" when subgroups are asked for.
 * `subgroups: true` (workgroup variant) merges within subgroups before the
 * shared-memory tree (kernels/logprob.wgsl; adapters with `subgroups`). Off
 * by default on every adapter kind: on lavapipe the two measured the same
 * (the sweep over V dominates; benchmarks/RESULTS.md), and no GPU figure
 * exists yet (scripts/gpu-check.sh times both).
 */
export async function loadLogprob(gpu: Gpu, opts: { subgroups?: boolean; variant?: RowVariant } = {}) {
  const sg = opts.subgroups === true;
  if (sg && !gpu.features.subgroups) throw new KernelError(`logprob: subgroups asked for, but adapter "${gpu.adapter.description}" lacks the feature`);
  const row = (opts.variant ?? (sg ? "workgroup" : rowVariant(gpu))) === "row";
  if (row && sg) throw new KernelError("logprob: subgroups apply to the workgroup variant, not the row variant");
  const k = await gpu.kernel("logprob", row ? "chosen_row" : "chosen", { WG, WG_ROW, SG: sg ? "" : "//" });
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  return {
    /**
     * logp[t] = log softmax(logits[t] / temperature)[targets[t]] and
     * entropy[t]; a target ≥ V yields NaN (check targets with checkIds first).
     */
    chosen(b: Batch, logits: Binding, targets: Binding, logp: Binding, entropy: Binding, T: number, V: number, temperature: number): void {
      const what = "logprob.chosen";
      checkCount(T, "T", what);
      checkCount(V, "V", what);
      if (V === 0) throw new KernelError(`kernel ${what}: V = 0 (no vocabulary)`);
      if (!(temperature > 0) || !Number.isFinite(temperature)) {
        throw new KernelError(`kernel ${what}: temperature ${temperature} must be a positive number`);
      }
      if (T * V > 0xffffffff) throw new KernelError(`kernel ${what}: T·V = ${T * V} overflows u32; chunk the rows`);
      checkBinding(logits, T * V, 4, "logits", what);
      checkBinding(targets, T, 4, "targets", what);
      checkBinding(logp, T, 4, "logp", what);
      checkBinding(entropy, T, 4, "entropy", what);
      if (sameBuffer(logp, entropy)) throw new KernelError(`kernel ${what}: logp and entropy must be different buffers`);
      if (T === 0) return;
      b.dispatch(k, {
        params: params().u32(T).u32(V).f32(temperature),
        buffers: [logits, targets, logp, entropy],
        groups: grid(row ? Math.ceil(T / WG_ROW) : T, max, what),
        label: "logprob",
      });
    },
  };
}
