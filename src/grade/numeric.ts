// Numeric tests of parsed answers, each paid for from a work budget counted in
// expression nodes (never in time): identity at seeded points, proportionality
// of two equations or inequalities (up to a constant factor), and solving an
// inequality that is linear in its one variable. The same input always costs
// the same work, so the verdict is the same on any machine under any load.

import { closeTo, compileExpr, evalAt, freeVars, nodeCount, randomPoints } from "./expr.ts";
import type { Expr } from "./latex.ts";

/** What one comparison may still spend, in work units, and the trees it has paid to compile. */
export interface Work {
  left: number;
  compiled: Set<Expr>;
}

/** A fresh budget of `units` for one comparison. */
export function newWork(units: number): Work {
  return { left: units, compiled: new Set() };
}

/**
 * Work units: compiling one expression node costs COMPILE_UNITS (mathjs
 * compiles ~20-50 µs a node on this machine), once per tree per comparison;
 * evaluating one node at one point costs 1 (~0.2-1 µs). Charged whether or
 * not mathjs' compile cache answers, so cache state never changes a verdict.
 */
export const COMPILE_UNITS = 40;
/** Larger expression trees are not tested numerically at all. */
export const MAX_NUMERIC_NODES = 160;
const MAX_VARS = 8;
const POINTS = 6;

/** Take `units` from the budget; false (and the budget stays spent) when it runs out. */
export function spend(w: Work, units: number): boolean {
  w.left -= units;
  return w.left >= 0;
}

/** Pay for compiling `e` (the first time in this comparison) and evaluating it at `points` points. */
function payFor(w: Work, e: Expr, nodes: number, points: number): boolean {
  let units = nodes * points;
  if (!w.compiled.has(e)) {
    w.compiled.add(e);
    units += nodes * COMPILE_UNITS;
  }
  return spend(w, units);
}

/** Factorials, binomials and powers with non-literal exponents can overflow doubles to 0 or ∞. */
function mayOverflow(e: Expr): boolean {
  switch (e.t) {
    case "fact": return true;
    case "pow": return !(e.b.t === "num" && e.b.v.length <= 2) || mayOverflow(e.a);
    case "add": case "sub": case "mul": case "div": return mayOverflow(e.a) || mayOverflow(e.b);
    case "neg": return mayOverflow(e.a);
    case "fn": return e.name === "binom" || e.name === "exp" || e.args.some(mayOverflow);
    default: return false;
  }
}

type C = [number, number];
const finite = (v: C | null): v is C => v !== null && Number.isFinite(v[0]) && Number.isFinite(v[1]);
const mag = (v: C) => Math.hypot(v[0], v[1]);

/**
 * Compare `a` and `b` at seeded points. mode "equal": a == b everywhere
 * (relative tolerance rtol). mode "ratio": a == k·b for one constant k != 0,
 * returned in `k` (the caller decides which k are allowed). Points where
 * both sides vanish, or both under/overflow, are no evidence either way; at
 * least 3 points of evidence are needed when there are variables.
 */
export function numericCompare(a: Expr, b: Expr, mode: "equal" | "ratio", w: Work, rtol = 1e-9): { ok: boolean; k: C | null } {
  const no = { ok: false, k: null };
  const na = nodeCount(a);
  const nb = nodeCount(b);
  if (na + nb > 2 * MAX_NUMERIC_NODES) return no;
  const vars = [...freeVars(a, freeVars(b))];
  if (vars.length > MAX_VARS) return no;
  const pts = vars.length === 0 ? [{}] : randomPoints(vars, POINTS);
  if (!payFor(w, a, na, pts.length) || !payFor(w, b, nb, pts.length)) return no;
  let fa, fb;
  try {
    fa = compileExpr(a);
    fb = compileExpr(b);
  } catch {
    return no;
  }
  const risky = mayOverflow(a) || mayOverflow(b);
  let valid = 0;
  let k: C | null = null;
  for (const p of pts) {
    const x = evalAt(fa, p);
    const y = evalAt(fb, p);
    if (!finite(x) && !finite(y)) continue;
    if (!finite(x) || !finite(y)) return no;
    const extreme = (v: C) => mag(v) < 1e-200 || mag(v) > 1e200;
    if (risky && extreme(x) && extreme(y)) continue; // underflow / overflow: no evidence
    if (mode === "ratio") {
      const mx = mag(x);
      const my = mag(y);
      if (mx < 1e-12 || my < 1e-12) {
        if (mx < 1e-12 && my < 1e-12) continue;
        return no;
      }
      const r: C = [(x[0] * y[0] + x[1] * y[1]) / (my * my), (x[1] * y[0] - x[0] * y[1]) / (my * my)];
      if (k === null) k = r;
      else if (!closeTo(r, k, rtol)) return no;
    } else if (!closeTo(x, y, rtol)) return no;
    valid++;
  }
  return { ok: valid >= (vars.length === 0 ? 1 : 3), k };
}

