// A tiny random Qwen2 checkpoint in the Hugging Face layout, for tests and
// benchmarks without downloading 3.5 GB: config.json, model.safetensors
// (seeded init like HF's: normal(0, 0.02), norms 1 + noise, nonzero q/k/v
// biases), generation_config.json, and a real byte-level BPE tokenizer
// trained here on a small built-in corpus, with DeepSeek-R1-Distill's special
// tokens and chat template.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { qwen2ConfigJson, type Qwen2Config, type TorchDtype } from "./config.ts";
import { qwen2WeightSpec, writeSafetensors, type WriteDtype, type WriteTensor } from "./safetensors.ts";

/** DeepSeek-R1-Distill-Qwen's chat template (tokenizer_config.json, revision with `<think>\n`). */
export const DEEPSEEK_R1_DISTILL_CHAT_TEMPLATE =
  "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'\\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}";

export const BOS = "<｜begin▁of▁sentence｜>";
export const EOS = "<｜end▁of▁sentence｜>";
export const PAD = "<｜▁pad▁｜>";

/** Added tokens in id order after the BPE vocab (DeepSeek's order); `special` as in DeepSeek's tokenizer.json. */
export const TINY_SPECIAL_TOKENS: readonly { content: string; special: boolean }[] = [
  { content: EOS, special: true },
  { content: "<｜User｜>", special: false },
  { content: "<｜Assistant｜>", special: false },
  { content: BOS, special: true },
  { content: "<think>", special: false },
  { content: "</think>", special: false },
  { content: PAD, special: true },
];

/** Qwen2's pre-tokenizer split (contractions, letters, single digits, punctuation, newlines, spaces). */
export const QWEN2_SPLIT_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/** The same split as a JavaScript RegExp (for training only; the library translates the one above). */
const SPLIT_JS = /'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

/** Built-in training text: plain English and the math/LaTeX the RL prompts use. */
export const TINY_CORPUS = `The quick brown fox jumps over the lazy dog. Let's think step by step and output the final answer within \\boxed{}.
We are given a problem. First, we find the value of x. Then we check the answer. The answer is \\boxed{42}.
If x + y = 10 and x - y = 2, then 2x = 12, so x = 6 and y = 4. Therefore the answer is \\boxed{6}.
Let n be a positive integer. The sum of the first n positive integers is n(n+1)/2. For n = 100 the sum is 5050.
Compute 3 * 4 + 5 = 17. Compute 12 / 4 - 1 = 2. What is 7^2? It is 49. The square root of 144 is 12.
A triangle has sides 3, 4 and 5. It is a right triangle because 3^2 + 4^2 = 9 + 16 = 25 = 5^2. Its area is 6.
The probability of rolling a six with a fair die is 1/6. The probability of two heads in two coin flips is 1/4.
Find all real numbers x such that x^2 - 5x + 6 = 0. We factor: (x - 2)(x - 3) = 0, so x = 2 or x = 3.
<think>
Okay, so I need to solve this problem. Let me think about it carefully. Wait, let me check that again.
Hmm, the equation is linear, so there is exactly one solution. I think the answer is 7.
</think>
The final answer is \\boxed{7}.
In the beginning there was the word, and the word was a number. Numbers are the language of the world.
She said that they would meet at the station at nine o'clock, but the train was late and it was raining.
We don't know what we'll find, but we're sure it's going to be interesting. They've already left; I'm here.
The function f(x) = x^3 - 3x has derivative f'(x) = 3x^2 - 3, which is zero at x = 1 and x = -1.
Let a, b and c be the roots of the polynomial. By Vieta's formulas, a + b + c = 0 and abc = -2.
The greatest common divisor of 48 and 180 is 12, and their least common multiple is 720.
How many ways are there to choose 3 people from a group of 10? The answer is 10 choose 3 = 120.
The integral of 2x from 0 to 3 equals 9. The limit of (1 + 1/n)^n as n goes to infinity is e.
Consider the sequence 1, 1, 2, 3, 5, 8, 13, 21. Each term is the sum of the two terms before it.
Alternatively, we can substitute y = 10 - x into the second equation and simplify. This gives the same result.
Note that the remainder when 2^10 is divided by 7 is 2, since 2^3 = 8 leaves remainder 1 and 2^10 = 2 * (2^3)^3.
Suppose the circle has radius r = 5. Then its circumference is 10\\pi and its area is 25\\pi square units.
The number of positive divisors of 360 = 2^3 * 3^2 * 5 is (3+1)(2+1)(1+1) = 24.
Therefore, the minimum value of the expression is attained when both variables are equal, and it equals 8.
Wait, that doesn't seem right. Let me recompute: 15 * 15 = 225, not 215. So the correct answer is 225.
So, putting it all together, the probability is 3/8, and the expected value of the game is 1.5 dollars.
An arithmetic sequence has first term 3 and common difference 4, so the tenth term is 3 + 9 * 4 = 39.
A geometric series with ratio 1/2 starting at 1 converges to 2. The harmonic series diverges slowly.
$\\frac{1}{2} + \\frac{1}{3} = \\frac{5}{6}$ and $\\sqrt{2} \\approx 1.414$. So the answer is $\\boxed{\\frac{5}{6}}$.
`;

