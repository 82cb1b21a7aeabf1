/**
 * Batched generation with continuous batching over the paged KV cache.
 *
 * Requests wait in a queue; whenever a slot and enough cache blocks for a
 * request's whole budget (prompt + max new tokens) are free, it is admitted
 * and its prompt is prefilled (in chunks of at most `prefillChunk` tokens,
 * several prompts packed together). Every running sequence then decodes one
 * token per step in one batched forward. Decoding stays on the GPU: the
 * sampled token feeds the next step on the device (kernels/decode.wgsl checks
 * stop tokens and budgets there), and the CPU reads back once per window of
 * up to `syncEvery` steps, a window ending early when a sequence reaches its
 * budget. A finished sequence is yielded at the end of its window and its
 * slot and blocks go back to the pool for the next waiting request; one that
 * stopped inside a window idles (frozen) until the window ends.
 *
 * A completion depends only on its request (prompt, budget, stop tokens,
 * random stream key), the sampling options and the engine's fixed numerics
 * (the flash-decoding chunk length and the LM head's matmul path, both set
 * when the engine is made): not on which other requests share its batch,
 * the order they come in, or the slot and cache blocks it gets. So one
 * engine serves a whole run, reset between rounds.
 */
import { yieldToEventLoop, type Gpu } from "../gpu/index.ts";
import { hashString } from "../util/random.ts";
import { DECODE_STATE, MAX_STOP, rowState } from "../kernels/decode.ts";
import { loadSampler, type NextEmbedding } from "../kernels/sample.ts";
import { KvCache } from "./kv_cache.ts";
import { createWorkspace, elementBytes, type ForwardNumerics, type Qwen2Gpu, type Workspace } from "./model.ts";

export interface GenRequest {
  id: number | string;
  prompt: number[];
  /** Most new tokens to generate (SIRI's rollout cap). */
  maxTokens: number;
  /** Token ids that end the sequence (included in the output). */
  stop: number[];
  /**
   * The request's random stream (u32): its n-th token is drawn from (seed,
   * key, n). Default: a numeric id itself, else a hash of the id. Requests
   * that should draw differently need different keys.
   */
  key?: number;
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
  /** Keys per flash-decoding chunk (a multiple of the decode tile; default DECODE_CHUNK). */
  decodeChunk?: number;
  /** Most decode steps between two readbacks (default DECODE_WINDOW). */
  syncEvery?: number;
  /**
   * Submit the next decode window before reading the current one back when
   * no request waits for a slot (default true; see Engine.decode). Off: one
   * window at a time. The completions are the same either way.
   */
  runAhead?: boolean;
  /**
   * Ids the tokenizer knows (its size, `vocabLimit()` in model/tokenizer.ts):
   * rows of a padded vocabulary at or above it are masked in the sampler, so
   * they are never drawn. Required, so no caller can forget it: a model
   * without padding passes its config's vocab_size.
   */
  vocabLimit: number;
}

/**
 * The fixed flash-decoding chunk: a sequence's attention sums its keys in
 * chunks of this many, whatever the cache's capacity or the batch.
 */
export const DECODE_CHUNK = 256;

/**
 * Decode steps per readback: a window costs one GPU -> CPU wait; a sequence
 * that stops inside it idles for the rest of it, and new requests wait for
 * its end to be admitted.
 */
export const DECODE_WINDOW = 8;

/** What one `generate` call did (for metrics and the benchmark). */
export interface GenerateStats {
  /** Decode forwards (one token for every running sequence). */
  decodeSteps: number;
  /** Sum over decode steps of the sequences still generating. */
  decodeRows: number;
  /** GPU -> CPU readbacks (each one wait for the GPU: one per prefill chunk that samples, one per decode window). */
  readbacks: number;
  /** Tokens generated. */
  tokens: number;
  /** Decode windows submitted before the previous one was read back (opts.runAhead). */
  windowsAhead: number;
  /** Most sequences decoding at once (the engine's maxBatch). */
  maxBatch: number;
}

