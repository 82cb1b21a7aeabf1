// Evaluating parsed answers two ways:
//  - exactly, over BigInt rationals, whenever an answer is a rational number
//    (integers of any size, decimals, fractions, factorials, binomials,
//    integer powers, perfect roots), with caps on sizes so 10^{10^{10}} and
//    99999! give up at once instead of computing;
//  - numerically, through mathjs (parse, compile, evaluate with complex
//    numbers), at seeded random points for the free variables.
// The expression string handed to mathjs is generated here from our own tree,
// so only whitelisted functions and renamed variables ever reach it.

import { all, create } from "mathjs";
import type { EvalFunction } from "mathjs";
import type { Expr } from "./latex.ts";
import { seededUniform } from "../util/random.ts";

// ---------------------------------------------------------------- exact

export interface Rat {
  n: bigint;
  d: bigint; // > 0, gcd(n, d) = 1
}

/** Results and operands larger than this many bits are not computed. */
const MAX_BITS = 40_000;
const MAX_FACTORIAL = 3000;
const MAX_BINOM_K = 5000;
const MAX_ROOT_INDEX = 16;
/**
 * Work allowed for one exact evaluation, in big-integer multiply steps
 * (a factorial of n costs n): many large factorials in one answer give up
 * instead of taking a hundred milliseconds.
 */
const FUEL = 6000;
let fuel = FUEL;
/** Multiplies by factorials, separately: each is a multiply of a number of up to ~30,000 bits. */
const FACT_FUEL = 500;
let factFuel = FACT_FUEL;

function burn(steps: number): boolean {
  fuel -= steps;
  return fuel >= 0;
}

function babs(x: bigint): bigint {
  return x < 0n ? -x : x;
}

function gcd(a: bigint, b: bigint): bigint {
  a = babs(a);
  b = babs(b);
  while (b) [a, b] = [b, a % b];
  return a;
}

function bits(x: bigint): number {
  return x === 0n ? 0 : babs(x).toString(16).length * 4;
}

function rat(n: bigint, d: bigint): Rat | null {
  if (d === 0n) return null;
  if (d < 0n) {
    n = -n;
    d = -d;
  }
  const g = gcd(n, d);
  if (g > 1n) {
    n /= g;
    d /= g;
  }
  if (bits(n) > MAX_BITS || bits(d) > MAX_BITS) return null;
  return { n, d };
}

export function ratEq(a: Rat, b: Rat): boolean {
  return a.n === b.n && a.d === b.d;
}

function isInt(r: Rat): boolean {
  return r.d === 1n;
}

/** Integer q-th root of x >= 0 when exact, else null (Newton's method). */
function iroot(x: bigint, q: number): bigint | null {
  if (x < 0n) return null;
  if (x < 2n) return x;
  const Q = BigInt(q);
  let y = 1n << BigInt(Math.ceil(bits(x) / q) + 1);
  for (let it = 0; it < 4 * bits(x) + 64; it++) {
    const next = ((Q - 1n) * y + x / y ** (Q - 1n)) / Q;
    if (next >= y) break;
    y = next;
  }
  return y ** Q === x ? y : null;
}

function ratRoot(a: Rat, q: number): Rat | null {
  if (q < 1 || q > MAX_ROOT_INDEX || bits(a.n) > 4000 || bits(a.d) > 4000) return null;
  const neg = a.n < 0n;
  if (neg && q % 2 === 0) return null;
  const rn = iroot(babs(a.n), q);
  const rd = iroot(a.d, q);
  if (rn === null || rd === null) return null;
  return rat(neg ? -rn : rn, rd);
}

function ratPow(a: Rat, e: Rat): Rat | null {
  if (!isInt(e)) {
    if (e.d > BigInt(MAX_ROOT_INDEX)) return null;
    const r = ratRoot(a, Number(e.d));
    return r && ratPow(r, { n: e.n, d: 1n });
  }
  if (a.n === 0n) return e.n > 0n ? a : null;
  if (a.d === 1n && (a.n === 1n || a.n === -1n)) return a.n === 1n || e.n % 2n === 0n ? { n: 1n, d: 1n } : a;
  const k = babs(e.n);
  if (k > BigInt(MAX_BITS) || Math.max(bits(a.n), bits(a.d)) * Number(k) > MAX_BITS * 4) return null;
  if (!burn(Math.ceil((Math.max(bits(a.n), bits(a.d)) * Number(k)) / 1000))) return null;
  const n = a.n ** k;
  const d = a.d ** k;
  return e.n < 0n ? rat(d, n) : rat(n, d);
}

