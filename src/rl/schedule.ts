/**
 * Rollout-length schedules L(t): the maximum number of new tokens a rollout
 * may generate at training step t. SIRI's cosine schedule and its ablations
 * (stair-cosine, stair), a constant cap, and a list of (step, cap) pairs
 * (DeepScaleR's 8K -> 16K -> 24K). Caps are rounded to whole tokens because
 * they are enforced as the generation's max new tokens.
 *
 * Periodic schedules start at L_max: the first half of each cycle falls
 * (compression), the second half rises (expansion).
 */

export type ScheduleKind = "cosine" | "stair-cosine" | "stair" | "constant" | "piecewise";
export const SCHEDULE_KINDS: readonly ScheduleKind[] = ["cosine", "stair-cosine", "stair", "constant", "piecewise"];

/** A cap that oscillates between lMax and lMin with `period` steps per cycle. */
export interface PeriodicSchedule {
  kind: "cosine" | "stair-cosine" | "stair";
  lMax: number;
  lMin: number;
  /** Steps per cycle, T (> 0; need not be an integer after scaling). */
  period: number;
}

export interface ConstantSchedule {
  kind: "constant";
  cap: number;
}

/** cap(t) = cap of the last point with step <= t; the first point is at step 0. */
export interface PiecewiseSchedule {
  kind: "piecewise";
  points: readonly { step: number; cap: number }[];
}

export type Schedule = PeriodicSchedule | ConstantSchedule | PiecewiseSchedule;

/** The SIRI paper's schedule: cosine 16384 <-> 8192, T = 640, run for three cycles. */
export const SIRI_SCHEDULE: PeriodicSchedule = { kind: "cosine", lMax: 16384, lMin: 8192, period: 640 };
export const SIRI_CYCLES = 3;

/** DeepScaleR-1.5B-Preview's context growth: 8K, then 16K at step 1040, 24K at step 1520. */
export const DEEPSCALER_SCHEDULE: PiecewiseSchedule = {
  kind: "piecewise",
  points: [
    { step: 0, cap: 8192 },
    { step: 1040, cap: 16384 },
    { step: 1520, cap: 24576 },
  ],
};

/** Throws with a message naming the field when the schedule cannot be evaluated. */
export function validateSchedule(s: Schedule): Schedule {
  const where = `schedule (${s.kind})`;
  const posCap = (name: string, v: number) => {
    if (!Number.isFinite(v) || v < 1) throw new Error(`${where}: ${name} must be a finite number >= 1 token, got ${v}`);
  };
  switch (s.kind) {
    case "cosine":
    case "stair-cosine":
    case "stair":
      posCap("l_max", s.lMax);
      posCap("l_min", s.lMin);
      if (s.lMin > s.lMax) throw new Error(`${where}: l_min (${s.lMin}) must not exceed l_max (${s.lMax})`);
      if (!Number.isFinite(s.period) || s.period <= 0) throw new Error(`${where}: period must be > 0 steps, got ${s.period}`);
      break;
    case "constant":
      posCap("cap", s.cap);
      break;
    case "piecewise": {
      if (s.points.length === 0) throw new Error(`${where}: points is empty; give at least one (step, cap) pair starting at step 0`);
      if (s.points[0].step !== 0) throw new Error(`${where}: the first point must be at step 0, got step ${s.points[0].step}`);
      for (let i = 0; i < s.points.length; i++) {
        const p = s.points[i];
        if (!Number.isInteger(p.step) || p.step < 0) throw new Error(`${where}: points[${i}].step must be an integer >= 0, got ${p.step}`);
        if (i > 0 && p.step <= s.points[i - 1].step)
          throw new Error(`${where}: points must have increasing steps; points[${i}].step ${p.step} <= ${s.points[i - 1].step}`);
        posCap(`points[${i}].cap`, p.cap);
      }
      break;
    }
    default:
      throw new Error(`schedule: unknown kind "${(s as { kind: string }).kind}"; expected one of ${SCHEDULE_KINDS.join(", ")}`);
  }
  return s;
}

/** Position in the cycle, u = (t mod T)/T in [0, 1). */
function cyclePos(t: number, period: number): number {
  const r = t % period;
  return r / period;
}

