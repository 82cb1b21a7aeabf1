// The CPU reference forward of Qwen2ForCausalLM, checked against properties a
// person can verify by hand: what is left when attention and MLP are zero,
// uniform attention over bias-only values (which also pins GQA's head
// grouping), a hand-worked SwiGLU, RoPE's rotation and relative-position
// invariance, causality, and GQA/MQA = MHA with duplicated kv heads.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QWEN2_1_5B, type Qwen2Config } from "../src/model/config.ts";
import { qwen2WeightSpec } from "../src/model/safetensors.ts";
import { causalAttention, loadReferenceModel, referenceLogits, rope, type Weights } from "../src/model/reference.ts";
import { makeTinyModel, TINY_PRESETS } from "../src/model/tiny.ts";
import { expectClose, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const tmp = mkdtempSync(join(tmpdir(), "siri-reference-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// H 8, NH 4, NKV 2 (HD 2), I 12, V 11.
function cfg(over: Partial<Qwen2Config> = {}): Qwen2Config {
  return {
    ...QWEN2_1_5B,
    hiddenSize: 8,
    intermediateSize: 12,
    numLayers: 1,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 2,
    vocabSize: 11,
    tieWordEmbeddings: true,
    bosTokenId: 0,
    eosTokenIds: [1],
    torchDtype: "float32",
    ...over,
  };
}

/** Random weights (uniform in ±scale, norms 1 ± 0.2), or zeros for names matching `zero`. */
function weights(c: Qwen2Config, seed: number, zero: RegExp | null = null, scale = 0.5): Weights {
  const w: Weights = new Map();
  let s = seed;
  for (const { name, shape } of qwen2WeightSpec(c)) {
    const numel = shape.reduce((a, d) => a * d, 1);
    const isNorm = name.endsWith("norm.weight");
    if (zero && zero.test(name)) w.set(name, new Float32Array(numel));
    else w.set(name, isNorm ? randn(numel, ++s, 0.2).map((x) => 1 + x) : randn(numel, ++s, scale));
  }
  return w;
}

/** x / sqrt(mean(x²) + eps) · g, in f64. */
function norm(x: ArrayLike<number>, g: ArrayLike<number>, eps: number): number[] {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i] * x[i];
  const r = 1 / Math.sqrt(ss / x.length + eps);
  return Array.from(x, (v, i) => v * r * g[i]);
}

/** logits of final hidden rows h[t] against the embedding (tied head). */
function headLogits(rows: number[][], E: Float32Array, V: number, H: number): number[] {
  const out: number[] = [];
  for (const h of rows) for (let v = 0; v < V; v++) out.push(h.reduce((a, x, i) => a + x * E[v * H + i], 0));
  return out;
}

const ATTN_MLP = /self_attn|mlp/;

describe("reference forward: hand-checkable cases", () => {
  test("zero attention and MLP weights: logits = norm(embedding) · Eᵀ", () => {
    const c = cfg();
    const w = weights(c, 10, ATTN_MLP);
    const tokens = [3, 7, 7, 0, 10];
    const E = w.get("model.embed_tokens.weight")!;
    const rows = tokens.map((t) => norm(E.subarray(t * 8, t * 8 + 8), w.get("model.norm.weight")!, c.rmsNormEps));
    const r = TOL.f32_reduction;
    expectClose(referenceLogits(w, c, tokens), headLogits(rows, E, 11, 8), r.atol, r.rtol, "zero-block logits");
  });

  test("bias-only values give uniform attention: head h reads kv head floor(h / (NH/NKV))", () => {
    // q, k weights and biases zero -> all scores 0 -> softmax uniform over s <= t;
    // v weight zero -> every v_s is the bias, so head h outputs bv[kv(h)] exactly.
    for (const numKvHeads of [1, 2, 4]) {
      const c = cfg({ numKvHeads });
      const w = weights(c, 20, /self_attn\.(q_proj|k_proj|v_proj\.weight)|mlp/);
      const bv = w.get("model.layers.0.self_attn.v_proj.bias")!;
      const Wo = w.get("model.layers.0.self_attn.o_proj.weight")!; // [H, NH*HD]
      const E = w.get("model.embed_tokens.weight")!;
      const group = 4 / numKvHeads;
      const a: number[] = []; // [NH*HD]: consecutive query heads share a kv head
      for (let h = 0; h < 4; h++) for (let j = 0; j < 2; j++) a.push(bv[Math.floor(h / group) * 2 + j]);
      const tokens = [5, 2, 9];
      const rows = tokens.map((t) => {
        const x = Array.from(E.subarray(t * 8, t * 8 + 8), (e, i) => e + a.reduce((s, v, k) => s + v * Wo[i * 8 + k], 0));
        return norm(x, w.get("model.norm.weight")!, c.rmsNormEps);
      });
      const r = TOL.f32_reduction;
      expectClose(referenceLogits(w, c, tokens), headLogits(rows, E, 11, 8), r.atol, r.rtol, `uniform attention NKV=${numKvHeads}`);
    }
  });

  test("SwiGLU worked by hand: one gate, one up, one down entry", () => {
    // Attention zero. gate[0] = hm[0], up[0] = 2·hm[1], x[2] += silu(gate[0])·up[0];
    // lm_head = identity (V = H), so logits = norm(x)·g_final.
    const c = cfg({ vocabSize: 8, tieWordEmbeddings: false });
    const w = weights(c, 30, ATTN_MLP);
    const H = 8;
    const I = 12;
    w.get("model.layers.0.mlp.gate_proj.weight")![0 * H + 0] = 1;
    w.get("model.layers.0.mlp.up_proj.weight")![0 * H + 1] = 2;
    w.get("model.layers.0.mlp.down_proj.weight")![2 * I + 0] = 1;
    const lm = new Float32Array(H * H);
    for (let i = 0; i < H; i++) lm[i * H + i] = 1;
    w.set("lm_head.weight", lm);
    const E = w.get("model.embed_tokens.weight")!;
    const tok = 6;
    const e = Array.from(E.subarray(tok * H, tok * H + H));
    const hm = norm(e, w.get("model.layers.0.post_attention_layernorm.weight")!, c.rmsNormEps);
    const silu = hm[0] / (1 + Math.exp(-hm[0]));
    const x = e.slice();
    x[2] += silu * 2 * hm[1];
    const r = TOL.f32_reduction;
    expectClose(referenceLogits(w, c, [tok]), norm(x, w.get("model.norm.weight")!, c.rmsNormEps), r.atol, r.rtol, "SwiGLU");
  });

  test("RoPE: rotate-half by pos·theta^(-2j/HD), and q·k depends only on the position difference", () => {
    const x = new Float32Array([1, 0]);
    rope(x, 1, 1, 2, [1], 10000);
    expectClose(x, [Math.cos(1), Math.sin(1)], 1e-7, 0, "HD 2, pos 1");
    // HD 4, theta 100: pair (0,2) turns by pos·1, pair (1,3) by pos·100^(-1/2) = pos·0.1.
    const y = new Float32Array([1, 2, 3, 4]);
    rope(y, 1, 1, 4, [3], 100);
    const [c0, s0, c1, s1] = [Math.cos(3), Math.sin(3), Math.cos(0.3), Math.sin(0.3)];
    expectClose(y, [1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1], 1e-6, 1e-6, "HD 4, pos 3");
    const q = randn(8, 1);
    const k = randn(8, 2);
    const dot = (m: number, n: number) => {
      const a = q.slice();
      const b = k.slice();
      rope(a, 1, 1, 8, [m], 10000);
      rope(b, 1, 1, 8, [n], 10000);
      return a.reduce((s, v, i) => s + v * b[i], 0);
    };
    expectClose([dot(5, 2), dot(105, 102)], [dot(9, 6), dot(9, 6)], 1e-5, 1e-4, "relative position");
    expect(Math.abs(dot(5, 2) - dot(5, 3))).toBeGreaterThan(1e-3); // but it does depend on the difference
  });

  test("attention of one token returns its value; huge scores stay finite", () => {
    const v = randn(2 * 3, 4);
    const out = causalAttention(randn(4 * 3, 5), randn(2 * 3, 6), v, 1, 4, 2, 3);
    expectClose(out, [...v.subarray(0, 3), ...v.subarray(0, 3), ...v.subarray(3, 6), ...v.subarray(3, 6)], 0, 0, "T=1");
    const c = cfg({ numLayers: 2 });
    const w = weights(c, 40, null, 30); // scores in the thousands
    const logits = referenceLogits(w, c, [1, 2, 3, 4, 5, 6]);
    expect(logits.every(Number.isFinite)).toBe(true);
  });
});

describe("reference forward: structural properties", () => {
  test("causality: logits at t do not change when later tokens change", () => {
    const c = cfg({ numLayers: 2 });
    const w = weights(c, 50);
    const a = referenceLogits(w, c, [3, 1, 4, 1, 5]);
    const b = referenceLogits(w, c, [3, 1, 4, 9, 2]);
    expectClose(a.subarray(0, 3 * 11), b.subarray(0, 3 * 11), 0, 0, "prefix rows");
    let diff = 0;
    for (let i = 3 * 11; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i] - b[i]));
    expect(diff).toBeGreaterThan(1e-3);
    // and the earlier tokens do matter to later rows
    const d = referenceLogits(w, c, [8, 1, 4, 1, 5]);
    expect(Math.abs(d[4 * 11] - a[4 * 11])).toBeGreaterThan(1e-5);
  });

  test("GQA and MQA equal MHA with each kv head duplicated for its query heads", () => {
    for (const numKvHeads of [2, 1]) {
      const g = cfg({ numLayers: 2, numKvHeads });
      const m = cfg({ numLayers: 2, numKvHeads: 4 });
      const wg = weights(g, 60);
      const wm: Weights = new Map(wg);
      const group = 4 / numKvHeads;
      for (let l = 0; l < 2; l++) {
        for (const p of ["k_proj", "v_proj"]) {
          const W = wg.get(`model.layers.${l}.self_attn.${p}.weight`)!; // [NKV*2, 8]
          const b = wg.get(`model.layers.${l}.self_attn.${p}.bias`)!;
          const W4 = new Float32Array(4 * 2 * 8);
          const b4 = new Float32Array(4 * 2);
          for (let h = 0; h < 4; h++) {
            const kv = Math.floor(h / group);
            W4.set(W.subarray(kv * 16, kv * 16 + 16), h * 16);
            b4.set(b.subarray(kv * 2, kv * 2 + 2), h * 2);
          }
          wm.set(`model.layers.${l}.self_attn.${p}.weight`, W4);
          wm.set(`model.layers.${l}.self_attn.${p}.bias`, b4);
        }
      }
      const tokens = [2, 7, 1, 8, 2, 8];
      expectClose(referenceLogits(wg, g, tokens), referenceLogits(wm, m, tokens), 0, 0, `NKV=${numKvHeads} vs MHA`);
    }
  });

  test("a tied checkpoint equals the untied model whose lm_head is the embedding", () => {
    const dir = join(tmp, "tied");
    makeTinyModel(dir, { preset: "tiny", seed: 3 });
    const { config, weights: w } = loadReferenceModel(dir);
    const untied: Weights = new Map(w);
    untied.set("lm_head.weight", w.get("model.embed_tokens.weight")!);
    const tokens = [1, 50, 300, 7];
    const a = referenceLogits(w, config, tokens);
    expect(a.length).toBe(tokens.length * config.vocabSize);
    expectClose(a, referenceLogits(untied, { ...config, tieWordEmbeddings: false }, tokens), 0, 0, "tied vs untied");
  });

  test("every tiny preset loads and runs; f16 weights give the f32 logits to f16 accuracy", () => {
    const tokens = [3, 30, 300, 100, 5];
    for (const preset of Object.keys(TINY_PRESETS) as (keyof typeof TINY_PRESETS)[]) {
      const d32 = join(tmp, `${preset}-f32`);
      const d16 = join(tmp, `${preset}-f16`);
      makeTinyModel(d32, { preset, seed: 9 });
      makeTinyModel(d16, { preset, seed: 9, dtype: "f16" });
      const m32 = loadReferenceModel(d32);
      const m16 = loadReferenceModel(d16);
      const a = referenceLogits(m32.weights, m32.config, tokens);
      expect(a.every(Number.isFinite)).toBe(true);
      const t = TOL.f16_matmul;
      expectClose(referenceLogits(m16.weights, m16.config, tokens), a, t.atol, t.rtol, `${preset} f16 vs f32 weights`);
    }
  });

  test("bad tokens and missing weights are clear errors", () => {
    const c = cfg();
    const w = weights(c, 70);
    expect(() => referenceLogits(w, c, [11])).toThrow("token id 11 is outside [0, vocab_size=11)");
    expect(() => referenceLogits(w, c, [])).toThrow("no tokens");
    w.delete("model.layers.0.mlp.up_proj.weight");
    expect(() => referenceLogits(w, c, [1])).toThrow('missing weight "model.layers.0.mlp.up_proj.weight"');
    expect(() => referenceLogits(weights(c, 1), { ...c, tieWordEmbeddings: false }, [1])).toThrow('missing weight "lm_head.weight"');
  });
});
