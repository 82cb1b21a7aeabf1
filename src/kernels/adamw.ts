/**
 * The optimiser on the GPU (kernels/adamw.wgsl): AdamW on f32 master
 * weights (with the clip factor given, or taken on the GPU from the global
 * norm: `stepClipped`), the f32 → f16 compute copy, the global gradient norm
 * for clipping, and the constant-with-warm-up learning rate.
 *
 * Legend: n elements of one tensor; t the 1-based optimiser step.
 * A tensor bigger than one storage binding (the 1.5B model's embedding is
 * 933 MB in f32, a binding holds 128 MiB) is split into binding-sized
 * slices by the wrappers, so callers pass whole buffers.
 */
import type { Batch } from "../gpu/batch.ts";
import type { Binding, Gpu } from "../gpu/index.ts";
import { KernelError, params, STORAGE } from "../gpu/index.ts";
import { bindingBytes, checkBinding, checkCount, grid, sameBuffer } from "./common.ts";

const WG = 256; // power of two (tree reductions)
const ITEMS = 16; // elements per invocation in sumsq_partial: CHUNK = 4096 per workgroup
const CHUNK = WG * ITEMS;

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step t, for the bias corrections 1 − β^t. */
  step: number;
  /** Multiplies the gradient first: 1/accumulation steps × the clip factor. */
  gradScale: number;
}

/** Throws on options AdamW cannot use, naming the field. */
export function checkAdamWOptions(o: AdamWOptions, what = "adamw"): void {
  const bad = (field: string, want: string) => {
    throw new KernelError(`${what}: option ${field} = ${(o as unknown as Record<string, unknown>)[field]}; want ${want}`);
  };
  if (!(o.lr >= 0 && Number.isFinite(o.lr))) bad("lr", "a finite number >= 0");
  if (!(o.beta1 >= 0 && o.beta1 < 1)) bad("beta1", "a number in [0, 1)");
  if (!(o.beta2 >= 0 && o.beta2 < 1)) bad("beta2", "a number in [0, 1)");
  if (!(o.eps > 0 && Number.isFinite(o.eps))) bad("eps", "a finite number > 0");
  if (!(o.weightDecay >= 0 && Number.isFinite(o.weightDecay))) bad("weightDecay", "a finite number >= 0");
  if (!(Number.isInteger(o.step) && o.step >= 1)) bad("step", "an integer >= 1 (t is 1-based)");
  if (!Number.isFinite(o.gradScale)) bad("gradScale", "a finite number");
}

/**
 * CPU reference of one AdamW step, in place on f32 arrays (f64 arithmetic,
 * each stored value rounded to f32 as the GPU stores it). PyTorch's order:
 * decoupled decay p ← p(1 − lr·wd) first, then the bias-corrected Adam step.
 */
export function adamwRef(param: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, o: AdamWOptions): void {
  checkAdamWOptions(o, "adamwRef");
  const n = param.length;
  if (grad.length !== n || m.length !== n || v.length !== n) {
    throw new Error(`adamwRef: param ${n}, grad ${grad.length}, m ${m.length}, v ${v.length} elements; all must match`);
  }
  const bc1 = 1 - o.beta1 ** o.step;
  const bc2 = 1 - o.beta2 ** o.step;
  for (let i = 0; i < n; i++) {
    const g = grad[i] * o.gradScale;
    m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
    v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
    const p = param[i] * (1 - o.lr * o.weightDecay);
    param[i] = p - (o.lr * (m[i] / bc1)) / (Math.sqrt(v[i] / bc2) + o.eps);
  }
}

/**
 * Constant learning rate after a linear warm-up: lr · min(1, t / warmupSteps)
 * for the 1-based step t (so the first step already moves; no warm-up when
 * warmupSteps is 0).
 */
export function lrAt(step: number, o: { lr: number; warmupSteps: number }): number {
  if (!(Number.isInteger(step) && step >= 1)) throw new RangeError(`lrAt: step ${step} must be an integer >= 1 (1-based)`);
  if (!(Number.isInteger(o.warmupSteps) && o.warmupSteps >= 0)) {
    throw new RangeError(`lrAt: warmupSteps ${o.warmupSteps} must be an integer >= 0`);
  }
  if (!(o.lr >= 0 && Number.isFinite(o.lr))) throw new RangeError(`lrAt: lr ${o.lr} must be a finite number >= 0`);
  return o.warmupSteps > 0 ? o.lr * Math.min(1, step / o.warmupSteps) : o.lr;
}

/**
 * Global-norm clipping factor, as torch.nn.utils.clip_grad_norm_:
 * min(1, maxNorm / (norm + 1e-6)). A non-finite norm means a NaN or Inf
 * gradient somewhere: that is an error (skip the update), never a factor.
 * maxNorm = Infinity turns clipping off.
 */
