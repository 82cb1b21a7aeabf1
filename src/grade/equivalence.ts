// Is a predicted answer the reference answer? Both are normalised, split into
// their structure (tuple / interval, set, union, matrix, equation, assignment,
// scalar, text), and compared part by part: exactly over rationals when both
// sides are rational, else numerically through mathjs at random points.
// Every step is bounded: answer length, parse depth, number sizes, list
// lengths, and a per-call time budget after which the verdict is "different".

import { exactValue, closeTo, compileExpr, evalAt, freeVars, nodeCount, randomPoints, ratEq, type Rat } from "./expr.ts";
import { expandPm, parseLatex, ParseError, type Expr } from "./latex.ts";
import { MAX_ANSWER_CHARS, normalizeAnswer, splitChoice, textKey } from "./normalize.ts";

export type Answer =
  | { kind: "expr"; e: Expr; key: string; exact?: Rat | null }
  | { kind: "assign"; name: string; value: Answer } // x = 3 (kept apart in lists such as "x=1, y=2")
  | { kind: "eq"; lhs: Expr; rhs: Expr; key: string }
  | { kind: "tuple"; open: string; close: string; items: Answer[] } // ordered: (a,b), [a,b), ...
  | { kind: "set"; items: Answer[] } // unordered: \{a,b\}, "a, b", a ± b
  | { kind: "union"; parts: Answer[] } // intervals joined by \cup
  | { kind: "matrix"; rows: Answer[][] }
  | { kind: "text"; key: string };

const MAX_ITEMS = 32;
/** Larger expression trees are not compiled for the numeric test (mathjs compiles ~50 µs a node). */
const MAX_NUMERIC_NODES = 160;
const MAX_STRUCT_DEPTH = 6;
/** Default time budget of one comparison; past it the answers count as different. */
export const DEFAULT_BUDGET_MS = 50;

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

