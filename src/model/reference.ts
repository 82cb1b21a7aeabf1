// An independent, deliberately plain CPU forward of Qwen2ForCausalLM, written
// from the model's math (not from any GPU code): the oracle the GPU engine is
// checked against. Activations are stored as f32 after every op, as an f32
// model would; dot products and sums accumulate in f64.
//
// Legend: T tokens, H hidden, I intermediate, NH query heads, NKV kv heads,
// HD head dim, V vocab. Weights use HF names and layouts (Linear W is [out, in]).
import { loadQwen2Config, type Qwen2Config } from "./config.ts";
import { checkQwen2Weights, openCheckpoint, type WeightReader } from "./safetensors.ts";

export type Weights = Map<string, Float32Array>;

/** Read every Qwen2 tensor as f32 (after checking names and shapes against the config). */
export function loadReferenceWeights(config: Qwen2Config, reader: WeightReader): Weights {
  const w: Weights = new Map();
  for (const s of checkQwen2Weights(config, reader)) w.set(s.name, reader.readF32(s.name));
  return w;
}

/** config.json + all weights of a checkpoint directory, as f32 (tiny models only: 4 bytes per parameter). */
export function loadReferenceModel(dir: string): { config: Qwen2Config; weights: Weights } {
  const config = loadQwen2Config(dir);
  const reader = openCheckpoint(dir);
  try {
    return { config, weights: loadReferenceWeights(config, reader) };
  } finally {
    reader.close();
  }
}

function get(w: Weights, name: string, numel: number): Float32Array {
  const t = w.get(name);
  if (!t) throw new Error(`referenceLogits: missing weight "${name}"`);
  if (t.length !== numel) throw new Error(`referenceLogits: weight "${name}" has ${t.length} values, expected ${numel}`);
  return t;
}

/** y[T, out] = x[T, in] · W[out, in]ᵀ (+ b[out]). */
function linear(x: Float32Array, T: number, inF: number, W: Float32Array, outF: number, b: Float32Array | null): Float32Array {
  const y = new Float32Array(T * outF);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < outF; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inF; i++) s += x[t * inF + i] * W[o * inF + i];
      y[t * outF + o] = s;
    }
  }
  return y;
}

/** RMSNorm per row: x / sqrt(mean(x²) + eps) · w. */
export function rmsNorm(x: Float32Array, T: number, H: number, w: Float32Array, eps: number): Float32Array {
  const y = new Float32Array(T * H);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < H; i++) ss += x[t * H + i] * x[t * H + i];
    const r = 1 / Math.sqrt(ss / H + eps);
    for (let i = 0; i < H; i++) y[t * H + i] = x[t * H + i] * r * w[i];
  }
  return y;
}

/**
 * RoPE, rotate-half convention, in place on x[T, nHeads, HD] at positions
 * pos[t]: for j < HD/2, with a = pos·theta^(-2j/HD),
 * (x_j, x_{j+HD/2}) -> (x_j cos a - x_{j+HD/2} sin a, x_{j+HD/2} cos a + x_j sin a).
 */
export function rope(x: Float32Array, T: number, nHeads: number, HD: number, pos: number[], theta: number): void {
  const half = HD / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < nHeads; h++) {
      const base = (t * nHeads + h) * HD;
      for (let j = 0; j < half; j++) {
        const a = pos[t] * Math.pow(theta, (-2 * j) / HD);
        const c = Math.cos(a);
        const s = Math.sin(a);
        const x1 = x[base + j];
        const x2 = x[base + j + half];
        x[base + j] = x1 * c - x2 * s;
        x[base + j + half] = x2 * c + x1 * s;
      }
    }
  }
}

/**
 * Causal grouped-query attention: query head h reads kv head floor(h / (NH/NKV));
 * out[t, h] = Σ_{s<=t} softmax_s(q_t·k_s / sqrt(HD)) v_s.
 */
