/**
 * Paged KV cache: block accounting on the CPU, K/V storage on the GPU.
 *
 * Each layer has a K and a V buffer of [numBlocks, blockSize, nKv, hd].
 * A sequence slot owns a list of physical blocks; the block table
 * [maxSeqs, maxBlocks] u32 maps (slot, logical block) to a physical block.
 * Blocks are reserved for a request's whole budget (prompt + max new tokens)
 * when it is admitted, so a running sequence never runs out of space; a
 * finished sequence returns its blocks and slot at once (continuous batching).
 */
import type { Gpu } from "../gpu/index.ts";

export interface KvCacheConfig {
  numLayers: number;
  nKv: number;
  headDim: number;
  blockSize: number;
  numBlocks: number;
  maxSeqs: number;
  /** Longest sequence (prompt + generated) a slot can hold. */
  maxSeqLen: number;
  bytesPerElement: 2 | 4;
}

export class KvCache {
  readonly k: GPUBuffer[] = [];
  readonly v: GPUBuffer[] = [];
  readonly blockTable: GPUBuffer;
  readonly maxBlocks: number;
  private readonly table: Uint32Array;
  private readonly freeBlocks: number[] = [];
  private readonly freeSlots: number[] = [];
  private readonly owned = new Map<number, number[]>();
  private dirty = true;

  constructor(
    private readonly gpu: Gpu,
    readonly cfg: KvCacheConfig,
  ) {
    this.maxBlocks = Math.ceil(cfg.maxSeqLen / cfg.blockSize);
    const layerBytes = cfg.numBlocks * cfg.blockSize * cfg.nKv * cfg.headDim * cfg.bytesPerElement;
    if (layerBytes > gpu.limits.maxStorageBufferBindingSize) {
      throw new Error(
        `KV cache: one layer's K (${layerBytes} bytes for ${cfg.numBlocks} blocks of ${cfg.blockSize}) exceeds ` +
          `the adapter's max storage binding ${gpu.limits.maxStorageBufferBindingSize}; use fewer blocks`,
      );
    }
    for (let l = 0; l < cfg.numLayers; l++) {
      this.k.push(gpu.buffer(layerBytes, `kcache.${l}`));
      this.v.push(gpu.buffer(layerBytes, `vcache.${l}`));
    }
    this.table = new Uint32Array(cfg.maxSeqs * this.maxBlocks);
    this.blockTable = gpu.buffer(this.table.byteLength, "block-table");
    for (let b = cfg.numBlocks - 1; b >= 0; b--) this.freeBlocks.push(b);
    for (let s = cfg.maxSeqs - 1; s >= 0; s--) this.freeSlots.push(s);
  }

  static bytes(cfg: KvCacheConfig): number {
    return 2 * cfg.numLayers * cfg.numBlocks * cfg.blockSize * cfg.nKv * cfg.headDim * cfg.bytesPerElement;
  }

  get freeBlockCount(): number {
    return this.freeBlocks.length;
  }
  get freeSlotCount(): number {
    return this.freeSlots.length;
  }
  get usedSlots(): number[] {
    return [...this.owned.keys()];
  }

  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.cfg.blockSize);
  }

  /** Whether a sequence of `tokens` total length can be admitted now. */
  canAdmit(tokens: number): boolean {
    return this.freeSlots.length > 0 && tokens <= this.cfg.maxSeqLen && this.blocksFor(tokens) <= this.freeBlocks.length;
  }

  /** Reserve a slot and blocks for `tokens` positions; returns the slot. */
  admit(tokens: number): number {
    if (tokens > this.cfg.maxSeqLen) {
      throw new Error(`KV cache: a sequence of ${tokens} tokens exceeds the slot capacity ${this.cfg.maxSeqLen}`);
    }
    if (!this.canAdmit(tokens)) throw new Error(`KV cache: no room for ${tokens} tokens`);
    const slot = this.freeSlots.pop()!;
    const blocks: number[] = [];
    for (let i = 0; i < this.blocksFor(tokens); i++) blocks.push(this.freeBlocks.pop()!);
    this.owned.set(slot, blocks);
    this.table.fill(0, slot * this.maxBlocks, (slot + 1) * this.maxBlocks);
    this.table.set(blocks, slot * this.maxBlocks);
    this.dirty = true;
    return slot;
  }

  /** Return a slot's blocks and the slot itself. */
  release(slot: number): void {
    const blocks = this.owned.get(slot);
    if (!blocks) throw new Error(`KV cache: slot ${slot} is not in use`);
    this.owned.delete(slot);
    for (const b of blocks) this.freeBlocks.push(b);
    this.freeSlots.push(slot);
  }

  /** Release every slot (a new round on the same cache). */
  reset(): void {
    for (const slot of [...this.owned.keys()]) this.release(slot);
  }

  /** Upload the block table if it changed (before recording a forward). */
  sync(): void {
    if (!this.dirty) return;
    this.gpu.write(this.blockTable, this.table);
    this.dirty = false;
  }

  blocksOf(slot: number): readonly number[] {
    return this.owned.get(slot) ?? [];
  }

  destroy(): void {
    for (const b of [...this.k, ...this.v, this.blockTable]) b.destroy();
  }
}
