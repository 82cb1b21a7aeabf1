/**
 * Qwen2 training on the GPU: f32 master weights, forward with per-layer
 * activation checkpointing, backward, gradients accumulated over
 * micro-batches of packed sequences.
 *
 * Legend: T packed tokens, H hidden, I intermediate, nh/nkv heads, hd head
 * dim, V vocab. A micro-batch is several sequences concatenated; segStart[t]
 * is the index of token t's sequence start (attention stays inside it),
 * pos[t] its position in that sequence, targets[t] the next token (the
 * log-prob at t is log p(targets[t] | tokens ≤ t)), and mask[t] says whether
 * that log-prob carries loss (response tokens only).
 *
 * Checkpointing: only each layer's input x_l is kept from the forward; the
 * backward recomputes the layer's internals from x_l into one set of scratch
 * buffers, so activation memory is O(L·T·H + T·I) instead of O(L·T·I).
 * Where every layer's internals fit `keepActivationBytes` (256 MiB by default:
 * small models, short micro-batches), the forward keeps them all and the
 * backward recomputes nothing; where a micro-batch's logits fit one chunk,
 * the backward reuses the forward's logits instead of recomputing the LM head.
 *
 * Tensors over one storage binding (the embedding and LM head of real
 * vocabularies: 151936 x 1536 f32 is 933 MB) are stored in row parts, as the
 * inference engine stores them: the gather, the LM head and their backward
 * passes run once per part. Every part (value and gradient) is a range of a
 * parameter-arena chunk (src/train/arena.ts), so the optimiser, the gradient
 * norm and zeroing run once per chunk.
 *
 * Precision (src/train/precision.ts): f32, or "f16-mixed": each matrix
 * weight part gets an f16 copy (`half`) that the products read, every
 * operand of a product and of attention is rounded to f16 at load, the
 * norms run unfused (the fused prologue would round before normalising), and
 * d loss / d logp is multiplied by the loss scale before the backward.
 */
import type { Batch, Binding, Gpu } from "../gpu/index.ts";
import { loadAdamW } from "../kernels/adamw.ts";
import { attentionForm, loadAttention } from "../kernels/attention.ts";
import { loadElementwise } from "../kernels/elementwise.ts";
import { groupTokens, loadEmbedding } from "../kernels/embedding.ts";
import { loadLogprob } from "../kernels/logprob.ts";
import { loadLoss } from "../kernels/loss.ts";
import { loadLossScale } from "../kernels/loss_scale.ts";
import { loadMatmul } from "../kernels/matmul.ts";
import { loadMatmulGrad } from "../kernels/matmul_grad.ts";
import { loadRmsNorm } from "../kernels/rmsnorm.ts";
import { loadRope } from "../kernels/rope.ts";
import type { Qwen2Config } from "../model/config.ts";
import { qwen2WeightSpec, type WeightSpec } from "../model/safetensors.ts";
import { planArena, type Slice } from "./arena.ts";
import { DEFAULT_LOSS_SCALE, type LossScaleConfig, LossScaler, type Precision } from "./precision.ts";

/** Rows [row0, row0 + rows) of a parameter: elements [offset, offset + size), each a range of an arena chunk. */
export interface ParamPart {
  row0: number;
  rows: number;
  offset: number; // elements
  size: number; // elements
  value: Slice; // f32 master weight
  grad: Slice; // f32, accumulated
  /** f16-mixed: the f16 copy of a matrix weight that the products read (refreshed after each update). */
  half?: Binding;
}

export interface Param {
  name: string;
  shape: number[];
  size: number; // elements
  /** One part, or row parts when the tensor exceeds one storage binding (embedding / LM head). */
  parts: ParamPart[];
  /** The value range of a one-part tensor (an error for a tensor in several parts). */
  readonly value: Slice;
  /** The gradient range of a one-part tensor (an error for a tensor in several parts). */
  readonly grad: Slice;
}

/** Where parameter values come from: a map, or a reader called once per tensor (nothing kept after upload). */
export type ParamSource = Map<string, Float32Array> | ((name: string) => Float32Array);

/**
 * Rows per part so that one part fits `maxBinding` bytes in f32 (the
 * whole tensor when it fits).
 */
export function partRows(rows: number, cols: number, maxBinding: number): number {
  const fit = Math.floor(maxBinding / (Math.max(cols, 1) * 4));
  if (fit < 1) throw new Error(`training model: one row of ${cols} f32 values exceeds the max storage binding ${maxBinding}`);
  return Math.min(rows, fit);
}

/** A parameter's row parts (rows per part so that one part fits `maxBinding` bytes in f32). */
export function rowParts(shape: number[], maxBinding: number): { row0: number; rows: number; offset: number; size: number }[] {
  const size = shape.reduce((a, b) => a * b, 1);
  const rows = shape.length > 1 ? shape[0] : 1;
  const cols = size / Math.max(rows, 1);
  const per = partRows(rows, cols, maxBinding);
  const parts = [];
  for (let row0 = 0; row0 < rows; row0 += per) {
    const n = Math.min(per, rows - row0);
    parts.push({ row0, rows: n, offset: row0 * cols, size: n * cols });
  }
  return parts;
}

function makeParam(name: string, shape: number[], parts: ParamPart[]): Param {
  const one = (what: "value" | "grad") => {
    if (parts.length !== 1) throw new Error(`training model: ${name} is stored in ${parts.length} row parts; use its parts, not one ${what} range`);
    return parts[0][what];
  };
  return {
    name,
    shape,
    size: shape.reduce((a, b) => a * b, 1),
    parts,
    get value() {
      return one("value");
    },
    get grad() {
      return one("grad");
    },
  };
}

