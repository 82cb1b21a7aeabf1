/**
 * Token embedding gather (kernels/embedding.wgsl).
 *
 * Legend: T tokens, D hidden size, V vocabulary. The table may be split into
 * row chunks [row0, row0 + rows) so each chunk fits one storage binding
 * (151936 × 1536 × 2 bytes is over the 128 MiB limit); one `gather` per chunk
 * writes exactly the tokens whose id lies in it.
 */
import type { Batch } from "../gpu/batch.ts";
import type { Binding, Gpu } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import { checkBinding, checkCount, dtypeConstants, grid, type Dtype } from "./elementwise.ts";

const WG = 64;

/**
 * Token ids must be integers in [0, vocab): the GPU gather silently skips an
 * id no chunk holds, so check on the CPU before upload.
 */
export function checkIds(ids: ArrayLike<number>, vocab: number, what = "token ids"): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocab) {
      throw new RangeError(`${what}: id ${id} at position ${i} is outside the vocabulary [0, ${vocab})`);
    }
  }
}

/** out[t] = table[ids[t] - row0] for ids in [row0, row0 + rows); other rows of out unchanged. */
export function gatherRef(
  ids: Uint32Array,
  table: Float32Array, // [rows, D]
  out: Float32Array, // [T, D], updated in place
  D: number,
  row0 = 0,
): Float32Array {
  const rows = table.length / D;
  for (let t = 0; t < ids.length; t++) {
    const r = ids[t] - row0;
    if (r < 0 || r >= rows) continue;
    out.set(table.subarray(r * D, (r + 1) * D), t * D);
  }
  return out;
}

export async function loadEmbedding(gpu: Gpu, dtype: Dtype) {
  const k = await gpu.kernel("embedding", "gather", { ...dtypeConstants(gpu, dtype, "embedding"), WG });
  const bytes = dtype === "f16" ? 2 : 4;
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  return {
    /** out[t, :] = table[ids[t] - row0, :] where row0 <= ids[t] < row0 + rows. */
    gather(b: Batch, ids: Binding, table: Binding, out: Binding, T: number, D: number, row0: number, rows: number): void {
      const what = "embedding.gather";
      for (const [v, n] of [[T, "T"], [D, "D"], [row0, "row0"], [rows, "rows"]] as const) checkCount(v, n, what);
      if (T * D > 0xffffffff || rows * D > 0xffffffff) throw new KernelError(`kernel ${what}: T·D or rows·D overflows u32`);
      checkBinding(ids, T, 4, "ids", what);
      checkBinding(table, rows * D, bytes, "table", what);
      checkBinding(out, T * D, bytes, "out", what);
      if (T === 0 || D === 0 || rows === 0) return;
      b.dispatch(k, {
        params: params().u32(T).u32(D).u32(row0).u32(rows),
        buffers: [ids, table, out],
        groups: grid(T * Math.ceil(D / WG), max, what),
        label: "embedding",
      });
    },
  };
}
