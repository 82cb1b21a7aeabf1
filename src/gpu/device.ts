/**
 * Device layer: adapter selection, device creation with the limits the
 * adapter allows, error capture and device-loss reporting.
 *
 * Adapter choice, in order: `--adapter NAME|INDEX` / SIRI_ADAPTER (see
 * below), then `--software` / SIRI_SOFTWARE=1 (the CPU fallback adapter),
 * else the high-performance adapter (hardware first).
 *
 * `--adapter`: dawn.node (the `webgpu` package) has one way to choose: its
 * `adapter=NAME` flag, with which `requestAdapter` takes the first adapter, in
 * Dawn's order (high-performance: discrete, integrated, CPU; Vulkan's order
 * within a kind), whose device name contains NAME. It has no index and no
 * enumeration call; the only list it gives is in the error for a name no
 * adapter has, so `listAdapters` asks for such a name and reads that list.
 * - A NAME must match exactly one adapter: none, or several (eight identical
 *   GPUs share one name), is an error that lists them.
 * - An INDEX (digits) is a position in that list (`siri gpu --list-adapters`).
 *   An adapter whose name no earlier one contains is opened by its name. The
 *   k-th of several identical GPUs cannot be named, so on Linux's Vulkan
 *   backend, when they lead the list, it is picked below Dawn: Mesa's Vulkan
 *   device-select layer (an implicit layer, package mesa-vulkan-drivers) reads
 *   DRI_PRIME=k (the k-th GPU other than the default, the first) and, with
 *   MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1, shows Vulkan only that one.
 *   Both are set in the C environment (Bun's process.env does not reach
 *   getenv) before the instance opens, and a second listing must show exactly
 *   one adapter; without the layer it shows them all, and that is an error
 *   saying so. DRI_PRIME counts GPUs only (among identical CPU adapters the
 *   layer keeps the first), so an opened fallback adapter is an error too;
 *   tests/adapter_select.test.ts runs the path with lavapipe listed twice. Elsewhere (Metal, D3D12, mixed GPUs) identical adapters are an
 *   error: show each process one GPU (e.g. a container per GPU).
 *
 * Experimental features: SIRI_EXPERIMENTAL=1 (or `experimental: true`)
 * enables Dawn's `allow_unsafe_apis` toggle, which is what exposes
 * `chromium-experimental-subgroup-matrix` (tensor cores); only then is that
 * feature requested. Off by default: nothing in the default path uses it.
 */
import { installEventPump, track } from "./bun_event_pump.ts";

installEventPump();