export interface PackedBatch {
  tokens: Uint32Array;
  pos: Uint32Array;
  segStart: Uint32Array;
  targets: Uint32Array;
  mask: Float32Array;
}

async function loadKernels(gpu: Gpu, precision: Precision, c: Qwen2Config) {
  const half = { f16Operands: precision === "f16-mixed" };
  const [mm, mg, emb, norm, rope, ew, attn, lp, loss, adam, scale] = await Promise.all([
    loadMatmul(gpu, "f32", {}, half),
    loadMatmulGrad(gpu, {}, half),
    loadEmbedding(gpu, "f32"),
    loadRmsNorm(gpu, "f32"),
    loadRope(gpu, "f32"),
    loadElementwise(gpu, "f32"),
    loadAttention(gpu, "f32", attentionForm(gpu), { ...half, trainHeadDim: c.headDim }),
    loadLogprob(gpu),
    loadLoss(gpu),
    half.f16Operands ? loadAdamW(gpu) : null, // its f32 → f16 copy kernel
    half.f16Operands ? loadLossScale(gpu) : null,
  ]);
  return { mm, mg, emb, norm, rope, ew, attn, lp, loss, adam, scale };
}
type Kernels = Awaited<ReturnType<typeof loadKernels>>;

/** One layer's internals: what the backward reads besides the layer input x_l. */
interface LayerActs {
  h1: GPUBuffer;
  q: GPUBuffer;
  k: GPUBuffer;
  v: GPUBuffer;
  att: GPUBuffer;
  lse: GPUBuffer;
  xmid: GPUBuffer;
  h2: GPUBuffer;
  /** gate and up side by side [T, 2I] (stacked gate/up product), or apart [T, I] each (null when stacked). */
  gu: GPUBuffer | null;
  g: GPUBuffer | null;
  u: GPUBuffer | null;
  a: GPUBuffer;
}

/** Activation and gradient buffers for micro-batches of up to `cap` tokens. */
interface Acts {
  cap: number;
  tokens: GPUBuffer;
  /** The tokens grouped by id for the embedding's backward (`groupTokens`): [2·cap + 1 + cap] u32. */
  tokenGroups: GPUBuffer;
  pos: GPUBuffer;
  segStart: GPUBuffer;
  targets: GPUBuffer;
  mask: GPUBuffer;
  xs: GPUBuffer[]; // x_l for l = 0..L (x_L is the final residual)
  /** Every layer's internals, kept by the forward (`keep`), or one set the backward recomputes into layer by layer. */
  layers: LayerActs[];
  keep: boolean;
  hN: GPUBuffer;
  /** Rows of logits computed at once: the LM head runs over token chunks. */
  chunk: number;
  logits: GPUBuffer; // f32 [chunk, V]
  logp: GPUBuffer;
  entropy: GPUBuffer;
  // gradients
  dlogp: GPUBuffer;
  dlogits: GPUBuffer;
  dx: GPUBuffer;
  dh: GPUBuffer;
  dq: GPUBuffer;
  dk: GPUBuffer;
  dv: GPUBuffer;
  datt: GPUBuffer;
  dgu: GPUBuffer | null;
  dg: GPUBuffer | null;
  du: GPUBuffer | null;
  da: GPUBuffer;
}

export interface TrainModelOptions {
  /** Most rows of logits at once (a multiple of 64); default: what fits one binding, at most 1024. */
  logitRows?: number;
  /**
   * Largest part of the embedding / LM head in bytes (default: the adapter's
   * max storage binding). Tests lower it to split a tiny model's embedding.
   */
  maxParamBytes?: number;
  /**
   * Largest parameter-arena chunk in bytes (default: the adapter's max
   * storage binding). Tests lower it to spread a tiny model over chunks.
   */
  maxArenaBytes?: number;
  /**
   * Ids the tokenizer knows: log-probs are log softmax over logits [0,
   * vocabLimit) only (the distribution the masked sampler draws from), and
   * the LM head's padded rows above it get no gradient. Default vocab_size.
   */
  vocabLimit?: number;
  /** "f32" (default) or "f16-mixed" (src/train/precision.ts). */
  precision?: Precision;
  /** f16-mixed: the dynamic loss scale's settings. */
  lossScale?: LossScaleConfig;
  /**
   * Keep every layer's internals from the forward (no recompute in the
   * backward) when they take at most this many bytes at the reserved
   * micro-batch size; default KEEP_ACTIVATION_BYTES, 0 = always recompute.
   */
  keepActivationBytes?: number;
}

/** Default budget for keeping every layer's internals instead of recomputing them (TrainModelOptions.keepActivationBytes). */
export const KEEP_ACTIVATION_BYTES = 256 * 2 ** 20;

/** Bytes of one layer's internals (LayerActs) at T tokens, f32; `stacked`: gate/up as one [T, 2I] buffer (the same size apart). */
export function layerInternalBytes(c: Qwen2Config, T: number): number {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  return 4 * T * (3 * c.hiddenSize + 2 * q + 2 * kv + c.numHeads + 3 * c.intermediateSize);
}

