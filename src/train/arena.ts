/**
 * The parameter arena: every f32 parameter part at an aligned offset in a
 * few big buffers ("chunks", each at most one storage binding), with the
 * gradients, and the optimiser's two moments, in buffers of the same layout.
 * The optimiser step, the gradient norm and zeroing then run once per chunk
 * instead of once per tensor (the 1.5B model has 340 tensors, the tiny
 * ones 26 to 40: one chunk), and a kernel binds a tensor as a range
 * {buffer, offset, size} of its chunk.
 *
 * Offsets are multiples of `alignBytes` (the device's
 * minStorageBufferOffsetAlignment, 256). The padding between tensors is zero
 * in every buffer and stays zero under AdamW (g = 0 and m = v = 0 give
 * p ← 0·decay − 0), so a kernel may run over a whole chunk.
 */

/** Where one tensor (part) lives: chunk index and element offset in it. */
export interface ArenaSlot {
  chunk: number;
  offset: number; // elements
  size: number; // elements
}

export interface ArenaPlan {
  /** Elements of each chunk (the sum of its slots, each padded to the alignment). */
  chunkElems: number[];
  /** One slot per input size, in input order. */
  slots: ArenaSlot[];
}

/**
 * Lays `sizes` (f32 elements) out in order into chunks of at most
 * `maxChunkBytes`: a tensor goes into the current chunk if it fits, else it
 * opens the next one (no tensor is split across chunks; the embedding and LM
 * head are already in binding-sized row parts). `glue[i]` keeps tensor i + 1
 * directly after tensor i in the same chunk (no padding between: tensor i's
 * size must be a multiple of the alignment), so the two can be bound as one
 * (training's stacked gate/up weights).
 */
export function planArena(sizes: number[], maxChunkBytes: number, alignBytes = 256, glue: boolean[] = []): ArenaPlan {
  const align = alignBytes / 4;
  if (!(Number.isInteger(align) && align >= 1)) throw new Error(`parameter arena: alignment ${alignBytes} bytes is not a positive multiple of 4`);
  const cap = Math.floor(maxChunkBytes / 4 / align) * align;
  const pad = (n: number) => Math.ceil(n / align) * align;
  const chunkElems: number[] = [];
  const slots: ArenaSlot[] = [];
  sizes.forEach((n, i) => {
    if (!(Number.isInteger(n) && n >= 1)) throw new Error(`parameter arena: tensor ${i} has ${n} elements; want an integer >= 1`);
    if (glue[i] && (i + 1 >= sizes.length || n % align !== 0)) throw new Error(`parameter arena: tensor ${i} (${n} elements) cannot be glued to a next one (its size must be a multiple of ${align} and a tensor must follow)`);
  });
  for (let i = 0; i < sizes.length; ) {
    // A run of glued tensors is placed as one.
    let j = i;
    while (glue[j]) j++;
    const run = sizes.slice(i, j + 1).reduce((a, n) => a + pad(n), 0);
    if (run > cap) {
      const what = j > i ? `tensors ${i}-${j} (glued, ${run * 4} bytes)` : `tensor ${i} (${sizes[i] * 4} bytes in f32)`;
      throw new Error(`parameter arena: ${what} do${j > i ? "" : "es"} not fit a chunk of ${cap * 4} bytes (the max storage binding)`);
    }
    if (chunkElems.length === 0 || chunkElems[chunkElems.length - 1] + run > cap) chunkElems.push(0);
    const chunk = chunkElems.length - 1;
    for (let k = i; k <= j; k++) {
      slots.push({ chunk, offset: chunkElems[chunk], size: sizes[k] });
      chunkElems[chunk] += pad(sizes[k]);
    }
    i = j + 1;
  }
  return { chunkElems, slots };
}

/** A tensor's byte range of a chunk, as kernels bind it. */
export interface Slice {
  buffer: GPUBuffer;
  offset: number; // bytes
  size: number; // bytes
}

/**
 * The chunks behind tensor parts, in order of first use, each with its
 * gradient chunk and element count (values and gradients must share one
 * layout: the same offsets, chunks of the same size).
 */
export function arenaChunks(parts: { value: Slice; grad: Slice }[]): { value: GPUBuffer; grad: GPUBuffer; elems: number }[] {
  const gradOf = new Map<GPUBuffer, GPUBuffer>();
  for (const p of parts) {
    const g = gradOf.get(p.value.buffer) ?? p.grad.buffer;
    if (g !== p.grad.buffer || p.grad.offset !== p.value.offset || g.size !== p.value.buffer.size) {
      throw new Error(`parameter arena: the gradient of a tensor in chunk ${p.value.buffer.label} is not at its value's place in a chunk of the same size`);
    }
    gradOf.set(p.value.buffer, g);
  }
  return [...gradOf].map(([value, grad]) => ({ value, grad, elems: value.size / 4 }));
}