/** n! for every multiple of 100 reached so far: a factorial costs at most 99 more multiplies. */
const FACT_CHECKPOINTS: bigint[] = [1n];

function factorial(a: Rat): Rat | null {
  if (!isInt(a) || a.n < 0n || a.n > BigInt(MAX_FACTORIAL)) return null;
  const n = Number(a.n);
  const k = Math.floor(n / 100);
  // Extending the checkpoints is paid once per process (all of them: ~50 ms), not per answer.
  for (let j = FACT_CHECKPOINTS.length; j <= k; j++) {
    let p = FACT_CHECKPOINTS[j - 1];
    for (let i = 100 * (j - 1) + 1; i <= 100 * j; i++) p *= BigInt(i);
    FACT_CHECKPOINTS.push(p);
  }
  factFuel -= n - 100 * k;
  if (factFuel < 0) return null;
  let p = FACT_CHECKPOINTS[k];
  for (let i = 100 * k + 1; i <= n; i++) p *= BigInt(i);
  return { n: p, d: 1n };
}

function binom(n: Rat, k: Rat): Rat | null {
  if (!isInt(n) || !isInt(k) || n.n < 0n) return null;
  if (k.n < 0n || k.n > n.n) return { n: 0n, d: 1n };
  const kk = k.n < n.n - k.n ? k.n : n.n - k.n;
  if (kk > BigInt(MAX_BINOM_K) || bits(n.n) > 64 || Number(kk) * bits(n.n) > 2 * MAX_BITS || !burn(Number(kk))) return null;
  let p = 1n;
  for (let i = 1n; i <= kk; i++) p = (p * (n.n - kk + i)) / i;
  return rat(p, 1n);
}

function parseDecimal(v: string): Rat | null {
  const dot = v.indexOf(".");
  if (dot < 0) return rat(BigInt(v), 1n);
  const frac = v.slice(dot + 1);
  return rat(BigInt(v.slice(0, dot) + frac || "0"), 10n ** BigInt(frac.length));
}

/** The exact rational value of `e`, or null when it is not (provably) rational within the caps. */
export function exactValue(e: Expr): Rat | null {
  fuel = FUEL;
  factFuel = FACT_FUEL;
  return exact(e);
}

function exact(e: Expr): Rat | null {
  if (!burn(1)) return null;
  switch (e.t) {
    case "num":
      return parseDecimal(e.v);
    case "neg": {
      const a = exact(e.a);
      return a && { n: -a.n, d: a.d };
    }
    case "add": case "sub": case "mul": case "div": case "pow": {
      const a = exact(e.a);
      if (!a) return null;
      const b = exact(e.b);
      if (!b) return null;
      switch (e.t) {
        case "add": return rat(a.n * b.d + b.n * a.d, a.d * b.d);
        case "sub": return rat(a.n * b.d - b.n * a.d, a.d * b.d);
        case "mul": return rat(a.n * b.n, a.d * b.d);
        case "div": return rat(a.n * b.d, a.d * b.n);
        case "pow": return ratPow(a, b);
      }
      return null;
    }
    case "fact": {
      const a = exact(e.a);
      return a && factorial(a);
    }
    case "fn": {
      const args: Rat[] = [];
      for (const x of e.args) {
        const v = exact(x);
        if (!v) return null;
        args.push(v);
      }
      const [a, b] = args;
      switch (e.name) {
        case "sqrt": return ratRoot(a, 2);
        case "root": return isInt(b) && b.n > 0n && b.n <= BigInt(MAX_ROOT_INDEX) ? ratRoot(a, Number(b.n)) : null;
        case "abs": return { n: babs(a.n), d: a.d };
        case "floor": return { n: a.n >= 0n ? a.n / a.d : -((-a.n + a.d - 1n) / a.d), d: 1n };
        case "ceil": return { n: a.n >= 0n ? (a.n + a.d - 1n) / a.d : -(-a.n / a.d), d: 1n };
        case "binom": return binom(a, b);
        default: return null;
      }
    }
    default:
      return null;
  }
}

