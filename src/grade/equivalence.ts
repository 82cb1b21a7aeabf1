// Is a predicted answer the reference answer? Both are normalised, split into
// their structure (structure.ts), and compared part by part:
// exactly over rationals when both sides are rational, else numerically
// through mathjs at seeded points. Every step is bounded in work, never in
// time: answer length, parse depth, number sizes, list lengths, and a budget
// of work units per comparison (numeric.ts) after which the verdict is
// "different". The same pair always gets the same verdict.
//
// Where a verdict is a convention, the rule says which and why beside it; the
// reference graders are DeepScaleR's, Qwen2.5-Math's and Math-Verify.

import { exactValue, ratEq, type Rat } from "./expr.ts";
import { parseLatex, ParseError, type Expr } from "./latex.ts";
import { normalizeAnswer, splitChoice } from "./normalize.ts";
import { newWork, numericCompare, positiveReal, solveLinear, spend, valueOf, type Work } from "./numeric.ts";
import { parseAnswer, parseNormalized, type Answer } from "./structure.ts";

export type { Answer } from "./structure.ts";

/**
 * Work units one comparison may spend (see numeric.ts for the unit). A
 * numeric test of two 10-node expressions costs ~1,000; every case of the
 * test tables spends at most ~2,100, a list of 32 trig expressions against
 * its reverse ~85,000 (benchmarks/RESULTS.md). Past it: "different".
 */
export const WORK_BUDGET = 400_000;

// ------------------------------------------------------------ comparison

interface Ctx {
  work: Work;
  approxDigits: number;
}

/** +1 / -1 for a literal ±∞, else 0. */
function infSign(e: Expr): number {
  if (e.t === "const" && e.name === "inf") return 1;
  if (e.t === "neg") return -infSign(e.a);
  return 0;
}

function exactOf(a: Extract<Answer, { kind: "expr" }>): Rat | null {
  if (a.exact === undefined) a.exact = exactValue(a.e);
  return a.exact;
}

/** A decimal literal with a fractional part (`1.414`, `-0.5`): its digits after the point, else null. */
function decimalLiteral(e: Expr): { v: number; decimals: number; sig: number } | null {
  const neg = e.t === "neg";
  const n = neg ? e.a : e;
  if (n.t !== "num" || !n.v.includes(".")) return null;
  const decimals = n.v.length - n.v.indexOf(".") - 1;
  if (decimals === 0 || decimals > 20) return null;
  const sig = n.v.replace(".", "").replace(/^0+/, "").length;
  return { v: (neg ? -1 : 1) * Number(n.v), decimals, sig };
}

/**
 * Numeric closeness (option approxDigits = d > 0): a decimal literal of at
 * least d significant digits is accepted for a value it rounds or truncates
 * at its last written digit (|decimal - value| <= one unit there): 1.41421356
 * for \sqrt2 when d <= 9. Off by default (d = 0): DeepScaleR's grader, which
 * SIRI's reward follows, rejects approximations; Qwen2.5-Math (rel. 1e-4) and
 * Math-Verify (6 decimals) accept them. The reward asks for the exact answer:
 * accepting approximations would pay a model for giving up on exact forms.
 */
function approxEqual(a: Expr, b: Expr, ctx: Ctx): boolean {
  if (ctx.approxDigits <= 0) return false;
  for (const [d, other] of [[a, b], [b, a]] as const) {
    const lit = decimalLiteral(d);
    if (!lit || lit.sig < ctx.approxDigits || decimalLiteral(other)) continue;
    const v = valueOf(other, ctx.work);
    if (v === null || Math.abs(v[1]) > 1e-12 * Math.abs(v[0])) continue;
    if (Math.abs(lit.v - v[0]) <= 10 ** -lit.decimals * (1 + 1e-9)) return true;
  }
  return false;
}

/**
 * Relative tolerance of the numeric identity test. Between expressions it
 * only absorbs floating-point error (1e-9). When one side is a written
 * decimal, 1e-12: with approximations rejected, `1.4142135624` is not
 * \sqrt2 just because it agrees to 11 digits.
 */
const RTOL = 1e-9;
const RTOL_DECIMAL = 1e-12;

function eqExpr(a: Extract<Answer, { kind: "expr" }>, b: Extract<Answer, { kind: "expr" }>, ctx: Ctx): boolean {
  if (a.key !== "" && a.key === b.key) return true;
  const ia = infSign(a.e);
  const ib = infSign(b.e);
  if (ia !== 0 || ib !== 0) return ia === ib;
  const xa = exactOf(a);
  const xb = exactOf(b);
  if (xa && xb) return ratEq(xa, xb) || approxEqual(a.e, b.e, ctx);
  const rtol = decimalLiteral(a.e) || decimalLiteral(b.e) ? RTOL_DECIMAL : RTOL;
  return numericCompare(a.e, b.e, "equal", ctx.work, rtol).ok || approxEqual(a.e, b.e, ctx);
}