export interface GpuOptions {
  adapter?: string; // a part of the adapter's name, or its index in listAdapters' order (digits)
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
  /** How `--adapter` chose it (absent without the flag): e.g. `index 3 of 9 ("NVIDIA H100"), by Mesa's device-select layer (DRI_PRIME=3)`. */
  chosen?: string;
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

/** One adapter as Dawn lists it: `index` is its place in the order `requestAdapter` picks from. */
export interface ListedAdapter {
  index: number;
  backend: string;
  /** Dawn's device name (what its `adapter=` flag matches a part of). */
  name: string;
}

/** What `--adapter` asks for: a part of an adapter's name, or an index in `listAdapters`' order. */
export type AdapterChoice = { name: string } | { index: number };

/** Digits are an index; anything else a part of the name. */
export function parseAdapterChoice(v: string): AdapterChoice {
  const t = v.trim();
  if (!t) throw new GpuError("--adapter: expected an adapter name (or a part of it) or an index, got an empty value");
  if (/^-\d+$/.test(t)) throw new GpuError(`--adapter ${t}: an adapter index is 0 or more (siri gpu --list-adapters shows them)`);
  return /^\d+$/.test(t) ? { index: Number(t) } : { name: t };
}

/** The resolved options (flags, then environment, then defaults). */
function resolveOptions(opts: GpuOptions) {
  return {
    choice: opts.adapter ?? process.env.SIRI_ADAPTER ?? "",
    software: opts.software ?? process.env.SIRI_SOFTWARE === "1",
    backend: opts.backend ?? process.env.SIRI_BACKEND ?? defaultBackend(),
    experimental: opts.experimental ?? process.env.SIRI_EXPERIMENTAL === "1",
  };
}

const requestOptions = (software: boolean): GPURequestAdapterOptions => (software ? { forceFallbackAdapter: true } : { powerPreference: "high-performance" });

/**
 * `requestAdapter`, awaited. dawn.node rejects inside the call (no adapter of
 * that name), before `track` awaits anything: a handler goes on at once, or
 * Bun reports the rejection as unhandled and the process fails at exit.
 */
function requestAdapter(gpu: GPU, software: boolean): Promise<GPUAdapter | null> {
  const p = gpu.requestAdapter(requestOptions(software));
  p.catch(() => undefined);
  return track(p);
}

/** No adapter has this in its name: Dawn then rejects with the list of its adapters. */
const NO_SUCH_ADAPTER = "\u0001siri: list the adapters\u0001";

/**
 * The adapters Dawn offers on the backend, in the order it picks from (the
 * same request options as `openGpu`: high-performance, or fallback only with
 * `software`). Read from dawn.node's error for a name no adapter has (its only
 * enumeration; the format is pinned with the `webgpu` version).
 */
export async function listAdapters(opts: GpuOptions = {}): Promise<ListedAdapter[]> {
  const { software, backend } = resolveOptions(opts);
  const probe = await loadDawn([`backend=${backend}`, `adapter=${NO_SUCH_ADAPTER}`]);
  keepAlive.push(probe);
  let msg: string;
  try {
    const a = await requestAdapter(probe, software);
    if (!a) return []; // Dawn found no adapter at all
    throw new GpuError(`listing the adapters on backend ${backend}: an adapter named "${NO_SUCH_ADAPTER}" exists?`);
  } catch (e) {
    if (e instanceof GpuError) throw e;
    msg = String((e as Error).message ?? e);
  }
  const at = msg.indexOf("Available adapters:");
  if (at < 0) throw new GpuError(`listing the adapters on backend ${backend}: ${msg}`);
  return [...msg.slice(at).matchAll(/^ \* backend: '([^']*)', name: '(.*)'$/gm)].map((m, index) => ({ index, backend: m[1], name: m[2] }));
}

/** How to open the chosen adapter: Dawn's `adapter=` flag, and C environment variables to set first. */
export interface AdapterPlan {
  name: string;
  index: number;
  flag: string;
  env?: Record<string, string>;
  /** How it was chosen, for the log. */
  chosen: string;
}

const formatList = (list: ListedAdapter[]) => list.map((a) => `  ${a.index}  ${a.backend}  ${a.name}`).join("\n");

/**
 * The adapter `choice` names in `list` (see the header): an error naming
 * `--adapter` when it is out of range, matches nothing, or is ambiguous.
 */
export function planAdapter(list: ListedAdapter[], choice: AdapterChoice, backend: string, platform: string = process.platform): AdapterPlan {
  const listed = `the adapters on backend ${backend} (siri gpu --list-adapters):\n${formatList(list)}`;
  if (!list.length) throw new GpuError(`--adapter: no adapter on backend ${backend}.\n${NO_ADAPTER_HELP}`);
  // Dawn gets the chosen adapter's whole name; it opens the first adapter whose name contains that.
  const opensAs = (a: ListedAdapter) => list.findIndex((b) => b.name.includes(a.name));
  if ("name" in choice) {
    const part = choice.name.toLowerCase();
    const hits = list.filter((a) => a.name.toLowerCase().includes(part));
    if (!hits.length) throw new GpuError(`--adapter "${choice.name}": no adapter has it in its name; ${listed}`);
    if (new Set(hits.map((a) => a.name)).size > 1) throw new GpuError(`--adapter "${choice.name}" is ambiguous: ${hits.length} adapters of different names have it (${hits.map((a) => a.index).join(", ")}); give more of the name or an index. ${listed}`);
    if (hits.length > 1) throw new GpuError(`--adapter "${choice.name}" matches ${hits.length} identical adapters (indices ${hits.map((a) => a.index).join(", ")}): give the index of one. ${listed}`);
    const first = opensAs(hits[0]);
    if (first !== hits[0].index) throw new GpuError(`--adapter "${choice.name}": adapter ${hits[0].index} ("${hits[0].name}") cannot be opened: Dawn opens the first adapter whose name contains the one asked for, and adapter ${first}'s ("${list[first].name}") does; show this process one GPU instead (a container per GPU). ${listed}`);
    return { name: hits[0].name, index: hits[0].index, flag: `adapter=${hits[0].name}`, chosen: `"${choice.name}": index ${hits[0].index} of ${list.length} ("${hits[0].name}")` };
  }
  const k = choice.index;
  if (k >= list.length) throw new GpuError(`--adapter ${k}: out of range, there ${list.length === 1 ? "is 1 adapter (index 0)" : `are ${list.length} adapters (indices 0..${list.length - 1})`}; ${listed}`);
  const name = list[k].name;
  const chosen = `index ${k} of ${list.length} ("${name}")`;
  const first = opensAs(list[k]);
  if (first === k) return { name, index: k, flag: `adapter=${name}`, chosen };
  // An earlier adapter's name contains this one's: Dawn's flag would open that one.
  const twins = list.filter((a) => a.name === name).length;
  const leading = list.slice(0, twins).every((a) => a.name === name);
  if (backend === "vulkan" && platform === "linux" && leading) {
    const env = { DRI_PRIME: String(k), MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: "1" };
    return { name, index: k, flag: `adapter=${name}`, env, chosen: `${chosen}, by Mesa's Vulkan device-select layer (DRI_PRIME=${k})` };
  }
  throw new GpuError(
    `--adapter ${k}: adapter ${k} ("${name}") cannot be told from adapter ${first} ("${list[first].name}"): Dawn opens the first adapter whose name contains the one asked for, ` +
      "and picking one of identical GPUs below Dawn (Mesa's Vulkan device-select layer) is done only on Linux's Vulkan backend, when the identical GPUs lead the list. " +
      `Show this process one GPU instead (a container per GPU, or the driver's own device selection). ${listed}`,
  );
}

/** Set a variable in the C environment, where the Vulkan loader and its layers read it (Bun's process.env does not write there). */
async function setCEnv(env: Record<string, string>): Promise<void> {
  const { dlopen, FFIType } = await import("bun:ffi");
  const libc = dlopen("libc.so.6", { setenv: { args: [FFIType.cstring, FFIType.cstring, FFIType.i32], returns: FFIType.i32 } });
  const c = (s: string) => Buffer.from(`${s}\0`);
  for (const [k, v] of Object.entries(env)) {
    if (libc.symbols.setenv(c(k), c(v), 1) !== 0) throw new GpuError(`--adapter: could not set ${k} in the environment`);
    process.env[k] = v;
  }
}

/** Dawn's flags for `--adapter` (after setting what the plan needs below Dawn), and how it was chosen. */
async function adapterFlags(choice: string, software: boolean, backend: string): Promise<{ flags: string[]; chosen?: string; plan?: AdapterPlan }> {
  if (!choice) return { flags: [] };
  const list = await listAdapters({ software, backend });
  const plan = planAdapter(list, parseAdapterChoice(choice), backend);
  if (plan.env) {
    await setCEnv(plan.env);
    const seen = await listAdapters({ software, backend });
    if (seen.length !== 1 || seen[0].name !== plan.name) {
      const set = Object.entries(plan.env).map(([k, v]) => `${k}=${v}`).join(" ");
      throw new GpuError(
        `--adapter ${plan.index}: with ${set} Vulkan should show only adapter ${plan.index} ("${plan.name}"), but Dawn lists ${seen.length}:\n${formatList(seen)}\n` +
          "Mesa's Vulkan device-select layer is missing (Debian/Ubuntu: apt-get install mesa-vulkan-drivers; it installs /usr/share/vulkan/implicit_layer.d/VkLayer_MESA_device_select.json) " +
          "or disabled (NODEVICE_SELECT). Or show this process one GPU another way (a container per GPU).",
      );
    }
  }
  return { flags: [plan.flag], chosen: plan.chosen, plan };
}

export async function openGpu(opts: GpuOptions = {}): Promise<GpuContext> {
  const { choice, software, backend, experimental } = resolveOptions(opts);
  const flags = [`backend=${backend}`];
  const picked: Awaited<ReturnType<typeof adapterFlags>> = dawnInstance ? { flags: [] } : await adapterFlags(choice, software, backend);
  flags.push(...picked.flags);
  // Cooperative matrices need the Vulkan memory model in SPIR-V (Dawn's own subgroup-matrix tests turn it on).
  if (experimental) flags.push("enable-dawn-features=allow_unsafe_apis,use_vulkan_memory_model");
  let gpu: GPU;
  try {
    gpu = dawnInstance ?? (await loadDawn(flags));
  } catch (e) {
    const msg = String((e as Error).message ?? e);
    if (choice) throw new GpuError(`--adapter ${choice}: not found on backend ${backend}.\n${msg}`);
    throw new GpuError(`${NO_ADAPTER_HELP}\n(dawn: ${msg})`);
  }
  dawnInstance = gpu;
  let adapter: GPUAdapter | null;
  try {
    adapter = await requestAdapter(gpu, software);
  } catch (e) {
    throw new GpuError(`${choice ? `--adapter ${choice}: ` : ""}${String((e as Error).message ?? e)}`);
  }
  if (!adapter) throw new GpuError(software ? `No software (fallback) adapter.\n${NO_ADAPTER_HELP}` : NO_ADAPTER_HELP);
  const info = adapter.info as GPUAdapterInfo & {
    subgroupMinSize?: number;
    subgroupMaxSize?: number;
    isFallbackAdapter?: boolean;
    subgroupMatrixConfigs?: readonly SubgroupMatrixConfig[];
  };
  // The layer's DRI_PRIME counts GPUs only: among identical CPU adapters it keeps the first, whatever k is.
  if (picked.plan?.env && info.isFallbackAdapter) {
    throw new GpuError(
      `--adapter ${picked.plan.index}: adapter ${picked.plan.index} ("${picked.plan.name}") is one of several identical CPU (fallback) adapters; ` +
        "Mesa's device-select layer (DRI_PRIME) chooses among GPUs only and would open the first of them. Give --adapter 0, or --software.",
    );
  }
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
      ...(picked.chosen ? { chosen: picked.chosen } : {}),
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