/** Mean running sequences per decode step over the most that fit (0 with no decode step). */
export function occupancy(s: Pick<GenerateStats, "decodeSteps" | "decodeRows" | "maxBatch">): number {
  return s.decodeSteps ? s.decodeRows / s.decodeSteps / s.maxBatch : 0;
}

function streamKey(r: GenRequest): number {
  if (r.key !== undefined) return r.key;
  return typeof r.id === "number" && Number.isInteger(r.id) && r.id >= 0 && r.id <= 0xffffffff ? r.id : hashString(String(r.id));
}

/** A decode window submitted to the GPU: its rows, its steps, its pending readback. */
interface DecodeWindow {
  seqs: Running[];
  k: number;
  read: Promise<Uint32Array>;
}

interface Running {
  req: GenRequest;
  slot: number;
  pos: number; // tokens already in the cache
  tokens: number[];
  logprobs: number[];
  next: number; // the token to feed next
  key: number; // the random stream
  stop: number[]; // the request's stop ids, without repeats
}

export class Engine {
  readonly cache: KvCache;
  private readonly ws: Workspace;
  private readonly numerics: ForwardNumerics;
  /** The last `generate` call's counts. */
  stats: GenerateStats;
  /** Most decode steps per window (opts.syncEvery). */
  private readonly window: number;
  /** A decode window submitted before the previous one was read (see decode). */
  private ahead: DecodeWindow | null = null;
  /** Where the decode sampler writes the next step's input embeddings (the embedding in one binding), else undefined: a gather per step. */
  private readonly nextEmbed: NextEmbedding | undefined;

  private constructor(
    readonly model: Qwen2Gpu,
    readonly opts: EngineOptions,
    private readonly sampler: Awaited<ReturnType<typeof loadSampler>>,
    private readonly tokOut: GPUBuffer,
    private readonly lpOut: GPUBuffer,
    private readonly streams: GPUBuffer,
    private readonly dec: GPUBuffer,
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
    // Constants for the engine's life: the LM head's path follows maxBatch, not the rows of a step.
    this.numerics = { decodeChunk: opts.decodeChunk ?? DECODE_CHUNK, logitsPath: opts.maxBatch <= 32 ? "decode" : "prefill" };
    this.stats = { decodeSteps: 0, decodeRows: 0, readbacks: 0, tokens: 0, windowsAhead: 0, maxBatch: opts.maxBatch };
    this.window = opts.syncEvery ?? DECODE_WINDOW;
    const embed = model.weights.embed.chunks;
    this.nextEmbed = embed.length === 1 ? { table: embed[0].buffer, x: this.ws.x, H: c.hiddenSize } : undefined;
  }

  static async create(model: Qwen2Gpu, opts: EngineOptions): Promise<Engine> {
    const gpu: Gpu = model.gpu;
    const window = opts.syncEvery ?? DECODE_WINDOW;
    if (!Number.isInteger(window) || window < 1) throw new Error(`engine: syncEvery must be an integer >= 1, got ${opts.syncEvery}`);
    // decode: the sampler with each row's decode advance in the same dispatch (kernels/sample.wgsl),
    // and the next step's input embeddings where the embedding is one binding.
    const sampler = await loadSampler(gpu, model.weights.embed.chunks.length === 1 ? { gather: model.dtype } : { decode: true });
    const B = opts.maxBatch;
    return new Engine(model, opts, sampler, gpu.buffer(B * 4, "sample.tokens"), gpu.buffer(B * 4, "sample.logp"), gpu.buffer(B * 8, "sample.streams"), gpu.buffer(4 * B * (DECODE_STATE + 2 * window), "decode.state"));
  }

  /** Stream completions as they finish (not in request order). Starts from an empty cache. */
  async *generate(requests: Iterable<GenRequest>, sampling: SamplingOptions): AsyncGenerator<Completion> {
    const waiting = [...requests];
    for (const r of waiting) this.validate(r);
    await this.drain(); // a window an abandoned call left in flight
    try {
      yield* this.run(waiting, sampling);
    } finally {
      await this.drain();
    }
  }

