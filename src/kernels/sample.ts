/**
 * Token sampling on the GPU (kernels/sample.wgsl): greedy, temperature,
 * top-k and top-p (nucleus, HF semantics), one workgroup per row.
 *
 * Shapes: B rows (sequences), V vocabulary. logits f32 [B, V] in, tokens u32
 * [B] and logp f32 [B] out. With `vocabLimit` < V only ids below it exist
 * (everything below is softmax over [0, vocabLimit)): the rows of a padded
 * vocabulary are masked on the GPU, so no id the tokenizer lacks is drawn. logp is log softmax(logits / T)[token], taken
 * BEFORE top-k/top-p truncation: the behaviour policy's log-prob that the RL
 * trainer's importance ratio needs. Greedy (T = 0): argmax (lowest index on
 * ties) and logp = log_softmax(logits)[token]. Logits may be -inf (masked
 * tokens: never drawn); NaN and +inf are not supported.
 *
 * Thresholds are found by bisection on an order-preserving u32 key of the
 * logit (no sort): tokens tied at a threshold are all kept. The random draw
 * is a counter-based hash of (seed, request key, token index), the row's
 * stream, read from `streams` u32 [B, 2]: a row's token depends only on its
 * logits and those three numbers, so a completion is the same whichever
 * batch, slot, order or machine produces it. `sampleRef` runs the same steps on the CPU with
 * the same f32 summation order, so it agrees token for token except when the
 * draw falls within a few ulp of a boundary.
 */
import type { Batch, Binding, Gpu, Kernel } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import { checkBinding, dtypeConstants, type Dtype } from "./common.ts";
import { checkAdvance, MAX_STOP, type AdvanceTarget } from "./decode.ts";

/**
 * Threads per row (this also fixes the chunking of the draw, so the CPU
 * reference takes it too). Short rows use a small workgroup: on a software
 * adapter a barrier costs in proportion to the workgroup size, and most of
 * a 256-thread group would idle on a row of a few hundred logits.
 */
export function sampleWorkgroupSize(V: number): number {
  return V <= SMALL_V ? 32 : 256;
}
const SMALL_V = 2048;

export interface SampleOptions {
  /** 0 = greedy; otherwise p = softmax(logits / temperature). */
  temperature: number;
  /** Keep the k most likely tokens (ties at the k-th kept too); 0 = off. */
  topK: number;
  /** Nucleus mass in (0, 1]; 1 = off. */
  topP: number;
  /** The run's random seed (u32); each row's stream is (seed, request key, token index). */
  seed: number;
  /**
   * Ids >= vocabLimit are never drawn and carry no probability mass (a
   * padded vocabulary: the model's vocab_size rows above the tokenizer's
   * size). Default V: every id.
   */
  vocabLimit?: number;
}

export interface Sampler {
  /**
   * Record the sampling of B rows; `streams` u32 [B, 2] holds each row's
   * (request key, token index). Rows beyond the storage binding limit are
   * split into several dispatches (each a multiple of 64 rows) internally.
   * With `advance` (a sampler loaded with `decode: true`), each row's decode
   * `advance` (src/kernels/decode.ts) runs in the same dispatch, right after
   * its token is drawn: the same results as `sample` then `advance`, except
   * that `tokens` and `logp` are not written (the row's output window in
   * `dec` holds both). With `advance.embed` (a sampler loaded with
   * `gather: dtype`) it also writes the next step's input embeddings,
   * x [B, H] = table[the rows' next input tokens], as embedding.gather would.
   */
  sample(b: Batch, logits: Binding, tokens: Binding, logp: Binding, B: number, V: number, opts: SampleOptions, streams: Binding, advance?: AdvanceTarget & { embed?: NextEmbedding }): void;
}

/** Where the decode sampler writes the next step's input embeddings: x [B, H] from table [vocabulary, H] (one binding). */
export interface NextEmbedding {
  table: Binding;
  x: Binding;
  H: number;
}

const f = Math.fround;

function checkU32(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new KernelError(`sample: ${what} must be an integer in 0..2^32-1, got ${v}`);
  }
}