/** Match every item of `a` with a distinct equal item of `b`. */
function eqUnordered(a: Answer[], b: Answer[], ctx: Ctx): boolean {
  if (a.length !== b.length) return false;
  const used = new Array<boolean>(b.length).fill(false);
  for (const x of a) {
    let found = false;
    for (let j = 0; j < b.length && !found; j++) {
      if (used[j]) continue;
      if (eqAnswer(x, b[j], ctx)) {
        used[j] = true;
        found = true;
      }
    }
    if (!found) return false;
  }
  return true;
}

function eqOrdered(a: Answer[], b: Answer[], ctx: Ctx): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!eqAnswer(a[i], b[i], ctx)) return false;
  return true;
}

/** A one-row or one-column matrix as a vector, else null. */
function vectorOf(m: Extract<Answer, { kind: "matrix" }>): Answer[] | null {
  if (m.rows.length === 1) return m.rows[0];
  if (m.rows.every((r) => r.length === 1)) return m.rows.map((r) => r[0]);
  return null;
}

/**
 * A label naming a function's value: f(x), g(t), or y. `f(x) = 2x+1`,
 * `g(x) = 2x+1` and `y = 2x+1` give the same function (the letter is the
 * question's, the rule is the answer).
 */
function functionLabel(name: string): boolean {
  return name === "y" || /^[A-Za-z](?:_[A-Za-z0-9]+)?\([A-Za-z]\)$/.test(name);
}

/** `name = expr` as an equation (y = 2x + 1 is the line 2x - y + 1 = 0), or null. */
function assignAsEq(a: Extract<Answer, { kind: "assign" }>): Extract<Answer, { kind: "eq" }> | null {
  if (a.value.kind !== "expr" || a.value.key === "") return null;
  try {
    return { kind: "eq", lhs: parseLatex(a.name), rhs: a.value.e, key: "" };
  } catch (err) {
    if (!(err instanceof ParseError || err instanceof RangeError)) throw err;
    return null;
  }
}

/**
 * Two equations are the same when lhs - rhs of one is a nonzero constant
 * times that of the other, tested at seeded points (2x+4y-3=0 and
 * y=-\frac12x+\frac34; x^2+y^2=4 and x^2/4+y^2/4=1). Not the same: a
 * non-constant factor (xy=6 vs y=6/x), as Math-Verify's comparison of sides.
 */
function eqEquation(a: Extract<Answer, { kind: "eq" }>, b: Extract<Answer, { kind: "eq" }>, ctx: Ctx): boolean {
  if (a.key !== "" && a.key === b.key) return true;
  return numericCompare({ t: "sub", a: a.lhs, b: a.rhs }, { t: "sub", a: b.lhs, b: b.rhs }, "ratio", ctx.work).ok;
}

/**
 * A relation as intervals when it is linear in its one variable
 * (-x > -1 is (-∞, 1); x \ne 2 is (-∞, 2) ∪ (2, ∞)), else null.
 */
function relAsIntervals(r: Extract<Answer, { kind: "rel" }>, ctx: Ctx): Answer | null {
  const sol = solveLinear(r.f, ctx.work);
  if (!sol) return null;
  const root: Answer = { kind: "expr", e: sol.root, key: "" };
  const inf: Answer = { kind: "expr", e: { t: "const", name: "inf" }, key: "\\infty" };
  const ninf: Answer = { kind: "expr", e: { t: "neg", a: { t: "const", name: "inf" } }, key: "-\\infty" };
  const below: Answer = { kind: "tuple", open: "(", close: r.op === "<=" ? "]" : ")", items: [ninf, root] };
  const above: Answer = { kind: "tuple", open: r.op === "<=" ? "[" : "(", close: ")", items: [root, inf] };
  if (r.op === "!=") return { kind: "union", parts: [below, { ...above, open: "(" }] };
  // f = slope·(v - root): f < 0 is v < root when the slope is positive.
  return sol.sign > 0 ? below : above;
}