function checkStep(t: number): void {
  if (!Number.isFinite(t) || t < 0) throw new Error(`schedule: step must be a finite number >= 0, got ${t}`);
}

/** L(t) before rounding. */
export function rawCapAt(s: Schedule, t: number): number {
  checkStep(t);
  switch (s.kind) {
    case "cosine": {
      const mid = (s.lMax + s.lMin) / 2;
      const half = (s.lMax - s.lMin) / 2;
      return mid + half * Math.cos((2 * Math.PI * t) / s.period);
    }
    case "stair-cosine": {
      // phi = 2*pi*u; the joins at pi/4, 3pi/4, 5pi/4, 7pi/4 are u = 1/8, 3/8, 5/8, 7/8.
      const mid = (s.lMax + s.lMin) / 2;
      const half = (s.lMax - s.lMin) / 2;
      const u = cyclePos(t, s.period);
      const phi = 2 * Math.PI * u;
      if (u < 1 / 8 || u >= 7 / 8) return s.lMax;
      if (u < 3 / 8) return mid + half * Math.cos(2 * (phi - Math.PI / 4));
      if (u < 5 / 8) return s.lMin;
      return mid + half * Math.cos(2 * (phi - (3 * Math.PI) / 4));
    }
    case "stair": {
      // L_max while cos(2*pi*t/T) >= 0, i.e. u <= 1/4 or u >= 3/4 (kept exact, not through cos).
      const u = cyclePos(t, s.period);
      return u <= 1 / 4 || u >= 3 / 4 ? s.lMax : s.lMin;
    }
    case "constant":
      return s.cap;
    case "piecewise": {
      let cap = s.points[0].cap;
      for (const p of s.points) if (p.step <= t) cap = p.cap;
      return cap;
    }
  }
}

/** L(t) in whole tokens (round half up), at least 1. */
export function capAt(s: Schedule, t: number): number {
  return Math.max(1, Math.round(rawCapAt(s, t)));
}

/** Caps at many steps. */
export function capsAt(s: Schedule, steps: readonly number[]): number[] {
  return steps.map((t) => capAt(s, t));
}

export type Phase = "compression" | "expansion" | "constant";

/**
 * Whether the cap is falling (compression) or rising (expansion) at step t.
 * Periodic kinds: the first half of each cycle is compression, the second
 * expansion (flat stretches belong to the half they sit in). Piecewise: the
 * direction of the next change; constant after the last one.
 */
export function phaseAt(s: Schedule, t: number): Phase {
  checkStep(t);
  switch (s.kind) {
    case "cosine":
    case "stair-cosine":
    case "stair":
      if (s.lMax === s.lMin) return "constant";
      return cyclePos(t, s.period) < 0.5 ? "compression" : "expansion";
    case "constant":
      return "constant";
    case "piecewise": {
      const here = rawCapAt(s, t);
      for (const p of s.points) {
        if (p.step > t && p.cap !== here) return p.cap < here ? "compression" : "expansion";
      }
      return "constant";
    }
  }
}

/** Index of the cycle that step t is in (0-based); 0 for non-periodic kinds. */
export function cycleAt(s: Schedule, t: number): number {
  checkStep(t);
  return s.kind === "cosine" || s.kind === "stair-cosine" || s.kind === "stair" ? Math.floor(t / s.period) : 0;
}

/**
 * Steps in [0, total] that end a compression phase (the cap's troughs,
 * t = T/2 + kT, rounded to a whole step): the SIRI-low checkpoint candidates.
 * Piecewise: steps after which the cap rises again having fallen; constant: none.
 */
export function troughSteps(s: Schedule, total: number): number[] {
  return extremaSteps(s, total, "trough");
}

/**
 * Steps in (0, total] that end an expansion phase (the cap's peaks,
 * t = kT for k >= 1): the SIRI-high checkpoint candidates.
 */
export function peakSteps(s: Schedule, total: number): number[] {
  return extremaSteps(s, total, "peak");
}

