/**
 * Device layer: adapter selection, device creation with the limits the
 * adapter allows, error capture and device-loss reporting.
 *
 * Adapter choice, in order: `--adapter NAME` / SIRI_ADAPTER=NAME (a dawn
 * adapter name or a prefix of it, e.g. "llvmpipe" or "NVIDIA"), then
 * `--software` / SIRI_SOFTWARE=1 (the CPU fallback adapter), else the
 * high-performance adapter (hardware first).
 *
 * Experimental features: SIRI_EXPERIMENTAL=1 (or `experimental: true`)
 * enables Dawn's `allow_unsafe_apis` toggle, which is what exposes
 * `chromium-experimental-subgroup-matrix` (tensor cores); only then is that
 * feature requested. Off by default: nothing in the default path uses it.
 */
import { installEventPump, track } from "./bun_event_pump.ts";

installEventPump();

export interface GpuOptions {
  adapter?: string; // name (or prefix) of the adapter to force
  software?: boolean; // force the software (fallback) adapter
  backend?: string; // dawn backend: vulkan, metal, d3d12, ...
  experimental?: boolean; // allow_unsafe_apis: expose and request subgroup matrices
}

/** One matrix shape the adapter's matrix units take: left M x K, right K x N, result M x N. */
export interface SubgroupMatrixConfig {
  componentType: string; // "f16", "f32", "i8", ...
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

export interface AdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  backend: string;
  isFallback: boolean;
  subgroupMinSize: number;
  subgroupMaxSize: number;
  /** Empty unless the adapter offers chromium-experimental-subgroup-matrix (needs `experimental`). */
  subgroupMatrixConfigs: SubgroupMatrixConfig[];
}

export interface GpuFeatures {
  f16: boolean;
  subgroups: boolean;
  timestamps: boolean;
  subgroupMatrix: boolean;
}

/** What a failure with no adapter should tell the user to do. */
export const NO_ADAPTER_HELP = [
  "No WebGPU adapter found (Dawn needs a Vulkan, Metal or D3D12 driver).",
  "Run `bash scripts/setup.sh` (installs Mesa's lavapipe on Debian 12 as root), or install one yourself:",
  "  Debian 12 (root): echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/bookworm-backports.list",
  "                    apt-get update && apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1",
  "  Ubuntu 24.04+:    apt-get install mesa-vulkan-drivers libvulkan1",
  "  A real GPU:       the vendor's Vulkan driver (check with `vulkaninfo --summary`).",
  "Debian 12's own Mesa 22.3 lavapipe is too old for Dawn.",
].join("\n");

export class GpuError extends Error {
  override name = "GpuError";
}
export class GpuDeviceLostError extends GpuError {
  override name = "GpuDeviceLostError";
}

function defaultBackend(): string {
  if (process.platform === "darwin") return "metal";
  if (process.platform === "win32") return "d3d12";
  return "vulkan";
}

export interface GpuContext {
  device: GPUDevice;
  adapter: AdapterSummary;
  features: GpuFeatures;
  limits: GPUSupportedLimits;
  /** Throws if the device was lost or an uncaptured validation error happened. */
  check(where: string): void;
  destroy(): void;
}

// dawn.node's `create` keeps the instance alive; keep one per process.
let dawnInstance: GPU | null = null;
// Keep every adapter and device we hand out reachable from JS for the life of
// the process: when the garbage collector finalises a dawn.node wrapper whose
// native object is still in use, Bun crashes (segfault) at some later point.
const keepAlive: unknown[] = [];

async function loadDawn(flags: string[]): Promise<GPU> {
  const { create, globals } = await import("webgpu");
  Object.assign(globalThis, globals);
  return create(flags) as GPU;
}

