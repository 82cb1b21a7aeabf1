/**
 * How big an engine is: the one sizing rule used by training (rollouts and
 * validation share one engine per run), the bench, `siri generate` and the
 * generation benchmark.
 *
 * A slot holds the longest prompt plus the most new tokens, rounded up to
 * whole blocks; the KV cache holds `maxBatch` such sequences unless told
 * otherwise, capped by the adapter's largest storage binding (one layer's K
 * is one buffer). Blocks are reserved per request (prompt + its own budget),
 * so shorter requests leave room for more to run at once.
 */
import type { Qwen2Config } from "../model/config.ts";
import type { EngineOptions } from "./generate.ts";
import { elementBytes, type DType } from "./model.ts";

export const BLOCK_SIZE = 16;

export interface EngineSizing {
  /** Most sequences decoding at once. */
  maxBatch: number;
  /** The longest prompt the engine must take, in tokens. */
  promptTokens: number;
  /** The most new tokens a request may ask for (the schedule's largest cap, the validation budget). */
  newTokens: number;
  /** KV cache size in tokens (default: maxBatch full slots, capped by the binding limit). */
  cacheTokens?: number;
  /** Most prompt tokens in one prefill forward (default 512). */
  prefillChunk?: number;
  /** Ids the tokenizer knows (padded vocabularies: the sampler never draws above it). Required, as in EngineOptions. */
  vocabLimit: number;
  /** Who asks, for error messages ("rollouts", "bench", ...). */
  what: string;
}

export function sizeEngine(c: Qwen2Config, dtype: DType, maxBindingBytes: number, s: EngineSizing): EngineOptions {
  const bs = BLOCK_SIZE;
  const need = s.promptTokens + s.newTokens;
  if (need > c.maxPositions) {
    throw new Error(`${s.what}: prompt ${s.promptTokens} + ${s.newTokens} new tokens = ${need} exceeds the model's ${c.maxPositions} positions; lower the cap or the prompt`);
  }
  const maxSeqLen = Math.min(Math.ceil(need / bs) * bs, c.maxPositions);
  const maxBatch = Math.max(1, Math.floor(s.maxBatch));
  const perToken = c.numKvHeads * c.headDim * elementBytes(dtype);
  const bindingTokens = Math.floor(maxBindingBytes / perToken / bs) * bs;
  const cacheTokens = s.cacheTokens ?? Math.min(maxBatch * maxSeqLen, bindingTokens);
  if (cacheTokens < need) {
    throw new Error(
      `${s.what}: a KV cache of ${cacheTokens} tokens cannot hold one sequence of ${need} (longest prompt + new tokens)` +
        (s.cacheTokens === undefined ? ` (the adapter's max storage binding allows ${bindingTokens} tokens per layer)` : "") +
        "; lower the cap or raise the cache size",
    );
  }
  return { maxBatch, maxSeqLen, cacheTokens, blockSize: bs, prefillChunk: s.prefillChunk ?? 512, vocabLimit: s.vocabLimit };
}