/** GPT-2's reversible byte -> printable character map: printable Latin-1 bytes map to themselves, the rest to U+0100 onwards. */
export function byteToUnicode(): string[] {
  const keep = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(keep(b) ? b : next++);
  return out;
}

/** The 256 byte tokens in GPT-2's order: printable bytes first, then the remapped ones. */
function byteTokenOrder(): string[] {
  const map = byteToUnicode();
  const order: number[] = [];
  for (let b = 0; b < 256; b++) if (map[b].codePointAt(0)! === b) order.push(b);
  for (let b = 0; b < 256; b++) if (map[b].codePointAt(0)! !== b) order.push(b);
  return order.map((b) => map[b]);
}

/**
 * Learn up to `numMerges` BPE merges from `text`: pre-split like Qwen2, map
 * bytes to GPT-2 characters, then repeatedly merge the most frequent adjacent
 * pair (ties: the lexicographically smallest), stopping when no pair occurs twice.
 */
export function trainBpe(text: string, numMerges: number): [string, string][] {
  const map = byteToUnicode();
  const enc = new TextEncoder();
  const counts = new Map<string, number>();
  for (const m of text.matchAll(SPLIT_JS)) counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
  const words = [...counts].map(([w, n]) => ({ syms: [...enc.encode(w)].map((b) => map[b]), n }));
  const merges: [string, string][] = [];
  while (merges.length < numMerges) {
    const pairs = new Map<string, number>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.syms.length; i++) {
        const k = w.syms[i] + "\u0000" + w.syms[i + 1];
        pairs.set(k, (pairs.get(k) ?? 0) + w.n);
      }
    }
    let best = "";
    let bestN = 1;
    for (const [k, n] of pairs) if (n > bestN || (n === bestN && n > 1 && k < best)) [best, bestN] = [k, n];
    if (bestN < 2) break;
    const [a, b] = best.split("\u0000") as [string, string];
    merges.push([a, b]);
    for (const w of words) {
      const s: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          s.push(a + b);
          i++;
        } else s.push(w.syms[i]);
      }
      w.syms = s;
    }
  }
  return merges;
}

export interface TinyTokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  size: number; // ids 0 .. size-1
  bosId: number;
  eosId: number;
  padId: number;
}