export function causalAttention(q: Float32Array, k: Float32Array, v: Float32Array, T: number, NH: number, NKV: number, HD: number): Float32Array {
  const out = new Float32Array(T * NH * HD);
  const group = NH / NKV;
  const scale = 1 / Math.sqrt(HD);
  const p = new Float64Array(T);
  for (let h = 0; h < NH; h++) {
    const g = Math.floor(h / group);
    for (let t = 0; t < T; t++) {
      let max = -Infinity;
      for (let s = 0; s <= t; s++) {
        let d = 0;
        for (let j = 0; j < HD; j++) d += q[(t * NH + h) * HD + j] * k[(s * NKV + g) * HD + j];
        p[s] = d * scale;
        if (p[s] > max) max = p[s];
      }
      let sum = 0;
      for (let s = 0; s <= t; s++) {
        p[s] = Math.exp(p[s] - max);
        sum += p[s];
      }
      for (let j = 0; j < HD; j++) {
        let o = 0;
        for (let s = 0; s <= t; s++) o += p[s] * v[(s * NKV + g) * HD + j];
        out[(t * NH + h) * HD + j] = o / sum;
      }
    }
  }
  return out;
}

/** Logits [T, V] of Qwen2ForCausalLM for `tokens` at positions 0..T-1. */
export function referenceLogits(weights: Weights, config: Qwen2Config, tokens: number[]): Float32Array {
  const { hiddenSize: H, intermediateSize: I, numHeads: NH, numKvHeads: NKV, headDim: HD, vocabSize: V } = config;
  const T = tokens.length;
  if (T === 0) throw new Error("referenceLogits: no tokens");
  for (const id of tokens) {
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`referenceLogits: token id ${id} is outside [0, vocab_size=${V})`);
  }
  const Q = NH * HD;
  const KV = NKV * HD;
  const pos = tokens.map((_, t) => t);

  const E = get(weights, "model.embed_tokens.weight", V * H);
  let x = new Float32Array(T * H); // residual stream [T, H]
  for (let t = 0; t < T; t++) x.set(E.subarray(tokens[t] * H, tokens[t] * H + H), t * H);

  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const w = (n: string, numel: number) => get(weights, p + n, numel);
    // attention block
    const hn = rmsNorm(x, T, H, w("input_layernorm.weight", H), config.rmsNormEps);
    const q = linear(hn, T, H, w("self_attn.q_proj.weight", Q * H), Q, w("self_attn.q_proj.bias", Q)); // [T, NH, HD]
    const k = linear(hn, T, H, w("self_attn.k_proj.weight", KV * H), KV, w("self_attn.k_proj.bias", KV)); // [T, NKV, HD]
    const v = linear(hn, T, H, w("self_attn.v_proj.weight", KV * H), KV, w("self_attn.v_proj.bias", KV)); // [T, NKV, HD]
    rope(q, T, NH, HD, pos, config.ropeTheta);
    rope(k, T, NKV, HD, pos, config.ropeTheta);
    const a = causalAttention(q, k, v, T, NH, NKV, HD); // [T, NH, HD]
    const o = linear(a, T, Q, w("self_attn.o_proj.weight", H * Q), H, null);
    const x1 = new Float32Array(T * H);
    for (let i = 0; i < x1.length; i++) x1[i] = x[i] + o[i];
    // MLP block
    const hm = rmsNorm(x1, T, H, w("post_attention_layernorm.weight", H), config.rmsNormEps);
    const gate = linear(hm, T, H, w("mlp.gate_proj.weight", I * H), I, null);
    const up = linear(hm, T, H, w("mlp.up_proj.weight", I * H), I, null);
    const act = new Float32Array(T * I);
    for (let i = 0; i < act.length; i++) act[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
    const down = linear(act, T, I, w("mlp.down_proj.weight", H * I), H, null);
    const x2 = new Float32Array(T * H);
    for (let i = 0; i < x2.length; i++) x2[i] = x1[i] + down[i];
    x = x2;
  }

  const hf = rmsNorm(x, T, H, get(weights, "model.norm.weight", H), config.rmsNormEps);
  const head = config.tieWordEmbeddings ? E : get(weights, "lm_head.weight", V * H);
  return linear(hf, T, H, head, V, null);
}
