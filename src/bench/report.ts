/**
 * The benchmark run folder and its reports.
 *
 *   <run>/run.json       the settings (model, datasets, n, sampling); a resumed run must match
 *   <run>/samples.jsonl  one SampleRecord per line, append-only: a run resumes from it
 *   <run>/summary.json   summarize()'s output
 *   <run>/report.md      the same as a Markdown report
 *
 * A crash can leave a half-written last line in samples.jsonl; reading drops
 * it (its sample is simply generated again) and opening for append cuts it
 * off so the next record starts on a fresh line. A bad line anywhere else is
 * an error naming the file and line.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import type { DatasetSummary, SampleRecord, Summary } from "./metrics.ts";
import { paretoSvg, type PlotPoint } from "./plot.ts";
import { writeFileAtomic } from "../run/atomic.ts";

export const RUN_FILES = {
  config: "run.json",
  samples: "samples.jsonl",
  summary: "summary.json",
  report: "report.md",
} as const;

/** Check one parsed line against the record format; errors name the field. */
export function validateRecord(x: unknown, where: string): SampleRecord {
  if (x === null || typeof x !== "object" || Array.isArray(x)) throw new Error(`${where}: expected a JSON object`);
  const r = x as Record<string, unknown>;
  const need = (field: string, ok: boolean, what: string) => {
    if (!ok) throw new Error(`${where}: field "${field}" must be ${what}, got ${JSON.stringify(r[field])}`);
  };
  need("problem_id", typeof r.problem_id === "string", "a string");
  need("sample", Number.isInteger(r.sample) && (r.sample as number) >= 0, "an integer >= 0");
  need("tokens", Number.isInteger(r.tokens) && (r.tokens as number) >= 0, "an integer >= 0");
  need("response_tokens", Number.isInteger(r.response_tokens) && (r.response_tokens as number) >= 0, "an integer >= 0");
  need("extracted", r.extracted === null || typeof r.extracted === "string", "a string or null");
  need("correct", typeof r.correct === "boolean", "a boolean");
  need("stop_reason", typeof r.stop_reason === "string" && r.stop_reason.length > 0, "a non-empty string");
  if (r.dataset !== undefined) need("dataset", typeof r.dataset === "string", "a string");
  return r as SampleRecord;
}

export interface SamplesFile {
  records: SampleRecord[];
  /** Bytes up to the end of the last complete record; anything after is a torn last line. */
  validBytes: number;
  /** True when a torn (unterminated, unparsable) last line was dropped. */
  tornTail: boolean;
  /** True when the last record is complete but lacks its newline (append must add one first). */
  missingNewline: boolean;
}

/** Read samples.jsonl (missing file: no records). */
export function readSamples(path: string): SamplesFile {
  const out: SamplesFile = { records: [], validBytes: 0, tornTail: false, missingNewline: false };
  if (!existsSync(path)) return out;
  const buf = readFileSync(path);
  let start = 0;
  let line = 0;
  while (start < buf.length) {
    line++;
    const nl = buf.indexOf(0x0a, start);
    const end = nl === -1 ? buf.length : nl;
    const text = buf.toString("utf8", start, end).trim();
    if (text) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (e) {
        if (nl === -1) {
          out.tornTail = true; // torn by a crash mid-write: drop it, that sample is generated again
          return out;
        }
        throw new Error(`${path} line ${line}: invalid JSON: ${(e as Error).message}`);
      }
      out.records.push(validateRecord(parsed, `${path} line ${line}`));
      out.missingNewline = nl === -1;
    }
    start = end + 1;
    out.validBytes = Math.min(start, buf.length);
  }
  return out;
}

/** Key of a (dataset, problem, sample) triple in the done set. */
export function pairKey(problemId: string, sample: number, dataset?: string): string {
  return `${dataset ?? ""}\u0000${problemId}\u0000${sample}`;
}

/** The (problem, sample) pairs already in a run folder, so a resumed run skips them. */
export function donePairs(runDir: string): Set<string> {
  return new Set(readSamples(join(runDir, RUN_FILES.samples)).records.map((r) => pairKey(r.problem_id, r.sample, r.dataset)));
}

export interface RunLog {
  records: SampleRecord[];
  done: Set<string>;
  isDone(problemId: string, sample: number, dataset?: string): boolean;
  /** Validate and append one record (one write of one full line). */
  append(rec: SampleRecord): void;
}

/**
 * Open (creating if needed) a run folder's samples.jsonl for appending,
 * mending a torn last line first. Duplicate (problem, sample) records are an error.
 */
