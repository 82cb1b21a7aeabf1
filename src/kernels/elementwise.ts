/**
 * Elementwise kernels (kernels/elementwise.wgsl): SwiGLU and residual adds,
 * and the SwiGLU backward (f32 only).
 * Also the small helpers the other forward-kernel wrappers share: the dtype
 * constants, the 2-D workgroup grid and binding checks.
 *
 * Legend: n = element count. Buffers hold `dtype` (f32 or f16); arithmetic
 * is f32 and rounds once to the storage type.
 */
import type { Batch } from "../gpu/batch.ts";
import type { Binding, Gpu } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";

export type Dtype = "f32" | "f16";

/** Template constants for a storage dtype; f16 needs the adapter feature. */
export function dtypeConstants(gpu: Gpu, dtype: Dtype, family: string): { T: string; ENABLE: string } {
  if (dtype !== "f32" && dtype !== "f16") throw new KernelError(`kernel ${family}: dtype "${dtype}" is not f32 or f16`);
  if (dtype === "f16" && !gpu.features.f16) {
    throw new KernelError(`kernel ${family}: dtype f16 needs the shader-f16 feature, which adapter "${gpu.adapter.description}" lacks`);
  }
  return { T: dtype, ENABLE: dtype === "f16" ? "enable f16;" : "" };
}

/**
 * Workgroup counts for `groups` workgroups: 1-D when it fits one dimension,
 * else 2-D (x full rows of `max`); kernels rebuild the linear group index as
 * wid.y * nwg.x + wid.x and drop the tail past `groups`.
 */
export function grid(groups: number, max: number, what: string): [number, number] {
  if (!Number.isInteger(groups) || groups < 0) throw new KernelError(`kernel ${what}: bad workgroup count ${groups}`);
  if (groups <= max) return [groups, 1];
  const y = Math.ceil(groups / max);
  if (y > max) throw new KernelError(`kernel ${what}: ${groups} workgroups exceed ${max}² (split the call)`);
  return [Math.ceil(groups / y), y];
}

/** Throws unless `v` is a non-negative integer below 2^32. */
export function checkCount(v: number, name: string, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new KernelError(`kernel ${what}: ${name} = ${v} is not a u32`);
}

function parts(b: Binding): { buffer: GPUBuffer; offset: number; size: number } {
  if ("buffer" in b) {
    const offset = b.offset ?? 0;
    return { buffer: b.buffer, offset, size: b.size ?? b.buffer.size - offset };
  }
  return { buffer: b, offset: 0, size: b.size };
}

/** Bytes a binding covers. */
export function bindingBytes(b: Binding): number {
  return parts(b).size;
}

/** Throws when a binding holds fewer than `count` elements of `bytesPer` bytes. */
export function checkBinding(b: Binding, count: number, bytesPer: number, name: string, what: string): void {
  const have = bindingBytes(b);
  if (have < count * bytesPer) {
    throw new KernelError(`kernel ${what}: ${name} binds ${have} bytes, needs ${count} × ${bytesPer} = ${count * bytesPer}`);
  }
}

/** Same buffer and same byte range. */
export function sameBinding(a: Binding, b: Binding): boolean {
  const p = parts(a);
  const q = parts(b);
  return p.buffer === q.buffer && p.offset === q.offset && p.size === q.size;
}

export function sameBuffer(a: Binding, b: Binding): boolean {
  return parts(a).buffer === parts(b).buffer;
}

const WG = 256;

// ---- CPU references (f32 in/out, f64 arithmetic rounded once) ----

export function siluRef(g: number): number {
  return g / (1 + Math.exp(-g));
}

export function swigluRef(gate: Float32Array, up: Float32Array): Float32Array {
  if (gate.length !== up.length) throw new Error(`swigluRef: gate has ${gate.length} elements, up ${up.length}`);
  const out = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) out[i] = siluRef(gate[i]) * up[i];
  return out;
}

export function addRef(x: Float32Array, y: Float32Array): Float32Array {
  if (x.length !== y.length) throw new Error(`addRef: x has ${x.length} elements, y ${y.length}`);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] + y[i];
  return out;
}

/**
 * Backward of out = silu(gate)·up: dup = dout·silu(gate),
 * dgate = dout·up·silu'(gate) with silu'(g) = s·(1 + g·(1 − s)), s = sigmoid(g).
 */
export function swigluBackwardRef(
  gate: Float32Array,
  up: Float32Array,
  dout: Float32Array,
): { dgate: Float32Array; dup: Float32Array } {
  if (gate.length !== up.length || gate.length !== dout.length) {
    throw new Error(`swigluBackwardRef: gate has ${gate.length} elements, up ${up.length}, dout ${dout.length}; all must match`);
  }
  const dgate = new Float32Array(gate.length);
  const dup = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    const s = 1 / (1 + Math.exp(-g));
    dup[i] = dout[i] * g * s;
    dgate[i] = dout[i] * up[i] * s * (1 + g * (1 - s));
  }
  return { dgate, dup };
}