/** Validate options; returns the uniform fields (inv_t, greedy). */
function checkOptions(V: number, o: SampleOptions): { invT: number; greedy: boolean; limit: number } {
  if (!(Number.isFinite(o.temperature) && o.temperature >= 0)) {
    throw new KernelError(`sample: temperature must be a finite number >= 0 (0 = greedy), got ${o.temperature}`);
  }
  if (!Number.isInteger(o.topK) || o.topK < 0) {
    throw new KernelError(`sample: topK must be an integer >= 0 (0 = off), got ${o.topK}`);
  }
  if (!(o.topP > 0 && o.topP <= 1)) throw new KernelError(`sample: topP must be in (0, 1] (1 = off), got ${o.topP}`);
  checkU32("seed", o.seed);
  if (!Number.isInteger(V) || V < 1 || V > 0x7fffffff) throw new KernelError(`sample: V must be a positive integer, got ${V}`);
  const greedy = o.temperature === 0;
  const invT = greedy ? 1 : f(1 / o.temperature);
  if (!Number.isFinite(invT)) throw new KernelError(`sample: temperature ${o.temperature} is too small (1/T overflows f32)`);
  const limit = o.vocabLimit ?? V;
  if (!Number.isInteger(limit) || limit < 1 || limit > V) {
    throw new KernelError(`sample: vocabLimit must be an integer in 1..V (${V}), got ${o.vocabLimit}`);
  }
  return { invT, greedy, limit };
}

// ---------------------------------------------------------------- RNG

/** The kernel's counter hash of (key, index, seed); returns the x lane. */
export function hash3x(key: number, index: number, seed: number): number {
  let x = (Math.imul(key, 1664525) + 1013904223) >>> 0;
  let y = (Math.imul(index, 1664525) + 1013904223) >>> 0;
  let z = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  x = (x + Math.imul(y, z)) >>> 0;
  y = (y + Math.imul(z, x)) >>> 0;
  z = (z + Math.imul(x, y)) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  y = (y ^ (y >>> 16)) >>> 0;
  z = (z ^ (z >>> 16)) >>> 0;
  x = (x + Math.imul(y, z)) >>> 0;
  return x;
}

/** The uniform draw in [0, 1) (24 bits) the kernel uses for (seed, request key, token index). */
export function sampleUniform(seed: number, key: number, index: number): number {
  return (hash3x(key, index, seed) >>> 8) / 16777216;
}

// ---------------------------------------------------------------- CPU reference

/** The kernel's order-preserving f32 -> u32 key (-0 folded onto +0). */
export function logitKey(x: number): number {
  const buf = new DataView(new ArrayBuffer(4));
  buf.setFloat32(0, x === 0 ? 0 : x, true);
  const b = buf.getUint32(0, true);
  return (b & 0x80000000 ? ~b : b | 0x80000000) >>> 0;
}

/** Sum as the kernel does: strided per-thread partials, then a tree. */
function wgSum(vals: Float32Array, wg: number): number {
  const part = new Float32Array(wg);
  for (let j = 0; j < vals.length; j++) part[j % wg] = f(part[j % wg] + vals[j]);
  for (let s = wg >> 1; s > 0; s >>= 1) for (let i = 0; i < s; i++) part[i] = f(part[i] + part[i + s]);
  return part[0];
}