export function openRunLog(runDir: string): RunLog {
  mkdirSync(runDir, { recursive: true });
  const path = join(runDir, RUN_FILES.samples);
  const file = readSamples(path);
  if (file.tornTail) truncateSync(path, file.validBytes);
  else if (file.missingNewline) appendFileSync(path, "\n");
  const done = new Set<string>();
  file.records.forEach((r) => {
    const k = pairKey(r.problem_id, r.sample, r.dataset);
    if (done.has(k)) throw new Error(`${path}: problem "${r.problem_id}" sample ${r.sample} recorded twice`);
    done.add(k);
  });
  return {
    records: file.records,
    done,
    isDone: (p, s, d) => done.has(pairKey(p, s, d)),
    append(rec) {
      const r = validateRecord(JSON.parse(JSON.stringify(rec)), `record for problem "${rec.problem_id}" sample ${rec.sample}`);
      const k = pairKey(r.problem_id, r.sample, r.dataset);
      if (done.has(k)) throw new Error(`${path}: problem "${r.problem_id}" sample ${r.sample} is already recorded`);
      appendFileSync(path, JSON.stringify(r) + "\n");
      done.add(k);
      file.records.push(r);
    },
  };
}

/**
 * Write run.json, or check it against an existing one: resuming with other
 * settings would mix two experiments in one folder.
 */
export function writeRunConfig(runDir: string, config: Record<string, unknown>): void {
  mkdirSync(runDir, { recursive: true });
  const path = join(runDir, RUN_FILES.config);
  if (existsSync(path)) {
    const old = readRunConfig(runDir)!;
    const keys = new Set([...Object.keys(old), ...Object.keys(config)]);
    const diff = [...keys].filter((k) => JSON.stringify(old[k]) !== JSON.stringify(config[k]));
    if (diff.length) {
      throw new Error(
        `${path}: this run folder was started with other settings (${diff.map((k) => `${k}: ${JSON.stringify(old[k])} -> ${JSON.stringify(config[k])}`).join("; ")}); ` +
          `resume with the same settings or choose a new run folder`,
      );
    }
    return;
  }
  writeFileAtomic(path, JSON.stringify(config, null, 2) + "\n"); // a kill never leaves an empty run.json
}

export function readRunConfig(runDir: string): Record<string, unknown> | null {
  const path = join(runDir, RUN_FILES.config);
  if (!existsSync(path)) return null;
  const text = readFileSync(path, "utf8");
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${text.trim() ? (e as Error).message : "the file is empty"}); it records this run's settings: restore it, or remove it to start the folder's settings afresh`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error(`${path}: expected a JSON object of run settings, got ${Array.isArray(v) ? "an array" : JSON.stringify(v)}`);
  return v as Record<string, unknown>;
}

const pct = (x: number | null | undefined) => (typeof x === "number" && Number.isFinite(x) ? (100 * x).toFixed(1) : "-");
/** "41.7 ± 6.2" (the standard error over problems), or "41.7" when there is none (one problem, or an older summary). */
const pctSe = (x: number, se: number | null | undefined) => (typeof se === "number" && Number.isFinite(se) ? `${pct(x)} ± ${pct(se)}` : pct(x));
const num = (x: number) => (Number.isFinite(x) ? Math.round(x).toString() : "-");

function datasetRows(rows: DatasetSummary[]): string[] {
  const ks = [...new Set(rows.flatMap((d) => Object.keys(d.pass_at_k).map(Number)))].sort((a, b) => a - b).filter((k) => k > 1);
  const head = ["dataset", "problems", "n", "pass@1 (avg@n) %", "± SE %", ...ks.map((k) => `pass@${k} %`), ...ks.map((k) => `maj@${k} %`), "mean tokens", "median tokens", "truncated %", "no answer %"];
  const out = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const d of rows) {
    const n = d.n_min === d.n_max ? `${d.n_min}` : `${d.n_min}-${d.n_max}`;
    const probs = d.problems_scored === d.problems ? `${d.problems}` : `${d.problems_scored}/${d.problems}`;
    out.push(
      `| ${[
        d.name,
        probs,
        n,
        pct(d.pass_at_1),
        pct(d.pass_at_1_se),
        ...ks.map((k) => (d.pass_at_k[k] !== undefined ? pct(d.pass_at_k[k]) : "-")),
        ...ks.map((k) => (d.maj_at_k[k] !== undefined ? pct(d.maj_at_k[k]) : "-")),
        num(d.mean_response_tokens),
        num(d.median_response_tokens),
        pct(d.truncation_rate),
        pct(d.no_answer_rate),
      ].join(" | ")} |`,
    );
  }
  return out;
}

/** The Markdown report of one run. */
export function renderReport(summary: Summary, title = "Benchmark run", config?: Record<string, unknown> | null): string {
  const lines = [`# ${title}`, "", `Summarised ${summary.created}.`, ""];
  if (config) {
    lines.push("Settings: " + Object.entries(config).map(([k, v]) => `${k} = ${typeof v === "string" ? v : JSON.stringify(v)}`).join(", "), "");
  }
  const rows = summary.datasets.length > 1 ? [...summary.datasets, summary.overall] : summary.datasets;
  lines.push(...datasetRows(rows), "");
  const incomplete = summary.datasets.filter((d) => d.problems_incomplete > 0 || d.problems_scored < d.problems);
  for (const d of incomplete) {
    lines.push(`Unfinished: ${d.name} has ${d.problems - d.problems_scored} problem(s) without samples and ${d.problems_incomplete} with fewer than planned.`);
  }
  lines.push(
    "",
    "pass@1 is the mean accuracy over each problem's n samples (avg@n), averaged over problems; " +
      "± SE is its standard error over problems (sample standard deviation of the problems' avg@n / sqrt(problems); " +
      "two runs differ beyond noise when the gap exceeds about 2 sqrt(SE_a² + SE_b²)); " +
      "pass@k is the unbiased estimator 1 - C(n-c,k)/C(n,k); maj@k votes over the extracted answers of consecutive blocks of k samples; " +
      "tokens are response tokens; truncated = stopped at the length cap.",
    "",
    ...problemRows(summary),
  );
  return lines.join("\n");
}

