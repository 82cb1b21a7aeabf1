/**
 * WGSL loader and pipeline cache.
 *
 * Kernels live in `kernels/<family>.wgsl`, one file per family (forward and
 * backward together). True compile-time constants (workgroup size, tile
 * sizes, element type) are written `{{NAME}}` in the WGSL and filled here;
 * everything that varies with the input (shapes, strides, offsets) goes in
 * the uniform struct, so one pipeline serves every shape. Pipelines are
 * compiled once per (family, entry point, constants) and cached.
 *
 * Binding convention: @group(0) @binding(0) is the uniform struct (when the
 * kernel has one), storage buffers follow at bindings 1, 2, ... in the order
 * the caller passes them.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { track } from "./bun_event_pump.ts";
import { GpuError } from "./device.ts";

export const KERNEL_DIR = join(import.meta.dir, "..", "..", "kernels");

export type Constants = Record<string, string | number | boolean>;

export class KernelError extends GpuError {
  override name = "KernelError";
}

export interface Kernel {
  family: string;
  entry: string;
  constants: Constants;
  key: string;
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
}

const sourceCache = new Map<string, string>();

export function readKernelSource(family: string): string {
  let src = sourceCache.get(family);
  if (src === undefined) {
    const path = join(KERNEL_DIR, `${family}.wgsl`);
    try {
      src = readFileSync(path, "utf8");
    } catch {
      throw new KernelError(`kernel family "${family}": no file ${path}`);
    }
    sourceCache.set(family, src);
  }
  return src;
}

/** Fill `{{NAME}}` placeholders; every placeholder must have a value. */
export function renderTemplate(family: string, src: string, constants: Constants): string {
  const missing = new Set<string>();
  const out = src.replace(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g, (_, name: string) => {
    if (!(name in constants)) {
      missing.add(name);
      return "";
    }
    const v = constants[name];
    return typeof v === "boolean" ? (v ? "true" : "false") : String(v);
  });
  if (missing.size) {
    throw new KernelError(
      `kernel ${family}: constants ${[...missing].join(", ")} have no value (given: ${JSON.stringify(constants)})`,
    );
  }
  return out;
}

export function cacheKey(family: string, entry: string, constants: Constants): string {
  const sorted = Object.keys(constants)
    .sort()
    .map((k) => `${k}=${constants[k]}`)
    .join(",");
  return `${family}:${entry}:{${sorted}}`;
}

export class KernelCache {
  private readonly compiled = new Map<string, Promise<Kernel>>();
  /** How many times a pipeline was actually compiled (for tests and logs). */
  compileCount = 0;

  constructor(private readonly device: GPUDevice) {}

  get size(): number {
    return this.compiled.size;
  }

  /** Compile (once) and return the pipeline for a kernel entry point. */
  get(family: string, entry: string, constants: Constants = {}, source?: string): Promise<Kernel> {
    const key = cacheKey(family, entry, constants);
    let k = this.compiled.get(key);
    if (!k) {
      k = this.compile(family, entry, constants, key, source);
      this.compiled.set(key, k);
      k.catch(() => this.compiled.delete(key)); // a failed compile is not cached
    }
    return k;
  }

  private async compile(
    family: string,
    entry: string,
    constants: Constants,
    key: string,
    source?: string,
  ): Promise<Kernel> {
    const code = renderTemplate(family, source ?? readKernelSource(family), constants);
    const where = `kernel ${family}.${entry} with constants ${JSON.stringify(constants)}`;
    // An error scope keeps the compile error out of the device's
    // uncaptured-error stream: it is reported here, as a thrown error.
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ code, label: key });
    const info = await track(module.getCompilationInfo());
    const scoped = await track(this.device.popErrorScope());
    const errors = info.messages.filter((m) => m.type === "error");
    if (errors.length) {
      const lines = code.split("\n");
      const text = errors
        .map((m) => `  line ${m.lineNum}:${m.linePos}: ${m.message}\n    | ${lines[m.lineNum - 1] ?? ""}`)
        .join("\n");
      throw new KernelError(`WGSL compile error in ${where}:\n${text}`);
    }
    if (scoped) throw new KernelError(`WGSL error in ${where}: ${scoped.message}`);
    let pipeline: GPUComputePipeline;
    try {
      pipeline = await track(
        this.device.createComputePipelineAsync({
          label: key,
          layout: "auto",
          compute: { module, entryPoint: entry },
        }),
      );
    } catch (e) {
      throw new KernelError(`pipeline creation failed for ${where}: ${(e as Error).message}`);
    }
    this.compileCount++;
    return { family, entry, constants, key, pipeline, layout: pipeline.getBindGroupLayout(0) };
  }
}
