/**
 * Training metrics: one JSON line per step (metrics.jsonl), validation
 * records (evals.jsonl), an SVG plot of the cap, mean response length and
 * accuracy over steps, and the per-cycle table that shows SIRI's effect
 * (lengths fall under compression; accuracy at each trough holds or rises).
 */
import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { escapeXml, niceTicks, textWidth } from "../bench/plot.ts";

/** One training step. Lengths are response tokens; rates are fractions of the step's rollouts. */
export interface StepMetrics {
  step: number; // 0-based step index
  cycle: number; // 0-based cycle of the schedule
  phase: string; // compression | expansion | constant
  cap: number; // L(t)
  reward_mean: number;
  accuracy: number;
  length_mean: number;
  length_max: number;
  length_median: number;
  truncation_rate: number;
  clip_frac_low: number;
  clip_frac_high: number;
  /** verl's pg_clipfrac: the clip-higher clip chosen (clip_frac_low + clip_frac_high). */
  pg_clipfrac: number;
  /** verl's pg_clipfrac_lower: the dual-clip chosen (A < 0, r > c). */
  pg_clipfrac_lower: number;
  /** Mean truncated-IS weight over loss tokens (1 when off). */
  tis_weight_mean: number;
  /** Sampler vs trainer log-probs of the step's response tokens: mean and max |Δ log p|, extreme pi_old / pi_rollout. */
  mismatch_logp_abs_mean: number;
  mismatch_logp_abs_max: number;
  mismatch_ratio_max: number;
  mismatch_ratio_min: number;
  entropy: number;
  grad_norm: number;
  approx_kl: number;
  loss: number;
  lr: number;
  rollouts: number; // rollouts trained on
  groups_dropped: number; // dynamic sampling
  rounds: number; // generation rounds this step
  rollout_tokens: number;
  rollout_tokens_per_s: number;
  decode_occupancy: number; // mean sequences decoding per decode step / the engine's max batch
  readbacks_per_token: number; // GPU -> CPU waits of the rollout engine per generated token
  /** Weight versions between the policy updated and the one that produced each rollout (0 on-policy; up to dist.staleness): mean and max. */
  rollout_version_lag_mean: number;
  rollout_version_lag_max: number;
  step_time_s: number;
  skipped: boolean; // the update was skipped (non-finite loss or gradient)
  non_finite: number; // non-finite losses in a row so far
}

export const STEP_FIELDS: readonly (keyof StepMetrics)[] = [
  "step", "cycle", "phase", "cap", "reward_mean", "accuracy", "length_mean", "length_max", "length_median",
  "truncation_rate", "clip_frac_low", "clip_frac_high", "pg_clipfrac", "pg_clipfrac_lower", "tis_weight_mean",
  "mismatch_logp_abs_mean", "mismatch_logp_abs_max", "mismatch_ratio_max", "mismatch_ratio_min", "entropy", "grad_norm", "approx_kl", "loss", "lr",
  "rollouts", "groups_dropped", "rounds", "rollout_tokens", "rollout_tokens_per_s",
  "decode_occupancy", "readbacks_per_token", "rollout_version_lag_mean", "rollout_version_lag_max", "step_time_s", "skipped", "non_finite",
];

/** A validation pass (avg@n on held-out problems) after `step` steps. */
export interface EvalRecord {
  step: number; // steps done when evaluated
  label: string; // "start", "trough-cycle1", "peak-cycle1", "step-000040", "final"
  cap: number; // the training cap at that point
  accuracy: number; // avg@n
  length_mean: number;
  truncation_rate: number;
  max_tokens: number; // the evaluation budget
}

export const METRICS_FILE = "metrics.jsonl";
export const EVALS_FILE = "evals.jsonl";

function readJsonl<T>(path: string): T[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l, i) => {
      try {
        return JSON.parse(l) as T;
      } catch {
        throw new Error(`${path}: line ${i + 1} is not JSON`);
      }
    });
}

export function readMetrics(path: string): StepMetrics[] {
  return readJsonl<StepMetrics>(path);
}
export function readEvals(path: string): EvalRecord[] {
  return readJsonl<EvalRecord>(path);
}

/** Non-finite numbers become null in JSON; keep them visible as strings instead. */
function jsonLine(x: object): string {
  return JSON.stringify(x, (_, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v)) + "\n";
}

export function appendJsonl(path: string, rec: object): void {
  appendFileSync(path, jsonLine(rec));
}

/**
 * Keep only records with step < `steps` (a resumed run rewrites the steps
 * after its checkpoint, so the file never holds a step twice).
 */
export function truncateJsonl(path: string, steps: number, key: "step" = "step", inclusive = false): void {
  if (!existsSync(path)) return;
  const keep = readJsonl<{ step: number }>(path).filter((r) => (inclusive ? r[key] <= steps : r[key] < steps));
  writeFileSync(path, keep.map((r) => jsonLine(r)).join(""));
}

