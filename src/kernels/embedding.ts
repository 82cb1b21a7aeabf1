/**
 * Token embedding gather (kernels/embedding.wgsl).
 *
 * Legend: T tokens, D hidden size, V vocabulary. The table may be split into
 * row chunks [row0, row0 + rows) so each chunk fits one storage binding
 * (151936 × 1536 × 2 bytes is over the 128 MiB limit); one `gather` per chunk
 * writes exactly the tokens whose id lies in it. The backward (f32 only)
 * scatter-adds dy into the table gradient chunk by chunk the same way.
 */
import type { Batch } from "../gpu/batch.ts";
import type { Binding, Gpu } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import { bindingBytes, checkBinding, checkCount, dtypeConstants, grid, sameBuffer, type Dtype } from "./common.ts";

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

/**
 * Backward of gather, in place: dTable[ids[t] - row0] += dy[t] for ids in
 * [row0, row0 + rows) (f64 sums per row, rounded once onto dTable).
 */
export function embeddingBackwardRef(
  ids: Uint32Array,
  dy: Float32Array, // [T, D]
  dTable: Float32Array, // [rows, D], accumulated
  D: number,
  row0 = 0,
): Float32Array {
  const T = ids.length;
  const rows = dTable.length / D;
  if (dy.length !== T * D || !Number.isInteger(rows)) {
    throw new Error(`embeddingBackwardRef: dy has ${dy.length} elements (want ${T}×${D}), dTable ${dTable.length} (want rows×${D})`);
  }
  const sums = new Map<number, Float64Array>();
  for (let t = 0; t < T; t++) {
    const r = ids[t] - row0;
    if (r < 0 || r >= rows) continue;
    let acc = sums.get(r);
    if (!acc) sums.set(r, (acc = new Float64Array(D)));
    for (let d = 0; d < D; d++) acc[d] += dy[t * D + d];
  }
  for (const [r, acc] of sums) for (let d = 0; d < D; d++) dTable[r * D + d] += acc[d];
  return dTable;
}

/**
 * The tokens grouped by id, for the scatter-add (the backward of gather): one
 * u32 index of starts [U + 1], the U distinct ids in order of first
 * appearance, and order [T], the token positions of group g at order[starts[g]
 * .. starts[g + 1]) in ascending order. `count` = U. O(T) on the CPU, which
 * packed the tokens anyway.
 */
export function groupTokens(ids: ArrayLike<number>): { index: Uint32Array; count: number } {
  const T = ids.length;
  const groupOf = new Map<number, number>();
  const sizes: number[] = [];
  const first: number[] = [];
  for (let t = 0; t < T; t++) {
    let g = groupOf.get(ids[t]);
    if (g === undefined) {
      groupOf.set(ids[t], (g = sizes.length));
      sizes.push(0);
      first.push(ids[t]);
    }
    sizes[g]++;
  }
  const U = sizes.length;
  const index = new Uint32Array(2 * U + 1 + T);
  for (let g = 0; g < U; g++) {
    index[g + 1] = index[g] + sizes[g];
    index[U + 1 + g] = first[g];
  }
  const next = index.slice(0, U); // fill position per group
  const order0 = 2 * U + 1;
  for (let t = 0; t < T; t++) index[order0 + next[groupOf.get(ids[t])!]++] = t;
  return { index, count: U };
}

export async function loadEmbedding(gpu: Gpu, dtype: Dtype) {
  const c = { ...dtypeConstants(gpu, dtype, "embedding"), WG };
  const [k, kScatter] = await Promise.all([
    gpu.kernel("embedding", "gather", c),
    // The backward is f32-only: dy and the table gradient are f32 in training.
    dtype === "f32" ? gpu.kernel("embedding", "scatter_add", c) : null,
  ]);
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
    /**
     * Backward of gather (f32): dTable[ids[t] - row0, :] += dy[t, :] for the
     * tokens whose id lies in this chunk [row0, row0 + rows); dTable [rows, D]
     * is accumulated, so micro-batches (and tied LM-head gradients) add up.
     * `index` holds the T tokens grouped by id (`groupTokens(ids).index`, U =
     * its `count` groups). Deterministic: each row is summed by one
     * invocation per column in token order. f32 loaders only.
     */
    embeddingBackward(b: Batch, index: Binding, U: number, dy: Binding, dTable: Binding, T: number, D: number, row0: number, rows: number): void {
      const what = "embedding.scatter_add";
      if (!kScatter) throw new KernelError(`kernel ${what} is f32-only; load the embedding kernels with dtype "f32" for training`);
      for (const [v, n] of [[T, "T"], [U, "U"], [D, "D"], [row0, "row0"], [rows, "rows"]] as const) checkCount(v, n, what);
      if (T * D > 0xffffffff || rows * D > 0xffffffff) throw new KernelError(`kernel ${what}: T·D or rows·D overflows u32`);
      if (U > T || (T > 0 && U === 0)) throw new KernelError(`kernel ${what}: ${U} id groups for ${T} tokens`);
      checkBinding(index, 2 * U + 1 + T, 4, "index", what);
      checkBinding(dy, T * D, 4, "dy", what);
      checkBinding(dTable, rows * D, 4, "dTable", what);
      const limit = gpu.limits.maxStorageBufferBindingSize;
      for (const [x, name] of [[dTable, "dTable"], [dy, "dy"]] as const) {
        if (bindingBytes(x) > limit) {
          throw new KernelError(
            `kernel ${what}: ${name} binds ${bindingBytes(x)} bytes, over the adapter's maxStorageBufferBindingSize ${limit}; ` +
              `bind a byte range and split the vocabulary into row chunks [row0, row0 + rows)`,
          );
        }
      }
      if (sameBuffer(dTable, index) || sameBuffer(dTable, dy)) throw new KernelError(`kernel ${what}: dTable shares a buffer with index or dy`);
      if (T === 0 || D === 0 || rows === 0) return;
      b.dispatch(kScatter, {
        params: params().u32(T).u32(D).u32(row0).u32(rows).u32(U),
        buffers: [index, dy, dTable],
        groups: grid(U * Math.ceil(D / WG), max, what),
        label: "embedding.scatter_add",
      });
    },
  };
}
