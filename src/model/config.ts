// Qwen2ForCausalLM configuration: parsed and validated from a Hugging Face
// config.json, plus the real DeepSeek-R1-Distill-Qwen-1.5B shape and a memory plan.
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";

/** Storage dtype of a checkpoint's floating-point weights, as config.json names it. */
export type TorchDtype = "float32" | "float16" | "bfloat16";

/**
 * The model shape. Legend: H hidden, I intermediate, L layers, NH query heads,
 * NKV key/value heads, HD head dim, V vocab.
 */
export interface Qwen2Config {
  hiddenSize: number; // H
  intermediateSize: number; // I
  numLayers: number; // L
  numHeads: number; // NH
  numKvHeads: number; // NKV; NH % NKV == 0, query head h reads kv head floor(h / (NH/NKV))
  headDim: number; // HD (H / NH unless config.json says head_dim)
  ropeTheta: number;
  rmsNormEps: number;
  tieWordEmbeddings: boolean; // lm_head shares model.embed_tokens.weight
  vocabSize: number; // V (rows of the embedding; may exceed the tokenizer's size)
  maxPositions: number;
  bosTokenId: number | null;
  eosTokenIds: number[]; // config.json allows one id or a list
  torchDtype: TorchDtype;
}

/** DeepSeek-R1-Distill-Qwen-1.5B's config.json (Qwen2.5-Math-1.5B shape), as published. */
export const QWEN2_1_5B: Qwen2Config = Object.freeze({
  hiddenSize: 1536,
  intermediateSize: 8960,
  numLayers: 28,
  numHeads: 12,
  numKvHeads: 2,
  headDim: 128,
  ropeTheta: 10000,
  rmsNormEps: 1e-6,
  tieWordEmbeddings: false,
  vocabSize: 151936,
  maxPositions: 131072,
  bosTokenId: 151643,
  eosTokenIds: Object.freeze([151643]) as number[],
  torchDtype: "bfloat16",
});

const DTYPES: readonly TorchDtype[] = ["float32", "float16", "bfloat16"];

/** Parse and validate a config.json object; `file` names the source in errors. */
export function parseQwen2Config(json: unknown, file = "config.json"): Qwen2Config {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(`${file}: expected a JSON object of model settings, got ${json === null ? "null" : Array.isArray(json) ? `an array (${JSON.stringify(json).slice(0, 40)})` : typeof json}`);
  }
  const o = json as Record<string, unknown>;
  const bad = (field: string, want: string): never => {
    throw new Error(`${file}: field "${field}": expected ${want}, got ${JSON.stringify(o[field])}`);
  };
  const posInt = (field: string): number => {
    const v = o[field];
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) bad(field, "a positive integer");
    return v as number;
  };
  const posNum = (field: string): number => {
    const v = o[field];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) bad(field, "a positive number");
    return v as number;
  };

  const arch = o.architectures;
  if (!Array.isArray(arch) || !arch.includes("Qwen2ForCausalLM")) bad("architectures", '["Qwen2ForCausalLM"]');
  if (o.model_type !== undefined && o.model_type !== "qwen2") bad("model_type", '"qwen2"');
  if (o.hidden_act !== undefined && o.hidden_act !== "silu") bad("hidden_act", '"silu" (the only activation implemented)');
  if (o.rope_scaling !== undefined && o.rope_scaling !== null) bad("rope_scaling", "null (RoPE scaling is not implemented)");
  if (o.use_sliding_window === true) bad("use_sliding_window", "false (sliding-window attention is not implemented)");

  const hiddenSize = posInt("hidden_size");
  const intermediateSize = posInt("intermediate_size");
  const numLayers = posInt("num_hidden_layers");
  const numHeads = posInt("num_attention_heads");
  const numKvHeads = o.num_key_value_heads === undefined ? numHeads : posInt("num_key_value_heads");
  if (numHeads % numKvHeads !== 0) {
    bad("num_key_value_heads", `a divisor of num_attention_heads (${numHeads})`);
  }
  let headDim: number;
  if (o.head_dim !== undefined && o.head_dim !== null) {
    headDim = posInt("head_dim");
  } else {
    if (hiddenSize % numHeads !== 0) bad("num_attention_heads", `a divisor of hidden_size (${hiddenSize})`);
    headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) bad(o.head_dim !== undefined ? "head_dim" : "num_attention_heads", "an even head dimension (RoPE rotates pairs)");
  // transformers >= 5 writes RoPE settings as `rope_parameters: {rope_type, rope_theta}` instead of a
  // top-level `rope_theta`; reading only the latter would silently fall back to 10000 for such a
  // folder (Qwen2 ships 1e6 or 1e4), so both forms are read and must agree. Absent both, 10000 is
  // Qwen2Config's own default.
  const rp = o.rope_parameters;
  let ropeTheta = o.rope_theta === undefined ? 10000 : posNum("rope_theta");
  if (rp !== undefined && rp !== null) {
    if (typeof rp !== "object" || Array.isArray(rp)) bad("rope_parameters", "an object {rope_type, rope_theta}");
    const r = rp as Record<string, unknown>;
    if (r.rope_type !== undefined && r.rope_type !== "default") bad("rope_parameters", 'rope_type "default" (RoPE scaling is not implemented)');
    const t = r.rope_theta;
    if (typeof t !== "number" || !Number.isFinite(t) || t <= 0) bad("rope_parameters", "a positive rope_theta");
    if (o.rope_theta !== undefined && t !== ropeTheta) bad("rope_parameters", `rope_theta equal to the top-level rope_theta (${ropeTheta})`);
    ropeTheta = t as number;
  }
  const rmsNormEps = posNum("rms_norm_eps");
  const tie = o.tie_word_embeddings ?? false;
  if (typeof tie !== "boolean") bad("tie_word_embeddings", "a boolean");
  const vocabSize = posInt("vocab_size");
  const maxPositions = posInt("max_position_embeddings");

  const tokenId = (field: string, v: unknown): number => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= vocabSize) {
      bad(field, `a token id in [0, vocab_size=${vocabSize})`);
    }
    return v as number;
  };
  const bosTokenId = o.bos_token_id === undefined || o.bos_token_id === null ? null : tokenId("bos_token_id", o.bos_token_id);
  let eosTokenIds: number[] = [];
  if (Array.isArray(o.eos_token_id)) eosTokenIds = o.eos_token_id.map((v) => tokenId("eos_token_id", v));
  else if (o.eos_token_id !== undefined && o.eos_token_id !== null) eosTokenIds = [tokenId("eos_token_id", o.eos_token_id)];

  const td = o.torch_dtype ?? o.dtype ?? "float32";
  if (typeof td !== "string" || !DTYPES.includes(td as TorchDtype)) bad("torch_dtype", `one of ${DTYPES.join(", ")}`);

  return {
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    ropeTheta,
    rmsNormEps,
    tieWordEmbeddings: tie as boolean,
    vocabSize,
    maxPositions,
    bosTokenId,
    eosTokenIds,
    torchDtype: td as TorchDtype,
  };
}

