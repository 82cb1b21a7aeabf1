/**
 * Fetch presets from the Hugging Face Hub into a cache folder, and load a
 * dataset by preset name or by path. Layout: <dir>/<preset>/<file as on the Hub>,
 * plus <dir>/<preset>/download.json (repo, revision, the commit it resolved to).
 * As the Hub's own client does (matched here, not depended on: it is one
 * fetch per file):
 *  - the address is https://huggingface.co unless HF_ENDPOINT or an explicit endpoint says otherwise;
 *  - HF_TOKEN (or HUGGING_FACE_HUB_TOKEN) is sent as a Bearer token (gated and private repos);
 *  - a revision (branch, tag or commit; default main) is fetched from /resolve/<revision>/;
 *  - a file already in the local Hugging Face cache (HF_HUB_CACHE, else
 *    HF_HOME/hub, else ~/.cache/huggingface/hub; datasets--org--name/refs/<rev>
 *    and snapshots/<commit>/<file>) is copied from there, not fetched.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { loadProblems, type FieldMap, type Problem } from "./load.ts";
import { findPreset, PRESETS, presetOrThrow, type Preset } from "./presets.ts";

export const DEFAULT_CACHE_DIR = "datasets/cache";

export function hubEndpoint(explicit?: string): string {
  return (explicit || process.env.HF_ENDPOINT || "https://huggingface.co").replace(/\/+$/, "");
}

/** https://huggingface.co/datasets/<repo>/resolve/<revision>/<file> */
export function hubUrl(repo: string, file: string, endpoint?: string, revision = "main"): string {
  const path = file.split("/").map(encodeURIComponent).join("/");
  return `${hubEndpoint(endpoint)}/datasets/${repo}/resolve/${encodeURIComponent(revision)}/${path}`;
}

/** The token to send: explicit, else HF_TOKEN, else HUGGING_FACE_HUB_TOKEN; undefined for none. */
export function hubToken(explicit?: string): string | undefined {
  return explicit || process.env.HF_TOKEN || process.env.HUGGING_FACE_HUB_TOKEN || undefined;
}

/** The local Hugging Face hub cache folder (it may not exist). */
export function hfCacheDir(): string {
  const env = process.env;
  return env.HF_HUB_CACHE || (env.HF_HOME ? join(env.HF_HOME, "hub") : join(homedir(), ".cache", "huggingface", "hub"));
}

/**
 * A file of a dataset repo in the Hugging Face cache at a revision, if there:
 * a 40-hex revision is the snapshot itself; a branch or tag is resolved
 * through refs/<revision>.
 */
export function hfCachedFile(cache: string, repo: string, revision: string, file: string): { path: string; commit: string } | null {
  const root = join(cache, `datasets--${repo.replace(/\//g, "--")}`);
  let commit = revision;
  if (!/^[0-9a-f]{40}$/.test(revision)) {
    const ref = join(root, "refs", revision);
    if (!existsSync(ref)) return null;
    commit = readFileSync(ref, "utf8").trim();
  }
  const path = join(root, "snapshots", commit, file);
  return existsSync(path) && statSync(path).size > 0 ? { path, commit } : null;
}

/** <dir>/<preset>/download.json: what was fetched, from where, at which revision. */
export interface DownloadRecord {
  repo: string;
  revision: string;
  /** The commit the revision resolved to (the Hub's X-Repo-Commit, or the cache's snapshot), when known. */
  commit: string | null;
  source: "hub" | "hf-cache";
  files: string[];
  downloaded: string;
}

export const DOWNLOAD_RECORD = "download.json";