// ---------------------------------------------------------------- numeric

const math = create(all, {});

/** Factorial for numbers: exact product up to 170, Infinity beyond, gamma for non-integers. */
function gFact(x: unknown): number {
  if (typeof x !== "number" || Number.isNaN(x)) return NaN;
  if (Number.isInteger(x)) {
    if (x < 0) return NaN;
    if (x > 170) return Infinity;
    let p = 1;
    for (let i = 2; i <= x; i++) p *= i;
    return p;
  }
  return x > 171 ? Infinity : (math.gamma(x + 1) as number);
}

function gBinom(n: unknown, k: unknown): number {
  if (typeof n !== "number" || typeof k !== "number") return NaN;
  if (Number.isInteger(n) && Number.isInteger(k) && n >= 0) {
    if (k < 0 || k > n) return 0;
    const kk = Math.min(k, n - k);
    if (kk <= 1000) {
      let p = 1;
      for (let i = 1; i <= kk; i++) p = (p * (n - kk + i)) / i;
      return p;
    }
  }
  const lg = (x: number) => math.lgamma(x) as number;
  return Math.exp(lg(n + 1) - lg(k + 1) - lg(n - k + 1));
}

/** Real n-th root for negative x and odd n (∛-8 = -2); mathjs' principal root otherwise. */
function gRoot(x: unknown, n: unknown): unknown {
  if (typeof x === "number" && typeof n === "number" && x < 0 && Number.isInteger(n) && n % 2 === 1) {
    return -Math.pow(-x, 1 / n);
  }
  return math.pow(x as number, math.divide(1, n as number) as number);
}

/**
 * x^(p/q) for a literal exponent p/q with q odd: the real value for negative x
 * ((-8)^{1/3} = -2, (-2)^{2/3} = ∛4), as the exact path and contest answers
 * read it; mathjs' principal complex value otherwise.
 */
function gRpow(x: unknown, p: unknown, q: unknown): unknown {
  if (typeof x === "number" && typeof p === "number" && typeof q === "number" && x < 0 && q % 2 === 1) {
    const r = Math.pow(-x, p / q);
    return p % 2 === 0 ? r : -r;
  }
  return math.pow(x as number, math.divide(p as number, q as number) as number);
}

math.import({ g_fact: gFact, g_binom: gBinom, g_root: gRoot, g_rpow: gRpow }, { override: false });

/** p/q when `e` is a literal fraction of integers with an odd q > 1 (`1/3`, `\frac{2}{3}`, `-1/3`), else null. */
function oddFraction(e: Expr): [string, string] | null {
  if (e.t === "neg") {
    const f = oddFraction(e.a);
    return f && ["-" + f[0], f[1]];
  }
  if (e.t !== "div" || e.a.t !== "num" || e.b.t !== "num" || e.a.v.includes(".") || e.b.v.includes(".")) return null;
  if (e.b.v.length > 6 || Number(e.b.v) % 2 !== 1 || Number(e.b.v) === 1) return null;
  return [e.a.v, e.b.v];
}

const FN_NAME: Record<string, string> = {
  sin: "sin", cos: "cos", tan: "tan", sec: "sec", csc: "csc", cot: "cot", asin: "asin", acos: "acos",
  atan: "atan", sinh: "sinh", cosh: "cosh", tanh: "tanh", ln: "log", log10: "log10", logb: "log", exp: "exp",
  sqrt: "sqrt", root: "g_root", abs: "abs", floor: "floor", ceil: "ceil", binom: "g_binom",
};

