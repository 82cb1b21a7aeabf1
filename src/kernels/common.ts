/**
 * What every kernel wrapper shares: the storage dtype and its template
 * constants, the 2-D workgroup grid, and the checks of counts and bindings
 * (errors name the kernel and the tensor).
 */
import type { Binding, Gpu } from "../gpu/index.ts";
import { KernelError } from "../gpu/index.ts";

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