/** Whether the forward keeps every layer's internals at T tokens (else the backward recomputes them per layer). */
export function keepsInternals(c: Qwen2Config, T: number, budget = KEEP_ACTIVATION_BYTES): boolean {
  return c.numLayers * layerInternalBytes(c, T) <= budget;
}

export class TrainModel {
  readonly params: Param[];
  readonly byName: Map<string, Param>;
  /** f16-mixed: the dynamic loss scale (null in f32). */
  readonly scaler: LossScaler | null;
  /** The parameter arena's chunks: values and gradients in the same layout (src/train/arena.ts). */
  readonly arena: { value: GPUBuffer; grad: GPUBuffer }[];
  /**
   * Per layer, gate_proj and up_proj stacked as one [2I, H] range of the arena
   * (value and gradient), when they fit one chunk together: the backward then
   * runs one product and one gradient product for both. null: kept apart.
   */
  readonly gateUp: ({ value: Slice; grad: Slice } | null)[];
  private acts: Acts | null = null;
  /** Distinct token ids of the uploaded micro-batch (groups in acts.tokenGroups). */
  private tokenGroupCount = 0;
  /** The last forward's logits, all in one chunk, are still in acts.logits (the backward then skips the LM head's recompute). */
  private logitsKept = false;
  /** f16-mixed: the f16 weight copies lag the master weights (refreshed at the next forward). */
  private halfStale = true;
  /** f16-mixed: every f32 → f16 weight copy (source range, f16 buffer, values), and the buffers. */
  private readonly halfCopies: { src: Binding; dst: GPUBuffer; n: number }[] = [];
  private readonly halfBuffers: GPUBuffer[] = [];
  /** f16-mixed: per layer, the stacked f16 gate/up copy (null: none, the products then read them apart). */
  private readonly gateUpHalf: (GPUBuffer | null)[] = [];

  private constructor(
    readonly gpu: Gpu,
    readonly config: Qwen2Config,
    private readonly k: Kernels,
    specs: WeightSpec[],
    values: ParamSource,
    private readonly opts: TrainModelOptions,
  ) {
    const limit = gpu.limits.maxStorageBufferBindingSize;
    const vocabBinding = Math.min(opts.maxParamBytes ?? Infinity, limit);
    const get = typeof values === "function" ? values : (n: string) => values.get(n);
    // Row parts from the shapes, then the arena, then the values tensor by tensor.
    const layout = specs.map((s) => {
      const size = s.shape.reduce((a, b) => a * b, 1);
      // Only the vocabulary tensors are split (the layers' kernels take one range per weight).
      const vocab = s.name === "model.embed_tokens.weight" || s.name === "lm_head.weight";
      if (!vocab && size * 4 > limit) throw new Error(`training model: ${s.name} (${size * 4} bytes in f32) exceeds the adapter's max storage binding ${limit}`);
      return rowParts(s.shape, vocab ? vocabBinding : limit);
    });
    const align = gpu.limits.minStorageBufferOffsetAlignment;
    const chunkBytes = Math.min(opts.maxArenaBytes ?? Infinity, limit);
    // gate_proj directly followed by up_proj in one chunk where the pair fits (sizes a multiple of the alignment).
    const glue = specs.flatMap((s, i) => {
      const n = layout[i][0].size;
      const stack = s.name.endsWith(".mlp.gate_proj.weight") && n % (align / 4) === 0 && 2 * n * 4 <= chunkBytes;
      return layout[i].map(() => stack);
    });
    const plan = planArena(layout.flat().map((p) => p.size), chunkBytes, align, glue);
    this.arena = plan.chunkElems.map((n, k) => ({ value: gpu.buffer(n * 4, `params#${k}`), grad: gpu.buffer(n * 4, `grads#${k}`) }));
    let slot = 0;
    this.params = specs.map((s, i) => {
      const size = s.shape.reduce((a, b) => a * b, 1);
      const data = get(s.name);
      if (!data) throw new Error(`training model: no values for parameter ${s.name}`);
      if (data.length !== size) throw new Error(`training model: ${s.name} has ${data.length} values, shape ${s.shape} needs ${size}`);
      const parts = layout[i].map((p): ParamPart => {
        const { chunk, offset } = plan.slots[slot++];
        const at = (buffer: GPUBuffer): Slice => ({ buffer, offset: offset * 4, size: p.size * 4 });
        const part = { ...p, value: at(this.arena[chunk].value), grad: at(this.arena[chunk].grad) };
        // Uploaded at once; with a reader the CPU copy is garbage as soon as this returns.
        gpu.write(part.value.buffer, data.subarray(p.offset, p.offset + p.size), part.value.offset);
        return part;
      });
      return makeParam(s.name, s.shape, parts);
    });
    this.byName = new Map(this.params.map((p) => [p.name, p]));
    this.gateUp = Array.from({ length: config.numLayers }, (_, l) => {
      const [g, u] = ["gate_proj", "up_proj"].map((n) => this.p(`model.layers.${l}.mlp.${n}.weight`));
      const joined = (w: "value" | "grad") => g[w].buffer === u[w].buffer && g[w].offset + g[w].size === u[w].offset;
      if (!joined("value") || !joined("grad")) return null;
      const both = (w: "value" | "grad"): Slice => ({ buffer: g[w].buffer, offset: g[w].offset, size: g[w].size + u[w].size });
      return { value: both("value"), grad: both("grad") };
    });
    this.scaler = this.mixed ? new LossScaler(opts.lossScale ?? DEFAULT_LOSS_SCALE) : null;
    if (this.mixed) this.makeHalfCopies();
  }

