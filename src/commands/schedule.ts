// `siri schedule`: print or plot a rollout-length schedule L(t).
import { defineCommand } from "citty";
import {
  DEEPSCALER_SCHEDULE,
  SCHEDULE_KINDS,
  SIRI_SCHEDULE,
  type Schedule,
  type ScheduleKind,
  capAt,
  capRange,
  defaultTotalSteps,
  parsePoints,
  peakSteps,
  phaseAt,
  troughSteps,
  validateSchedule,
} from "../rl/schedule.ts";
import { int, num } from "./common.ts";

/** Build a schedule from the command's flags; the paper's values are the defaults. */
export function scheduleFromArgs(a: {
  preset?: string;
  kind?: string;
  "l-max"?: string;
  "l-min"?: string;
  period?: string;
  cap?: string;
  points?: string;
}): Schedule {
  if (a.preset) {
    if (a.preset === "siri") return SIRI_SCHEDULE;
    if (a.preset === "deepscaler") return DEEPSCALER_SCHEDULE;
    throw new Error(`--preset: expected "siri" or "deepscaler", got "${a.preset}"`);
  }
  const kind = (a.kind || "cosine") as ScheduleKind;
  if (!SCHEDULE_KINDS.includes(kind)) throw new Error(`--kind: expected one of ${SCHEDULE_KINDS.join(", ")}, got "${a.kind}"`);
  let s: Schedule;
  if (kind === "constant") {
    s = { kind, cap: num("cap", a.cap, SIRI_SCHEDULE.lMax) };
  } else if (kind === "piecewise") {
    if (!a.points) throw new Error(`--kind piecewise needs --points "step:cap,..." (e.g. 0:8192,1040:16384,1520:24576)`);
    s = { kind, points: parsePoints(a.points) };
  } else {
    s = {
      kind,
      lMax: num("l-max", a["l-max"], SIRI_SCHEDULE.lMax),
      lMin: num("l-min", a["l-min"], SIRI_SCHEDULE.lMin),
      period: num("period", a.period, SIRI_SCHEDULE.period),
    };
  }
  return validateSchedule(s);
}

/** Parse "--steps 0,160,320" into whole steps. */
export function parseSteps(text: string): number[] {
  return text
    .split(",")
    .map((x) => x.trim())
    .filter((x) => x !== "")
    .map((x) => {
      const t = Number(x);
      if (!Number.isInteger(t) || t < 0) throw new Error(`--steps: expected whole steps >= 0 separated by commas, got "${x}"`);
      return t;
    });
}

/**
 * The curve as text: `height` rows by `width` columns of steps 0..total, a
 * "█" at each column's cap (and "│" filling the jump where consecutive
 * columns are far apart), cap labels on the left, step labels underneath.
 */
export function plotSchedule(s: Schedule, total: number, width = 64, height = 12): string {
  if (!Number.isInteger(width) || width < 8) throw new Error(`plot width must be an integer >= 8, got ${width}`);
  if (!Number.isInteger(height) || height < 3) throw new Error(`plot height must be an integer >= 3, got ${height}`);
  const steps = Array.from({ length: width }, (_, c) => Math.round((c * total) / (width - 1)));
  const caps = steps.map((t) => capAt(s, t));
  // Axis from the schedule's own range, so the labels are exact L_max / L_min
  // even when no column lands on a trough.
  let hi = Math.max(...caps, capRange(s).max);
  let lo = Math.min(...caps, capRange(s).min);
  if (hi === lo) {
    hi += 1;
    lo = Math.max(0, lo - 1);
  }
  const rowOf = (cap: number) => Math.round(((hi - cap) / (hi - lo)) * (height - 1));
  const grid = Array.from({ length: height }, () => Array<string>(width).fill(" "));
  for (let c = 0; c < width; c++) {
    const r = rowOf(caps[c]);
    if (c > 0) {
      // Vertical stroke between this column's row and the previous one's, so jumps stay visible.
      const p = rowOf(caps[c - 1]);
      for (let k = Math.min(p, r) + 1; k < Math.max(p, r); k++) grid[k][c] = "│";
    }
    grid[r][c] = "█";
  }
  const label = (r: number) => String(Math.round(hi - (r / (height - 1)) * (hi - lo)));
  const lw = Math.max(label(0).length, label(height - 1).length);
  const lines: string[] = [];
  for (let r = 0; r < height; r++) {
    const tag = r === 0 || r === height - 1 || r === Math.floor((height - 1) / 2) ? label(r) : "";
    lines.push(`${tag.padStart(lw)} ┤${grid[r].join("")}`);
  }
  lines.push(`${" ".repeat(lw)} └${"─".repeat(width)}`);
  const mid = String(Math.round(total / 2));
  const axis = Array<string>(width).fill(" ");
  const put = (col: number, text: string) => {
    for (let i = 0; i < text.length && col + i < width; i++) axis[col + i] = text[i];
  };
  put(0, "0");
  put(Math.max(0, Math.floor(width / 2) - Math.floor(mid.length / 2)), mid);
  put(width - String(total).length, String(total));
  lines.push(`${" ".repeat(lw)}  ${axis.join("")}  step`);
  return lines.join("\n");
}

