// The real model's shapes for the real-shape tier: Qwen2.5-0.5B's published
// configuration, and a random checkpoint in any Qwen2 configuration written
// tensor by tensor (bf16, as the models ship) beside the R1-Distill-style
// tokenizer fixture, so the padded vocabulary (151936 rows over 151,665 ids)
// is the real one. Used by `npm run test:scale` (tests/scale/qwen_0_5b.ts),
// the suite's bounded part (tests/scale/real_vocab.test.ts) and the 1.5B
// measurements (tests/scale/write_model.ts).
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { qwen2ConfigJson, type Qwen2Config } from "../../src/model/config.ts";
import { qwen2WeightSpec } from "../../src/model/safetensors.ts";
import { writeModelWeights } from "../../src/model/shards.ts";
import { loadTokenizer } from "../../src/model/tokenizer.ts";
import { writeR1Tokenizer } from "../fixtures/r1_tokenizer.ts";

/** Qwen2.5-0.5B's config.json (Qwen/Qwen2.5-0.5B), as published. */
export const QWEN25_0_5B: Qwen2Config = {
  hiddenSize: 896,
  intermediateSize: 4864,
  numLayers: 24,
  numHeads: 14,
  numKvHeads: 2,
  headDim: 64,
  ropeTheta: 1000000,
  rmsNormEps: 1e-6,
  tieWordEmbeddings: true,
  vocabSize: 151936,
  maxPositions: 32768,
  bosTokenId: 151643,
  eosTokenIds: [151643],
  torchDtype: "bfloat16",
};

/** The R1-Distill tokenizer fixture's id count: rows at and above it are padding. */
export const R1_TOKENIZER_IDS = 151665;

/** The peak resident set of a process so far (VmHWM), bytes; 0 when /proc cannot tell. */
export function peakRss(pid: number | "self" = "self"): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * A random tensor with the spread of HF's init (std 0.02; norms 1 ± 0.05),
 * seeded by its index: uniform values from xorshift32 (a normal draw per
 * element would take minutes at 494M parameters). The embedding is biased
 * toward the padded rows (column 0 is 1 for real ids, 2 for padded ones, as
 * makeTinyModel's padBias does, with the final norm's weight 0 raised to 20
 * so that the random layers do not wash it out), so a sampler that did not
 * mask them would draw them.
 */
function randomTensor(c: Qwen2Config, limit: number, name: string, shape: number[], index: number): Float32Array {
  const data = new Float32Array(shape.reduce((a, d) => a * d, 1));
  const isNorm = name.endsWith("layernorm.weight") || name === "model.norm.weight";
  const [base, std] = isNorm ? [1, 0.05] : [0, 0.02];
  const scale = (2 * Math.sqrt(3) * std) / 4294967296; // uniform on ±√3·std has standard deviation std
  let x = (0x9e3779b9 ^ (index * 2654435761)) >>> 0 || 1;
  for (let i = 0; i < data.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    data[i] = base + ((x >>> 0) - 2147483648) * scale;
  }
  if (name === "model.embed_tokens.weight" || name === "lm_head.weight") for (let r = 0; r < c.vocabSize; r++) data[r * c.hiddenSize] = r < limit ? 1 : 2;
  // The final norm scales h_0 up (~20·x_0/rms): a padded row's logit exceeds a real one's by h_0.
  if (name === "model.norm.weight") data[0] = 20;
  return data;
}

/**
 * Write a random checkpoint of configuration `c` into `dir` (bf16, one
 * tensor at a time, shards of <= 5 GB with an index as save_pretrained
 * does) with the R1-Distill tokenizer; returns the bytes of the weights.
 */
export async function writeRandomCheckpoint(dir: string, c: Qwen2Config): Promise<number> {
  writeR1Tokenizer(dir);
  const limit = loadTokenizer(dir).size;
  if (limit !== R1_TOKENIZER_IDS) throw new Error(`tokenizer fixture in ${dir}: ${limit} ids, expected ${R1_TOKENIZER_IDS}`);
  writeFileSync(join(dir, "config.json"), JSON.stringify(qwen2ConfigJson(c), null, 2) + "\n");
  const specs = qwen2WeightSpec(c);
  const index = new Map(specs.map((s, i) => [s.name, i]));
  await writeModelWeights(dir, specs, (n) => randomTensor(c, limit, n, specs[index.get(n)!].shape, index.get(n)!), { dtype: "BF16" });
  return readdirSync(dir)
    .filter((f) => f.endsWith(".safetensors"))
    .reduce((a, f) => a + Bun.file(join(dir, f)).size, 0);
}