  get precision(): Precision {
    return this.opts.precision ?? "f32";
  }

  private get mixed(): boolean {
    return this.precision === "f16-mixed";
  }

  /**
   * f16-mixed: f16 copies of the weights the products read (the layers'
   * projections, the LM head: the embedding when tied). A layer whose gate and
   * up are stacked in the arena gets them stacked in one f16 buffer too (one
   * copy, one [2I, H] product), each half still bindable on its own.
   */
  private makeHalfCopies(): void {
    const gpu = this.gpu;
    const align = gpu.limits.minStorageBufferOffsetAlignment;
    const f16Bytes = (n: number) => 2 * Math.ceil(n / 2) * 2;
    const head = this.lmHead().name;
    const stacked = new Set<ParamPart>();
    this.gateUp.forEach((gu, l) => {
      const [g, u] = ["gate_proj", "up_proj"].map((n) => this.p(`model.layers.${l}.mlp.${n}.weight`).parts[0]);
      if (!gu || (g.size * 2) % align) return;
      const buffer = gpu.buffer(f16Bytes(g.size + u.size), `f16.layers.${l}.gate_up`);
      this.halfBuffers.push(buffer);
      this.halfCopies.push({ src: gu.value, dst: buffer, n: g.size + u.size });
      this.gateUpHalf[l] = buffer;
      g.half = { buffer, offset: 0, size: g.size * 2 };
      u.half = { buffer, offset: g.size * 2, size: u.size * 2 };
      stacked.add(g).add(u);
    });
    for (const p of this.params) {
      if (!(p.name.endsWith("proj.weight") || p.name === head)) continue;
      for (const part of p.parts) {
        if (stacked.has(part)) continue;
        const buffer = gpu.buffer(f16Bytes(part.size), `f16.${p.name}@${part.row0}`);
        this.halfBuffers.push(buffer);
        this.halfCopies.push({ src: part.value, dst: buffer, n: part.size });
        part.half = buffer;
      }
    }
  }

  /** The master weights changed (an optimiser update): f16-mixed refreshes its copies before the next forward. */
  weightsChanged(): void {
    this.halfStale = true;
  }

  /** f16-mixed: record the f32 → f16 copies of the matrix weights when they lag the master weights. */
  private recordHalfCopies(b: Batch): void {
    if (!this.mixed || !this.halfStale) return;
    for (const c of this.halfCopies) this.k.adam!.copyToF16(b, c.src, c.dst, c.n);
    this.halfStale = false;
  }

  /** The buffer a product reads for a weight part: its f16 copy in f16-mixed, the f32 master otherwise. */
  private w(part: ParamPart): Binding {
    if (!this.mixed) return part.value;
    if (!part.half) throw new Error("training model: f16-mixed has no f16 copy of a weight a product reads");
    return part.half;
  }

  /** Layer l's stacked [2I, H] gate/up weights as the products read them (f16 copy in f16-mixed). */
  private gateUpW(l: number): Binding {
    if (!this.mixed) return this.gateUp[l]!.value;
    const h = this.gateUpHalf[l];
    if (!h) throw new Error(`training model: layer ${l} has no stacked f16 gate/up copy`);
    return h;
  }

  /** Build from f32 values keyed by HF tensor names (tied models have no lm_head). */
  static async create(gpu: Gpu, config: Qwen2Config, values: ParamSource, opts: TrainModelOptions = {}): Promise<TrainModel> {
    const lim = opts.vocabLimit;
    if (lim !== undefined && !(Number.isInteger(lim) && lim >= 1 && lim <= config.vocabSize)) {
      throw new Error(`training model: vocabLimit must be an integer in 1..vocab_size (${config.vocabSize}), got ${lim}`);
    }
    const precision = opts.precision ?? "f32";
    if (precision !== "f32" && precision !== "f16-mixed") throw new Error(`training model: precision must be "f32" or "f16-mixed", got ${JSON.stringify(precision)}`);
    if (precision === "f16-mixed" && !gpu.features.f16) throw new Error(`training model: precision f16-mixed needs the shader-f16 feature, which adapter "${gpu.adapter.description}" lacks`);
    return new TrainModel(gpu, config, await loadKernels(gpu, precision, config), qwen2WeightSpec(config), values, opts);
  }

  /** Ids with a log-prob: the tokenizer's size (a padded vocabulary's rows above it are left out). */
  get vocabLimit(): number {
    return this.opts.vocabLimit ?? this.config.vocabSize;
  }

  private p(name: string): Param {
    const x = this.byName.get(name);
    if (!x) throw new Error(`training model: no parameter ${name}`);
    return x;
  }

  /** Allocate the activations for micro-batches of up to T tokens now (a run sizes them once, not step by step). */
  reserve(T: number): void {
    this.ensureActs(T);
  }

