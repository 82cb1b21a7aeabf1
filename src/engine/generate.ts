/**
 * Batched generation with continuous batching over the paged KV cache.
 *
 * Requests wait in a queue; whenever a slot and enough cache blocks for a
 * request's whole budget (prompt + max new tokens) are free, it is admitted
 * and its prompt is prefilled (in chunks of at most `prefillChunk` tokens,
 * several prompts packed together). Every running sequence then decodes one
 * token per step in one batched forward. A sequence that samples a stop
 * token or reaches its budget is yielded at once and its slot and blocks go
 * back to the pool for the next waiting request.
 */
import { yieldToEventLoop, type Gpu } from "../gpu/index.ts";
import { loadSampler } from "../kernels/sample.ts";
import { KvCache } from "./kv_cache.ts";
import { createWorkspace, elementBytes, type Qwen2Gpu, type Workspace } from "./model.ts";

export interface GenRequest {
  id: number | string;
  prompt: number[];
  /** Most new tokens to generate (SIRI's rollout cap). */
  maxTokens: number;
  /** Token ids that end the sequence (included in the output). */
  stop: number[];
}

export interface Completion {
  id: number | string;
  prompt: number[];
  tokens: number[];
  /** Log-probability of each sampled token under softmax(logits / temperature). */
  logprobs: number[];
  stopReason: "stop" | "length";
}

export interface SamplingOptions {
  temperature: number; // 0 = greedy
  topP: number; // 1 = off
  topK: number; // 0 = off
  seed: number;
}

export interface EngineOptions {
  /** Most sequences decoding at once. */
  maxBatch: number;
  /** Longest prompt + completion a sequence may have. */
  maxSeqLen: number;
  /** KV cache size in tokens (all sequences together). */
  cacheTokens: number;
  blockSize: number;
  /** Most prompt tokens in one prefill forward. */
  prefillChunk: number;
  /**
   * Ids the tokenizer knows (its size): rows of a padded vocabulary at or
   * above it are masked in the sampler, so they are never drawn. Default:
   * the config's vocab_size (no padding).
   */
  vocabLimit?: number;
}

interface Running {
  req: GenRequest;
  slot: number;
  pos: number; // tokens already in the cache
  tokens: number[];
  logprobs: number[];
  next: number; // the token to feed next
}

export class Engine {
  readonly cache: KvCache;
  private readonly ws: Workspace;
  private step = 0;

  private constructor(
    readonly model: Qwen2Gpu,
    readonly opts: EngineOptions,
    private readonly sampler: Awaited<ReturnType<typeof loadSampler>>,
    private readonly tokOut: GPUBuffer,
    private readonly lpOut: GPUBuffer,
  ) {
    const c = model.config;
    this.cache = new KvCache(model.gpu, {
      numLayers: c.numLayers,
      nKv: c.numKvHeads,
      headDim: c.headDim,
      blockSize: opts.blockSize,
      numBlocks: Math.ceil(opts.cacheTokens / opts.blockSize),
      maxSeqs: opts.maxBatch,
      maxSeqLen: opts.maxSeqLen,
      bytesPerElement: elementBytes(model.dtype),
    });
    const capacity = Math.max(opts.prefillChunk, opts.maxBatch);
    this.ws = createWorkspace(model.gpu, c, model.dtype, capacity, opts.maxBatch);
  }

  static async create(model: Qwen2Gpu, opts: EngineOptions): Promise<Engine> {
    const gpu: Gpu = model.gpu;
    const sampler = await loadSampler(gpu);
    return new Engine(model, opts, sampler, gpu.buffer(opts.maxBatch * 4, "sample.tokens"), gpu.buffer(opts.maxBatch * 4, "sample.logp"));
  }

  /** Stream completions as they finish (not in request order). */
  async *generate(requests: Iterable<GenRequest>, sampling: SamplingOptions): AsyncGenerator<Completion> {
    const waiting = [...requests];
    for (const r of waiting) this.validate(r);
    const running: Running[] = [];
    while (waiting.length || running.length) {
      await yieldToEventLoop(); // let signal handlers and timers run between steps
      // Admit as many waiting requests as fit, in order.
      const admitted: Running[] = [];
      while (waiting.length && this.cache.canAdmit(waiting[0].prompt.length + waiting[0].maxTokens)) {
        const req = waiting.shift()!;
        const slot = this.cache.admit(req.prompt.length + req.maxTokens);
        admitted.push({ req, slot, pos: 0, tokens: [], logprobs: [], next: -1 });
      }
      if (!admitted.length && !running.length) {
        throw new Error(`request ${waiting[0].id} (${waiting[0].prompt.length} + ${waiting[0].maxTokens} tokens) can never fit the KV cache`);
      }
      if (admitted.length) {
        await this.prefill(admitted, sampling);
        running.push(...admitted);
      } else {
        await this.decode(running, sampling);
      }
      // Retire finished sequences.
      for (let i = running.length - 1; i >= 0; i--) {
        const r = running[i];
        const last = r.tokens[r.tokens.length - 1];
        const stopped = r.tokens.length > 0 && r.req.stop.includes(last);
        if (stopped || r.tokens.length >= r.req.maxTokens) {
          running.splice(i, 1);
          this.cache.release(r.slot);
          yield {
            id: r.req.id,
            prompt: r.req.prompt,
            tokens: r.tokens,
            logprobs: r.logprobs,
            stopReason: stopped ? "stop" : "length",
          };
        }
      }
    }
  }