export async function openGpu(opts: GpuOptions = {}): Promise<GpuContext> {
  const name = opts.adapter ?? process.env.SIRI_ADAPTER ?? "";
  const software = opts.software ?? process.env.SIRI_SOFTWARE === "1";
  const backend = opts.backend ?? process.env.SIRI_BACKEND ?? defaultBackend();
  const experimental = opts.experimental ?? process.env.SIRI_EXPERIMENTAL === "1";
  const flags = [`backend=${backend}`];
  if (name) flags.push(`adapter=${name}`);
  // Cooperative matrices need the Vulkan memory model in SPIR-V (Dawn's own subgroup-matrix tests turn it on).
  if (experimental) flags.push("enable-dawn-features=allow_unsafe_apis,use_vulkan_memory_model");
  let gpu: GPU;
  try {
    gpu = dawnInstance ?? (await loadDawn(flags));
  } catch (e) {
    const msg = String((e as Error).message ?? e);
    if (name) throw new GpuError(`adapter "${name}" not found on backend ${backend}.\n${msg}`);
    throw new GpuError(`${NO_ADAPTER_HELP}\n(dawn: ${msg})`);
  }
  dawnInstance = gpu;
  const adapter = await track(
    gpu.requestAdapter(software ? { forceFallbackAdapter: true } : { powerPreference: "high-performance" }),
  );
  if (!adapter) throw new GpuError(software ? `No software (fallback) adapter.\n${NO_ADAPTER_HELP}` : NO_ADAPTER_HELP);
  const info = adapter.info as GPUAdapterInfo & {
    subgroupMinSize?: number;
    subgroupMaxSize?: number;
    isFallbackAdapter?: boolean;
    subgroupMatrixConfigs?: readonly SubgroupMatrixConfig[];
  };
  if (software && !info.isFallbackAdapter) {
    throw new GpuError(`--software asked for the fallback adapter, but Dawn chose "${info.description}"`);
  }
  const has = (f: string) => adapter.features.has(f as GPUFeatureName);
  const features: GpuFeatures = {
    f16: has("shader-f16"),
    subgroups: has("subgroups"),
    timestamps: has("timestamp-query"),
    subgroupMatrix: experimental && has("chromium-experimental-subgroup-matrix"),
  };
  const requiredFeatures: string[] = [];
  if (features.f16) requiredFeatures.push("shader-f16");
  if (features.subgroups) requiredFeatures.push("subgroups");
  if (features.timestamps) requiredFeatures.push("timestamp-query");
  if (features.subgroupMatrix) requiredFeatures.push("chromium-experimental-subgroup-matrix");
  const al = adapter.limits;
  const requiredLimits: Record<string, number> = {
    maxBufferSize: al.maxBufferSize,
    maxStorageBufferBindingSize: al.maxStorageBufferBindingSize,
    maxComputeWorkgroupStorageSize: al.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: al.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: al.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: al.maxComputeWorkgroupSizeY,
    maxComputeWorkgroupsPerDimension: al.maxComputeWorkgroupsPerDimension,
    maxStorageBuffersPerShaderStage: al.maxStorageBuffersPerShaderStage,
  };
  const device = await track(
    adapter.requestDevice({
      requiredFeatures: requiredFeatures as GPUFeatureName[],
      requiredLimits,
      label: "siri",
    }),
  );
  keepAlive.push(adapter, device);
  let lost: string | null = null;
  let destroyed = false;
  // Not tracked on purpose: it stays pending for the device's whole life.
  device.lost.then((l) => {
    if (!destroyed) lost = `${l.reason}: ${l.message}`;
  });
  const uncaptured: string[] = [];
  device.addEventListener("uncapturederror", (ev) => {
    uncaptured.push((ev as GPUUncapturedErrorEvent).error.message);
  });
  return {
    device,
    adapter: {
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      backend,
      isFallback: !!info.isFallbackAdapter,
      subgroupMinSize: info.subgroupMinSize ?? 0,
      subgroupMaxSize: info.subgroupMaxSize ?? 0,
      subgroupMatrixConfigs: (info.subgroupMatrixConfigs ?? []).map((c) => ({
        componentType: c.componentType,
        resultComponentType: c.resultComponentType,
        M: Number(c.M),
        N: Number(c.N),
        K: Number(c.K),
      })),
    },
    features,
    limits: device.limits,
    check(where: string) {
      if (lost) {
        throw new GpuDeviceLostError(
          `GPU device lost (${lost}) during ${where}. Work since the last checkpoint is gone; ` +
            "the last checkpoint on disk is intact. Restart, with --resume where the command has it.",
        );
      }
      if (uncaptured.length) {
        const msgs = uncaptured.splice(0);
        throw new GpuError(`WebGPU validation error during ${where}:\n${msgs.join("\n")}`);
      }
    },
    destroy() {
      destroyed = true;
      device.destroy();
    },
  };
}
