#!/usr/bin/env bun
/**
 * Logits of a checkpoint for scripts/gpu_check_hf.py to compare with
 * Hugging Face transformers: `bun scripts/gpu_check_logits.ts --model DIR
 * --out DIR [--tokens N]`. Runs one deterministic token sequence through the
 * engine in f32 and, where the adapter has shader-f16, in f16, and writes
 * `tokens.json` and `logits_<dtype>.bin` ([T, V] little-endian f32) to --out.
 * Last stdout line: one JSON object naming the files.
 */
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadModel, sequenceLogits } from "../src/engine/load.ts";
import { Gpu } from "../src/gpu/index.ts";
import type { DType } from "../src/engine/model.ts";

const { values } = parseArgs({ options: { model: { type: "string" }, out: { type: "string" }, tokens: { type: "string", default: "32" } } });
if (!values.model || !values.out) throw new Error("gpu_check_logits: give --model DIR and --out DIR");
const T = Number(values.tokens);
if (!Number.isInteger(T) || T < 1) throw new Error(`gpu_check_logits: --tokens must be a positive integer, got "${values.tokens}"`);
mkdirSync(values.out, { recursive: true });

/** Write atomically: a temp file renamed into place. */
function save(name: string, data: string | Uint8Array): string {
  const path = join(values.out!, name);
  writeFileSync(`${path}.tmp`, data);
  renameSync(`${path}.tmp`, path);
  return path;
}

const gpu = await Gpu.open();
const dtypes: DType[] = gpu.features.f16 ? ["f32", "f16"] : ["f32"];
const result: Record<string, unknown> = { adapter: gpu.adapter.description, tokens: T, files: {} as Record<string, string> };
let tokens: number[] = [];
for (const dtype of dtypes) {
  const m = await loadModel(gpu, values.model, dtype);
  const V = m.config.vocabSize;
  // Spread over the vocabulary (a stride coprime to most V) so every embedding chunk is read.
  tokens = Array.from({ length: T }, (_, i) => (i * 7919 + 11) % V);
  const logits = await sequenceLogits(m.model, tokens);
  (result.files as Record<string, string>)[dtype] = save(`logits_${dtype}.bin`, new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength));
  result.vocab = V;
  m.model.destroy();
}
save("tokens.json", JSON.stringify(tokens));
console.log(JSON.stringify(result));
gpu.destroy();
