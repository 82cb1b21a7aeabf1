/**
 * Buffer pool, upload and readback.
 *
 * Big buffers are expensive to create; a training step must not create any.
 * `BufferPool` keeps released buffers by (usage, size class) and hands them
 * out again. Size classes are powers of two up to 1 MiB, then multiples of
 * 1 MiB, so reuse is likely and waste is bounded (< 2x small, < 1 MiB big).
 */
import { track } from "./bun_event_pump.ts";
import { GpuError } from "./device.ts";

const MiB = 1 << 20;

export function sizeClass(bytes: number): number {
  const b = Math.max(16, Math.ceil(bytes / 4) * 4);
  if (b <= MiB) return 2 ** Math.ceil(Math.log2(b));
  return Math.ceil(b / MiB) * MiB;
}

export const STORAGE = 0x80 | 0x08 | 0x04; // STORAGE | COPY_DST | COPY_SRC

export class BufferPool {
  private readonly free = new Map<string, GPUBuffer[]>();
  private readonly live = new Set<GPUBuffer>();
  allocatedBytes = 0;
  created = 0;

  constructor(
    private readonly device: GPUDevice,
    private readonly maxBufferSize: number,
  ) {}

  acquire(bytes: number, usage: number = STORAGE, label = "pooled"): GPUBuffer {
    if (bytes > this.maxBufferSize) {
      throw new GpuError(
        `buffer "${label}" needs ${bytes} bytes, over the adapter's maxBufferSize ${this.maxBufferSize}`,
      );
    }
    const size = Math.min(sizeClass(bytes), Math.max(16, Math.ceil(this.maxBufferSize / 4) * 4));
    const key = `${usage}:${size}`;
    const list = this.free.get(key);
    let buf = list?.pop();
    if (!buf) {
      buf = this.device.createBuffer({ size, usage, label });
      this.allocatedBytes += size;
      this.created++;
    }
    this.live.add(buf);
    return buf;
  }

  release(buf: GPUBuffer): void {
    if (!this.live.delete(buf)) return;
    const key = `${buf.usage}:${buf.size}`;
    let list = this.free.get(key);
    if (!list) this.free.set(key, (list = []));
    list.push(buf);
  }

  /** Destroy a live buffer instead of returning it (e.g. in an unknown map state). */
  discard(buf: GPUBuffer): void {
    if (this.live.delete(buf)) this.allocatedBytes -= buf.size;
    buf.destroy();
  }

  /** Destroy every free buffer (live ones stay with their owners). */
  trim(): void {
    for (const list of this.free.values()) {
      for (const b of list) {
        this.allocatedBytes -= b.size;
        b.destroy();
      }
    }
    this.free.clear();
  }
}

/** Write `data` into `buf` at `offset` (bytes); pads the tail to 4 bytes. */
export function upload(device: GPUDevice, buf: GPUBuffer, data: ArrayBufferView, offset = 0): void {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (offset + bytes.byteLength > buf.size) {
    throw new GpuError(`upload of ${bytes.byteLength} bytes at offset ${offset} overflows buffer "${buf.label}" (${buf.size} bytes)`);
  }
  const aligned = bytes.byteLength & ~3;
  if (aligned) device.queue.writeBuffer(buf, offset, bytes, 0, aligned);
  if (aligned !== bytes.byteLength) {
    const tail = new Uint8Array(4);
    tail.set(bytes.subarray(aligned));
    device.queue.writeBuffer(buf, offset + aligned, tail);
  }
}

/**
 * Copy `bytes` bytes of `buf` from `offset` back to the CPU. The staging
 * buffer comes from `pool` (reused across readbacks: decode reads back
 * every step) and is unmapped and returned after the copy.
 */
export async function readback(device: GPUDevice, pool: BufferPool, buf: GPUBuffer, bytes = buf.size, offset = 0): Promise<ArrayBuffer> {
  const size = Math.ceil(bytes / 4) * 4;
  const staging = pool.acquire(size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, "readback");
  try {
    const enc = device.createCommandEncoder({ label: "readback" });
    enc.copyBufferToBuffer(buf, offset, staging, 0, size);
    device.queue.submit([enc.finish()]);
    await track(staging.mapAsync(GPUMapMode.READ, 0, size));
    const out = staging.getMappedRange(0, size).slice(0, bytes);
    staging.unmap();
    pool.release(staging);
    return out;
  } catch (e) {
    pool.discard(staging); // never hand a buffer in an unknown map state back to the pool
    throw e;
  }
}