/** One row on the CPU, step by step as the kernel does it. */
function sampleRowRef(
  l: Float32Array,
  stream: [number, number],
  invT: number,
  greedy: boolean,
  o: SampleOptions,
  wg: number,
): { token: number; logp: number } {
  const V = l.length;
  const keys = new Uint32Array(V);
  let arg = 0;
  let keyLo = 0xffffffff;
  for (let j = 0; j < V; j++) {
    keys[j] = logitKey(l[j]);
    if (keys[j] > keys[arg]) arg = j;
    keyLo = Math.min(keyLo, keys[j]);
  }
  const keyHi = keys[arg];
  const m = l[arg];
  const e = new Float32Array(V);
  for (let j = 0; j < V; j++) e[j] = Math.exp(f(f(l[j] - m) * invT));
  const z = wgSum(e, wg);
  if (greedy) return { token: arg, logp: f(-Math.log(z)) };

  const masked = (pred: (k: number) => boolean) => {
    const out = new Float32Array(V);
    for (let j = 0; j < V; j++) if (pred(keys[j])) out[j] = e[j];
    return out;
  };
  let t = keyLo;
  let zk = z;
  if (o.topK > 0 && o.topK < V) {
    let lo = keyLo;
    let hi = keyHi;
    while (lo < hi) {
      const d = hi - lo;
      const mid = lo + Math.floor(d / 2) + (d % 2);
      let c = 0;
      for (let j = 0; j < V; j++) if (keys[j] >= mid) c++;
      if (c >= o.topK) lo = mid;
      else hi = mid - 1;
    }
    t = lo;
    const tk = t;
    zk = wgSum(masked((k) => k >= tk), wg);
  }
  if (f(o.topP) < 1) {
    const pz = f(f(o.topP) * zk);
    let lo = t;
    let hi = keyHi;
    while (lo < hi) {
      const mid = lo + Math.floor((hi - lo) / 2);
      if (wgSum(masked((k) => k > mid), wg) < pz) hi = mid;
      else lo = mid + 1;
    }
    t = lo;
  }

  const chunk = Math.ceil(V / wg);
  const sums = new Float32Array(wg);
  for (let i = 0; i < wg; i++) {
    for (let j = Math.min(i * chunk, V); j < Math.min((i + 1) * chunk, V); j++) {
      if (keys[j] >= t) sums[i] = f(sums[i] + e[j]);
    }
  }
  let total = 0;
  for (let i = 0; i < wg; i++) total = f(total + sums[i]);
  const target = f(f(sampleUniform(o.seed, stream[0], stream[1])) * total);
  let run = 0;
  let owner = 0;
  let start = 0;
  let found = false;
  for (let i = 0; i < wg; i++) {
    if (sums[i] > 0 && (!found || run <= target)) {
      owner = i;
      start = run;
      found = true;
    }
    run = f(run + sums[i]);
  }
  let tok = -1;
  let last = 0;
  run = start;
  for (let j = Math.min(owner * chunk, V); j < Math.min((owner + 1) * chunk, V); j++) {
    if (keys[j] < t) continue;
    if (e[j] > 0) last = j;
    run = f(run + e[j]);
    if (run > target) {
      tok = j;
      break;
    }
  }
  if (tok < 0) tok = last;
  return { token: tok, logp: f(f(f(l[tok] - m) * invT) - Math.log(z)) };
}

/**
 * CPU reference of `Sampler.sample`: same thresholds, same RNG, same f32
 * summation order. `streams` [B, 2]: each row's (request key, token index).
 */
export function sampleRef(
  logits: Float32Array,
  B: number,
  V: number,
  opts: SampleOptions,
  streams: Uint32Array,
  wg = sampleWorkgroupSize(V),
): { tokens: Uint32Array; logp: Float32Array } {
  if (logits.length !== B * V) throw new KernelError(`sampleRef: logits has ${logits.length} values, expected B*V = ${B}*${V}`);
  if (streams.length !== 2 * B) throw new KernelError(`sampleRef: streams has ${streams.length} values, expected 2*B = ${2 * B}`);
  const { invT, greedy, limit } = checkOptions(V, opts);
  const tokens = new Uint32Array(B);
  const logp = new Float32Array(B);
  for (let r = 0; r < B; r++) {
    const out = sampleRowRef(logits.subarray(r * V, r * V + limit), [streams[2 * r], streams[2 * r + 1]], invT, greedy, opts, wg);
    tokens[r] = out.token;
    logp[r] = out.logp;
  }
  return { tokens, logp };
}

/**
 * The exact (f64) distribution a row is drawn from: softmax(logits / T),
 * cut to the top-k then the top-p set (ties at a threshold kept), and
 * renormalised. Greedy gives a point mass on the first argmax. Ids at or
 * above `opts.vocabLimit` get probability 0.
 */
