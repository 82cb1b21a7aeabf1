/**
 * Fetch presets from the Hugging Face Hub into a cache folder, and load a
 * dataset by preset name or by path. Layout: <dir>/<preset>/<file as on the Hub>.
 * The Hub address is https://huggingface.co unless HF_ENDPOINT (the Hub
 * client's own variable) or an explicit endpoint says otherwise.
 */
import { existsSync, mkdirSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { loadProblems, type FieldMap, type Problem } from "./load.ts";
import { findPreset, PRESETS, presetOrThrow, type Preset } from "./presets.ts";

export const DEFAULT_CACHE_DIR = "datasets/cache";

export function hubEndpoint(explicit?: string): string {
  return (explicit || process.env.HF_ENDPOINT || "https://huggingface.co").replace(/\/+$/, "");
}

/** https://huggingface.co/datasets/<repo>/resolve/main/<file> */
export function hubUrl(repo: string, file: string, endpoint?: string): string {
  const path = file.split("/").map(encodeURIComponent).join("/");
  return `${hubEndpoint(endpoint)}/datasets/${repo}/resolve/main/${path}`;
}

export function presetFiles(preset: Preset, dir: string): string[] {
  return preset.files.map((f) => join(dir, preset.name, f));
}

export function isDownloaded(preset: Preset, dir: string): boolean {
  return presetFiles(preset, dir).every((f) => existsSync(f) && statSync(f).size > 0);
}

export interface DownloadOptions {
  endpoint?: string;
  /** Per-file time limit (default 120 s). */
  timeoutMs?: number;
  /** Fetch again even when the files are present. */
  force?: boolean;
  log?: (line: string) => void;
}

/** Download every file of a preset, then check that it loads. Returns the local paths. */
export async function downloadPreset(name: string, dir: string, opts: DownloadOptions = {}): Promise<string[]> {
  const preset = presetOrThrow(name);
  const log = opts.log ?? (() => {});
  const paths = presetFiles(preset, dir);
  for (let i = 0; i < preset.files.length; i++) {
    const dest = paths[i];
    if (!opts.force && existsSync(dest) && statSync(dest).size > 0) {
      log(`${dest}: already present`);
      continue;
    }
    const url = hubUrl(preset.repo, preset.files[i], opts.endpoint);
    log(`fetching ${url}`);
    let res: Response;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(opts.timeoutMs ?? 120_000), redirect: "follow" });
    } catch (e) {
      const err = e as Error & { cause?: { message?: string; code?: string } };
      const why = err.cause?.code ?? err.cause?.message ?? err.message;
      throw new Error(
        `dataset "${preset.name}": cannot reach the Hugging Face Hub at ${url} (${why}). ` +
          `Are you offline? Fetch ${preset.repo}/${preset.files[i]} on a machine with network access and copy it to ${dest}, ` +
          `or set HF_ENDPOINT to a reachable mirror.`,
      );
    }
    if (!res.ok) {
      throw new Error(
        `dataset "${preset.name}": ${url} answered HTTP ${res.status} ${res.statusText}` +
          (res.status === 401 || res.status === 403 ? " (the repository may be gated: accept its terms on the Hub)" : "") +
          (res.status === 404 ? ` (has ${preset.repo} moved or renamed ${preset.files[i]}?)` : ""),
      );
    }
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (bytes.length === 0) throw new Error(`dataset "${preset.name}": ${url} returned an empty file`);
    mkdirSync(dirname(dest), { recursive: true });
    const tmp = `${dest}.part`;
    writeFileSync(tmp, bytes);
    renameSync(tmp, dest); // never leave a half-written file under the final name
    log(`${dest}: ${bytes.length} bytes`);
  }
  const problems = await loadPresetFiles(preset, dir);
  log(`${preset.name}: ${problems.length} problems` + (preset.count && problems.length !== preset.count ? ` (expected ${preset.count})` : ""));
  return paths;
}

async function loadPresetFiles(preset: Preset, dir: string): Promise<Problem[]> {
  const all: Problem[] = [];
  const seen = new Set<string>();
  for (const path of presetFiles(preset, dir)) {
    for (const p of await loadProblems(path, { fields: preset.fields })) {
      if (seen.has(p.id)) throw new Error(`${path}: id "${p.id}" repeats an id from an earlier file of preset "${preset.name}"`);
      seen.add(p.id);
      all.push(p);
    }
  }
  return all;
}

export interface DatasetSource {
  /** Short name for reports: the preset name, or the file's stem. */
  name: string;
  problems: Problem[];
  preset?: Preset;
}

/**
 * A dataset by preset name (from the cache folder) or by file path. A preset
 * that has not been downloaded is an error that says how to download it.
 */
export async function loadDataset(spec: string, opts: { dir?: string; fields?: FieldMap; limit?: number } = {}): Promise<DatasetSource> {
  const dir = opts.dir ?? DEFAULT_CACHE_DIR;
  const preset = findPreset(spec);
  if (preset && !existsSync(spec)) {
    if (!isDownloaded(preset, dir)) {
      const missing = presetFiles(preset, dir).filter((f) => !existsSync(f));
      throw new Error(
        `dataset "${preset.name}" is not in ${dir} (missing ${missing.join(", ")}); ` +
          `run: bun run siri datasets download ${preset.name} --dir ${dir}`,
      );
    }
    let problems = await loadPresetFiles(preset, dir);
    if (opts.limit !== undefined) problems = problems.slice(0, opts.limit);
    return { name: preset.name, problems, preset };
  }
  if (!existsSync(spec)) {
    throw new Error(`dataset "${spec}": not a preset (${PRESETS.map((p) => p.name).join(", ")}) and no such file`);
  }
  const problems = await loadProblems(spec, { fields: opts.fields, limit: opts.limit });
  const name = spec.split("/").pop()!.replace(/\.[^.]+$/, "");
  return { name, problems };
}