/** What may stand left of "=" in an answer: x, x_1, \theta, f(x), a segment AB. */
const VAR_RE = /^(?:[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?|\\[A-Za-z]+|[A-Za-z]\s*\(\s*[A-Za-z]\s*\)|[A-Z]{2,3}|\\overline\{[A-Z]{2}\})$/;
const REL_RE = /(<|>|\\le(?![A-Za-z])|\\ge(?![A-Za-z]))/;

function parseScalar(s: string): Answer {
  try {
    const e = parseLatex(s);
    const alts = expandPm(e);
    if (alts.length > 1) return { kind: "set", items: alts.map((x) => ({ kind: "expr", e: x, key: "" })) };
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

/** `x > 3`, `x \le -2`, `1 < x \le 5` as intervals; null if not that shape. */
function parseInequality(s: string, depth: number): Answer | null {
  const bits = s.split(REL_RE).map((x) => x.trim());
  if (bits.length !== 3 && bits.length !== 5) return null;
  const inf: Answer = { kind: "expr", e: { t: "const", name: "inf" }, key: "\\infty" };
  const ninf: Answer = { kind: "expr", e: { t: "neg", a: { t: "const", name: "inf" } }, key: "-\\infty" };
  const less = (op: string) => op === "<" || op === "\\le";
  const strict = (op: string) => op === "<" || op === ">";
  if (bits.length === 3) {
    const [l, op, r] = bits;
    const varLeft = VAR_RE.test(l);
    if (varLeft === VAR_RE.test(r)) return null;
    const bound = parseStructure(varLeft ? r : l, depth + 1);
    // "x < a" and "a > x" are both x below a.
    const below = varLeft === less(op);
    return below
      ? { kind: "tuple", open: "(", close: strict(op) ? ")" : "]", items: [ninf, bound] }
      : { kind: "tuple", open: strict(op) ? "(" : "[", close: ")", items: [bound, inf] };
  }
  const [a, op1, v, op2, b] = bits;
  if (!VAR_RE.test(v) || less(op1) !== less(op2)) return null;
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

/** The structure of one normalised answer (or part of one). */
export function parseStructure(src: string, depth = 0): Answer {
  let s = src.trim();
  if (depth > MAX_STRUCT_DEPTH || s.length > MAX_ANSWER_CHARS) return { kind: "text", key: textKey(s) };
  s = s.replace(/^[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*\\in\s*/, "");

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
    const items = inner === "" ? [] : parseList(splitTop(inner, ","), depth);
    return items ? { kind: "set", items } : { kind: "text", key: textKey(s) };
  }

  if ((s[0] === "(" || s[0] === "[") && (s.endsWith(")") || s.endsWith("]")) && matchBracket(s, 0) === s.length - 1) {
    const parts = splitTop(s.slice(1, -1), ",");
    if (parts.length >= 2) {
      const items = parseList(parts, depth);
      return items ? { kind: "tuple", open: s[0], close: s[s.length - 1], items } : { kind: "text", key: textKey(s) };
    }
  }

  for (const sep of [",", ";"]) {
    const parts = splitTop(s, sep);
    if (parts.length >= 2) {
      const items = parseList(parts, depth);
      return items ? { kind: "set", items } : { kind: "text", key: textKey(s) };
    }
  }

  const sides = splitTop(s, "=");
  if (sides.length >= 2 && sides.every((x) => x.trim() !== "")) {
    const lhs = sides[0].trim();
    const rhs = sides[sides.length - 1].trim();
    if (sides.slice(0, -1).every((x) => VAR_RE.test(x.trim()))) {
      return { kind: "assign", name: lhs.replace(/\s+/g, ""), value: parseStructure(rhs, depth + 1) };
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
  deadline: number;
}

function expired(ctx: Ctx): boolean {
  return performance.now() > ctx.deadline;
}

/** +1 / -1 for a literal ±∞, else 0. */
function infSign(e: Expr): number {
  if (e.t === "const" && e.name === "inf") return 1;
  if (e.t === "neg") return -infSign(e.a);
  return 0;
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

function exactOf(a: Extract<Answer, { kind: "expr" }>): Rat | null {
  if (a.exact === undefined) a.exact = exactValue(a.e);
  return a.exact;
}

/** Numeric identity test of two expressions (or, with `ratio`, proportionality of two equations). */
function numericEqual(a: Expr, b: Expr, ratio: boolean): boolean {
  if (nodeCount(a) + nodeCount(b) > 2 * MAX_NUMERIC_NODES) return false;
  const vars = [...freeVars(a, freeVars(b))];
  if (vars.length > 8) return false;
  let fa, fb;
  try {
    fa = compileExpr(a);
    fb = compileExpr(b);
  } catch {
    return false;
  }
  const risky = mayOverflow(a) || mayOverflow(b);
  const pts = vars.length === 0 ? [{}] : randomPoints(vars, 6);
  let valid = 0;
  let k: [number, number] | null = null;
  for (const p of pts) {
    const va = evalAt(fa, p);
    const vb = evalAt(fb, p);
    const finite = (v: [number, number] | null) => v !== null && Number.isFinite(v[0]) && Number.isFinite(v[1]);
    if (!finite(va) && !finite(vb)) continue;
    if (!finite(va) || !finite(vb)) return false;
    const x = va!;
    const y = vb!;
    const tiny = (v: [number, number]) => Math.hypot(v[0], v[1]) < 1e-200 || Math.hypot(v[0], v[1]) > 1e200;
    if (risky && tiny(x) && tiny(y)) continue; // underflow / overflow: no evidence either way
    if (ratio) {
      const my = Math.hypot(y[0], y[1]);
      const mx = Math.hypot(x[0], x[1]);
      if (mx < 1e-12 || my < 1e-12) {
        if (mx < 1e-12 && my < 1e-12) continue;
        return false;
      }
      const r: [number, number] = [(x[0] * y[0] + x[1] * y[1]) / (my * my), (x[1] * y[0] - x[0] * y[1]) / (my * my)];
      if (k === null) k = r;
      else if (!closeTo(r, k)) return false;
    } else if (!closeTo(x, y)) return false;
    valid++;
  }
  return valid >= (vars.length === 0 ? 1 : 3);
}

function eqExpr(a: Extract<Answer, { kind: "expr" }>, b: Extract<Answer, { kind: "expr" }>): boolean {
  if (a.key !== "" && a.key === b.key) return true;
  const ia = infSign(a.e);
  const ib = infSign(b.e);
  if (ia !== 0 || ib !== 0) return ia === ib;
  const xa = exactOf(a);
  const xb = exactOf(b);
  if (xa && xb) return ratEq(xa, xb);
  return numericEqual(a.e, b.e, false);
}

/** Match every item of `a` with a distinct equal item of `b`. */
function eqUnordered(a: Answer[], b: Answer[], ctx: Ctx): boolean {
  if (a.length !== b.length) return false;
  const used = new Array<boolean>(b.length).fill(false);
  for (const x of a) {
    let found = false;
    for (let j = 0; j < b.length && !found; j++) {
      if (used[j]) continue;
      if (expired(ctx)) return false;
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
  for (let i = 0; i < a.length; i++) if (expired(ctx) || !eqAnswer(a[i], b[i], ctx)) return false;
  return true;
}

/** A one-row or one-column matrix as a vector, else null. */
function vectorOf(m: Extract<Answer, { kind: "matrix" }>): Answer[] | null {
  if (m.rows.length === 1) return m.rows[0];
  if (m.rows.every((r) => r.length === 1)) return m.rows.map((r) => r[0]);
  return null;
}

function eqAnswer(a: Answer, b: Answer, ctx: Ctx): boolean {
  if (a.kind === "assign" && b.kind === "assign") return a.name === b.name && eqAnswer(a.value, b.value, ctx);
  if (a.kind === "assign") return eqAnswer(a.value, b, ctx);
  if (b.kind === "assign") return eqAnswer(a, b.value, ctx);
  if (b.kind === "set" && a.kind !== "set") return eqAnswer(b, a, ctx);
  if (a.kind === "text" || b.kind === "text") return a.kind === "text" && b.kind === "text" && a.key === b.key;
  switch (a.kind) {
    case "expr":
      return b.kind === "expr" && eqExpr(a, b);
    case "eq":
      if (b.kind !== "eq") return false;
      if (a.key === b.key) return true;
      return numericEqual({ t: "sub", a: a.lhs, b: a.rhs }, { t: "sub", a: b.lhs, b: b.rhs }, true);
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
  /** Time budget in ms; past it the verdict is "different" (default 50). */
  budgetMs?: number;
}

/**
 * True when `pred` (an extracted answer) is equivalent to the reference
 * `gold`. Never throws on bad input; a null prediction is wrong.
 */
export function isEquivalent(gold: string, pred: string | null, opts: GradeOptions = {}): boolean {
  if (pred === null) return false;
  if (gold.trim() === pred.trim()) return true;
  const ctx: Ctx = { deadline: performance.now() + (opts.budgetMs ?? DEFAULT_BUDGET_MS) };
  const ng = normalizeAnswer(gold);
  const np = normalizeAnswer(pred);
  if (ng === np) return true;
  // Multiple choice: a gold letter (B), \text{(B)}, or "(B) 42", against a
  // predicted letter; a letter with a value on one side only compares values.
  const gc = splitChoice(ng);
  const pc = splitChoice(np);
  if (gc && pc) return gc.letter === pc.letter;
  if (pc && pc.rest !== "") return isEquivalent(gold, pc.rest, opts);
  if (gc && gc.rest !== "") return isEquivalent(gc.rest, pred, opts);
  try {
    return eqAnswer(parseAnswer(gold), parseAnswer(pred), ctx);
  } catch (err) {
    // A grader bug must not stop a training run: say so loudly, count it wrong.
    if (!(err instanceof RangeError)) {
      console.warn(`grade: internal error comparing ${JSON.stringify(gold.slice(0, 80))} with ${JSON.stringify(pred.slice(0, 80))}: ${(err as Error).message}`);
    }
    return false;
  }
}