// Residual add, backward: y = x + f(x) passes dy unchanged to both branches,
// so it needs no kernel. The model keeps one gradient buffer for the residual
// stream: the branch's backward takes dy as its output gradient, and the
// gradient it produces for the branch input is merged with `addInPlace(dx, dBranch)`
// (or `add` into a fresh buffer) before flowing to the layer below.

// ---- GPU ----

export async function loadElementwise(gpu: Gpu, dtype: Dtype) {
  const c = { ...dtypeConstants(gpu, dtype, "elementwise"), WG };
  const [kSwiglu, kAdd, kAddInPlace, kSwigluBack] = await Promise.all([
    gpu.kernel("elementwise", "swiglu", c),
    gpu.kernel("elementwise", "add", c),
    gpu.kernel("elementwise", "add_inplace", c),
    // Backward kernels are f32-only (training keeps f32 activations and gradients).
    dtype === "f32" ? gpu.kernel("elementwise", "swiglu_backward", c) : null,
  ]);
  const bytes = dtype === "f16" ? 2 : 4;
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  const groups = (n: number, what: string) => grid(Math.ceil(n / WG), max, what);
  const check = (what: string, n: number, bs: [Binding, string][]) => {
    checkCount(n, "n", what);
    for (const [b, name] of bs) checkBinding(b, n, bytes, name, what);
  };
  const addInPlace = (b: Batch, x: Binding, y: Binding, n: number): void => {
    check("elementwise.add_inplace", n, [[x, "x"], [y, "y"]]);
    if (sameBuffer(x, y)) throw new KernelError("kernel elementwise.add_inplace: x and y are the same buffer (WebGPU cannot bind it writable twice)");
    b.dispatch(kAddInPlace, { params: paramsN(n), buffers: [x, y], groups: groups(n, "elementwise.add_inplace"), label: "add_inplace" });
  };
  return {
    /** out = silu(gate) · up over n elements. */
    swiglu(b: Batch, gate: Binding, up: Binding, out: Binding, n: number): void {
      check("elementwise.swiglu", n, [[gate, "gate"], [up, "up"], [out, "out"]]);
      if (sameBuffer(out, gate) || sameBuffer(out, up)) {
        throw new KernelError("kernel elementwise.swiglu: out shares a buffer with gate or up; give it its own buffer");
      }
      b.dispatch(kSwiglu, { params: paramsN(n), buffers: [gate, up, out], groups: groups(n, "elementwise.swiglu"), label: "swiglu" });
    },
    /** out = x + y; out may be exactly x or y (then the in-place kernel runs). */
    add(b: Batch, x: Binding, y: Binding, out: Binding, n: number): void {
      if (sameBinding(out, x)) return addInPlace(b, x, y, n);
      if (sameBinding(out, y)) return addInPlace(b, y, x, n);
      check("elementwise.add", n, [[x, "x"], [y, "y"], [out, "out"]]);
      if (sameBuffer(out, x) || sameBuffer(out, y)) {
        throw new KernelError("kernel elementwise.add: out overlaps x or y's buffer without being exactly it; WebGPU cannot bind it twice");
      }
      b.dispatch(kAdd, { params: paramsN(n), buffers: [x, y, out], groups: groups(n, "elementwise.add"), label: "add" });
    },
    /** x += y. */
    addInPlace,
    /**
     * Backward of swiglu over n f32 elements: dgate and dup written
     * (overwritten) from gate, up and dout. f32 loaders only.
     */
    swigluBackward(b: Batch, gate: Binding, up: Binding, dout: Binding, dgate: Binding, dup: Binding, n: number): void {
      const what = "elementwise.swiglu_backward";
      if (!kSwigluBack) throw new KernelError(`kernel ${what} is f32-only; load the elementwise kernels with dtype "f32" for training`);
      check(what, n, [[gate, "gate"], [up, "up"], [dout, "dout"], [dgate, "dgate"], [dup, "dup"]]);
      for (const [o, oName] of [[dgate, "dgate"], [dup, "dup"]] as const) {
        for (const [x, xName] of [[gate, "gate"], [up, "up"], [dout, "dout"]] as const) {
          if (sameBuffer(o, x)) throw new KernelError(`kernel ${what}: ${oName} shares a buffer with ${xName}; give it its own buffer`);
        }
      }
      if (sameBuffer(dgate, dup)) throw new KernelError(`kernel ${what}: dgate and dup share a buffer; give each its own`);
      b.dispatch(kSwigluBack, {
        params: paramsN(n),
        buffers: [gate, up, dout, dgate, dup],
        groups: groups(n, what),
        label: "swiglu_backward",
      });
    },
  };
}

function paramsN(n: number) {
  return params().u32(n);
}