export function clipFactor(norm: number, maxNorm: number): number {
  if (!(maxNorm > 0)) throw new RangeError(`clipFactor: maxNorm ${maxNorm} must be > 0 (Infinity for no clipping)`);
  if (!Number.isFinite(norm) || norm < 0) {
    throw new RangeError(`clipFactor: gradient norm is ${norm}; a gradient holds NaN or Inf, skip this update`);
  }
  return Math.min(1, maxNorm / (norm + 1e-6));
}

/** Σ x² over several arrays in f64 (the gradNormSq reference). */
export function normSqRef(xs: Float32Array[]): number {
  let s = 0;
  for (const x of xs) for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return s;
}

/** A byte range of a binding. */
function sub(b: Binding, byteOffset: number, bytes: number): Binding {
  const buffer = "buffer" in b ? b.buffer : b;
  const base = "buffer" in b ? (b.offset ?? 0) : 0;
  return { buffer, offset: base + byteOffset, size: bytes };
}

/**
 * Element ranges [start, start + count) of at most `maxElems` elements
 * (`maxElems` a multiple of 128 so every slice starts 256-byte aligned in
 * f32 and in f16).
 */
export function slices(n: number, maxElems: number): { start: number; count: number }[] {
  const out: { start: number; count: number }[] = [];
  for (let s = 0; s < n; s += maxElems) out.push({ start: s, count: Math.min(maxElems, n - s) });
  return out;
}

export interface AdamWLoadOptions {
  /** Largest storage binding to use (default: the device limit); tests lower it to exercise slicing. */
  maxBindingBytes?: number;
}

