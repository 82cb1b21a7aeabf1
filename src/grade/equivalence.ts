// Is a predicted answer the reference answer? Both are normalised, split into
// their structure (tuple / interval, set, union, matrix, equation, relation,
// assignment, named values, scalar, text), and compared part by part:
// exactly over rationals when both sides are rational, else numerically
// through mathjs at seeded points. Every step is bounded in work, never in
// time: answer length, parse depth, number sizes, list lengths, and a budget
// of work units per comparison (numeric.ts) after which the verdict is
// "different". The same pair always gets the same verdict.
//
// Where a verdict is a convention, the rule says which and why beside it; the
// reference graders are DeepScaleR's, Qwen2.5-Math's and Math-Verify.

import { exactValue, ratEq, type Rat } from "./expr.ts";
import { expandPm, parseLatex, ParseError, type Expr } from "./latex.ts";
import { MAX_ANSWER_CHARS, normalizeAnswer, splitChoice, textKey } from "./normalize.ts";
import { newWork, numericCompare, positiveReal, solveLinear, spend, valueOf, type Work } from "./numeric.ts";

export type Answer =
  | { kind: "expr"; e: Expr; key: string; exact?: Rat | null }
  | { kind: "assign"; name: string; value: Answer } // x = 3, |AB| = 1, f(x) = x^2: a label and its value
  | { kind: "record"; names: string[]; values: Answer[] } // p=5, q=2 or (p,q)=(5,2): named values, in tuple order
  | { kind: "eq"; lhs: Expr; rhs: Expr; key: string }
  | { kind: "rel"; op: "<" | "<=" | "!="; f: Expr; key: string } // f < 0, f <= 0, f != 0
  | { kind: "tuple"; open: string; close: string; items: Answer[] } // ordered: (a,b), [a,b), a:b
  | { kind: "set"; items: Answer[]; pm?: boolean } // unordered: \{a,b\}, "a, b", a ± b (pm)
  | { kind: "union"; parts: Answer[] } // intervals joined by \cup
  | { kind: "matrix"; rows: Answer[][] }
  | { kind: "text"; key: string };

const MAX_ITEMS = 32;
const MAX_STRUCT_DEPTH = 6;
/**
 * Work units one comparison may spend (see numeric.ts for the unit). About
 * 100 numeric comparisons of 20-node expressions; measured worst case on an
 * idle 2-core machine in benchmarks/RESULTS.md.
 */
export const WORK_BUDGET = 400_000;

// ------------------------------------------------------------ structure

/** Split at top-level occurrences of `sep` (outside (), [], {}, \{ \}). */
export function splitTop(s: string, sep: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  const isCmd = sep.startsWith("\\");
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "\\") {
      if (depth === 0 && s.startsWith(sep, i) && !(isCmd && /[A-Za-z]/.test(s[i + sep.length] ?? ""))) {
        out.push(s.slice(start, i));
        i += sep.length - 1;
        start = i + 1;
        continue;
      }
      const n = s[i + 1];
      if (n === "{" || n === "(" || n === "[") depth++;
      else if (n === "}" || n === ")" || n === "]") depth = Math.max(0, depth - 1);
      i++;
      continue;
    }
    if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") depth = Math.max(0, depth - 1);
    else if (depth === 0 && !isCmd && s.startsWith(sep, i)) {
      out.push(s.slice(start, i));
      start = i + sep.length;
      i += sep.length - 1;
    }
  }
  out.push(s.slice(start));
  return out;
}

/** Index of the bracket closing the one at `open`, or -1. */
function matchBracket(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const c = s[i];
    if (c === "\\") {
      i++;
      continue;
    }
    if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") {
      depth--;
      if (depth === 0) return i;
    }
  }
  return -1;
}