/** tokenizer.json + tokenizer_config.json for a byte-level BPE tokenizer trained on TINY_CORPUS. */
export function buildTinyTokenizer(numMerges = 320): TinyTokenizerFiles {
  const merges = trainBpe(TINY_CORPUS, numMerges);
  const vocab: Record<string, number> = {};
  let id = 0;
  for (const t of byteTokenOrder()) vocab[t] = id++;
  for (const [a, b] of merges) {
    if (!(a + b in vocab)) vocab[a + b] = id++;
  }
  const added = TINY_SPECIAL_TOKENS.map((t) => ({
    id: id++,
    content: t.content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: t.special,
  }));
  const idOf = (c: string) => added.find((a) => a.content === c)!.id;
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: "NFC" },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [{ type: "Split", pattern: { Regex: QWEN2_SPLIT_REGEX }, behavior: "Isolated", invert: false }, byteLevel],
    },
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`), // byte-level symbols never contain a space
    },
  };
  const tokenizerConfig = {
    add_bos_token: false,
    add_eos_token: false,
    bos_token: { __type: "AddedToken", content: BOS, lstrip: false, normalized: true, rstrip: false, single_word: false },
    eos_token: { __type: "AddedToken", content: EOS, lstrip: false, normalized: true, rstrip: false, single_word: false },
    pad_token: { __type: "AddedToken", content: PAD, lstrip: false, normalized: true, rstrip: false, single_word: false },
    unk_token: null,
    clean_up_tokenization_spaces: false,
    legacy: true,
    model_max_length: 16384,
    sp_model_kwargs: {},
    tokenizer_class: "LlamaTokenizerFast",
    chat_template: DEEPSEEK_R1_DISTILL_CHAT_TEMPLATE,
  };
  return { tokenizerJson, tokenizerConfig, size: id, bosId: idOf(BOS), eosId: idOf(EOS), padId: idOf(PAD) };
}

export type TinyPreset = "tiny" | "tiny-gqa" | "tiny-mqa" | "tiny-untied";
export type TinyDtype = "f32" | "f16" | "bf16";

type Shape = Pick<Qwen2Config, "hiddenSize" | "intermediateSize" | "numLayers" | "numHeads" | "numKvHeads" | "headDim" | "tieWordEmbeddings">;

/** tiny: GQA 4 query / 2 kv heads, tied; tiny-gqa: 8 / 2 (groups of 4); tiny-mqa: 4 / 1; tiny-untied: tiny with its own lm_head. */
export const TINY_PRESETS: Readonly<Record<TinyPreset, Shape>> = {
  tiny: { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, tieWordEmbeddings: true },
  "tiny-gqa": { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 8, numKvHeads: 2, headDim: 8, tieWordEmbeddings: true },
  "tiny-mqa": { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 1, headDim: 16, tieWordEmbeddings: true },
  "tiny-untied": { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, tieWordEmbeddings: false },
};

const TORCH_DTYPE: Record<TinyDtype, TorchDtype> = { f32: "float32", f16: "float16", bf16: "bfloat16" };
const ST_DTYPE: Record<TinyDtype, WriteDtype> = { f32: "F32", f16: "F16", bf16: "BF16" };

/** Deterministic normal(0, 1) samples: xorshift32 + Box-Muller. */
export function seededNormal(seed: number): () => number {
  let s = (seed >>> 0) ^ 0x9e3779b9 || 1;
  const uniform = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 4294967296; // (0, 1)
  };
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const t = 2 * Math.PI * uniform();
    spare = r * Math.sin(t);
    return r * Math.cos(t);
  };
}

/** HF-like init: weights and biases normal(0, 0.02); RMSNorm weights 1 + normal(0, 0.05). */
export function tinyWeights(config: Qwen2Config, seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const rand = seededNormal(seed);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const { name, shape } of qwen2WeightSpec(config)) {
    const data = new Float32Array(shape.reduce((a, d) => a * d, 1));
    const isNorm = name.endsWith("layernorm.weight") || name === "model.norm.weight";
    for (let i = 0; i < data.length; i++) data[i] = isNorm ? 1 + 0.05 * rand() : 0.02 * rand();
    out.set(name, { shape, data });
  }
  return out;
}

export interface TinyOptions {
  preset?: TinyPreset;
  dtype?: TinyDtype;
  seed?: number;
  /**
   * Padded vocabulary, as Qwen2 checkpoints have: config vocab_size this many
   * rows above the tokenizer's size (the extra embedding / LM-head rows have
   * no token).
   */
  padRows?: number;
  /**
   * Tests: make the model prefer the padded rows (logits ~8 above the real
   * ones), so that a sampler that does not mask them draws them.
   */
  padBias?: boolean;
}

/**
 * Add `rows` padded rows to the embedding and LM head. With `bias`, column 0
 * of every real embedding row is 1 (it dominates the residual stream, so the
 * final RMSNorm's output has h_0 ≈ √H > 0 at every position) and the padded
 * LM-head rows have 2 there while real LM-head rows have 1 (tied) or 0
 * (untied): padded logits are ~√H above the real ones.
 */
export function padVocabulary(config: Qwen2Config, weights: Map<string, { shape: number[]; data: Float32Array }>, rows: number, bias: boolean): Qwen2Config {
  if (!Number.isInteger(rows) || rows < 0) throw new Error(`make-tiny-model: padRows must be an integer >= 0, got ${rows}`);
  const V = config.vocabSize;
  const H = config.hiddenSize;
  const grow = (name: string, real0: number, pad0: number) => {
    const t = weights.get(name)!;
    const data = new Float32Array((V + rows) * H);
    data.set(t.data);
    if (bias) {
      for (let r = 0; r < V; r++) data[r * H] = real0;
      for (let r = V; r < V + rows; r++) data[r * H] = pad0;
    }
    weights.set(name, { shape: [V + rows, H], data });
  };
  grow("model.embed_tokens.weight", 1, 2);
  if (!config.tieWordEmbeddings) grow("lm_head.weight", 0, 2);
  return { ...config, vocabSize: V + rows };
}

/** Write a tiny Qwen2 checkpoint directory; returns its config and the files written. */
export function makeTinyModel(dir: string, opts: TinyOptions = {}): { config: Qwen2Config; files: string[] } {
  const preset = opts.preset ?? "tiny";
  const dtype = opts.dtype ?? "f32";
  const seed = opts.seed ?? 0;
  if (!(preset in TINY_PRESETS)) throw new Error(`make-tiny-model: unknown preset "${preset}" (known: ${Object.keys(TINY_PRESETS).join(", ")})`);
  if (!(dtype in ST_DTYPE)) throw new Error(`make-tiny-model: unknown dtype "${dtype}" (known: f32, f16, bf16)`);
  if (!Number.isInteger(seed)) throw new Error(`make-tiny-model: seed must be an integer, got ${seed}`);
  const tok = buildTinyTokenizer();
  let config: Qwen2Config = {
    ...TINY_PRESETS[preset],
    ropeTheta: 10000,
    rmsNormEps: 1e-6,
    vocabSize: tok.size,
    maxPositions: 4096,
    bosTokenId: tok.bosId,
    eosTokenIds: [tok.eosId],
    torchDtype: TORCH_DTYPE[dtype],
  };
  mkdirSync(dir, { recursive: true });
  const weights = tinyWeights(config, seed);
  if (opts.padRows) config = padVocabulary(config, weights, opts.padRows, opts.padBias ?? false);
  const tensors: Record<string, WriteTensor> = {};
  for (const [name, t] of weights) tensors[name] = { dtype: ST_DTYPE[dtype], shape: t.shape, data: t.data };
  const files = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"].map((f) => join(dir, f));
  const json = (v: unknown) => JSON.stringify(v, null, 2) + "\n";
  writeFileSync(files[0], json(qwen2ConfigJson(config)));
  writeFileSync(files[1], json({ bos_token_id: tok.bosId, eos_token_id: tok.eosId, do_sample: true, temperature: 0.6, top_p: 0.95 }));
  writeFileSync(files[2], json(tok.tokenizerJson));
  writeFileSync(files[3], json(tok.tokenizerConfig));
  writeSafetensors(files[4], tensors, { format: "pt", producer: `siri make-tiny-model --preset ${preset} --dtype ${dtype} --seed ${seed}` });
  return { config, files };
}
