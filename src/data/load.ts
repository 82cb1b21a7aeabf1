/**
 * Problem-set loaders: JSON (an array of objects), JSONL (one object per line)
 * and Parquet (Hugging Face's dataset format, read with hyparquet).
 * Every source row becomes a `Problem` through a field map; a missing or
 * malformed field is an error naming the file, the line or row, and the field.
 */
import { readFileSync } from "node:fs";
import { basename, extname } from "node:path";
import { parquetReadObjects } from "hyparquet";

/** One problem with its reference answer; `meta` keeps the extra columns asked for. */
export interface Problem {
  id: string;
  problem: string;
  answer: string;
  solution?: string;
  meta: Record<string, unknown>;
}

/**
 * Which source field feeds each Problem field. A name may be a dotted path
 * into nested objects ("reward_model.ground_truth"). Unset fields fall back
 * to the usual names (DEFAULT_FIELDS); an unset id becomes `<file stem>-<row>`.
 */
export interface FieldMap {
  problem?: string;
  answer?: string;
  solution?: string;
  id?: string;
  /** Extra fields copied into `meta` (e.g. MATH500's subject and level). */
  keep?: string[];
}

/** Names tried in order when a field is not mapped explicitly. */
export const DEFAULT_FIELDS = {
  problem: ["problem", "question", "Problem", "Question"],
  answer: ["answer", "Answer", "final_answer"],
  solution: ["solution", "Solution"],
  id: ["id", "unique_id", "ID", "problem_id"],
} as const;

export type Format = "json" | "jsonl" | "parquet";

export interface LoadOptions {
  fields?: FieldMap;
  /** Overrides the format guessed from the extension. */
  format?: Format;
  /** Keep only the first `limit` problems. */
  limit?: number;
}

export function formatOf(path: string): Format {
  const ext = extname(path).toLowerCase();
  if (ext === ".json") return "json";
  if (ext === ".jsonl" || ext === ".ndjson") return "jsonl";
  if (ext === ".parquet") return "parquet";
  throw new Error(`${path}: unknown dataset format "${ext}"; expected .json, .jsonl or .parquet (or pass a format)`);
}

/** Parse "problem=question,answer=ground_truth,keep=subject+level" (the CLI's --fields). */
export function parseFieldMap(spec: string): FieldMap {
  const map: FieldMap = {};
  for (const part of spec.split(",").map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new Error(`--fields: expected NAME=FIELD, got "${part}"`);
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (!value) throw new Error(`--fields: empty field name for "${key}"`);
    if (key === "keep") map.keep = value.split("+").map((s) => s.trim()).filter(Boolean);
    else if (key === "problem" || key === "answer" || key === "solution" || key === "id") map[key] = value;
    else throw new Error(`--fields: unknown key "${key}"; expected problem, answer, solution, id or keep`);
  }
  return map;
}

/** Where a row came from, for error messages. */
type Where = string;

/** Read raw rows from a file, each with a location string ("file line 3", "file row 12"). */
export async function readRows(path: string, format: Format = formatOf(path)): Promise<{ row: unknown; where: Where }[]> {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new Error(`${path}: cannot read dataset file: ${(e as Error).message}`);
  }
  if (format === "jsonl") {
    const out: { row: unknown; where: Where }[] = [];
    const lines = bytes.toString("utf8").split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].trim();
      if (!line) continue;
      try {
        out.push({ row: JSON.parse(line), where: `${path} line ${i + 1}` });
      } catch (e) {
        throw new Error(`${path} line ${i + 1}: invalid JSON: ${(e as Error).message}`);
      }
    }
    return out;
  }
  if (format === "json") {
    let data: unknown;
    try {
      data = JSON.parse(bytes.toString("utf8"));
    } catch (e) {
      throw new Error(`${path}: invalid JSON: ${(e as Error).message}`);
    }
    // An array of rows, or an object holding exactly one array (e.g. {"data": [...]}).
    if (!Array.isArray(data) && data && typeof data === "object") {
      const arrays = Object.entries(data).filter(([, v]) => Array.isArray(v));
      if (arrays.length === 1) {
        return (arrays[0][1] as unknown[]).map((row, i) => ({ row, where: `${path} ${arrays[0][0]}[${i}]` }));
      }
    }
    if (!Array.isArray(data)) {
      throw new Error(`${path}: expected a JSON array of problems (or an object with one array field), got ${typeof data}`);
    }
    return data.map((row, i) => ({ row, where: `${path} item [${i}]` }));
  }
  if (bytes.length < 12 || bytes.toString("latin1", 0, 4) !== "PAR1" || bytes.toString("latin1", bytes.length - 4) !== "PAR1") {
    throw new Error(`${path}: not a Parquet file (no PAR1 magic); if this is a Git LFS pointer, download the real file`);
  }
  const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let rows: Record<string, unknown>[];
  try {
    rows = await parquetReadObjects({ file });
  } catch (e) {
    throw new Error(`${path}: cannot read Parquet: ${(e as Error).message}`);
  }
  return rows.map((row, i) => ({ row, where: `${path} row ${i + 1}` }));
}