  private ensureActs(T: number): Acts {
    if (this.acts && this.acts.cap >= T) return this.acts;
    if (this.acts) destroyActs(this.acts);
    const c = this.config;
    const cap = Math.max(T, 16);
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    const Q = c.numHeads * c.headDim;
    const KV = c.numKvHeads * c.headDim;
    const chunk = Math.min(logitChunk(cap, c.vocabSize, this.gpu.limits.maxStorageBufferBindingSize), this.opts.logitRows ?? Infinity);
    if (chunk < cap && chunk % 64) throw new Error(`training: logitRows ${chunk} must be a multiple of 64`);
    // The stacked gate/up path needs every layer's pair stacked and [cap, 2I] within one binding.
    const stack = this.gateUp.every((x, l) => x !== null && (!this.mixed || this.gateUpHalf[l])) && cap * 2 * I * 4 <= this.gpu.limits.maxStorageBufferBindingSize;
    const f = (n: number, label: string) => {
      if (n * 4 > this.gpu.limits.maxStorageBufferBindingSize) {
        throw new Error(`training: activation ${label} of ${n * 4} bytes for ${cap} tokens exceeds the max storage binding; use smaller micro-batches`);
      }
      return this.gpu.buffer(n * 4, `act.${label}`);
    };
    const keep = keepsInternals(c, cap, this.opts.keepActivationBytes);
    const layer = (l: number | ""): LayerActs => ({
      h1: f(cap * H, `h1${l}`),
      q: f(cap * Q, `q${l}`),
      k: f(cap * KV, `k${l}`),
      v: f(cap * KV, `v${l}`),
      att: f(cap * Q, `att${l}`),
      lse: f(cap * c.numHeads, `lse${l}`),
      xmid: f(cap * H, `xmid${l}`),
      h2: f(cap * H, `h2${l}`),
      gu: stack ? f(cap * 2 * I, `gu${l}`) : null,
      g: stack ? null : f(cap * I, `g${l}`),
      u: stack ? null : f(cap * I, `u${l}`),
      a: f(cap * I, `a${l}`),
    });
    this.acts = {
      cap,
      tokens: f(cap, "tokens"),
      tokenGroups: f(3 * cap + 1, "tokenGroups"),
      pos: f(cap, "pos"),
      segStart: f(cap, "segStart"),
      targets: f(cap, "targets"),
      mask: f(cap, "mask"),
      xs: Array.from({ length: c.numLayers + 1 }, (_, l) => f(cap * H, `x${l}`)),
      layers: keep ? Array.from({ length: c.numLayers }, (_, l) => layer(l)) : [layer("")],
      keep,
      hN: f(cap * H, "hN"),
      chunk,
      logits: f(chunk * c.vocabSize, "logits"),
      logp: f(cap, "logp"),
      entropy: f(cap, "entropy"),
      dlogp: f(cap, "dlogp"),
      dlogits: f(chunk * c.vocabSize, "dlogits"),
      dx: f(cap * H, "dx"),
      dh: f(cap * H, "dh"),
      dq: f(cap * Q, "dq"),
      dk: f(cap * KV, "dk"),
      dv: f(cap * KV, "dv"),
      datt: f(cap * Q, "datt"),
      dgu: stack ? f(cap * 2 * I, "dgu") : null,
      dg: stack ? null : f(cap * I, "dg"),
      du: stack ? null : f(cap * I, "du"),
      da: f(cap * I, "da"),
    };
    this.logitsKept = false;
    return this.acts;
  }

  /** Upload a packed micro-batch; returns T. */
  private upload(mb: PackedBatch): number {
    const T = mb.tokens.length;
    const V = this.vocabLimit;
    for (const [name, arr] of [["tokens", mb.tokens], ["targets", mb.targets]] as const) {
      arr.forEach((t, i) => {
        if (t >= V) throw new Error(`training batch: ${name}[${i}] = ${t} is outside the vocabulary 0..${V - 1}`);
      });
    }
    for (const a of [mb.pos, mb.segStart, mb.targets, mb.mask]) {
      if (a.length !== T) throw new Error(`training batch: every field must have ${T} entries (tokens), got ${a.length}`);
    }
    const A = this.ensureActs(T);
    this.gpu.write(A.tokens, mb.tokens);
    const groups = groupTokens(mb.tokens);
    this.gpu.write(A.tokenGroups, groups.index);
    this.tokenGroupCount = groups.count;
    this.gpu.write(A.pos, mb.pos);
    this.gpu.write(A.segStart, mb.segStart);
    this.gpu.write(A.targets, mb.targets);
    this.gpu.write(A.mask, mb.mask);
    return T;
  }