function eqRelation(a: Extract<Answer, { kind: "rel" }>, b: Answer, ctx: Ctx): boolean {
  if (b.kind === "rel") {
    if (a.op !== b.op) return false;
    if (a.key === b.key) return true;
    // Same relation up to a factor: positive for < and <= (a negative one
    // flips the direction), any nonzero one for !=.
    const r = numericCompare(a.f, b.f, "ratio", ctx.work);
    return r.ok && (a.op === "!=" || positiveReal(r.k));
  }
  if (b.kind !== "tuple" && b.kind !== "union") return false;
  const iv = relAsIntervals(a, ctx);
  return iv !== null && eqAnswer(iv, b, ctx);
}

function eqRecord(a: Extract<Answer, { kind: "record" }>, b: Answer, ctx: Ctx): boolean {
  switch (b.kind) {
    case "record": {
      // Named values match by name, in any order.
      if (a.names.length !== b.names.length) return false;
      return a.names.every((n, i) => {
        const j = b.names.indexOf(n);
        return j >= 0 && eqAnswer(a.values[i], b.values[j], ctx);
      });
    }
    case "tuple": // a point: values in tuple order
      return b.open === "(" && b.close === ")" && eqOrdered(a.values, b.items, ctx);
    case "set":
      // A list "1, 2" as the values in tuple order (x=1, y=2 is "1, 2", not
      // "2, 1"); a named item must carry the name of its place ("x=1 or
      // x=2" is not x=1, y=2).
      return a.values.length === b.items.length && b.items.every((it, i) =>
        it.kind === "assign" ? it.name === a.names[i] && eqAnswer(a.values[i], it.value, ctx) : eqAnswer(a.values[i], it, ctx));
    default:
      return false;
  }
}

function eqAnswer(a: Answer, b: Answer, ctx: Ctx): boolean {
  if (!spend(ctx.work, 1)) return false;
  if (a.kind === "assign" && b.kind === "assign") {
    if (a.name === b.name || (functionLabel(a.name) && functionLabel(b.name))) return eqAnswer(a.value, b.value, ctx);
    // Different labels: only the same equation counts (y = 2x+1 and
    // x = (y-1)/2); x = 3 never accepts y = 3.
    const ea = assignAsEq(a);
    const eb = assignAsEq(b);
    return ea !== null && eb !== null && eqEquation(ea, eb, ctx);
  }
  if (a.kind === "assign" && b.kind === "eq") {
    const ea = assignAsEq(a);
    return ea !== null && eqEquation(ea, b, ctx);
  }
  if (b.kind === "assign" && a.kind === "eq") return eqAnswer(b, a, ctx);
  if (a.kind === "assign") return b.kind !== "record" && eqAnswer(a.value, b, ctx);
  if (b.kind === "assign") return a.kind !== "record" && eqAnswer(a, b.value, ctx);
  if (a.kind === "record") return eqRecord(a, b, ctx);
  if (b.kind === "record") return eqRecord(b, a, ctx);
  if (a.kind === "rel") return eqRelation(a, b, ctx);
  if (b.kind === "rel") return eqRelation(b, a, ctx);
  if (b.kind === "set" && a.kind !== "set") return eqAnswer(b, a, ctx);
  if (a.kind === "text" || b.kind === "text") return a.kind === "text" && b.kind === "text" && a.key === b.key;
  switch (a.kind) {
    case "expr":
      return b.kind === "expr" && eqExpr(a, b, ctx);
    case "eq":
      return b.kind === "eq" && eqEquation(a, b, ctx);
    case "tuple":
      if (b.kind === "matrix" && a.open === "(") {
        const v = vectorOf(b);
        return v !== null && eqOrdered(a.items, v, ctx);
      }
      return b.kind === "tuple" && a.open === b.open && a.close === b.close && eqOrdered(a.items, b.items, ctx);
    case "set":
      if (b.kind !== "set") return a.items.length === 1 && eqAnswer(a.items[0], b, ctx); // \{3\} vs 3
      return eqUnordered(a.items, b.items, ctx);
    case "union":
      return b.kind === "union" && eqUnordered(a.parts, b.parts, ctx);
    case "matrix":
      if (b.kind === "tuple") return eqAnswer(b, a, ctx);
      if (b.kind !== "matrix" || a.rows.length !== b.rows.length) return false;
      return a.rows.every((r, i) => eqOrdered(r, b.rows[i], ctx));
  }
}

export interface GradeOptions {
  /**
   * Numeric closeness: accept a decimal of at least this many significant
   * digits for an exact value it rounds or truncates to (see approxEqual).
   * 0 (default): approximations are wrong, as in DeepScaleR's grader.
   */
  approxDigits?: number;
  /** Work units one comparison may spend (default WORK_BUDGET); past it the verdict is "different". */
  workBudget?: number;
}