export function samplingDistribution(full: Float32Array, opts: SampleOptions): Float64Array {
  const { greedy, limit } = checkOptions(full.length, opts);
  const out = new Float64Array(full.length);
  const row = full.subarray(0, limit);
  const V = limit;
  let arg = 0;
  for (let j = 1; j < V; j++) if (row[j] > row[arg]) arg = j;
  if (greedy) {
    out[arg] = 1;
    return out;
  }
  const p = new Float64Array(V);
  let z = 0;
  for (let j = 0; j < V; j++) z += p[j] = Math.exp((row[j] - row[arg]) / opts.temperature);
  const sorted = [...row].sort((a, b) => b - a);
  let cut = -Infinity; // keep logits >= cut
  if (opts.topK > 0 && opts.topK < V) cut = sorted[opts.topK - 1];
  let zk = 0;
  for (let j = 0; j < V; j++) if (row[j] >= cut) zk += p[j];
  if (opts.topP < 1) {
    // kept iff the mass of strictly larger logits (within the top-k set) < p
    for (let j = 0; j < V; j++) {
      if (row[j] < cut) continue;
      let above = 0;
      for (let i = 0; i < V; i++) if (row[i] > row[j]) above += p[i];
      if (!(above / zk < opts.topP)) out[j] = -1;
    }
  }
  let kept = 0;
  for (let j = 0; j < V; j++) if (row[j] >= cut && out[j] === 0) kept += p[j];
  for (let j = 0; j < V; j++) out[j] = row[j] >= cut && out[j] === 0 ? p[j] / kept : 0;
  return out;
}

// ---------------------------------------------------------------- GPU

function bindingParts(b: Binding): { buffer: GPUBuffer; offset: number; size: number } {
  if ("buffer" in b) {
    const offset = b.offset ?? 0;
    return { buffer: b.buffer, offset, size: b.size ?? b.buffer.size - offset };
  }
  return { buffer: b, offset: 0, size: b.size };
}

/**
 * Compile the sampling pipeline once; `sample` records dispatches only.
 * `tuning.rowsPerDispatch` caps the rows per dispatch (tests use it to
 * exercise the split that very large batches need). `tuning.subgroups`
 * reduces within subgroups before the shared-memory trees
 * (kernels/sample.wgsl; adapters with `subgroups`): off by default on every
 * adapter kind until a GPU has measured it (benchmarks/RESULTS.md;
 * scripts/gpu-check.sh times both).
 */