  /**
   * Layer l's forward from xs[l]. The plain forward (`internals` false) only
   * needs xs[l+1]: the input norm runs in the q/k/v products' prologue, the
   * post-attention norm and SwiGLU in the gate/up product, RoPE of q and k
   * in one dispatch, the residual adds in the o_proj and down_proj epilogues
   * (8 dispatches). With `internals` the layer writes what the backward reads
   * (h1, q, k, v, att, lse, xmid, h2, gate and up (one stacked product when
   * the arena holds them stacked), a) into its LayerActs: the forward does so
   * when it keeps every layer's internals (then down_proj adds onto a copy of
   * xmid in xs[l+1]), the backward's recompute (`down` false) when it does
   * not (down_proj's output xs[l+1] the forward already wrote).
   */
  private recordLayer(b: Batch, A: Acts, l: number, T: number, internals: boolean, down: boolean): void {
    const c = this.config;
    const { mm, norm, rope, ew, attn } = this.k;
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    const nh = c.numHeads;
    const nkv = c.numKvHeads;
    const hd = c.headDim;
    const eps = c.rmsNormEps;
    const P = (s: string) => this.p(`model.layers.${l}.${s}`).value;
    const W = (s: string) => this.w(this.p(`model.layers.${l}.${s}`).parts[0]);
    const x = A.xs[l];
    const L = this.layerActs(A, l);
    // f16-mixed runs the norms on their own (the fused prologue would round A before normalising).
    const unfused = internals || this.mixed;
    // Attention. In the plain forward, xmid lives in xs[l+1] (the MLP's residual adds onto it).
    const xmid = internals ? L.xmid : A.xs[l + 1];
    const proj = [["q_proj", L.q, nh * hd], ["k_proj", L.k, nkv * hd], ["v_proj", L.v, nkv * hd]] as const;
    if (unfused) norm.rmsnorm(b, x, P("input_layernorm.weight"), L.h1, T, H, eps);
    for (const [name, out, N] of proj) {
      const w = W(`self_attn.${name}.weight`);
      const bias = P(`self_attn.${name}.bias`);
      if (unfused) mm.matmul(b, L.h1, w, bias, out, T, N, H);
      else mm.matmul(b, x, w, bias, out, T, N, H, { norm: { gain: P("input_layernorm.weight"), eps } });
    }
    rope.ropeQk(b, L.q, L.k, A.pos, { T, nh, nkv, hd, theta: c.ropeTheta });
    attn.trainForward(b, L.q, L.k, L.v, A.segStart, L.att, L.lse, T, nh, nkv, hd, 1 / Math.sqrt(hd));
    b.copy(x, 0, xmid, 0, T * H * 4);
    mm.matmul(b, L.att, W("self_attn.o_proj.weight"), null, xmid, T, H, nh * hd, { residual: true });
    // MLP: x_{l+1} = xmid + down(swiglu(gate h2, up h2)).
    if (unfused) {
      norm.rmsnorm(b, xmid, P("post_attention_layernorm.weight"), L.h2, T, H, eps);
      if (L.gu) {
        // One product with the stacked [2I, H] weights: gu [T, 2I] = (gate | up) per row.
        mm.matmul(b, L.h2, this.gateUpW(l), null, L.gu, T, 2 * I, H);
        ew.swigluGu(b, L.gu, L.a, T, I);
      } else {
        mm.matmul(b, L.h2, W("mlp.gate_proj.weight"), null, L.g!, T, I, H);
        mm.matmul(b, L.h2, W("mlp.up_proj.weight"), null, L.u!, T, I, H);
        ew.swiglu(b, L.g!, L.u!, L.a, T * I);
      }
    } else {
      const gain = P("post_attention_layernorm.weight");
      mm.matmul(b, xmid, P("mlp.gate_proj.weight"), null, L.a, T, I, H, { norm: { gain, eps }, up: P("mlp.up_proj.weight") });
    }
    if (!down) return;
    if (xmid !== A.xs[l + 1]) b.copy(xmid, 0, A.xs[l + 1], 0, T * H * 4);
    mm.matmul(b, L.a, W("mlp.down_proj.weight"), null, A.xs[l + 1], T, H, I, { residual: true });
  }

  /** Layer l's internals: its own when the forward keeps them all, else the one set recomputed into. */
  private layerActs(A: Acts, l: number): LayerActs {
    return A.layers[A.keep ? l : 0];
  }

  private lmHead(): Param {
    return this.config.tieWordEmbeddings ? this.p("model.embed_tokens.weight") : this.p("lm_head.weight");
  }

  /** Forward of a micro-batch: log-probs of the targets and entropies, [T] each. */
  recordForward(b: Batch, mb: PackedBatch, temperature = 1): number {
    const c = this.config;
    const T = this.upload(mb);
    const A = this.acts!;
    const { mm, emb, norm, lp } = this.k;
    this.recordHalfCopies(b);
    // Each embedding part writes the rows of the tokens whose ids it holds.
    for (const part of this.p("model.embed_tokens.weight").parts) emb.gather(b, A.tokens, part.value, A.xs[0], T, c.hiddenSize, part.row0, part.rows);
    for (let l = 0; l < c.numLayers; l++) this.recordLayer(b, A, l, T, A.keep, true);
    norm.rmsnorm(b, A.xs[c.numLayers], this.p("model.norm.weight").value, A.hN, T, c.hiddenSize, c.rmsNormEps);
    const V = this.vocabLimit; // logits of ids [0, V) only: rows above are padding
    const H = c.hiddenSize;
    // The LM head and log-softmax over token chunks: [T, V] logits never exist at once.
    for (const [t0, n] of chunks(T, A.chunk)) {
      this.recordLmHead(b, rows(A.hN, t0, n, H), A.logits, n);
      this.logitsKept = n === T; // one chunk: the backward reads these logits as they are
      lp.chosen(b, A.logits, rows(A.targets, t0, n, 1), rows(A.logp, t0, n, 1), rows(A.entropy, t0, n, 1), n, V, temperature);
    }
    return T;
  }

  /** The LM head's parts clipped to ids [0, vocabLimit), each with its column range of the logits. */
  private headParts(): { part: ParamPart; rows: number }[] {
    const V = this.vocabLimit;
    return this.lmHead()
      .parts.filter((p) => p.row0 < V)
      .map((part) => ({ part, rows: Math.min(part.rows, V - part.row0) }));
  }

  /** logits [n, vocabLimit] = h [n, H] · W[0:vocabLimit]ᵀ, one matmul per LM-head part (its columns). */
  private recordLmHead(b: Batch, h: Binding, logits: GPUBuffer, n: number): void {
    const V = this.vocabLimit;
    for (const { part, rows: r } of this.headParts()) {
      this.k.mm.matmul(b, h, this.w(part), null, logits, n, r, this.config.hiddenSize, { ldc: V, col0: part.row0 });
    }
  }