  private validate(r: GenRequest): void {
    const V = this.model.config.vocabSize;
    if (!r.prompt.length) throw new Error(`request ${r.id}: empty prompt`);
    r.prompt.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0 || t >= V) throw new Error(`request ${r.id}: prompt token ${i} = ${t} is outside the vocabulary 0..${V - 1}`);
    });
    if (!(r.maxTokens >= 1)) throw new Error(`request ${r.id}: maxTokens must be >= 1, got ${r.maxTokens}`);
    if (r.prompt.length + r.maxTokens > this.opts.maxSeqLen) {
      throw new Error(`request ${r.id}: prompt ${r.prompt.length} + max tokens ${r.maxTokens} exceeds max sequence length ${this.opts.maxSeqLen}`);
    }
  }

  /** Prefill the admitted prompts in chunks, then sample each one's first token. */
  private async prefill(seqs: Running[], sampling: SamplingOptions): Promise<void> {
    const chunk = this.opts.prefillChunk;
    // Pack prompt tokens of all sequences; a sequence may span chunks.
    const all: { seq: Running; pos: number }[] = [];
    for (const s of seqs) for (let p = 0; p < s.req.prompt.length; p++) all.push({ seq: s, pos: p });
    for (let start = 0; start < all.length; start += chunk) {
      const part = all.slice(start, start + chunk);
      const T = part.length;
      const tokens = new Uint32Array(T);
      const tokSeq = new Uint32Array(T);
      const tokPos = new Uint32Array(T);
      const rows: number[] = [];
      const rowSeqs: Running[] = [];
      part.forEach(({ seq, pos }, i) => {
        tokens[i] = seq.req.prompt[pos];
        tokSeq[i] = seq.slot;
        tokPos[i] = pos;
        if (pos === seq.req.prompt.length - 1) {
          rows.push(i);
          rowSeqs.push(seq);
        }
      });
      await this.forwardAndSample(tokens, tokSeq, tokPos, rows, rowSeqs, "prefill", sampling);
    }
    for (const s of seqs) s.pos = s.req.prompt.length;
  }

  private async decode(seqs: Running[], sampling: SamplingOptions): Promise<void> {
    const T = seqs.length;
    const tokens = new Uint32Array(seqs.map((s) => s.next));
    const tokSeq = new Uint32Array(seqs.map((s) => s.slot));
    const tokPos = new Uint32Array(seqs.map((s) => s.pos));
    await this.forwardAndSample(tokens, tokSeq, tokPos, seqs.map((_, i) => i), seqs, "decode", sampling);
    for (const s of seqs) s.pos++;
  }

  private async forwardAndSample(
    tokens: Uint32Array,
    tokSeq: Uint32Array,
    tokPos: Uint32Array,
    rows: number[],
    rowSeqs: Running[],
    mode: "prefill" | "decode",
    sampling: SamplingOptions,
  ): Promise<void> {
    const gpu = this.model.gpu;
    const ws = this.ws;
    const T = tokens.length;
    const R = rows.length;
    this.cache.sync();
    gpu.write(ws.tokens, tokens);
    gpu.write(ws.tokSeq, tokSeq);
    gpu.write(ws.tokPos, tokPos);
    if (R) gpu.write(ws.rowIdx, new Uint32Array(rows));
    const b = gpu.batch();
    this.model.recordForward(b, ws, this.cache, T, R, mode);
    if (R) {
      this.sampler.sample(b, ws.logits, this.tokOut, this.lpOut, R, this.model.config.vocabSize, {
        temperature: sampling.temperature,
        topK: sampling.topK,
        topP: sampling.topP,
        seed: sampling.seed,
        step: this.step,
        vocabLimit: this.opts.vocabLimit,
      });
    }
    b.submit();
    this.step++;
    if (!R) return;
    // Rows are sampled with the row index as the RNG stream; the step counter
    // makes every forward's draws fresh.
    const [tok, lp] = await Promise.all([gpu.readU32(this.tokOut, R), gpu.readF32(this.lpOut, R)]);
    rowSeqs.forEach((s, i) => {
      s.tokens.push(tok[i]);
      s.logprobs.push(lp[i]);
      s.next = tok[i];
    });
  }

  destroy(): void {
    this.cache.destroy();
    this.tokOut.destroy();
    this.lpOut.destroy();
  }
}