/** One row per problem: correct/n, mean response tokens, truncated samples. */
function problemRows(summary: Summary): string[] {
  if (!summary.problems?.length) return [];
  const several = new Set(summary.problems.map((p) => p.dataset)).size > 1;
  const head = [...(several ? ["dataset"] : []), "problem", "correct / n", "mean tokens", "truncated"];
  const out = ["## Per problem", "", `| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const p of summary.problems) {
    const cells = [...(several ? [p.dataset] : []), p.problem_id, `${p.correct} / ${p.n}`, num(p.mean_response_tokens), p.truncated === undefined ? "-" : `${p.truncated}`];
    out.push(`| ${cells.map((c) => c.replace(/\|/g, "\\|")).join(" | ")} |`);
  }
  out.push("");
  return out;
}

/** Write summary.json and report.md into the run folder. */
export function writeReports(runDir: string, summary: Summary): void {
  mkdirSync(runDir, { recursive: true });
  writeFileSync(join(runDir, RUN_FILES.summary), JSON.stringify(summary, null, 2) + "\n");
  const config = readRunConfig(runDir);
  writeFileSync(join(runDir, RUN_FILES.report), renderReport(summary, `Benchmark run ${basename(runDir)}`, config));
}

export function readSummary(runDir: string): Summary {
  const path = join(runDir, RUN_FILES.summary);
  if (!existsSync(path)) throw new Error(`${runDir}: no ${RUN_FILES.summary}; finish the run (or summarise its samples) first`);
  const s = JSON.parse(readFileSync(path, "utf8")) as Summary;
  if (!Array.isArray(s.datasets) || !s.overall) throw new Error(`${path}: not a benchmark summary (no "datasets"/"overall")`);
  return s;
}

export interface Comparison {
  /** Markdown: one row per run, one "pass@1 % ± SE / mean tokens" column per dataset (SIRI's table layout). */
  table: string;
  svg: string;
  points: PlotPoint[];
}

/**
 * Runs side by side. `runs` are run folders (label: run.json's "name", else
 * the folder name) or already-loaded summaries with labels.
 */
export function compare(runs: (string | { label: string; summary: Summary })[], svgPath?: string): Comparison {
  if (runs.length === 0) throw new Error("compare: no runs given");
  const loaded = runs.map((r) => {
    if (typeof r !== "string") return r;
    const cfg = readRunConfig(r);
    const label = typeof cfg?.name === "string" && cfg.name ? cfg.name : basename(r.replace(/\/+$/, ""));
    return { label, summary: readSummary(r) };
  });
  const names: string[] = [];
  for (const l of loaded) for (const d of l.summary.datasets) if (!names.includes(d.name)) names.push(d.name);
  const withOverall = names.length > 1;
  const cols = withOverall ? [...names, "overall"] : names;
  const find = (s: Summary, name: string) => (name === "overall" ? s.overall : s.datasets.find((d) => d.name === name));
  const head = ["run", ...cols.map((c) => `${c} pass@1 % ± SE / tokens`)];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  const points: PlotPoint[] = [];
  for (const l of loaded) {
    const cells = cols.map((c) => {
      const d = find(l.summary, c);
      if (!d) return "-";
      if (Number.isFinite(d.pass_at_1) && Number.isFinite(d.mean_response_tokens)) {
        points.push({ run: l.label, dataset: c, accuracy: d.pass_at_1, meanTokens: d.mean_response_tokens });
      }
      return `${pctSe(d.pass_at_1, d.pass_at_1_se)} / ${num(d.mean_response_tokens)}`;
    });
    lines.push(`| ${[l.label, ...cells].join(" | ")} |`);
  }
  const svg = paretoSvg(points, { title: "Accuracy vs mean response tokens (upper left is better)" });
  if (svgPath) writeFileSync(svgPath, svg);
  lines.push("", "± SE: standard error over problems; a gap between two runs is beyond noise when it exceeds about 2 sqrt(SE_a² + SE_b²).");
  return { table: lines.join("\n") + "\n", svg, points };
}

/**
 * Where `bench compare` writes its plot when no --out is given: compare.svg
 * in the runs' common parent folder (the first run's parent when they differ),
 * never the current directory.
 */
export function defaultComparePath(runs: string[]): string {
  if (runs.length === 0) throw new Error("compare: no runs given");
  return join(dirname(resolve(runs[0]!.replace(/\/+$/, ""))), "compare.svg");
}