  /** Read the log-probs and entropies of the last forward. */
  async readLogp(T: number): Promise<{ logp: Float32Array; entropy: Float32Array }> {
    const A = this.acts!;
    const [logp, entropy] = await Promise.all([this.gpu.readF32(A.logp, T), this.gpu.readF32(A.entropy, T)]);
    return { logp, entropy };
  }

  get buffers(): { logp: GPUBuffer; entropy: GPUBuffer; dlogp: GPUBuffer; mask: GPUBuffer } {
    const A = this.acts!;
    return { logp: A.logp, entropy: A.entropy, dlogp: A.dlogp, mask: A.mask };
  }

  get loss() {
    return this.k.loss;
  }

  /**
   * Backward of the last forward, given d loss / d logp in `buffers.dlogp`
   * (written by a loss kernel in the same batch): adds every parameter's
   * gradient into its grad buffer.
   */
  recordBackward(b: Batch, T: number, temperature = 1): void {
    const c = this.config;
    const A = this.acts!;
    const { mm, mg, emb, norm, rope, ew, attn, loss } = this.k;
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    const nh = c.numHeads;
    const nkv = c.numKvHeads;
    const hd = c.headDim;
    const V = this.vocabLimit;
    // f16-mixed: the loss scale multiplies d loss / d logp, so every gradient below is S times the true one.
    if (this.scaler) this.k.scale!.scale(b, A.dlogp, T, this.scaler.scale);
    // LM head and final norm (its rows [0, V): padded rows take no part and get no gradient).
    // Per token chunk: recompute the logits, then log-softmax and the LM-head backward per part
    // (each part reads its columns of dlogits; dh accumulates over the parts).
    for (const [t0, n] of chunks(T, A.chunk)) {
      if (!(this.logitsKept && n === T)) this.recordLmHead(b, rows(A.hN, t0, n, H), A.logits, n);
      loss.logsoftmaxBackward(b, A.logits, rows(A.targets, t0, n, 1), rows(A.dlogp, t0, n, 1), A.dlogits, n, V, temperature);
      this.headParts().forEach(({ part, rows: r }, i) => {
        const cols = { ldy: V, col0: part.row0 };
        mg.dInput(b, A.dlogits, this.w(part), rows(A.dh, t0, n, H), n, r, H, { ...cols, accumulate: i > 0 });
        mg.dWeight(b, A.dlogits, rows(A.hN, t0, n, H), part.grad, n, r, H, cols);
      });
    }
    const fn = this.p("model.norm.weight");
    norm.rmsnormBackward(b, A.xs[c.numLayers], fn.value, A.dh, A.dx, fn.grad, T, H, c.rmsNormEps);
    // Layers, last first; A.dx holds d loss / d x_{l+1} on entry, d loss / d x_l on exit.
    for (let l = c.numLayers - 1; l >= 0; l--) {
      const P = (s: string) => this.p(`model.layers.${l}.${s}`);
      const W = (s: string) => this.w(P(s).parts[0]);
      if (!A.keep) this.recordLayer(b, A, l, T, true, false); // recompute internals (checkpointing)
      const L = this.layerActs(A, l);
      // MLP: x_{l+1} = xmid + down(swiglu(gate h2, up h2)).
      mg.dInput(b, A.dx, W("mlp.down_proj.weight"), A.da, T, H, I);
      mg.dWeight(b, A.dx, L.a, P("mlp.down_proj.weight").grad, T, H, I);
      if (L.gu && A.dgu) {
        // Stacked: dgu = (dgate | dup) per row; dh and both weight gradients in one product each.
        const gu = this.gateUp[l]!;
        ew.swigluGuBackward(b, L.gu, A.da, A.dgu, T, I);
        mg.dInput(b, A.dgu, this.gateUpW(l), A.dh, T, 2 * I, H);
        mg.dWeight(b, A.dgu, L.h2, gu.grad, T, 2 * I, H);
      } else {
        ew.swigluBackward(b, L.g!, L.u!, A.da, A.dg!, A.du!, T * I);
        mg.dInput(b, A.dg!, W("mlp.gate_proj.weight"), A.dh, T, I, H);
        mg.dInput(b, A.du!, W("mlp.up_proj.weight"), A.dh, T, I, H, { accumulate: true });
        mg.dWeight(b, A.dg!, L.h2, P("mlp.gate_proj.weight").grad, T, I, H);
        mg.dWeight(b, A.du!, L.h2, P("mlp.up_proj.weight").grad, T, I, H);
      }
      // dx += the norm's input gradient: dx = d loss / d xmid
      norm.rmsnormBackward(b, L.xmid, P("post_attention_layernorm.weight").value, A.dh, A.dx, P("post_attention_layernorm.weight").grad, T, H, c.rmsNormEps, { accumulate: true });
      // Attention: xmid = x_l + o_proj(attn(rope(q), rope(k), v)).
      mg.dInput(b, A.dx, W("self_attn.o_proj.weight"), A.datt, T, H, nh * hd);
      mg.dWeight(b, A.dx, L.att, P("self_attn.o_proj.weight").grad, T, H, nh * hd);
      attn.trainBackward(b, L.q, L.k, L.v, A.segStart, L.att, A.datt, L.lse, A.dq, A.dk, A.dv, T, nh, nkv, hd, 1 / Math.sqrt(hd));
      rope.ropeQkBackward(b, A.dq, A.dk, A.pos, { T, nh, nkv, hd, theta: c.ropeTheta });
      const proj: [string, GPUBuffer, number][] = [
        ["q_proj", A.dq, nh * hd],
        ["k_proj", A.dk, nkv * hd],
        ["v_proj", A.dv, nkv * hd],
      ];
      proj.forEach(([name, d, N], i) => {
        const w = P(`self_attn.${name}.weight`);
        mg.dInput(b, d, this.w(w.parts[0]), A.dh, T, N, H, { accumulate: i > 0 });
        mg.dWeight(b, d, L.h1, w.grad, T, N, H);
        mg.dBias(b, d, P(`self_attn.${name}.bias`).grad, T, N);
      });
      // dx += the norm's input gradient: dx = d loss / d x_l
      norm.rmsnormBackward(b, A.xs[l], P("input_layernorm.weight").value, A.dh, A.dx, P("input_layernorm.weight").grad, T, H, c.rmsNormEps, { accumulate: true });
    }
    // Each embedding part adds the gradient rows of the ids it holds (tokens are < V).
    for (const part of this.p("model.embed_tokens.weight").parts) {
      if (part.row0 < V) emb.embeddingBackward(b, A.tokenGroups, this.tokenGroupCount, A.dx, part.grad, T, H, part.row0, part.rows);
    }
  }

