// Arguments and helpers shared by the commands.
import type { ArgsDef } from "citty";
import { Gpu } from "../gpu/index.ts";

export const gpuArgs = {
  adapter: {
    type: "string",
    description: "Force the WebGPU adapter with this name or name prefix (env SIRI_ADAPTER)",
  },
  software: {
    type: "boolean",
    description: "Force the software (CPU fallback) adapter (env SIRI_SOFTWARE=1)",
  },
  backend: {
    type: "string",
    description: "Dawn backend: vulkan, metal, d3d12, ... (env SIRI_BACKEND)",
  },
} as const satisfies ArgsDef;

export function openGpuFromArgs(args: { adapter?: string; software?: boolean; backend?: string }): Promise<Gpu> {
  return Gpu.open({
    adapter: args.adapter || undefined,
    software: args.software || undefined,
    backend: args.backend || undefined,
  });
}

/** Parse a number argument, with a clear error naming the flag. */
export function num(name: string, v: string | undefined, fallback: number): number {
  if (v === undefined || v === "") return fallback;
  const x = Number(v);
  if (!Number.isFinite(x)) throw new Error(`--${name}: expected a number, got "${v}"`);
  return x;
}

export function int(name: string, v: string | undefined, fallback: number): number {
  const x = num(name, v, fallback);
  if (!Number.isInteger(x)) throw new Error(`--${name}: expected an integer, got "${v}"`);
  return x;
}