/** Our tree as a mathjs expression; variables are renamed `v_<name>`. */
export function toMathjs(e: Expr): string {
  switch (e.t) {
    case "num": return e.v.length > 320 ? "Infinity" : e.v;
    case "sym": return "v_" + e.name.replace(/[^A-Za-z0-9]/g, "_");
    case "const": return e.name === "inf" ? "Infinity" : e.name;
    case "add": return `(${toMathjs(e.a)} + ${toMathjs(e.b)})`;
    case "sub": return `(${toMathjs(e.a)} - ${toMathjs(e.b)})`;
    case "mul": return `(${toMathjs(e.a)} * ${toMathjs(e.b)})`;
    case "div": return `(${toMathjs(e.a)} / ${toMathjs(e.b)})`;
    case "pow": {
      const f = oddFraction(e.b);
      return f ? `g_rpow(${toMathjs(e.a)}, ${f[0]}, ${f[1]})` : `(${toMathjs(e.a)} ^ ${toMathjs(e.b)})`;
    }
    case "neg": return `(-${toMathjs(e.a)})`;
    case "fact": return `g_fact(${toMathjs(e.a)})`;
    case "fn": return `${FN_NAME[e.name]}(${e.args.map(toMathjs).join(", ")})`;
    case "pm": throw new Error("grade: ± must be expanded before evaluation");
  }
}

/** Number of nodes in `e` (the numeric path skips trees too big to compile quickly). */
export function nodeCount(e: Expr): number {
  switch (e.t) {
    case "add": case "sub": case "mul": case "div": case "pow": return 1 + nodeCount(e.a) + nodeCount(e.b);
    case "neg": case "fact": return 1 + nodeCount(e.a);
    case "pm": return 1 + (e.a ? nodeCount(e.a) : 0) + nodeCount(e.b);
    case "fn": return e.args.reduce((n, a) => n + nodeCount(a), 1);
    default: return 1;
  }
}

/** The free variables of `e`, as mathjs names. */
export function freeVars(e: Expr, out: Set<string> = new Set()): Set<string> {
  switch (e.t) {
    case "sym": out.add("v_" + e.name.replace(/[^A-Za-z0-9]/g, "_")); break;
    case "add": case "sub": case "mul": case "div": case "pow": freeVars(e.a, out); freeVars(e.b, out); break;
    case "neg": case "fact": freeVars(e.a, out); break;
    case "pm": if (e.a) freeVars(e.a, out); freeVars(e.b, out); break;
    case "fn": for (const a of e.args) freeVars(a, out); break;
  }
  return out;
}

const compiled = new Map<string, EvalFunction>();

/** Compile through mathjs, cached (bounded) by expression text. */
export function compileExpr(e: Expr): EvalFunction {
  const src = toMathjs(e);
  let f = compiled.get(src);
  if (!f) {
    f = math.compile(src);
    if (compiled.size >= 4096) compiled.clear();
    compiled.set(src, f);
  }
  return f;
}

/** A complex value as [re, im], or null when the result is not a number. */
export function evalAt(f: EvalFunction, scope: Record<string, number>): [number, number] | null {
  let v: unknown;
  try {
    v = f.evaluate({ ...scope });
  } catch {
    return null;
  }
  if (typeof v === "number") return [v, 0];
  if (v && typeof v === "object" && typeof (v as { re?: unknown }).re === "number") {
    const c = v as { re: number; im: number };
    return [c.re, c.im];
  }
  return null;
}

/** Deterministic points for identity testing (mulberry32). */
export function randomPoints(vars: string[], count: number, seed = 0x5151): Record<string, number>[] {
  const rnd = seededUniform(seed);
  const pts: Record<string, number>[] = [];
  for (let i = 0; i < count; i++) {
    const p: Record<string, number> = {};
    for (const v of vars) p[v] = 0.35 + 2.1 * rnd();
    pts.push(p);
  }
  return pts;
}

/** |a - b| small relative to their size (complex). */
export function closeTo(a: [number, number], b: [number, number], rtol = 1e-9, atol = 1e-12): boolean {
  const d = Math.hypot(a[0] - b[0], a[1] - b[1]);
  const m = Math.max(Math.hypot(a[0], a[1]), Math.hypot(b[0], b[1]));
  return d <= atol + rtol * m;
}
