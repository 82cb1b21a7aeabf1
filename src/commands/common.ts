// Arguments and helpers shared by the commands.
import type { ArgsDef } from "citty";
import { Gpu } from "../gpu/index.ts";

export const gpuArgs = {
  adapter: {
    type: "string",
    description: "The WebGPU adapter: a part of its name, or its index (digits) as `siri gpu --list-adapters` shows; one per GPU on a machine of identical GPUs (env SIRI_ADAPTER)",
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

/** The adapter for a log line: its description, and how `--adapter` chose it. */
export function adapterLine(gpu: Gpu): string {
  const a = gpu.adapter;
  return `adapter: ${a.description}${a.chosen ? ` (--adapter ${a.chosen})` : ""}`;
}

export interface Range {
  min?: number;
  max?: number;
}

function checkRange(name: string, v: string, x: number, r: Range, what: string): number {
  const bounds = r.min !== undefined && r.max !== undefined ? ` in ${r.min}..${r.max}` : r.min !== undefined ? ` >= ${r.min}` : r.max !== undefined ? ` <= ${r.max}` : "";
  if ((r.min !== undefined && x < r.min) || (r.max !== undefined && x > r.max)) throw new Error(`--${name}: expected ${what}${bounds}, got ${v}`);
  return x;
}

/** Parse a number argument, with a clear error naming the flag. */
export function num(name: string, v: string | undefined, fallback: number, range: Range = {}): number {
  if (v === undefined || v === "") return fallback;
  const x = Number(v);
  if (!Number.isFinite(x)) throw new Error(`--${name}: expected a number, got "${v}"`);
  return checkRange(name, v, x, range, "a number");
}

export function int(name: string, v: string | undefined, fallback: number, range: Range = {}): number {
  if (v === undefined || v === "") return fallback;
  const x = Number(v);
  if (!Number.isInteger(x)) throw new Error(`--${name}: expected an integer, got "${v}"`);
  return checkRange(name, v, x, range, "an integer");
}

// Flags that may be given more than once (the CLI runner refuses a repeat of any other).
const repeatables = new WeakSet<object>();

/** Mark a flag definition as repeatable; read every value with `repeated()`. */
export function repeatable<T extends object>(def: T): T {
  repeatables.add(def);
  return def;
}

export function isRepeatable(def: object): boolean {
  return repeatables.has(def);
}

/**
 * Every value of a repeatable flag, in order (citty keeps only the last);
 * `split` also splits each value at commas.
 */
export function repeated(rawArgs: string[], flag: string, split = true): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i]!;
    if (a === "--") break;
    let v: string | undefined;
    if (a === `--${flag}`) v = rawArgs[++i];
    else if (a.startsWith(`--${flag}=`)) v = a.slice(flag.length + 3);
    else continue;
    if (v === undefined || v.startsWith("--")) throw new Error(`--${flag}: expected a value`);
    if (split) out.push(...v.split(",").map((s) => s.trim()).filter(Boolean));
    else out.push(v);
  }
  return out;
}