/** A percent sign or word after a number. */
const PERCENT_RE = /[0-9}]\s*(?:\\?%|\\text\{\s*(?:percent|per cent|pct)\s*\}|(?:percent|per cent|pct)\b)/;

/**
 * Gold `1011_2`, predicted `1011`: with the base subscript on the gold only,
 * the same digits are the answer in the base the question asked for (models
 * seldom repeat the subscript). One-way on purpose: a prediction that writes
 * a base the gold lacks (gold 10, predicted 10_2 = 2) claims another number.
 * The value in base ten (11) is accepted too, through the parser.
 */
function goldBaseDigits(g: string, p: string): boolean {
  const m = /^([0-9A-Z]+)_\{?\d{1,2}\}?$/.exec(g);
  return m !== null && /^[0-9A-Z]+$/.test(p) && p === m[1];
}

/**
 * True when `pred` (an extracted answer) is equivalent to the reference
 * `gold`. Never throws on bad input; a null prediction is wrong. The verdict
 * depends only on the two strings and the options, never on time or load.
 */
export function isEquivalent(gold: string, pred: string | null, opts: GradeOptions = {}): boolean {
  return compareAnswers(gold, pred, opts).equal;
}

/**
 * isEquivalent with the work units the comparison spent (the same for the
 * same input and options, whatever the machine): a budget of exactly `work`
 * units gives the same verdict, and a verdict of "equal" needs all of them.
 */
export function compareAnswers(gold: string, pred: string | null, opts: GradeOptions = {}): { equal: boolean; work: number } {
  if (pred === null) return { equal: false, work: 0 };
  if (gold.trim() === pred.trim()) return { equal: true, work: 0 };
  const ng = normalizeAnswer(gold);
  const np = normalizeAnswer(pred);
  if (ng === np) return { equal: true, work: 0 };
  // Multiple choice: a gold letter (B), \text{(B)}, or "(B) 42", against a
  // predicted letter; a letter with a value on one side only compares values.
  const gc = splitChoice(ng);
  const pc = splitChoice(np);
  if (gc && pc) return { equal: gc.letter === pc.letter, work: 0 };
  if (pc && pc.rest !== "") return compareAnswers(gold, pc.rest, opts);
  if (gc && gc.rest !== "") return compareAnswers(gc.rest, pred, opts);
  if (goldBaseDigits(ng, np)) return { equal: true, work: 0 };
  const budget = opts.workBudget ?? WORK_BUDGET;
  const ctx: Ctx = { work: newWork(budget), approxDigits: opts.approxDigits ?? 0 };
  let equal = false;
  try {
    equal = eqAnswer(parseNormalized(ng), parseNormalized(np), ctx);
    // A number written with a percent sign (or word) is also that many
    // hundredths: 28\% is 28 (the percent dropped, DeepScaleR's rule) and
    // 0.28 (its value; Qwen2.5-Math accepts both too). Never 2800.
    if (!equal && PERCENT_RE.test(pred) && !/[,;=]/.test(np)) equal = eqAnswer(parseNormalized(ng), parseAnswer(`\\frac{${np}}{100}`), ctx);
    if (!equal && PERCENT_RE.test(gold) && !/[,;=]/.test(ng)) equal = eqAnswer(parseAnswer(`\\frac{${ng}}{100}`), parseNormalized(np), ctx);
  } catch (err) {
    // A grader bug must not stop a training run: say so loudly, count it wrong.
    if (!(err instanceof RangeError)) {
      console.warn(`grade: internal error comparing ${JSON.stringify(gold.slice(0, 80))} with ${JSON.stringify(pred.slice(0, 80))}: ${(err as Error).message}`);
    }
  }
  // Out of budget: "different", whatever the last step said.
  return { equal: equal && ctx.work.left >= 0, work: budget - ctx.work.left };
}

/**
 * Pay the one-time costs of the grader (mathjs' first compile and evaluate,
 * the JIT of the parser and the exact path) now, not inside the first
 * comparison of a run. Idempotent; run once when this module loads.
 */
let warm = false;
export function warmUpGrader(): void {
  if (warm) return;
  warm = true;
  const pairs: [string, string][] = [
    ["\\frac{1}{2}", "0.5"],
    ["2\\sqrt{2}+\\sin(\\pi/6)", "\\sqrt{8}+\\frac12"],
    ["x^2+2x", "x(x+2)"],
    ["(1, \\infty)", "x > 1"],
    ["y=2x+1", "2x-y+1=0"],
    ["\\{1, 2\\}", "2, 1"],
  ];
  for (const [a, b] of pairs) isEquivalent(a, b);
}
warmUpGrader();