  /** Zero every gradient (start of an optimiser step): one clear per arena chunk. */
  recordZeroGrad(b: Batch): void {
    for (const c of this.arena) b.clear(c.grad);
  }

  /** One parameter's f32 master weights, its parts joined (checkpoints read tensor by tensor). */
  async readParam(p: Param, what: "value" | "grad" = "value"): Promise<Float32Array> {
    const read = (part: ParamPart) => this.gpu.readF32(part[what].buffer, part.size, part[what].offset);
    if (p.parts.length === 1) return read(p.parts[0]);
    const out = new Float32Array(p.size);
    for (const part of p.parts) out.set(await read(part), part.offset);
    return out;
  }

  /** Read every f32 master weight (tests; checkpoints use readParam one tensor at a time). */
  async readWeights(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const p of this.params) out.set(p.name, await this.readParam(p));
    return out;
  }

  async readGrads(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const p of this.params) out.set(p.name, await this.readParam(p, "grad"));
    return out;
  }

  destroy(): void {
    for (const c of this.arena) {
      c.value.destroy();
      c.grad.destroy();
    }
    for (const h of this.halfBuffers) h.destroy();
    if (this.acts) destroyActs(this.acts);
  }
}

function destroyActs(A: Acts): void {
  const { xs, layers, ...rest } = A;
  const buffers = [...xs, ...layers.flatMap((l) => Object.values(l)), ...Object.values(rest)];
  for (const v of buffers) if (v && typeof v === "object") (v as GPUBuffer).destroy();
}

/**
 * Most rows of logits per LM-head chunk before the binding limit: 1024, or
 * more while a chunk stays within 16 MiB (small vocabularies: a whole
 * micro-batch in one chunk, whose logits the backward then reuses).
 */
export function logitRowCap(V: number): number {
  return Math.max(1024, Math.floor((16 * 2 ** 20) / (V * 4) / 64) * 64);
}

/**
 * Rows of logits per LM-head chunk: as many as fit one storage binding (and
 * at most logitRowCap(V)), a multiple of 64 so every chunk's byte offset into
 * the [T, H] and [T] buffers stays 256-byte aligned.
 */
export function logitChunk(T: number, V: number, maxBinding: number): number {
  const fit = Math.floor(maxBinding / (V * 4));
  if (fit < 64) throw new Error(`training: 64 rows of logits (${64 * V * 4} bytes) exceed the max storage binding ${maxBinding}`);
  const c = Math.min(logitRowCap(V), Math.floor(fit / 64) * 64);
  return T <= c ? Math.max(T, 1) : c;
}

function* chunks(T: number, size: number): Generator<[number, number]> {
  for (let t0 = 0; t0 < T; t0 += size) yield [t0, Math.min(size, T - t0)];
}

/** Rows [t0, t0+n) of a row-major f32/u32 buffer with `width` elements per row. */
function rows(buf: GPUBuffer, t0: number, n: number, width: number): { buffer: GPUBuffer; offset: number; size: number } {
  return { buffer: buf, offset: t0 * width * 4, size: n * width * 4 };
}

/** Pack sequences (prompt + response token ids) into one micro-batch. */
export function packSequences(seqs: { tokens: number[]; lossFrom: number }[]): PackedBatch {
  const T = seqs.reduce((a, s) => a + s.tokens.length, 0);
  const mb: PackedBatch = {
    tokens: new Uint32Array(T),
    pos: new Uint32Array(T),
    segStart: new Uint32Array(T),
    targets: new Uint32Array(T),
    mask: new Float32Array(T),
  };
  let o = 0;
  for (const s of seqs) {
    const n = s.tokens.length;
    for (let i = 0; i < n; i++) {
      mb.tokens[o + i] = s.tokens[i];
      mb.pos[o + i] = i;
      mb.segStart[o + i] = o;
      // The log-prob at i is of token i+1; the last position predicts nothing.
      mb.targets[o + i] = i + 1 < n ? s.tokens[i + 1] : 0;
      mb.mask[o + i] = i + 1 < n && i + 1 >= s.lossFrom ? 1 : 0;
    }
    o += n;
  }
  return mb;
}