/**
 * SVG: cap and mean response length (tokens, left axis) and accuracy (right
 * axis, %) over steps. The legend is a row between the title and the plot
 * frame, never over the curves; steps and tokens get whole-number ticks.
 */
export function metricsSvg(rows: readonly StepMetrics[], evals: readonly EvalRecord[] = [], title = "SIRI training"): string {
  const legend: [string, string, string][] = [
    ["cap L(t)", "#888", "5,3"],
    ["mean response length", "#1f77b4", ""],
    ["rollout accuracy (dots: validation)", "#d62728", ""],
  ];
  const L = 64;
  const R = 64;
  const T = 58; // title row, then the legend row, then the plot
  const B = 48;
  const itemW = legend.map(([name]) => 34 + textWidth(name, 11));
  const W = Math.ceil(Math.max(720, textWidth(title, 14) + 40, L + 10 + itemW.reduce((a, w) => a + w, 0) + R));
  const H = 378;
  const pw = W - L - R;
  const ph = H - T - B;
  const steps = rows.map((r) => r.step);
  const maxStep = Math.max(1, ...steps, ...evals.map((e) => e.step));
  const maxTok = Math.max(1, ...rows.map((r) => Math.max(r.cap, r.length_mean)), ...evals.map((e) => e.length_mean));
  const yTicks = niceTicks(0, maxTok, 5, { integer: true });
  const yTop = Math.max(maxTok, yTicks[yTicks.length - 1] ?? maxTok);
  const x = (s: number) => L + (s / maxStep) * pw;
  const yTok = (v: number) => T + ph - (v / yTop) * ph;
  const yAcc = (a: number) => T + ph - a * ph;
  const path = (pts: [number, number][]) => pts.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join(" ");
  const out: string[] = [];
  const strip = mismatchStrip(rows, x, H, L, pw); // below the main plot, when the metrics have mismatch figures
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H + strip.height}" viewBox="0 0 ${W} ${H + strip.height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${W}" height="${H + strip.height}" fill="white"/>`);
  out.push(`<text class="title" x="${W / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`);
  out.push(`<rect class="plot-area" x="${L}" y="${T}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  for (const t of yTicks) {
    out.push(`<line x1="${L}" x2="${L + pw}" y1="${yTok(t).toFixed(1)}" y2="${yTok(t).toFixed(1)}" stroke="#eee"/>`);
    out.push(`<text x="${L - 6}" y="${(yTok(t) + 4).toFixed(1)}" text-anchor="end">${t}</text>`);
  }
  for (const a of [0, 0.25, 0.5, 0.75, 1]) out.push(`<text x="${L + pw + 6}" y="${(yAcc(a) + 4).toFixed(1)}">${Math.round(a * 100)}%</text>`);
  for (const s of niceTicks(0, maxStep, 5, { integer: true })) {
    if (s <= maxStep) out.push(`<text class="step-tick" x="${x(s).toFixed(1)}" y="${T + ph + 16}" text-anchor="middle">${s}</text>`);
  }
  out.push(`<text x="${L + pw / 2}" y="${H - 12}" text-anchor="middle">step</text>`);
  out.push(`<text x="16" y="${T + ph / 2}" text-anchor="middle" transform="rotate(-90 16 ${T + ph / 2})">tokens</text>`);
  out.push(`<text x="${W - 12}" y="${T + ph / 2}" text-anchor="middle" transform="rotate(90 ${W - 12} ${T + ph / 2})">accuracy</text>`);
  if (rows.length) {
    out.push(`<path d="${path(rows.map((r) => [x(r.step), yTok(r.cap)]))}" fill="none" stroke="#888" stroke-dasharray="5,3" stroke-width="1.5"/>`);
    out.push(`<path d="${path(rows.map((r) => [x(r.step), yTok(r.length_mean)]))}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>`);
    out.push(`<path d="${path(rows.map((r) => [x(r.step), yAcc(r.accuracy)]))}" fill="none" stroke="#d62728" stroke-width="1.5"/>`);
  }
  for (const e of evals) out.push(`<circle cx="${x(e.step).toFixed(1)}" cy="${yAcc(e.accuracy).toFixed(1)}" r="3.5" fill="#d62728" stroke="black"><title>${escapeXml(`${e.label}: ${(e.accuracy * 100).toFixed(1)}% at ${e.length_mean.toFixed(1)} tokens`)}</title></circle>`);
  out.push(`<g class="legend">`);
  let lx = L + 10;
  legend.forEach(([name, color, dash], i) => {
    const ly = T - 14;
    out.push(`<line x1="${lx}" x2="${lx + 20}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ""}/>`);
    out.push(`<text x="${lx + 24}" y="${ly + 4}">${escapeXml(name)}</text>`);
    lx += itemW[i]!;
  });
  out.push(`</g>`);
  out.push(...strip.svg);
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/**
 * A strip under the training plot: the rollout/trainer mismatch per step,
 * mean and max |Δ log p| over response tokens, on a log10 axis (values
 * below 1e-9 drawn at 1e-9). Empty (height 0) when no step has the figures.
 */
export function mismatchStrip(rows: readonly StepMetrics[], x: (step: number) => number, top: number, left: number, width: number): { height: number; svg: string[] } {
  const have = rows.filter((r) => Number.isFinite(r.mismatch_logp_abs_max) && Number.isFinite(r.mismatch_logp_abs_mean));
  if (!have.length) return { height: 0, svg: [] };
  const ph = 70;
  const t = top + 22; // its label sits above its frame, not over the curves
  const lg = (v: number) => Math.log10(Math.max(v, 1e-9));
  const lo = Math.floor(Math.min(...have.map((r) => lg(r.mismatch_logp_abs_mean))));
  const hi = Math.max(lo + 1, Math.ceil(Math.max(...have.map((r) => lg(r.mismatch_logp_abs_max)))));
  const y = (v: number) => t + ph - ((lg(v) - lo) / (hi - lo)) * ph;
  const line = (f: (r: StepMetrics) => number) => have.map((r, i) => `${i ? "L" : "M"}${x(r.step).toFixed(1)},${y(f(r)).toFixed(1)}`).join(" ");
  const svg = [`<rect x="${left}" y="${t}" width="${width}" height="${ph}" fill="none" stroke="#999"/>`];
  for (const e of [lo, hi]) svg.push(`<text x="${left - 6}" y="${(y(10 ** e) + 4).toFixed(1)}" text-anchor="end">1e${e}</text>`);
  svg.push(`<path d="${line((r) => r.mismatch_logp_abs_max)}" fill="none" stroke="#9467bd" stroke-width="1.5"/>`);
  svg.push(`<path d="${line((r) => r.mismatch_logp_abs_mean)}" fill="none" stroke="#9467bd" stroke-dasharray="4,2" stroke-width="1.5"/>`);
  svg.push(`<text x="${left}" y="${t - 6}">${escapeXml("rollout vs trainer |Δ log p| per step: max (solid), mean (dashed)")}</text>`);
  return { height: ph + 32, svg };
}

export interface CycleRow {
  cycle: number; // 1-based
  phase: string;
  steps: string; // "0-5"
  cap: number; // mean cap over the phase
  length_mean: number; // rollouts
  accuracy: number; // rollouts
  eval?: EvalRecord; // validation at the phase's end (trough or peak)
}

/** One row per (cycle, phase): the rollouts' means, and the validation at the phase's end if any. */
export function cycleRows(rows: readonly StepMetrics[], evals: readonly EvalRecord[] = []): CycleRow[] {
  const out: CycleRow[] = [];
  let cur: StepMetrics[] = [];
  const flush = () => {
    if (!cur.length) return;
    const mean = (f: (r: StepMetrics) => number) => cur.reduce((a, r) => a + f(r), 0) / cur.length;
    const last = cur[cur.length - 1].step;
    out.push({
      cycle: cur[0].cycle + 1,
      phase: cur[0].phase,
      steps: `${cur[0].step}-${last}`,
      cap: mean((r) => r.cap),
      length_mean: mean((r) => r.length_mean),
      accuracy: mean((r) => r.accuracy),
      eval: evals.find((e) => e.step === last + 1 && /^(trough|peak)/.test(e.label)),
    });
    cur = [];
  };
  for (const r of rows) {
    if (cur.length && (r.cycle !== cur[0].cycle || r.phase !== cur[0].phase)) flush();
    cur.push(r);
  }
  flush();
  return out;
}

/** The per-cycle table as Markdown. */
export function cycleTable(rows: readonly StepMetrics[], evals: readonly EvalRecord[] = []): string {
  const pct = (a: number) => `${(a * 100).toFixed(1)}%`;
  const lines = [
    "| cycle | phase | steps | mean cap | mean length | accuracy | checkpoint | val accuracy | val length |",
    "|---:|---|---|---:|---:|---:|---|---:|---:|",
  ];
  const start = evals.find((e) => e.label === "start");
  if (start) lines.push(`| 0 | start | - | ${start.cap} | - | - | start | ${pct(start.accuracy)} | ${start.length_mean.toFixed(1)} |`);
  for (const c of cycleRows(rows, evals)) {
    const e = c.eval;
    lines.push(
      `| ${c.cycle} | ${c.phase} | ${c.steps} | ${c.cap.toFixed(1)} | ${c.length_mean.toFixed(1)} | ${pct(c.accuracy)} | ${e ? e.label : "-"} | ${e ? pct(e.accuracy) : "-"} | ${e ? e.length_mean.toFixed(1) : "-"} |`,
    );
  }
  return lines.join("\n") + "\n";
}
