// Device layer: adapter, buffers, kernel loader and cache, errors.
import { describe, expect, test } from "bun:test";
import { BindGroupCache, KernelError, params } from "../src/gpu/index.ts";
import { renderTemplate } from "../src/gpu/kernels.ts";
import { spinReference } from "../src/gpu/selftest.ts";
import { gpuOrSkip, hasGpu } from "./helpers.ts";

const GPU = await hasGpu();

describe.skipIf(!GPU)("device layer", () => {
  test("adapter is found and described", async () => {
    const gpu = await gpuOrSkip();
    expect(gpu.adapter.description.length).toBeGreaterThan(0);
    expect(gpu.adapter.vendor.length).toBeGreaterThan(0);
    expect(["vulkan", "metal", "d3d12", "d3d11", "opengl", "opengles"]).toContain(gpu.adapter.backend);
    expect(gpu.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 1024 * 1024);
    expect(gpu.limits.maxBufferSize).toBeGreaterThanOrEqual(gpu.limits.maxStorageBufferBindingSize);
  });

  test("64 MiB buffer round trip", async () => {
    const gpu = await gpuOrSkip();
    const n = (64 * 1024 * 1024) / 4;
    const data = new Uint32Array(n);
    for (let i = 0; i < n; i++) data[i] = (Math.imul(i, 2654435761) ^ (i >>> 7)) >>> 0;
    const buf = gpu.buffer(data, "roundtrip");
    const back = await gpu.readU32(buf, n);
    buf.destroy();
    let bad = -1;
    for (let i = 0; i < n; i++) {
      if (back[i] !== data[i]) {
        bad = i;
        break;
      }
    }
    expect(bad).toBe(-1);
  });

  test("kernel matches its CPU reference exactly", async () => {
    const gpu = await gpuOrSkip();
    const k = await gpu.kernel("selftest", "spin", { WG: 64 });
    const n = 1000;
    const out = gpu.buffer(n * 4, "spin");
    gpu.batch().dispatch(k, { params: params().u32(n).u32(37), buffers: [out], groups: [Math.ceil(n / 64)] }).submit();
    const got = await gpu.readU32(out, n);
    out.destroy();
    expect([...got]).toEqual([...spinReference(n, 37)]);
  });

  test("a WGSL compile error is thrown, naming the kernel and constants", async () => {
    const gpu = await gpuOrSkip();
    const bad = "@compute @workgroup_size({{WG}}) fn broken() { let x: u32 = 1.5; }";
    let err: unknown = null;
    try {
      await gpu.kernels.get("broken_family", "broken", { WG: 32 }, bad);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    const msg = (err as Error).message;
    expect(msg).toContain("broken_family.broken");
    expect(msg).toContain('"WG":32');
    expect(msg).toContain("line 1");
  });

  test("a missing entry point is a KernelError naming it", async () => {
    const gpu = await gpuOrSkip();
    await expect(gpu.kernel("selftest", "nope", { WG: 64 })).rejects.toThrow(/selftest\.nope/);
  });

  test("pipeline cache: same constants compile once, new constants compile again", async () => {
    const gpu = await gpuOrSkip();
    const before = gpu.kernels.compileCount;
    const a = await gpu.kernel("selftest", "spin", { WG: 128 });
    const b = await gpu.kernel("selftest", "spin", { WG: 128 });
    expect(a).toBe(b);
    expect(gpu.kernels.compileCount).toBe(before + 1);
    await gpu.kernel("selftest", "spin", { WG: 32 });
    expect(gpu.kernels.compileCount).toBe(before + 2);
  });

  test("uniforms of many dispatches in one batch stay separate", async () => {
    const gpu = await gpuOrSkip();
    const k = await gpu.kernel("selftest", "spin", { WG: 64 });
    const outs = Array.from({ length: 300 }, (_, i) => gpu.buffer(16, `o${i}`));
    const b = gpu.batch();
    outs.forEach((o, i) => b.dispatch(k, { params: params().u32(4).u32(i), buffers: [o], groups: [1] }));
    b.submit();
    for (let i = 0; i < outs.length; i += 37) {
      expect([...(await gpu.readU32(outs[i], 4))]).toEqual([...spinReference(4, i)]);
    }
    outs.forEach((o) => o.destroy());
  });

  test("bind groups are reused across batches over the same buffers; uniform values stay per batch", async () => {
    const gpu = await gpuOrSkip();
    const k = await gpu.kernel("selftest", "spin", { WG: 64 });
    const [o1, o2] = [gpu.buffer(64 * 4, "bg1"), gpu.buffer(64 * 4, "bg2")];
    const run = async (out: GPUBuffer, iters: number) => {
      gpu.batch().dispatch(k, { params: params().u32(64).u32(iters), buffers: [out], groups: [1] }).submit();
      return [...(await gpu.readU32(out, 64))];
    };
    expect(await run(o1, 3)).toEqual([...spinReference(64, 3)]);
    const { hits, misses } = gpu.bindGroups;
    // Same buffer and uniform slot, other uniform values: a hit, and the new values are used.
    expect(await run(o1, 11)).toEqual([...spinReference(64, 11)]);
    expect([gpu.bindGroups.hits - hits, gpu.bindGroups.misses - misses]).toEqual([1, 0]);
    // Another buffer: a new bind group.
    expect(await run(o2, 5)).toEqual([...spinReference(64, 5)]);
    expect(gpu.bindGroups.misses - misses).toBe(1);
    o1.destroy();
    o2.destroy();
  });

  test("the bind group cache empties itself at its bound", async () => {
    const gpu = await gpuOrSkip();
    const k = await gpu.kernel("selftest", "spin", { WG: 64 });
    const cache = new BindGroupCache(gpu.device, 2);
    const bufs = Array.from({ length: 3 }, (_, i) => gpu.buffer(16, `bgc${i}`));
    const uniform = gpu.buffer(16, "bgc-uniform", GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    const entries = (b: GPUBuffer) => [{ binding: 0, resource: { buffer: uniform, offset: 0, size: 16 } }, { binding: 1, resource: { buffer: b } }];
    const first = cache.get(k, entries(bufs[1]));
    expect(cache.get(k, entries(bufs[1]))).toBe(first);
    cache.get(k, entries(bufs[2]));
    expect(cache.size).toBe(2);
    cache.get(k, entries(bufs[0])); // full: emptied, then this one kept
    expect(cache.size).toBe(1);
    expect(cache.get(k, entries(bufs[1]))).not.toBe(first);
    expect([cache.hits, cache.misses]).toEqual([1, 4]);
    await gpu.sync(); // no validation error from any of them
    [...bufs, uniform].forEach((b) => b.destroy());
  });

  test("a validation error at dispatch surfaces as a thrown error", async () => {
    const gpu = await gpuOrSkip();
    const k = await gpu.kernel("selftest", "spin", { WG: 64 });
    const tiny = gpu.buffer(16, "tiny");
    // Missing the storage binding: createBindGroup fails validation.
    gpu.batch().dispatch(k, { params: params().u32(1).u32(1), buffers: [], groups: [1] }).submit();
    await expect(gpu.readU32(tiny, 1)).rejects.toThrow(/validation/i);
    tiny.destroy();
  });

  test("buffer pool reuses released buffers", async () => {
    const gpu = await gpuOrSkip();
    const a = gpu.pool.acquire(1000);
    gpu.pool.release(a);
    const b = gpu.pool.acquire(900);
    expect(b).toBe(a);
    gpu.pool.release(b);
  });
});

describe("template", () => {
  test("fills placeholders and rejects missing ones", () => {
    expect(renderTemplate("t", "a {{X}} b {{ Y }}", { X: 1, Y: "f32" })).toBe("a 1 b f32");
    expect(() => renderTemplate("fam", "{{X}} {{Z}}", { X: 1 })).toThrow(/fam: constants Z/);
  });
});
