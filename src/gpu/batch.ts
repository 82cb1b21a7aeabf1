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

/**
 * Bind groups by what they bind: the kernel's layout, the uniform slot and
 * every storage binding (buffer, offset, size). A step recorded again over
 * the same buffers (a decode step, window after window: the uniform arena
 * pool hands the same arena back, slot by slot) finds its bind groups here
 * instead of creating them; creating one costs 25-65 µs of host time on
 * dawn.node (benchmarks/RESULTS.md, issue 14), more than recording the
 * dispatch itself. Only the binding's location is in the key, never the
 * uniform's values (those are written into the arena at each submit). The
 * cache is emptied when it reaches `max` entries, so bind groups of buffers
 * since destroyed do not pile up.
 */
export class BindGroupCache {
  private readonly map = new Map<string, GPUBindGroup>();
  private readonly ids = new WeakMap<object, number>();
  private next = 1;
  hits = 0;
  misses = 0;

  constructor(
    private readonly device: GPUDevice,
    readonly max = 8192,
  ) {}

  private id(o: object): number {
    let i = this.ids.get(o);
    if (i === undefined) this.ids.set(o, (i = this.next++));
    return i;
  }

  get(kernel: Kernel, entries: GPUBindGroupEntry[]): GPUBindGroup {
    let key = `${this.id(kernel.layout)}`;
    for (const e of entries) {
      const r = e.resource as GPUBufferBinding;
      key += `|${this.id(r.buffer)}:${r.offset ?? 0}:${r.size ?? -1}`;
    }
    let bg = this.map.get(key);
    if (bg) {
      this.hits++;
      return bg;
    }
    this.misses++;
    if (this.map.size >= this.max) this.map.clear();
    bg = this.device.createBindGroup({ layout: kernel.layout, entries, label: kernel.key });
    this.map.set(key, bg);
    return bg;
  }

  get size(): number {
    return this.map.size;
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
  /** Kernel family.entry of each timed dispatch. */
  families: string[];
}

/** Dispatches by kernel family and entry point ("matmul.gemv"), in first-use order. */
export type DispatchTally = Map<string, number>;

/** Adds `from` into `into`. */
export function addTally(into: DispatchTally, from: DispatchTally): DispatchTally {
  for (const [k, n] of from) into.set(k, (into.get(k) ?? 0) + n);
  return into;
}

export class Batch {
  private readonly encoder: GPUCommandEncoder;
  private pass: GPUComputePassEncoder | null = null;
  private readonly arenas: GPUBuffer[] = [];
  private readonly arenaData: Uint8Array[] = [];
  private arenaUsed = ARENA; // forces a fresh arena on first use
  dispatches = 0;
  /** Dispatches by kernel family.entry. */
  readonly byFamily: DispatchTally = new Map();

  /**
   * With `device` null the batch only counts: dispatches are validated and
   * tallied but nothing is encoded (see `Batch.counting`).
   */
  constructor(
    private readonly device: GPUDevice | null,
    private readonly uniforms: UniformArenas | null,
    private readonly maxGroups: number,
    private readonly timing: TimingSink | null = null,
    private readonly bindGroups: BindGroupCache | null = null,
  ) {
    this.encoder = device ? device.createCommandEncoder() : (null as unknown as GPUCommandEncoder);
  }

  /**
   * A batch that records nothing and only counts the dispatches a step would
   * make (kernel wrappers still validate shapes and bindings), so counts can
   * be taken at shapes whose weights do not fit this machine.
   */
  static counting(maxGroups: number): Batch {
    return new Batch(null, null, maxGroups);
  }

  private uniformSlot(data: Uint8Array): { buffer: GPUBuffer; offset: number; size: number } {
    if (this.arenaUsed + SLOT > ARENA) {
      this.arenas.push(this.uniforms!.take());
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
    const family = `${kernel.family}.${kernel.entry}`;
    this.byFamily.set(family, (this.byFamily.get(family) ?? 0) + 1);
    this.dispatches++;
    if (!this.device) return this;
    const entries: GPUBindGroupEntry[] = [];
    if (opts.params) entries.push({ binding: 0, resource: this.uniformSlot(opts.params.bytes()) });
    opts.buffers.forEach((b, i) => {
      entries.push({ binding: i + 1, resource: "buffer" in b ? b : { buffer: b } });
    });
    const bindGroup = this.bindGroups ? this.bindGroups.get(kernel, entries) : this.device.createBindGroup({ layout: kernel.layout, entries, label: kernel.key });
    let pass: GPUComputePassEncoder;
    if (this.timing && this.timing.used + 2 <= this.timing.capacity) {
      this.endPass();
      const t = this.timing;
      pass = this.encoder.beginComputePass({
        timestampWrites: { querySet: t.querySet, beginningOfPassWriteIndex: t.used, endOfPassWriteIndex: t.used + 1 },
      });
      t.used += 2;
      t.labels.push(opts.label ?? kernel.key);
      t.families.push(family);
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
    return this;
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = null;
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): this {
    if (!this.device) return this;
    this.endPass();
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
    return this;
  }

  clear(buf: GPUBuffer, offset = 0, bytes?: number): this {
    if (!this.device) return this;
    this.endPass();
    this.encoder.clearBuffer(buf, offset, bytes);
    return this;
  }

  /** Finish and submit; returns once queued (not once executed). */
  submit(): void {
    const { device, uniforms } = this;
    if (!device || !uniforms) throw new Error("a counting batch records nothing and cannot be submitted");
    this.endPass();
    const cmd = this.encoder.finish();
    this.arenas.forEach((buf, i) => device.queue.writeBuffer(buf, 0, this.arenaData[i]));
    device.queue.submit([cmd]);
    uniforms.give(this.arenas);
  }

  get commandEncoder(): GPUCommandEncoder {
    if (!this.device) throw new Error("a counting batch has no command encoder");
    this.endPass();
    return this.encoder;
  }
}
