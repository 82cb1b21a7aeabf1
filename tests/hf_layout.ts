// What the serving tools read from a model folder, checked without Python.
// transformers' from_pretrained reads config.json (architectures, model_type,
// torch_dtype), then model.safetensors.index.json's shards when the index is
// there, else the one file named model.safetensors, and refuses a
// safetensors file whose header metadata has a "format" other than pt / tf /
// flax / mlx. vLLM and SGLang read every top-level *.safetensors when there
// is no index (the index's shards when there is), and fall back to *.bin /
// *.pt only when no safetensors exist. A training checkpoint is served as it
// is when what those loaders see is exactly Qwen2ForCausalLM's tensors, each
// once, in one dtype that config.json names.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Qwen2Config } from "../src/model/config.ts";
import { openSafetensors, qwen2WeightSpec } from "../src/model/safetensors.ts";
import { INDEX_FILE, TORCH_DTYPE_OF } from "../src/model/shards.ts";

export interface ServedTensor {
  dtype: string;
  shape: number[];
  bytes: number;
  file: string;
  format: string | undefined;
}

/** The top-level weight files a loader reads: the index's shards, else every *.safetensors (vLLM without an index). */
export function servedFiles(dir: string): string[] {
  const index = join(dir, INDEX_FILE);
  if (existsSync(index)) return [...new Set(Object.values(JSON.parse(readFileSync(index, "utf8")).weight_map as Record<string, string>))];
  return readdirSync(dir).filter((f) => f.endsWith(".safetensors"));
}

/** Every tensor the loader sees, with its file and that file's metadata "format"; a tensor in two files throws. */
export function servedTensors(dir: string): Map<string, ServedTensor> {
  const out = new Map<string, ServedTensor>();
  for (const f of servedFiles(dir)) {
    const r = openSafetensors(join(dir, f));
    try {
      for (const n of r.names()) {
        if (out.has(n)) throw new Error(`${dir}: tensor ${n} in ${out.get(n)!.file} and ${f}`);
        const e = r.entry(n);
        out.set(n, { dtype: e.dtype, shape: e.shape, bytes: e.byteLength, file: f, format: r.metadata.format });
      }
    } finally {
      r.close();
    }
  }
  return out;
}

/**
 * What would stop transformers or vLLM from loading `dir` as the Qwen2 model
 * of configuration `c` (empty: nothing). The training state may sit in a
 * subfolder; nothing at the top level may look like weights but the model's.
 */
export function servingProblems(dir: string, c: Qwen2Config): string[] {
  const problems: string[] = [];
  const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  if (JSON.stringify(cfg.architectures) !== '["Qwen2ForCausalLM"]') problems.push(`config.json architectures ${JSON.stringify(cfg.architectures)}`);
  if (cfg.model_type !== "qwen2") problems.push(`config.json model_type ${JSON.stringify(cfg.model_type)}`);
  const fields: [string, unknown][] = [
    ["vocab_size", c.vocabSize],
    ["hidden_size", c.hiddenSize],
    ["num_hidden_layers", c.numLayers],
    ["num_attention_heads", c.numHeads],
    ["num_key_value_heads", c.numKvHeads],
    ["intermediate_size", c.intermediateSize],
    ["tie_word_embeddings", c.tieWordEmbeddings],
  ];
  for (const [k, v] of fields) if (cfg[k] !== v) problems.push(`config.json ${k} ${JSON.stringify(cfg[k])}, the model has ${JSON.stringify(v)}`);
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) if (!existsSync(join(dir, f))) problems.push(`no ${f}`);
  const top = readdirSync(dir);
  for (const f of top) if (/\.(bin|pt|pth|ckpt)$/.test(f)) problems.push(`top-level ${f} (a loader may read it as weights)`);
  const safetensors = top.filter((f) => f.endsWith(".safetensors")).sort();
  const hasIndex = top.includes(INDEX_FILE);
  const listed = servedFiles(dir).sort();
  if (hasIndex) {
    const idx = JSON.parse(readFileSync(join(dir, INDEX_FILE), "utf8"));
    if (Object.keys(idx).sort().join() !== "metadata,weight_map") problems.push(`index keys ${Object.keys(idx)}`);
    listed.forEach((s, i) => {
      const want = `model-${String(i + 1).padStart(5, "0")}-of-${String(listed.length).padStart(5, "0")}.safetensors`;
      if (s !== want) problems.push(`shard ${s}, transformers names it ${want}`);
    });
    if (safetensors.join() !== listed.join()) problems.push(`top-level .safetensors [${safetensors}] are not the index's shards [${listed}]: a glob loader reads them all`);
  } else if (safetensors.join() !== "model.safetensors") problems.push(`no index, and the top-level .safetensors are [${safetensors}], not [model.safetensors]`);
  let served: Map<string, ServedTensor>;
  try {
    served = servedTensors(dir);
  } catch (e) {
    return [...problems, (e as Error).message];
  }
  const spec = qwen2WeightSpec(c);
  const names = [...served.keys()].sort();
  const want = spec.map((s) => s.name).sort();
  if (names.join() !== want.join()) {
    const extra = names.filter((n) => !want.includes(n));
    const missing = want.filter((n) => !served.has(n));
    problems.push(`served tensors differ from Qwen2ForCausalLM's: extra [${extra.slice(0, 5)}], missing [${missing.slice(0, 5)}]`);
  }
  for (const s of spec) {
    const t = served.get(s.name);
    if (t && t.shape.join() !== s.shape.join()) problems.push(`${s.name} shape [${t.shape}], expected [${s.shape}]`);
  }
  const dtypes = new Set([...served.values()].map((t) => t.dtype));
  if (dtypes.size !== 1) problems.push(`served tensors in ${dtypes.size} dtypes [${[...dtypes]}]`);
  const torch = TORCH_DTYPE_OF[[...dtypes][0] as keyof typeof TORCH_DTYPE_OF];
  if (cfg.torch_dtype !== torch) problems.push(`config.json torch_dtype ${cfg.torch_dtype}, the weights are ${[...dtypes]}`);
  for (const f of new Set([...served.values()].filter((t) => t.format !== "pt").map((t) => `${t.file} (format ${t.format})`))) problems.push(`${f}: transformers refuses metadata without format pt`);
  if (hasIndex) {
    const idx = JSON.parse(readFileSync(join(dir, INDEX_FILE), "utf8"));
    const total = [...served.values()].reduce((a, t) => a + t.bytes, 0);
    if (idx.metadata?.total_size !== total) problems.push(`index total_size ${idx.metadata?.total_size}, the tensors hold ${total} bytes`);
  }
  return problems;
}