export async function loadSampler(gpu: Gpu, tuning: { rowsPerDispatch?: number; subgroups?: boolean; decode?: boolean; gather?: Dtype } = {}): Promise<Sampler> {
  const sg = tuning.subgroups === true;
  if (sg && !gpu.features.subgroups) throw new KernelError(`loadSampler: subgroups asked for, but adapter "${gpu.adapter.description}" lacks the feature`);
  const cap = tuning.rowsPerDispatch;
  if (cap !== undefined && !(Number.isInteger(cap) && cap > 0 && cap % 64 === 0)) {
    throw new KernelError(`loadSampler: rowsPerDispatch must be a positive multiple of 64, got ${cap}`);
  }
  // By workgroup size and variant: plain; "decode" (tuning.decode: the decode advance);
  // "gather" (tuning.gather: the advance and the next input's embedding, in that dtype).
  const kernels = new Map<string, Kernel>();
  const variants = ["plain", ...(tuning.decode ? ["decode"] : []), ...(tuning.gather ? ["gather"] : [])];
  const types = tuning.gather ? dtypeConstants(gpu, tuning.gather, "sample") : { T: "f32", ENABLE: "" };
  for (const wg of [sampleWorkgroupSize(1), sampleWorkgroupSize(SMALL_V + 1)]) {
    for (const v of variants) {
      const on = (b: boolean) => (b ? "" : "//");
      const constants = { WG: wg, SG: on(sg), PLAIN: on(v === "plain"), ADV: on(v !== "plain"), GATHER: on(v === "gather"), MAX_STOP, ...(v === "gather" ? types : { T: "f32", ENABLE: "" }) };
      kernels.set(`${wg}/${v}`, await gpu.kernel("sample", "sample", constants));
    }
  }
  const elementBytes = tuning.gather === "f16" ? 2 : 4;
  const maxBinding = gpu.limits.maxStorageBufferBindingSize;
  const maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;
  const align = gpu.limits.minStorageBufferOffsetAlignment;

  function sample(
    b: Batch,
    logits: Binding,
    tokens: Binding,
    logp: Binding,
    B: number,
    V: number,
    opts: SampleOptions,
    streams: Binding,
    advance?: AdvanceTarget & { embed?: NextEmbedding },
  ): void {
    const { invT, greedy, limit } = checkOptions(V, opts);
    if (!Number.isInteger(B) || B < 0) throw new KernelError(`sample: B must be an integer >= 0, got ${B}`);
    const embed = advance?.embed;
    if (advance) {
      if (!(embed ? tuning.gather : tuning.decode)) throw new KernelError(`sample: an advance${embed ? " with the next embedding needs a sampler loaded with { gather: dtype }" : " needs a sampler loaded with { decode: true }"}`);
      checkAdvance("sample+advance", B, streams, advance);
    }
    if (embed) {
      if (!Number.isInteger(embed.H) || embed.H < 1) throw new KernelError(`sample: embedding width H must be a positive integer, got ${embed.H}`);
      checkBinding(embed.table, limit * embed.H, elementBytes, "embedding table", "sample+advance");
      checkBinding(embed.x, B * embed.H, elementBytes, "x", "sample+advance");
    }
    if (B === 0) return;
    const L = bindingParts(logits);
    const T = bindingParts(tokens);
    const P = bindingParts(logp);
    const S = bindingParts(streams);
    const need: [string, { size: number; offset: number }, number][] = [
      ["logits", L, B * V * 4],
      ["tokens", T, B * 4],
      ["logp", P, B * 4],
      ["streams", S, B * 8],
    ];
    for (const [name, part, bytes] of need) {
      if (part.size < bytes) {
        throw new KernelError(`sample: ${name} binding holds ${part.size} bytes, needs ${bytes} for B=${B}, V=${V}`);
      }
      if (part.offset % align !== 0) {
        throw new KernelError(`sample: ${name} binding offset ${part.offset} is not a multiple of ${align}`);
      }
    }
    // Rows per dispatch: bounded by the binding size and the group count; a
    // multiple of 64 when split, so every sub-binding offset stays 256-aligned.
    let rows = Math.min(B, maxGroups, Math.floor(maxBinding / (V * 4)), tuning.rowsPerDispatch ?? Infinity);
    if (rows < B) rows -= rows % 64;
    if (rows < 1) throw new KernelError(`sample: one row of V=${V} logits does not fit a storage binding`);
    const kernel = kernels.get(`${sampleWorkgroupSize(V)}/${embed ? "gather" : advance ? "decode" : "plain"}`)!;
    for (let r0 = 0; r0 < B; r0 += rows) {
      const n = Math.min(rows, B - r0);
      const u = params()
        .u32(V)
        .u32(opts.topK)
        .u32(greedy ? 1 : 0)
        .f32(invT)
        .f32(opts.topP)
        .u32(opts.seed)
        .u32(limit)
        .u32(r0)
        .u32(advance?.K ?? 0)
        .u32(advance?.s ?? 0)
        .u32(advance?.outBase ?? 0)
        .u32(embed?.H ?? 0);
      const logitRows = { buffer: L.buffer, offset: L.offset + r0 * V * 4, size: n * V * 4 };
      const rowStreams = { buffer: S.buffer, offset: S.offset + r0 * 8, size: n * 8 };
      // In the order of the variant's bindings (kernels/sample.wgsl).
      const buffers: Binding[] = advance
        ? [logitRows, rowStreams, advance.tokens, advance.pos, advance.dec, ...(embed ? [embed.table, embed.x] : [])]
        : [logitRows, { buffer: T.buffer, offset: T.offset + r0 * 4, size: n * 4 }, { buffer: P.buffer, offset: P.offset + r0 * 4, size: n * 4 }, rowStreams];
      b.dispatch(kernel, { params: u, buffers, groups: [n], label: advance ? "sample+advance" : "sample" });
    }
  }
  return { sample };
}