function describe(s: Schedule): string {
  switch (s.kind) {
    case "cosine":
    case "stair-cosine":
    case "stair":
      return `${s.kind}: L_max ${s.lMax}, L_min ${s.lMin}, period ${s.period} steps`;
    case "constant":
      return `constant: ${s.cap} tokens`;
    case "piecewise":
      return `piecewise: ${s.points.map((p) => `${p.cap} from step ${p.step}`).join(", ")}`;
  }
}

export default defineCommand({
  meta: { name: "schedule", description: "Print or plot the rollout-length schedule L(t) (max new tokens per step)" },
  args: {
    kind: { type: "string", description: `Schedule kind: ${SCHEDULE_KINDS.join(", ")} (default cosine)` },
    preset: { type: "string", description: "siri (cosine 16384 <-> 8192, T = 640) or deepscaler (8K -> 16K at 1040 -> 24K at 1520)" },
    "l-max": { type: "string", description: "Largest cap in tokens (default 16384)" },
    "l-min": { type: "string", description: "Smallest cap in tokens (default 8192)" },
    period: { type: "string", description: "Steps per cycle T (default 640)" },
    cap: { type: "string", description: "The cap of --kind constant" },
    points: { type: "string", description: 'The (step:cap) pairs of --kind piecewise, e.g. "0:8192,1040:16384,1520:24576"' },
    steps: { type: "string", description: "Comma-separated steps to evaluate (default: every step 0..total)" },
    total: { type: "string", description: "Steps to plot (default: three periods)" },
    width: { type: "string", description: "Plot width in columns (default 64)" },
    height: { type: "string", description: "Plot height in rows (default 12)" },
    json: { type: "boolean", description: 'Print {"steps": [...], "caps": [...]} as the last line' },
  },
  run({ args }) {
    const s = scheduleFromArgs(args);
    const total = int("total", args.total, defaultTotalSteps(s), { min: 1 });
    if (total < 1) throw new Error(`--total: expected at least 1 step, got ${total}`);
    const steps = args.steps ? parseSteps(args.steps) : Array.from({ length: total + 1 }, (_, t) => t);
    const caps = steps.map((t) => capAt(s, t));
    if (args.json) {
      console.log(JSON.stringify({ steps, caps }));
      return;
    }
    console.log(describe(s));
    console.log(plotSchedule(s, total, int("width", args.width, 64, { min: 8 }), int("height", args.height, 12, { min: 3 })));
    const lows = troughSteps(s, total);
    const highs = peakSteps(s, total);
    if (lows.length) console.log(`troughs (end of compression, SIRI-low candidates): ${lows.join(", ")}`);
    if (highs.length) console.log(`peaks (end of expansion, SIRI-high candidates):    ${highs.join(", ")}`);
    if (args.steps) {
      console.log("step      cap  phase");
      for (let i = 0; i < steps.length; i++) {
        console.log(`${String(steps[i]).padStart(4)} ${String(caps[i]).padStart(8)}  ${phaseAt(s, steps[i])}`);
      }
    }
  },
});
