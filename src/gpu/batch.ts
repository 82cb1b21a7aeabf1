/**
 * Recording many dispatches into one command buffer.
 *
 * On the software adapter a submit costs about a millisecond; a forward pass
 * is hundreds of dispatches, so they are recorded into one `Batch` and
 * submitted together. Each dispatch's uniforms are packed into a shared
 * uniform arena (256-byte aligned slots); the arena is written with
 * `queue.writeBuffer` just before the submit, which the queue orders before
 * the commands that read it, so arena buffers can be reused at once by the
 * next batch.
 */
import type { Kernel } from "./kernels.ts";
import { KernelError } from "./kernels.ts";

/** A storage binding: a whole buffer or a byte range of one. */
export type Binding = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };

/** Builder for a uniform struct of 4-byte scalars, in declaration order. */
export class Params {
  private readonly view: DataView;
  private n = 0;
  constructor(capacity = 64) {
    this.view = new DataView(new ArrayBuffer(capacity * 4));
  }
  u32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`u32 uniform out of range: ${v}`);
    this.view.setUint32(4 * this.n++, v, true);
    return this;
  }
  i32(v: number): this {
    this.view.setInt32(4 * this.n++, v, true);
    return this;
  }
  f32(v: number): this {
    this.view.setFloat32(4 * this.n++, v, true);
    return this;
  }
  /** Bytes, padded to 16 (uniform structs are 16-byte aligned). */
  bytes(): Uint8Array {
    const len = Math.max(16, Math.ceil((this.n * 4) / 16) * 16);
    return new Uint8Array(this.view.buffer, 0, len);
  }
}

export function params(): Params {
  return new Params();
}

const SLOT = 256; // minUniformBufferOffsetAlignment is at most 256
const ARENA = 64 * 1024;

/** Pool of uniform arenas shared by all batches of a device. */
export class UniformArenas {
  private readonly free: GPUBuffer[] = [];
  constructor(private readonly device: GPUDevice) {}
  take(): GPUBuffer {
    return (
      this.free.pop() ??
      this.device.createBuffer({
        size: ARENA,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        label: "uniform-arena",
      })
    );
  }
  give(bufs: GPUBuffer[]): void {
    this.free.push(...bufs);
  }
}

export interface DispatchOptions {
  /** Uniform values (binding 0); omit when the kernel has none. */
  params?: Params;
  /** Storage buffers, bound at 1, 2, ... in this order. */
  buffers: Binding[];
  /** Workgroup counts. */
  groups: [number, number?, number?];
  /** Label for profiling. */
  label?: string;
}

export interface TimingSink {
  querySet: GPUQuerySet;
  capacity: number;
  used: number;
  labels: string[];
}

export class Batch {
  private readonly encoder: GPUCommandEncoder;
  private pass: GPUComputePassEncoder | null = null;
  private readonly arenas: GPUBuffer[] = [];
  private readonly arenaData: Uint8Array[] = [];
  private arenaUsed = ARENA; // forces a fresh arena on first use
  dispatches = 0;

  constructor(
    private readonly device: GPUDevice,
    private readonly uniforms: UniformArenas,
    private readonly maxGroups: number,
    private readonly timing: TimingSink | null = null,
  ) {
    this.encoder = device.createCommandEncoder();
  }

  private uniformSlot(data: Uint8Array): { buffer: GPUBuffer; offset: number; size: number } {
    if (this.arenaUsed + SLOT > ARENA) {
      this.arenas.push(this.uniforms.take());
      this.arenaData.push(new Uint8Array(ARENA));
      this.arenaUsed = 0;
    }
    const offset = this.arenaUsed;
    this.arenaData[this.arenaData.length - 1].set(data, offset);
    this.arenaUsed += SLOT;
    return { buffer: this.arenas[this.arenas.length - 1], offset, size: data.byteLength };
  }

  dispatch(kernel: Kernel, opts: DispatchOptions): this {
    const [x, y = 1, z = 1] = opts.groups;
    for (const g of [x, y, z]) {
      if (!Number.isInteger(g) || g < 0 || g > this.maxGroups) {
        throw new KernelError(
          `kernel ${kernel.key}: workgroup count ${JSON.stringify(opts.groups)} outside 0..${this.maxGroups}`,
        );
      }
    }
    if (x === 0 || y === 0 || z === 0) return this;
    const entries: GPUBindGroupEntry[] = [];
    if (opts.params) entries.push({ binding: 0, resource: this.uniformSlot(opts.params.bytes()) });
    opts.buffers.forEach((b, i) => {
      entries.push({ binding: i + 1, resource: "buffer" in b ? b : { buffer: b } });
    });
    const bindGroup = this.device.createBindGroup({ layout: kernel.layout, entries, label: kernel.key });
    let pass: GPUComputePassEncoder;
    if (this.timing && this.timing.used + 2 <= this.timing.capacity) {
      this.endPass();
      const t = this.timing;
      pass = this.encoder.beginComputePass({
        timestampWrites: { querySet: t.querySet, beginningOfPassWriteIndex: t.used, endOfPassWriteIndex: t.used + 1 },
      });
      t.used += 2;
      t.labels.push(opts.label ?? kernel.key);
      pass.setPipeline(kernel.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(x, y, z);
      pass.end();
    } else {
      pass = this.pass ??= this.encoder.beginComputePass();
      pass.setPipeline(kernel.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(x, y, z);
    }
    this.dispatches++;
    return this;
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = null;
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): this {
    this.endPass();
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
    return this;
  }

  clear(buf: GPUBuffer, offset = 0, bytes?: number): this {
    this.endPass();
    this.encoder.clearBuffer(buf, offset, bytes);
    return this;
  }

  /** Finish and submit; returns once queued (not once executed). */
  submit(): void {
    this.endPass();
    if (this.timing && this.timing.used > 0) {
      // resolved by the profiler after the submit
    }
    const cmd = this.encoder.finish();
    this.arenas.forEach((buf, i) => this.device.queue.writeBuffer(buf, 0, this.arenaData[i]));
    this.device.queue.submit([cmd]);
    this.uniforms.give(this.arenas);
  }

  get commandEncoder(): GPUCommandEncoder {
    this.endPass();
    return this.encoder;
  }
}