  private async *run(waiting: GenRequest[], sampling: SamplingOptions): AsyncGenerator<Completion> {
    this.cache.reset();
    this.stats = { decodeSteps: 0, decodeRows: 0, readbacks: 0, tokens: 0, windowsAhead: 0, maxBatch: this.opts.maxBatch };
    const running: Running[] = [];
    while (waiting.length || running.length) {
      await yieldToEventLoop(); // let signal handlers and timers run between steps
      // Admit as many waiting requests as fit, in order.
      const admitted: Running[] = [];
      while (waiting.length && this.cache.canAdmit(waiting[0].prompt.length + waiting[0].maxTokens)) {
        const req = waiting.shift()!;
        const slot = this.cache.admit(req.prompt.length + req.maxTokens);
        admitted.push({ req, slot, pos: 0, tokens: [], logprobs: [], next: -1, key: streamKey(req), stop: [...new Set(req.stop)] });
      }
      if (!admitted.length && !running.length) {
        throw new Error(`request ${waiting[0].id} (${waiting[0].prompt.length} + ${waiting[0].maxTokens} tokens) can never fit the KV cache`);
      }
      if (admitted.length) {
        await this.prefill(admitted, sampling);
        running.push(...admitted);
      } else {
        await this.decode(running, sampling, waiting.length === 0 && this.opts.runAhead !== false);
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

  /** Throws, naming the request, if this engine cannot serve it (generate checks every request first). */
  validate(r: GenRequest): void {
    const V = this.model.config.vocabSize;
    if (!r.prompt.length) throw new Error(`request ${r.id}: empty prompt`);
    r.prompt.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0 || t >= V) throw new Error(`request ${r.id}: prompt token ${i} = ${t} is outside the vocabulary 0..${V - 1}`);
    });
    if (r.key !== undefined && !(Number.isInteger(r.key) && r.key >= 0 && r.key <= 0xffffffff)) throw new Error(`request ${r.id}: key must be an integer in 0..2^32-1, got ${r.key}`);
    if (new Set(r.stop).size > MAX_STOP) throw new Error(`request ${r.id}: ${new Set(r.stop).size} stop tokens; the GPU decoder checks at most ${MAX_STOP}`);
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

  /**
   * One decode window: its k steps recorded into one batch and submitted,
   * then one readback of every row's state and new tokens. While the GPU
   * runs it, the next window of the same rows may already be recorded and
   * submitted ("ahead", when `runAhead`: nothing waits for a slot, and every
   * row has budget left after this window), continuing from the state the
   * GPU holds, so the host's recording and readback overlap the GPU's work
   * instead of leaving it idle between windows. A row that stops on a stop id
   * in this window is frozen in the next (kernels/decode.wgsl): it appends
   * nothing there, so the results are the same as without running ahead;
   * the cost is that window's work if every row stopped.
   */
  private async decode(seqs: Running[], sampling: SamplingOptions, runAhead: boolean): Promise<void> {
    const cur = this.ahead ?? this.submitWindow(seqs, sampling);
    this.ahead = null;
    const same = cur.seqs.length === seqs.length && cur.seqs.every((s, i) => s === seqs[i]);
    if (runAhead && same) {
      const k = Math.min(this.window, ...seqs.map((s) => s.req.maxTokens - s.tokens.length - cur.k));
      if (k > 0) {
        this.ahead = this.submitWindow(seqs, sampling, k);
        this.stats.windowsAhead++;
      }
    }
    const dec = await cur.read;
    this.stats.readbacks++;
    this.stats.decodeSteps += cur.k;
    const lp = new Float32Array(dec.buffer, dec.byteOffset, dec.length);
    const outBase = cur.seqs.length * DECODE_STATE;
    cur.seqs.forEach((s, i) => {
      const count = dec[i * DECODE_STATE] - s.tokens.length;
      for (let j = 0; j < count; j++) {
        const o = outBase + (i * cur.k + j) * 2;
        s.tokens.push(dec[o]);
        s.logprobs.push(lp[o + 1]);
      }
      s.pos += count;
      s.next = s.tokens[s.tokens.length - 1];
      this.stats.decodeRows += count;
      this.stats.tokens += count;
    });
  }

  /**
   * Record and submit a window of decode steps over `seqs`, and start its
   * readback. Without `ahead` (a window's step count) the rows' state is
   * written from the CPU and k stops at the first budget to run out; with it
   * the window continues from the state the previous window left on the GPU.
   */
  private submitWindow(seqs: Running[], sampling: SamplingOptions, ahead?: number): DecodeWindow {
    const gpu = this.model.gpu;
    const ws = this.ws;
    const R = seqs.length;
    const outBase = R * DECODE_STATE;
    const k = ahead ?? Math.min(this.window, ...seqs.map((s) => s.req.maxTokens - s.tokens.length));
    if (ahead === undefined) {
      const state = new Uint32Array(outBase);
      seqs.forEach((s, i) => state.set(rowState(s.tokens.length, s.req.maxTokens, s.stop), i * DECODE_STATE));
      this.cache.sync();
      gpu.write(ws.tokens, new Uint32Array(seqs.map((s) => s.next)));
      gpu.write(ws.tokSeq, new Uint32Array(seqs.map((s) => s.slot)));
      gpu.write(ws.tokPos, new Uint32Array(seqs.map((s) => s.pos)));
      gpu.write(this.streams, new Uint32Array(seqs.flatMap((s) => [s.key, s.tokens.length])));
      gpu.write(this.dec, state);
    }
    const V = this.model.config.vocabSize;
    const { temperature, topK, topP, seed } = sampling;
    const b = gpu.batch();
    for (let step = 0; step < k; step++) {
      // After a window's first step (or in a window run ahead) the last step's sampler wrote x.
      const embedded = this.nextEmbed !== undefined && (step > 0 || ahead !== undefined);
      this.model.recordForward(b, ws, this.cache, R, R, "decode", this.numerics, { rowsAreTokens: true, embedded });
      const advance = { tokens: ws.tokens, pos: ws.tokPos, dec: this.dec, K: k, s: step, outBase, embed: this.nextEmbed };
      this.sampler.sample(b, ws.logits, this.tokOut, this.lpOut, R, V, { temperature, topK, topP, seed, vocabLimit: this.opts.vocabLimit }, this.streams, advance);
    }
    b.submit();
    // The copy is queued now, before any later window can overwrite the output window.
    const read = gpu.readU32(this.dec, outBase + R * k * 2);
    read.catch(() => {}); // awaited later (decode or the drain); a failure surfaces there
    return { seqs: [...seqs], k, read };
  }

  /** Wait for a window still in flight and drop it (the end of a generate call, or an abandoned one). */
  private async drain(): Promise<void> {
    const a = this.ahead;
    this.ahead = null;
    if (a) await a.read.catch(() => {});
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
    if (R) {
      gpu.write(ws.rowIdx, new Uint32Array(rows));
      // Each row draws from its request's stream at its own token index.
      gpu.write(this.streams, new Uint32Array(rowSeqs.flatMap((s) => [s.key, s.tokens.length])));
    }
    const b = gpu.batch();
    this.model.recordForward(b, ws, this.cache, T, R, mode, this.numerics);
    if (R) {
      const { temperature, topK, topP, seed } = sampling;
      this.sampler.sample(b, ws.logits, this.tokOut, this.lpOut, R, this.model.config.vocabSize, { temperature, topK, topP, seed, vocabLimit: this.opts.vocabLimit }, this.streams);
    }
    b.submit();
    if (!R) return;
    const [tok, lp] = await Promise.all([gpu.readU32(this.tokOut, R), gpu.readF32(this.lpOut, R)]);
    this.stats.readbacks++;
    this.stats.tokens += R;
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
    this.streams.destroy();
    this.dec.destroy();
  }
}
