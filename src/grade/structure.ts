// The structure of an answer: a normalised answer split into what it is
// (tuple / interval, set, union, matrix, equation, relation, label = value,
// named values, ratio, scalar, text), with scalars parsed by latex.ts.
// Bounded by the answer length cap, MAX_ITEMS per list and MAX_STRUCT_DEPTH.
// Where the reading of a form is a convention, the rule says which and why
// beside it; the reference graders are DeepScaleR's, Qwen2.5-Math's and
// Math-Verify.

import type { Rat } from "./expr.ts";
import { expandPm, parseLatex, ParseError, type Expr } from "./latex.ts";
import { MAX_ANSWER_CHARS, normalizeAnswer, textKey } from "./normalize.ts";

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
 * is an interval (the letter is the question's: `x \ge 3`, `y \ge 3` and
 * `[3, \infty)` are one answer, as before this rule); any other form (`-x > -1`, `2x - 5 \le 0`, `x + y < 1`,
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

/** Normalise and parse an answer. */
export function parseAnswer(raw: string): Answer {
  return parseNormalized(normalizeAnswer(raw));
}

/** Parse an answer normalizeAnswer already cleaned (cached: a gold answer is graded against many responses). */
export function parseNormalized(s: string): Answer {
  let a = parsedCache.get(s);
  if (!a) {
    a = parseStructure(s);
    if (parsedCache.size >= 8192) parsedCache.clear();
    parsedCache.set(s, a);
  }
  return a;
}