function lookup(row: Record<string, unknown>, path: string): unknown {
  let cur: unknown = row;
  for (const key of path.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

/** Scalars become strings (integral floats without ".0": 142.0 -> "142"); others are an error. */
function asText(v: unknown, where: Where, field: string, source: string): string {
  if (typeof v === "string") return v;
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number" && Number.isFinite(v)) return Number.isInteger(v) ? v.toFixed(0) : String(v);
  throw new Error(`${where}: field "${field}" (from "${source}") must be a string or number, got ${v === null ? "null" : typeof v}`);
}

/** Turn raw rows into Problems through the field map. */
export function toProblems(rows: { row: unknown; where: Where }[], fields: FieldMap, stem: string): Problem[] {
  const out: Problem[] = [];
  const seen = new Map<string, Where>();
  rows.forEach(({ row, where }, index) => {
    if (row === null || typeof row !== "object" || Array.isArray(row)) {
      throw new Error(`${where}: expected an object, got ${Array.isArray(row) ? "array" : typeof row}`);
    }
    const r = row as Record<string, unknown>;
    const present = Object.keys(r).join(", ");
    const pick = (field: keyof typeof DEFAULT_FIELDS, required: boolean): { value: unknown; source: string } | undefined => {
      const explicit = fields[field];
      const names = explicit ? [explicit] : DEFAULT_FIELDS[field];
      let isNull: string | undefined;
      for (const name of names) {
        const v = lookup(r, name);
        if (v !== undefined && v !== null) return { value: v, source: name };
        if (v === null) isNull ??= name;
      }
      if ((required || explicit) && isNull !== undefined) {
        throw new Error(`${where}: field "${field}" (from "${isNull}") is null; expected a string or number`);
      }
      if (required || explicit) {
        throw new Error(
          `${where}: missing field "${field}" (looked for ${names.map((n) => `"${n}"`).join(", ")}); ` +
            `fields present: ${present || "none"}. Map it with fields {${field}: NAME} (CLI: --fields ${field}=NAME)`,
        );
      }
      return undefined;
    };
    const p = pick("problem", true)!;
    const a = pick("answer", true)!;
    const problem = asText(p.value, where, "problem", p.source);
    const answer = asText(a.value, where, "answer", a.source).trim();
    if (!problem.trim()) throw new Error(`${where}: field "problem" (from "${p.source}") is empty`);
    if (!answer) throw new Error(`${where}: field "answer" (from "${a.source}") is empty`);
    const s = pick("solution", false);
    const i = pick("id", false);
    const id = i ? asText(i.value, where, "id", i.source) : `${stem}-${index}`;
    const prev = seen.get(id);
    if (prev) throw new Error(`${where}: duplicate id "${id}" (first at ${prev})`);
    seen.set(id, where);
    const meta: Record<string, unknown> = {};
    for (const k of fields.keep ?? []) {
      const v = lookup(r, k);
      if (v === undefined) throw new Error(`${where}: missing kept field "${k}"; fields present: ${present}`);
      meta[k] = typeof v === "bigint" ? Number(v) : v;
    }
    const prob: Problem = { id, problem, answer, meta };
    if (s) prob.solution = asText(s.value, where, "solution", s.source);
    out.push(prob);
  });
  return out;
}

/** Load one dataset file into Problems. */
export async function loadProblems(path: string, opts: LoadOptions = {}): Promise<Problem[]> {
  const rows = await readRows(path, opts.format ?? formatOf(path));
  const stem = basename(path).replace(/\.[^.]+$/, "");
  const problems = toProblems(rows, opts.fields ?? {}, stem);
  if (problems.length === 0) throw new Error(`${path}: no problems in file`);
  return opts.limit !== undefined ? problems.slice(0, opts.limit) : problems;
}