/** Read `<dir>/config.json` (or a path to the file itself). */
export function loadQwen2Config(path: string): Qwen2Config {
  const file = statSync(path).isDirectory() ? join(path, "config.json") : path;
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`${file}: cannot read the model config: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: invalid JSON: ${(e as Error).message}`);
  }
  return parseQwen2Config(json, file);
}

/** The HF config.json object for a config (what make-tiny-model writes). */
export function qwen2ConfigJson(c: Qwen2Config): Record<string, unknown> {
  return {
    architectures: ["Qwen2ForCausalLM"],
    model_type: "qwen2",
    hidden_act: "silu",
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    ...(c.headDim !== c.hiddenSize / c.numHeads ? { head_dim: c.headDim } : {}),
    rope_theta: c.ropeTheta,
    rope_scaling: null,
    rms_norm_eps: c.rmsNormEps,
    tie_word_embeddings: c.tieWordEmbeddings,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.maxPositions,
    use_sliding_window: false,
    attention_dropout: 0,
    initializer_range: 0.02,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds,
    torch_dtype: c.torchDtype,
    use_cache: true,
  };
}

export interface MemoryPlan {
  dtype: TorchDtype;
  bytesPerParam: number;
  embedParams: number; // V*H
  lmHeadParams: number; // V*H, or 0 when tied
  perLayerParams: number; // attention (with q/k/v biases) + MLP + two norms
  finalNormParams: number; // H
  params: number; // total parameter count
  paramBytes: number; // params * bytesPerParam
}

/** Parameter count and bytes of the weights stored in `dtype`. */
export function memoryPlan(c: Qwen2Config, dtype: TorchDtype = c.torchDtype): MemoryPlan {
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const attn = q * H + q + 2 * (kv * H + kv) + H * q;
  const mlp = 3 * c.intermediateSize * H;
  const perLayerParams = attn + mlp + 2 * H;
  const embedParams = c.vocabSize * H;
  const lmHeadParams = c.tieWordEmbeddings ? 0 : embedParams;
  const params = embedParams + lmHeadParams + c.numLayers * perLayerParams + H;
  const bytesPerParam = dtype === "float32" ? 4 : 2;
  return { dtype, bytesPerParam, embedParams, lmHeadParams, perLayerParams, finalNormParams: H, params, paramBytes: params * bytesPerParam };
}
