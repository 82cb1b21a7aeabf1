/**
 * Elementwise kernels (kernels/elementwise.wgsl): SwiGLU and residual adds,
 * and the SwiGLU backward (f32 only); SwiGLU and its backward also over gate
 * and up side by side in one [rows, 2w] tensor (training's stacked gate/up
 * product).
 *
 * Legend: n = element count. Buffers hold `dtype` (f32 or f16); arithmetic
 * is f32 and rounds once to the storage type.
 */
import type { Batch } from "../gpu/batch.ts";
import type { Binding, Gpu } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import { checkBinding, checkCount, dtypeConstants, grid, sameBinding, sameBuffer, type Dtype } from "./common.ts";

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
  const [kSwiglu, kAdd, kAddInPlace, kSwigluBack, kGu, kGuBack] = await Promise.all([
    gpu.kernel("elementwise", "swiglu", c),
    gpu.kernel("elementwise", "add", c),
    gpu.kernel("elementwise", "add_inplace", c),
    // Backward kernels are f32-only (training keeps f32 activations and gradients).
    dtype === "f32" ? gpu.kernel("elementwise", "swiglu_backward", c) : null,
    gpu.kernel("elementwise", "swiglu_gu", c),
    dtype === "f32" ? gpu.kernel("elementwise", "swiglu_gu_backward", c) : null,
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
    /** out [rows, w] = silu(gate) · up, from gu [rows, 2w] (each row: its gate, then its up). */
    swigluGu(b: Batch, gu: Binding, out: Binding, rows: number, w: number): void {
      const what = "elementwise.swiglu_gu";
      checkCount(rows * w, "rows·w", what);
      checkBinding(gu, 2 * rows * w, bytes, "gu", what);
      checkBinding(out, rows * w, bytes, "out", what);
      if (sameBuffer(gu, out)) throw new KernelError(`kernel ${what}: out shares a buffer with gu; give it its own buffer`);
      if (rows * w === 0) return;
      b.dispatch(kGu, { params: params().u32(rows * w).u32(w), buffers: [gu, out], groups: groups(rows * w, what), label: "swiglu_gu" });
    },
    /**
     * Backward of swigluGu (f32 loaders only): dgu [rows, 2w] (each row: its
     * dgate, then its dup) from gu [rows, 2w] and dout [rows, w], overwritten.
     */
    swigluGuBackward(b: Batch, gu: Binding, dout: Binding, dgu: Binding, rows: number, w: number): void {
      const what = "elementwise.swiglu_gu_backward";
      if (!kGuBack) throw new KernelError(`kernel ${what} is f32-only; load the elementwise kernels with dtype "f32" for training`);
      checkCount(rows * w, "rows·w", what);
      checkBinding(gu, 2 * rows * w, 4, "gu", what);
      checkBinding(dout, rows * w, 4, "dout", what);
      checkBinding(dgu, 2 * rows * w, 4, "dgu", what);
      if (sameBuffer(dgu, gu) || sameBuffer(dgu, dout)) throw new KernelError(`kernel ${what}: dgu shares a buffer with gu or dout; give it its own buffer`);
      if (rows * w === 0) return;
      b.dispatch(kGuBack, { params: params().u32(rows * w).u32(w), buffers: [gu, dout, dgu], groups: groups(rows * w, what), label: "swiglu_gu_backward" });
    },
  };
}

function paramsN(n: number) {
  return params().u32(n);
}
