/**
 * The memory plan of a run: device memory computed from the shapes before
 * anything is allocated (printed by `siri train` and `--plan`).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadQwen2Config, memoryPlan, QWEN2_1_5B, type Qwen2Config } from "../model/config.ts";
import { loadReferenceModel } from "../model/reference.ts";
import { makeTinyModel, type TinyPreset } from "../model/tiny.ts";
import { capRange } from "../rl/schedule.ts";
import { makeDirAtomically } from "../run/atomic.ts";
import type { TrainConfig } from "./config.ts";
import { keepsInternals, layerInternalBytes, logitRowCap } from "./model.ts";

/** Prompt tokens a rollout slot is sized for (raised to the longest prompt seen when the run starts). */
export const PROMPT_TOKENS = 512;

export interface PlanRow {
  what: string;
  bytes: number;
}

/** New tokens a rollout slot must hold: the schedule's largest cap, or the validation budget if larger. */
export function rolloutBudget(cfg: TrainConfig): number {
  return Math.max(capRange(cfg.schedule).max, cfg.validation.maxTokens || 0);
}

/** Sequences the rollout engine decodes at once. */
export function rolloutBatch(cfg: TrainConfig): number {
  return Math.max(1, Math.min(cfg.rollout.maxBatch, cfg.promptsPerStep * cfg.groupSize));
}

/**
 * Device memory of a run, computed from the shapes: f32 master weights,
 * gradients and AdamW moments; activations at `microBatchTokens` tokens (the
 * layer inputs x_l for every layer, one layer's internals (every layer's
 * where they fit TrainModel's keep budget) and their gradients, one token
 * chunk of logits and their gradient); the f16 rollout
 * copy; the rollout engine's KV cache, made once per run for the largest cap.
 * f16-mixed adds the f16 copies of the weights the products read (every
 * projection and the LM head); its activations stay f32 (operands are rounded
 * to f16 as kernels load them), so nothing else changes.
 */
export function trainingMemoryPlan(c: Qwen2Config, cfg: TrainConfig, rolloutDtype: "f32" | "f16", promptTokens = PROMPT_TOKENS): PlanRow[] {
  const P = memoryPlan(c, "float32").params;
  const T = cfg.policy.microBatchTokens;
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const I = c.intermediateSize;
  // The internals the backward reads, for one layer (recomputed per layer) or every layer (kept by the forward), and their gradients.
  const layer = 4 * T * (2 * (2 * q + 2 * kv + 3 * I + 2 * H) + c.numHeads + 3 * H);
  const keep = keepsInternals(c, T);
  const kept = keep ? (c.numLayers - 1) * layerInternalBytes(c, T) : 0;
  const chunk = Math.min(T, logitRowCap(c.vocabSize));
  const maxSeq = promptTokens + rolloutBudget(cfg);
  const seqs = rolloutBatch(cfg);
  const kvBytes = c.numLayers * 2 * kv * (rolloutDtype === "f16" ? 2 : 4) * seqs * maxSeq;
  const matrices = c.numLayers * (H * (q + 2 * kv) + q * H + 3 * H * I) + c.vocabSize * H; // projections + LM head
  return [
    { what: `parameters (${(P / 1e6).toFixed(2)} M, f32 master weights)`, bytes: 4 * P },
    { what: "gradients (f32)", bytes: 4 * P },
    { what: "AdamW moments m, v (f32)", bytes: 8 * P },
    { what: `f16 copies of the product weights (f16-mixed; ${(matrices / 1e6).toFixed(2)} M values)`, bytes: cfg.precision === "f16-mixed" ? 2 * matrices : 0 },
    { what: `layer inputs x_l, l = 0..${c.numLayers} (T = ${T} tokens)`, bytes: 4 * T * H * (c.numLayers + 1) },
    { what: keep ? "every layer's internals (kept by the forward) and one layer's gradients" : "one layer's internals and their gradients (recomputed per layer)", bytes: layer + kept },
    // The LM head runs over token chunks of at most logitRowCap(V) rows (TrainModel's logitChunk; the binding may cut them further).
    { what: `logits and their gradient (one chunk: ${chunk} x V = ${c.vocabSize}, f32)`, bytes: 2 * 4 * chunk * c.vocabSize },
    { what: "rollout weights (f16 copy)", bytes: rolloutDtype === "f16" ? 2 * P : 0 },
    { what: `rollout KV cache (${seqs} seqs x ${maxSeq} tokens, ${rolloutDtype}; made once per run)`, bytes: kvBytes },
  ];
}

export function formatPlan(rows: PlanRow[], title: string): string {
  const gib = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(2)} MiB`);
  const total = rows.reduce((a, r) => a + r.bytes, 0);
  return [title, ...rows.filter((r) => r.bytes > 0).map((r) => `  ${gib(r.bytes).padStart(12)}  ${r.what}`), `  ${gib(total).padStart(12)}  total`].join("\n");
}

/** The plan for a config without opening a GPU (the shape from the folder, the tiny preset, or the 1.5B default). */
export function planFor(cfg: TrainConfig): { config: Qwen2Config; note: string } {
  if (cfg.model.startsWith("tiny:")) {
    const dir = join(cfg.out, "base");
    if (!existsSync(join(dir, "config.json"))) makeDirAtomically(dir, (tmp) => makeTinyModel(tmp, { preset: (cfg.model.slice(5) || "tiny") as TinyPreset, seed: cfg.seed }));
    return { config: loadReferenceModel(dir).config, note: cfg.model };
  }
  if (existsSync(join(cfg.model, "config.json"))) return { config: loadQwen2Config(join(cfg.model, "config.json")), note: cfg.model };
  return { config: QWEN2_1_5B, note: `DeepSeek-R1-Distill-Qwen-1.5B's shape (${cfg.model} not found)` };
}