/** True when k is a real number > 0 (an inequality keeps its direction). */
export function positiveReal(k: C | null): boolean {
  return k !== null && k[0] > 0 && Math.abs(k[1]) <= 1e-9 * k[0];
}

/** The one numeric value of a closed expression (no variables), or null. */
export function valueOf(e: Expr, w: Work): C | null {
  if (freeVars(e).size !== 0 || nodeCount(e) > MAX_NUMERIC_NODES) return null;
  if (!payFor(w, e, nodeCount(e), 1)) return null;
  let f;
  try {
    f = compileExpr(e);
  } catch {
    return null;
  }
  const v = evalAt(f, {});
  return finite(v) ? v : null;
}

/** The names of the variables of `e`, as written (not mathjs names). */
export function symNames(e: Expr, out: Set<string> = new Set()): Set<string> {
  switch (e.t) {
    case "sym": out.add(e.name); break;
    case "add": case "sub": case "mul": case "div": case "pow": symNames(e.a, out); symNames(e.b, out); break;
    case "neg": case "fact": symNames(e.a, out); break;
    case "pm": if (e.a) symNames(e.a, out); symNames(e.b, out); break;
    case "fn": for (const x of e.args) symNames(x, out); break;
  }
  return out;
}

/** `e` with the variable `name` replaced by `by`. */
export function substitute(e: Expr, name: string, by: Expr): Expr {
  switch (e.t) {
    case "sym": return e.name === name ? by : e;
    case "add": case "sub": case "mul": case "div": case "pow":
      return { t: e.t, a: substitute(e.a, name, by), b: substitute(e.b, name, by) };
    case "neg": case "fact": return { t: e.t, a: substitute(e.a, name, by) };
    case "pm": return { t: "pm", a: e.a && substitute(e.a, name, by), b: substitute(e.b, name, by) };
    case "fn": return { t: "fn", name: e.name, args: e.args.map((x) => substitute(x, name, by)) };
    default: return e;
  }
}

/**
 * f as slope·v + intercept when f has exactly one variable v and is linear
 * in it (checked at seeded points), with the sign of the real, nonzero
 * slope; else null. slope = f(1) - f(0) and intercept = f(0) are trees, so
 * the root -intercept/slope stays exact when it is rational.
 */
export function solveLinear(f: Expr, w: Work): { root: Expr; sign: 1 | -1 } | null {
  const names = [...symNames(f)];
  if (names.length !== 1) return null;
  const zero: Expr = { t: "num", v: "0" };
  const one: Expr = { t: "num", v: "1" };
  const intercept = substitute(f, names[0], zero);
  const slope: Expr = { t: "sub", a: substitute(f, names[0], one), b: intercept };
  const s = valueOf(slope, w);
  if (s === null || Math.abs(s[1]) > 1e-12 * Math.abs(s[0]) || Math.abs(s[0]) < 1e-12) return null;
  // Linear: f(v) == intercept + slope·v at seeded points.
  const line: Expr = { t: "add", a: intercept, b: { t: "mul", a: slope, b: { t: "sym", name: names[0] } } };
  if (!numericCompare(f, line, "equal", w).ok) return null;
  return { root: { t: "div", a: { t: "neg", a: intercept }, b: slope }, sign: s[0] > 0 ? 1 : -1 };
}
