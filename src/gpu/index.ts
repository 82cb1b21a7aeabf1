/**
 * `Gpu`: the device, its buffer pool, its kernel cache, and helpers to
 * record, submit and read back work. Everything on the GPU goes through one.
 */
import { track } from "./bun_event_pump.ts";
import { Batch, BindGroupCache, UniformArenas, type TimingSink } from "./batch.ts";
import { BufferPool, readback, upload, STORAGE } from "./buffers.ts";
import { openGpu, type GpuContext, type GpuOptions } from "./device.ts";
import { KernelCache, type Constants, type Kernel } from "./kernels.ts";

export { params, Params, Batch, BindGroupCache, addTally, type Binding, type DispatchTally } from "./batch.ts";
export { GpuError, GpuDeviceLostError, NO_ADAPTER_HELP, type GpuOptions } from "./device.ts";
export { KernelError, type Kernel, type Constants } from "./kernels.ts";
export { STORAGE } from "./buffers.ts";
export { track, yieldToEventLoop } from "./bun_event_pump.ts";

export interface KernelTiming {
  label: string;
  /** Kernel family.entry ("matmul.gemv"). */
  family: string;
  ms: number;
}

export class Gpu {
  readonly device: GPUDevice;
  readonly pool: BufferPool;
  readonly kernels: KernelCache;
  private readonly arenas: UniformArenas;
  /** Bind groups reused across batches (see BindGroupCache). */
  readonly bindGroups: BindGroupCache;
  private timing: TimingSink | null = null;

  constructor(readonly ctx: GpuContext) {
    this.device = ctx.device;
    this.pool = new BufferPool(ctx.device, ctx.limits.maxBufferSize);
    this.kernels = new KernelCache(ctx.device);
    this.arenas = new UniformArenas(ctx.device);
    this.bindGroups = new BindGroupCache(ctx.device);
  }

  static async open(opts: GpuOptions = {}): Promise<Gpu> {
    return new Gpu(await openGpu(opts));
  }

  get adapter() {
    return this.ctx.adapter;
  }
  get features() {
    return this.ctx.features;
  }
  get limits() {
    return this.ctx.limits;
  }

  kernel(family: string, entry: string, constants: Constants = {}): Promise<Kernel> {
    return this.kernels.get(family, entry, constants);
  }

  batch(): Batch {
    this.ctx.check("recording");
    return new Batch(this.device, this.arenas, this.limits.maxComputeWorkgroupsPerDimension, this.timing, this.bindGroups);
  }

  /** A new storage buffer (not pooled) holding `data`, or zeroed `bytes`. */
  buffer(data: ArrayBufferView | number, label = "buffer", usage = STORAGE): GPUBuffer {
    const bytes = typeof data === "number" ? data : data.byteLength;
    const buf = this.device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 4) * 4), usage, label });
    if (typeof data !== "number") upload(this.device, buf, data);
    return buf;
  }

  write(buf: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    upload(this.device, buf, data, offset);
  }

  async read(buf: GPUBuffer, bytes = buf.size, offset = 0): Promise<ArrayBuffer> {
    this.ctx.check("readback");
    const out = await readback(this.device, this.pool, buf, bytes, offset);
    this.ctx.check("readback");
    return out;
  }

  async readF32(buf: GPUBuffer, count?: number, offset = 0): Promise<Float32Array> {
    return new Float32Array(await this.read(buf, (count ?? (buf.size - offset) / 4) * 4, offset));
  }

  async readU32(buf: GPUBuffer, count?: number, offset = 0): Promise<Uint32Array> {
    return new Uint32Array(await this.read(buf, (count ?? (buf.size - offset) / 4) * 4, offset));
  }

  /** Wait until everything submitted so far has executed. */
  async sync(): Promise<void> {
    await track(this.device.queue.onSubmittedWorkDone());
    this.ctx.check("queue");
  }

  /** Start collecting per-dispatch GPU timestamps (adapters with timestamp-query). */
  startProfiling(capacity = 4096): boolean {
    if (!this.features.timestamps) return false;
    const querySet = this.device.createQuerySet({ type: "timestamp", count: capacity });
    this.timing = { querySet, capacity, used: 0, labels: [], families: [] };
    return true;
  }

  /** Stop profiling; returns the GPU time of each profiled dispatch. */
  async stopProfiling(): Promise<KernelTiming[]> {
    const t = this.timing;
    this.timing = null;
    if (!t || t.used === 0) return [];
    const resolve = this.device.createBuffer({
      size: t.used * 8,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const enc = this.device.createCommandEncoder();
    enc.resolveQuerySet(t.querySet, 0, t.used, resolve, 0);
    this.device.queue.submit([enc.finish()]);
    const ticks = new BigUint64Array(await this.read(resolve));
    resolve.destroy();
    t.querySet.destroy();
    return t.labels.map((label, i) => ({ label, family: t.families[i], ms: Number(ticks[2 * i + 1] - ticks[2 * i]) / 1e6 }));
  }

  destroy(): void {
    this.pool.trim();
    this.ctx.destroy();
  }
}