function extremaSteps(s: Schedule, total: number, which: "trough" | "peak"): number[] {
  checkStep(total);
  const out: number[] = [];
  if (s.kind === "cosine" || s.kind === "stair-cosine" || s.kind === "stair") {
    if (s.lMax === s.lMin) return out;
    for (let k = which === "trough" ? 0 : 1; ; k++) {
      const t = Math.round(which === "trough" ? k * s.period + s.period / 2 : k * s.period);
      if (t > total) break;
      out.push(t);
    }
    return out;
  }
  if (s.kind === "piecewise") {
    // Steps where the cap changes direction: last step before a rise (trough) or fall (peak).
    const caps = s.points.map((p) => p.cap);
    for (let i = 1; i < s.points.length; i++) {
      const prevDir = i >= 2 ? Math.sign(caps[i - 1] - caps[i - 2]) : 0;
      const dir = Math.sign(caps[i] - caps[i - 1]);
      const t = s.points[i].step - 1;
      if (t > total || t <= 0) continue;
      if (which === "trough" && dir > 0 && prevDir < 0) out.push(t);
      if (which === "peak" && dir < 0 && prevDir > 0) out.push(t);
    }
  }
  return out;
}

/** Largest and smallest caps the schedule can give. */
export function capRange(s: Schedule): { max: number; min: number } {
  switch (s.kind) {
    case "cosine":
    case "stair-cosine":
    case "stair":
      return { max: Math.round(s.lMax), min: Math.round(s.lMin) };
    case "constant":
      return { max: Math.round(s.cap), min: Math.round(s.cap) };
    case "piecewise": {
      const caps = s.points.map((p) => Math.round(p.cap));
      return { max: Math.max(...caps), min: Math.min(...caps) };
    }
  }
}

/**
 * The same schedule on a small task: caps scaled so the largest becomes
 * `lMax` (the ratios, e.g. SIRI's L_min/L_max = 1/2, kept), and steps scaled
 * by toSteps/fromSteps (so the paper's three cycles in 1920 steps become three
 * cycles in `toSteps`). Scaled caps are kept >= 1 token; piecewise steps are
 * rounded and must stay distinct.
 */
export function scaleSchedule(s: Schedule, o: { lMax: number; fromSteps: number; toSteps: number }): Schedule {
  validateSchedule(s);
  if (!(o.lMax >= 1)) throw new Error(`scaleSchedule: lMax must be >= 1 token, got ${o.lMax}`);
  if (!(o.fromSteps > 0) || !(o.toSteps > 0))
    throw new Error(`scaleSchedule: fromSteps and toSteps must be > 0, got ${o.fromSteps} and ${o.toSteps}`);
  const lf = o.lMax / capRange(s).max;
  const sf = o.toSteps / o.fromSteps;
  const cap = (c: number) => Math.max(1, c * lf);
  let out: Schedule;
  switch (s.kind) {
    case "cosine":
    case "stair-cosine":
    case "stair":
      out = { kind: s.kind, lMax: cap(s.lMax), lMin: cap(s.lMin), period: s.period * sf };
      break;
    case "constant":
      out = { kind: "constant", cap: cap(s.cap) };
      break;
    case "piecewise":
      out = { kind: "piecewise", points: s.points.map((p) => ({ step: Math.round(p.step * sf), cap: cap(p.cap) })) };
      break;
  }
  return validateSchedule(out);
}

/** A sensible number of steps to show or run: three cycles for periodic kinds. */
export function defaultTotalSteps(s: Schedule): number {
  switch (s.kind) {
    case "cosine":
    case "stair-cosine":
    case "stair":
      return Math.round(SIRI_CYCLES * s.period);
    case "constant":
      return 100;
    case "piecewise": {
      const last = s.points[s.points.length - 1].step;
      return last === 0 ? 100 : Math.round(last * 1.5);
    }
  }
}

/** Parse "0:8192,1040:16384,1520:24576" into piecewise points. */
export function parsePoints(text: string, what = "--points"): { step: number; cap: number }[] {
  const pts = text
    .split(",")
    .map((x) => x.trim())
    .filter((x) => x !== "")
    .map((pair) => {
      const m = /^(\d+)\s*:\s*(\d+(?:\.\d+)?)$/.exec(pair);
      if (!m) throw new Error(`${what}: expected "step:cap" pairs separated by commas (e.g. 0:8192,1040:16384), got "${pair}"`);
      return { step: Number(m[1]), cap: Number(m[2]) };
    });
  if (pts.length === 0) throw new Error(`${what}: no (step, cap) pairs given`);
  return pts;
}