/** A variable that may be solved for in an inequality: x, x_1, \theta, f(x), a segment AB. */
const VAR_RE = /^(?:[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?|\\[A-Za-z]+|[A-Za-z]\s*\(\s*[A-Za-z]\s*\)|[A-Z]{2,3}|\\overline\{[A-Z]{2}\})$/;
/** Relations at the top level of an answer (ASCII >=, <=, != are \ge, \le, \ne after normalisation). */
const REL_RE = /(<|>|\\le(?![A-Za-z])|\\ge(?![A-Za-z])|\\ne(?![A-Za-z]))/;

/** Decorations of a label that carry no value: \angle ABC, \overline{AB}, S_{\triangle ABC}. */
const LABEL_DECOR = /\\(?:angle|measuredangle|triangle|overline|overrightarrow|vec|widehat|hat|bar|mathrm|text|operatorname|mathbf|mathit|vert|lvert|rvert|frac)(?![A-Za-z])/g;

/**
 * What may stand left of "=" as a label of the answer rather than a side of
 * an equation: names made of letters (x, AB, xy, \theta), with subscripts
 * (a_{10}, S_{ABC}), absolute bars (|AB|), a function of a name or number
 * (f(x), f(2), P(A)), a ratio of names (S_{ABC}:S, \frac{BD}{DC}), a tuple of names
 * ((p,q)), with decorations (\angle ABC, m\angle A, \overline{AB}).
 * No operators, no digits outside subscripts and arguments: `2x+4y=3` and
 * `x^2=4` are equations. Convention (Math-Verify and Qwen2.5-Math compare the
 * right-hand side of "x = 3" with "3"): a label never changes the value.
 */
export function isLabel(lhs: string): boolean {
  if (VAR_RE.test(lhs)) return true;
  const t = lhs
    .replace(/_\{[^{}]{0,16}\}|_[A-Za-z0-9]/g, "")
    .replace(/([A-Za-z])\s*\(\s*[-0-9A-Za-z.]{1,8}\s*\)/g, "$1")
    .replace(LABEL_DECOR, " ")
    .replace(/'/g, "");
  return t.length <= 40 && /[A-Za-z]/.test(t) && /^[A-Za-z\s{}|():,[\]]+$/.test(t) && !/\\/.test(t);
}

/** The names of a label that is a tuple of names, `(p,q)` -> [p, q]; else null. */
function tupleOfNames(lhs: string): string[] | null {
  if (!(lhs.startsWith("(") && lhs.endsWith(")") && matchBracket(lhs, 0) === lhs.length - 1)) return null;
  const names = splitTop(lhs.slice(1, -1), ",").map(nameKey);
  if (names.length < 2 || !names.every((n) => /^(?:[A-Za-z](?:_[A-Za-z0-9]+)?|\\[A-Za-z]+)$/.test(n))) return null;
  return new Set(names).size === names.length ? names : null;
}

/**
 * A label as a comparable key: no decorations, bars, braces or spaces, so
 * a_{10} is a_10 and |AB|, \overline{AB}, AB are one segment.
 */
function nameKey(s: string): string {
  return s.replace(/m\s*(?=\\(?:measured)?angle)/g, "").replace(LABEL_DECOR, "").replace(/[\s{}|]/g, "");
}

function parseScalar(s: string): Answer {
  try {
    const e = parseLatex(s);
    const alts = expandPm(e);
    if (alts.length > 1) return { kind: "set", pm: true, items: alts.map((x) => ({ kind: "expr", e: x, key: "" })) };
    return { kind: "expr", e, key: s.replace(/\s+/g, "") };
  } catch (err) {
    if (err instanceof ParseError || err instanceof RangeError) return { kind: "text", key: textKey(s) };
    throw err;
  }
}

function parseList(parts: string[], depth: number): Answer[] | null {
  if (parts.length > MAX_ITEMS || parts.some((p) => p.trim() === "")) return null;
  return parts.map((p) => parseStructure(p, depth + 1));
}

/**
 * A list "a, b, c" (or "a; b; c"): unordered, with a ± item standing for its
 * two values (`\{\pm 3, 0\}` is {3, -3, 0}). A list of assignments to distinct
 * names (`p=5, q=2`) is one solution given as named values.
 */
function listAnswer(items: Answer[]): Answer {
  const flat = items.flatMap((x) => (x.kind === "set" && x.pm ? x.items : [x]));
  const names = flat.map((x) => (x.kind === "assign" ? x.name : ""));
  const value = (x: Answer) => (x as Extract<Answer, { kind: "assign" }>).value;
  if (flat.length >= 2 && names.every((n) => n !== "")) {
    if (new Set(names).size === names.length) return recordOf(names, flat.map(value), false);
    // "x=1, y=2 or x=3, y=4" (after "or" became ","): runs of the same
    // distinct names, each run one solution.
    const k = new Set(names).size;
    if (k >= 2 && names.length % k === 0) {
      const runs: Answer[] = [];
      for (let i = 0; i < names.length; i += k) {
        const run = names.slice(i, i + k);
        if (new Set(run).size !== k || !run.every((n) => names.slice(0, k).includes(n))) return { kind: "set", items: flat };
        runs.push(recordOf(run, flat.slice(i, i + k).map(value), false));
      }
      return { kind: "set", items: runs };
    }
  }
  return { kind: "set", items: flat };
}

/**
 * Named values in tuple order. Given as a tuple label, `(p,q) = (5,2)`, the
 * label's order. Given as a list, `q=2, p=5`: when every name is one Latin
 * letter, alphabetical order, the order of (x, y), (a, b, c), (p, q), (m, n)
 * tuples; else the order written. So `y=3, x=5` is the point (5, 3), never
 * (3, 5): a value given for another variable is not accepted.
 */
function recordOf(names: string[], values: Answer[], labelOrder: boolean): Answer {
  const idx = names.map((_, i) => i);
  if (!labelOrder && names.every((n) => /^[A-Za-z]$/.test(n))) idx.sort((i, j) => (names[i] < names[j] ? -1 : 1));
  return { kind: "record", names: idx.map((i) => names[i]), values: idx.map((i) => values[i]) };
}

/**
 * A single relation `L op R`. A variable against a bound (`x > 3`, `3 \le x`)
 * is an interval; any other form (`-x > -1`, `2x - 5 \le 0`, `x + y < 1`,
 * `x \ne 4`) is a relation f op 0 compared with others up to a positive factor
 * (or solved when linear in one variable, in comparison). `a op x op b` with
 * both relations the same way is an interval.
 */
function parseInequality(s: string, depth: number): Answer | null {
  const bits = s.split(REL_RE).map((x) => x.trim());
  if (bits.length !== 3 && bits.length !== 5) return null;
  const inf: Answer = { kind: "expr", e: { t: "const", name: "inf" }, key: "\\infty" };
  const ninf: Answer = { kind: "expr", e: { t: "neg", a: { t: "const", name: "inf" } }, key: "-\\infty" };
  const less = (op: string) => op === "<" || op === "\\le";
  const strict = (op: string) => op === "<" || op === ">";
  if (bits.length === 3) {
    const [l, op, r] = bits;
    if (l === "" || r === "") return null;
    const varLeft = VAR_RE.test(l);
    if (op !== "\\ne" && varLeft !== VAR_RE.test(r)) {
      const bound = parseStructure(varLeft ? r : l, depth + 1);
      // "x < a" and "a > x" are both x below a.
      const below = varLeft === less(op);
      return below
        ? { kind: "tuple", open: "(", close: strict(op) ? ")" : "]", items: [ninf, bound] }
        : { kind: "tuple", open: strict(op) ? "(" : "[", close: ")", items: [bound, inf] };
    }
    try {
      const L = parseLatex(l);
      const R = parseLatex(r);
      // Written as f op 0 with op one of <, <=, != (a > b is b - a < 0).
      const f: Expr = op === "\\ne" || less(op) ? { t: "sub", a: L, b: R } : { t: "sub", a: R, b: L };
      return { kind: "rel", op: op === "\\ne" ? "!=" : strict(op) ? "<" : "<=", f, key: s.replace(/\s+/g, "") };
    } catch (err) {
      if (!(err instanceof ParseError || err instanceof RangeError)) throw err;
      return null;
    }
  }
  const [a, op1, v, op2, b] = bits;
  if (!VAR_RE.test(v) || op1 === "\\ne" || op2 === "\\ne" || less(op1) !== less(op2)) return null;
  const lo = less(op1) ? a : b;
  const hi = less(op1) ? b : a;
  const loOp = less(op1) ? op1 : op2;
  const hiOp = less(op1) ? op2 : op1;
  return {
    kind: "tuple",
    open: strict(loOp) ? "(" : "[",
    close: strict(hiOp) ? ")" : "]",
    items: [parseStructure(lo, depth + 1), parseStructure(hi, depth + 1)],
  };
}

/** `lhs = rhs` (rhs possibly itself `... = value`: the last side is the value). */
function parseEquation(s: string, sides: string[], depth: number): Answer {
  const lhs = sides[0].trim();
  const rhs = sides[sides.length - 1].trim();
  if (sides.slice(0, -1).every((x) => isLabel(x.trim()))) {
    const value = parseStructure(rhs, depth + 1);
    const names = sides.length === 2 ? tupleOfNames(lhs) : null;
    if (names && value.kind === "tuple" && value.open === "(" && value.items.length === names.length) {
      return recordOf(names, value.items, true);
    }
    return { kind: "assign", name: nameKey(lhs), value };
  }
  if (sides.length === 2) {
    try {
      return { kind: "eq", lhs: parseLatex(lhs), rhs: parseLatex(rhs), key: s.replace(/\s+/g, "") };
    } catch (err) {
      if (!(err instanceof ParseError || err instanceof RangeError)) throw err;
    }
  }
  return { kind: "text", key: textKey(s) };
}

/** The structure of one normalised answer (or part of one). */
export function parseStructure(src: string, depth = 0): Answer {
  let s = src.trim();
  if (depth > MAX_STRUCT_DEPTH || s.length > MAX_ANSWER_CHARS) return { kind: "text", key: textKey(s) };
  s = s.replace(/^[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*\\in\s*/, "");
  // "≈ 1.41" and "x ≈ 1.41": the value, graded like any other (an approximate
  // decimal is accepted only under the approxDigits option).
  s = s.replace(/^\\approx(?![A-Za-z])\s*/, "");
  if (splitTop(s, "\\approx").length === 2) s = splitTop(s, "\\approx").join("=");
  // A matrix in brackets, as \left[\begin{array}...\end{array}\right] is after normalisation.
  const br = /^[([]\s*(\\begin\{([pbBvV]?matrix|array)\}[\s\S]*\\end\{\2\})\s*[)\]]$/.exec(s);
  if (br) s = br[1];

  const mat = /^\\begin\{([pbBvV]?matrix|array)\}(?:\{[^}]*\})?([\s\S]*)\\end\{\1\}$/.exec(s);
  if (mat) {
    const rows = splitTop(mat[2], "\\\\").map((r) => r.trim()).filter((r) => r !== "");
    if (rows.length > 0 && rows.length <= MAX_ITEMS) {
      const cells = rows.map((r) => parseList(r.split("&"), depth));
      if (cells.every((c) => c !== null)) return { kind: "matrix", rows: cells as Answer[][] };
    }
    return { kind: "text", key: textKey(s) };
  }

  const union = splitTop(s, "\\cup");
  if (union.length > 1) {
    const parts = parseList(union, depth);
    return parts ? { kind: "union", parts } : { kind: "text", key: textKey(s) };
  }

  if (s.startsWith("\\{") && s.endsWith("\\}") && !splitTop(s.slice(2, -2), "\\}").slice(1).length) {
    const inner = s.slice(2, -2).trim();
    const items = inner === "" ? [] : parseList(splitTop(inner, inner.includes(";") && splitTop(inner, ";").length > 1 ? ";" : ","), depth);
    return items ? { kind: "set", items: items.flatMap((x) => (x.kind === "set" && x.pm ? x.items : [x])) } : { kind: "text", key: textKey(s) };
  }

  if ((s[0] === "(" || s[0] === "[") && (s.endsWith(")") || s.endsWith("]")) && matchBracket(s, 0) === s.length - 1) {
    const parts = splitTop(s.slice(1, -1), ",");
    if (parts.length >= 2) {
      const items = parseList(parts, depth);
      if (!items) return { kind: "text", key: textKey(s) };
      // A point with one ± coordinate is two points: (\pm 2, 0) is (2, 0), (-2, 0).
      // With several ± it is ambiguous (2 or 4 points): left unexpanded.
      const pm = items.filter((x) => x.kind === "set" && x.pm);
      if (pm.length === 1 && s[0] === "(") {
        const at = items.indexOf(pm[0]);
        const alts = (pm[0] as Extract<Answer, { kind: "set" }>).items;
        return { kind: "set", items: alts.map((alt) => ({ kind: "tuple", open: "(", close: ")", items: items.map((x, i) => (i === at ? alt : x)) })) };
      }
      return { kind: "tuple", open: s[0], close: s[s.length - 1], items };
    }
  }

  // Semicolons separate solutions ("p=5, q=2; p=7, q=2"), so they split first.
  for (const sep of [";", ","]) {
    const parts = splitTop(s, sep);
    if (parts.length >= 2) {
      const items = parseList(parts, depth);
      return items ? listAnswer(items) : { kind: "text", key: textKey(s) };
    }
  }

  const sides = splitTop(s, "=");
  if (sides.length >= 2 && sides.every((x) => x.trim() !== "")) return parseEquation(s, sides, depth);

  // A ratio a:b is an ordered pair of its own kind: 7:32 is not 14:64 or
  // 32:7 (DeepScaleR compares ratios as strings; never a false accept).
  const ratio = splitTop(s, ":");
  if (ratio.length >= 2) {
    const items = parseList(ratio, depth);
    return items ? { kind: "tuple", open: ":", close: ":", items } : { kind: "text", key: textKey(s) };
  }

  if (REL_RE.test(s)) {
    const iv = parseInequality(s, depth);
    if (iv) return iv;
  }
  return parseScalar(s);
}

const parsedCache = new Map<string, Answer>();

/** Normalise and parse an answer (cached: a gold answer is graded against many responses). */
export function parseAnswer(raw: string): Answer {
  let a = parsedCache.get(raw);
  if (!a) {
    a = parseStructure(normalizeAnswer(raw));
    if (parsedCache.size >= 8192) parsedCache.clear();
    parsedCache.set(raw, a);
  }
  return a;
}

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
    if (a.name === b.name) return eqAnswer(a.value, b.value, ctx);
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
    equal = eqAnswer(parseAnswer(gold), parseAnswer(pred), ctx);
    // A number written with a percent sign (or word) is also that many
    // hundredths: 28\% is 28 (the percent dropped, DeepScaleR's rule) and
    // 0.28 (its value; Qwen2.5-Math accepts both too). Never 2800.
    if (!equal && PERCENT_RE.test(pred) && !/[,;=]/.test(np)) equal = eqAnswer(parseAnswer(gold), parseAnswer(`\\frac{${np}}{100}`), ctx);
    if (!equal && PERCENT_RE.test(gold) && !/[,;=]/.test(ng)) equal = eqAnswer(parseAnswer(`\\frac{${ng}}{100}`), parseAnswer(pred), ctx);
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