export function readDownloadRecord(preset: Preset, dir: string): DownloadRecord | null {
  const path = join(dir, preset.name, DOWNLOAD_RECORD);
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, "utf8")) as DownloadRecord;
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message}); delete it and download again`);
  }
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
  /** Branch, tag or commit to fetch (default "main"); kept in download.json and in bench run records. */
  revision?: string;
  /** Hub token; default HF_TOKEN / HUGGING_FACE_HUB_TOKEN. */
  token?: string;
  /** Hugging Face hub cache to reuse files from (default hfCacheDir()); "" turns it off. */
  hfCache?: string;
}

function writeAtomic(dest: string, write: (tmp: string) => void): void {
  mkdirSync(dirname(dest), { recursive: true });
  const tmp = `${dest}.part`;
  write(tmp);
  renameSync(tmp, dest); // never leave a half-written file under the final name
}

/** Download every file of a preset, then check that it loads. Returns the local paths. */
export async function downloadPreset(name: string, dir: string, opts: DownloadOptions = {}): Promise<string[]> {
  const preset = presetOrThrow(name);
  const log = opts.log ?? (() => {});
  const revision = opts.revision || "main";
  const token = hubToken(opts.token);
  const cache = opts.hfCache ?? hfCacheDir();
  const paths = presetFiles(preset, dir);
  // Files of another revision than the one asked for are fetched again.
  const old = readDownloadRecord(preset, dir);
  const sameRevision = old ? old.revision === revision : revision === "main";
  let commit: string | null = old && sameRevision ? old.commit : null;
  let fromCache = 0;
  for (let i = 0; i < preset.files.length; i++) {
    const dest = paths[i]!;
    if (!opts.force && sameRevision && existsSync(dest) && statSync(dest).size > 0) {
      log(`${dest}: already present`);
      continue;
    }
    const cached = cache ? hfCachedFile(cache, preset.repo, revision, preset.files[i]!) : null;
    if (cached) {
      writeAtomic(dest, (tmp) => copyFileSync(cached.path, tmp));
      commit = cached.commit;
      fromCache++;
      log(`${dest}: from the Hugging Face cache (${cached.path})`);
      continue;
    }
    const url = hubUrl(preset.repo, preset.files[i]!, opts.endpoint, revision);
    log(`fetching ${url}`);
    let res: Response;
    try {
      res = await fetch(url, {
        signal: AbortSignal.timeout(opts.timeoutMs ?? 120_000),
        redirect: "follow",
        headers: token ? { authorization: `Bearer ${token}` } : {},
      });
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
          (res.status === 401 || res.status === 403
            ? token
              ? " (the token in HF_TOKEN was refused: does it have access? gated repositories need their terms accepted on the Hub)"
              : " (the repository may be gated or private: accept its terms on the Hub and set HF_TOKEN)"
            : "") +
          (res.status === 404 ? ` (has ${preset.repo} moved or renamed ${preset.files[i]}, or is there no revision "${revision}"?)` : ""),
      );
    }
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (bytes.length === 0) throw new Error(`dataset "${preset.name}": ${url} returned an empty file`);
    writeAtomic(dest, (tmp) => writeFileSync(tmp, bytes));
    commit = res.headers.get("x-repo-commit") ?? commit;
    log(`${dest}: ${bytes.length} bytes`);
  }
  if (!old || !sameRevision || opts.force || fromCache > 0 || commit !== old.commit) {
    const record: DownloadRecord = {
      repo: preset.repo,
      revision,
      commit,
      source: fromCache === preset.files.length ? "hf-cache" : "hub",
      files: preset.files,
      downloaded: new Date().toISOString(),
    };
    writeAtomic(join(dir, preset.name, DOWNLOAD_RECORD), (tmp) => writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`));
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
  /** For a downloaded preset: the revision and commit it was fetched at (download.json). */
  revision?: { revision: string; commit: string | null };
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
    const rec = readDownloadRecord(preset, dir);
    return { name: preset.name, problems, preset, ...(rec ? { revision: { revision: rec.revision, commit: rec.commit } } : {}) };
  }
  if (!existsSync(spec)) {
    throw new Error(`dataset "${spec}": not a preset (${PRESETS.map((p) => p.name).join(", ")}) and no such file`);
  }
  const problems = await loadProblems(spec, { fields: opts.fields, limit: opts.limit });
  const name = spec.split("/").pop()!.replace(/\.[^.]+$/, "");
  return { name, problems };
}