export async function loadAdamW(gpu: Gpu, lo: AdamWLoadOptions = {}) {
  const c = { WG, ITEMS };
  const [kStep, kStepClip, kCopy, kPartial, kFinal] = await Promise.all([
    gpu.kernel("adamw", "step", c),
    gpu.kernel("adamw", "step_clip", c),
    gpu.kernel("adamw", "copy_f16", c),
    gpu.kernel("adamw", "sumsq_partial", c),
    gpu.kernel("adamw", "sumsq_final", c),
  ]);
  const maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;
  const maxBinding = Math.min(lo.maxBindingBytes ?? Infinity, gpu.limits.maxStorageBufferBindingSize);
  // Elements per slice: a multiple of 128 (256-byte aligned offsets for f32 and f16).
  const sliceElems = Math.floor(maxBinding / 4 / 128) * 128;
  if (sliceElems < 128) throw new KernelError(`adamw: maxBindingBytes ${maxBinding} is below 512`);
  // Partial sums for gradNormSq; grown (never shrunk) when a call needs more.
  let scratch: GPUBuffer | null = null;
  const scratchFor = (count: number): GPUBuffer => {
    if (!scratch || scratch.size < count * 4) {
      scratch = gpu.device.createBuffer({ size: Math.max(1024, count * 4), usage: STORAGE, label: "adamw.gradNormSq partials" });
    }
    return scratch;
  };

  /** step / step_clip over n elements, in slices of at most one binding each. */
  function recordStep(b: Batch, what: string, four: Binding[], n: number, opts: AdamWOptions, clip: { normSq: Binding; maxNorm: number } | null): void {
    checkCount(n, "n", what);
    checkAdamWOptions(opts, what);
    const names = ["param", "grad", "m", "v"];
    four.forEach((x, i) => checkBinding(x, n, 4, names[i], what));
    for (let i = 0; i < 4; i++) {
      for (let j = i + 1; j < 4; j++) {
        if (sameBuffer(four[i], four[j])) throw new KernelError(`kernel ${what}: ${names[i]} and ${names[j]} share a buffer; each needs its own`);
      }
    }
    if (clip) {
      if (!(clip.maxNorm >= 0 && Number.isFinite(clip.maxNorm))) throw new KernelError(`kernel ${what}: maxNorm = ${clip.maxNorm}; want a finite number >= 0 (0: no clipping)`);
      checkBinding(clip.normSq, 1, 4, "normSq", what);
      four.forEach((x, i) => {
        if (sameBuffer(x, clip.normSq)) throw new KernelError(`kernel ${what}: ${names[i]} shares a buffer with normSq`);
      });
    }
    const bc1 = 1 - opts.beta1 ** opts.step;
    const bc2 = 1 - opts.beta2 ** opts.step;
    for (const s of slices(n, sliceElems)) {
      const at = (x: Binding) => sub(x, s.start * 4, s.count * 4);
      const u = params()
        .u32(s.count)
        .f32(1 - opts.lr * opts.weightDecay)
        .f32(opts.beta1)
        .f32(opts.beta2)
        .f32(opts.lr / bc1)
        .f32(1 / Math.sqrt(bc2))
        .f32(opts.eps)
        .f32(opts.gradScale)
        .f32(clip?.maxNorm ?? 0);
      b.dispatch(clip ? kStepClip : kStep, {
        params: u,
        buffers: clip ? [...four.map(at), clip.normSq] : four.map(at),
        groups: grid(Math.ceil(s.count / WG), maxGroups, what),
        label: clip ? "adamw.step_clip" : "adamw.step",
      });
    }
  }

  return {
    /** One AdamW step over n f32 elements: param, m, v updated in place. */
    step(b: Batch, param: Binding, grad: Binding, m: Binding, v: Binding, n: number, opts: AdamWOptions): void {
      recordStep(b, "adamw.step", [param, grad, m, v], n, opts, null);
    },

    /**
     * The AdamW step with global-norm clipping decided on the GPU: `clip.normSq`
     * holds Σ g² of the unscaled gradients (gradNormSq's output, recorded
     * earlier in the same batch); the gradient is scaled by gradScale ×
     * min(1, maxNorm / (|gradScale|·√normSq + 1e-6)) (maxNorm 0: no clip), and
     * a non-finite norm leaves param, m and v unchanged. The optimiser runs it
     * once per parameter-arena chunk (many tensors, zero padding between them).
     */
    stepClipped(b: Batch, param: Binding, grad: Binding, m: Binding, v: Binding, n: number, opts: AdamWOptions, clip: { normSq: Binding; maxNorm: number }): void {
      recordStep(b, "adamw.stepClipped", [param, grad, m, v], n, opts, clip);
    },

    /** out16 (f16, packed two per u32) = f16(param) over n elements; values past ±65504 clamp. */
    copyToF16(b: Batch, param: Binding, out16: Binding, n: number): void {
      const what = "adamw.copyToF16";
      checkCount(n, "n", what);
      checkBinding(param, n, 4, "param", what);
      checkBinding(out16, 2 * Math.ceil(n / 2), 2, "out16", what);
      if (sameBuffer(param, out16)) throw new KernelError(`kernel ${what}: param and out16 share a buffer`);
      for (const s of slices(n, sliceElems)) {
        b.dispatch(kCopy, {
          params: params().u32(s.count),
          buffers: [sub(param, s.start * 4, s.count * 4), sub(out16, s.start * 2, 4 * Math.ceil(s.count / 2))],
          groups: grid(Math.ceil(s.count / 2 / WG), maxGroups, what),
          label: "adamw.copy_f16",
        });
      }
    },

    /**
     * out[0] = Σ over all tensors of Σ x² (f32). Per-workgroup partial sums
     * of fixed 4096-element slices, then one workgroup adds the partials in a
     * fixed order: the same inputs give the same bits every run.
     */
    gradNormSq(b: Batch, grads: Binding[], ns: number[], out: Binding): void {
      const what = "adamw.gradNormSq";
      if (grads.length !== ns.length) {
        throw new KernelError(`kernel ${what}: ${grads.length} gradient bindings but ${ns.length} element counts`);
      }
      checkBinding(out, 1, 4, "out", what);
      let count = 0;
      const jobs: { x: Binding; n: number; base: number }[] = [];
      grads.forEach((g, t) => {
        checkCount(ns[t], `ns[${t}]`, what);
        checkBinding(g, ns[t], 4, `grads[${t}]`, what);
        if (sameBuffer(g, out)) throw new KernelError(`kernel ${what}: grads[${t}] shares a buffer with out`);
        for (const s of slices(ns[t], sliceElems)) {
          jobs.push({ x: sub(g, s.start * 4, s.count * 4), n: s.count, base: count });
          count += Math.ceil(s.count / CHUNK);
        }
      });
      if (count > 0xffffffff) throw new KernelError(`kernel ${what}: ${count} partial sums overflow u32`);
      const partials = scratchFor(count);
      for (const j of jobs) {
        b.dispatch(kPartial, {
          params: params().u32(j.n).u32(j.base),
          buffers: [j.x, partials],
          groups: grid(Math.ceil(j.n / CHUNK), maxGroups, what),
          label: "adamw.sumsq_partial",
        });
      }
      b.dispatch(kFinal, {
        params: params().u32(count),
        buffers: [{ buffer: partials, offset: 0, size: Math.max(4, count * 4) }, out],
        groups: [1],
        label: "adamw.sumsq_final",
      });
    },

    /** Bytes of the partial-sum scratch buffer held now (for memory plans). */
    scratchBytes(): number {
      return scratch ? bindingBytes(scratch) : 0;
    },
  };
}

export type AdamW = Awaited<ReturnType<typeof loadAdamW>>;
