// LaTeX answer -> expression tree. A small recursive-descent parser for the
// notation final answers use (fractions, roots, powers, factorials, binomials,
// functions, implicit multiplication, mixed numbers, ±). Anything else is a
// ParseError and the caller falls back to comparing text. Depth is capped so
// thousands of nested braces fail fast instead of overflowing the stack.

export type Fn =
  | "sin" | "cos" | "tan" | "sec" | "csc" | "cot" | "asin" | "acos" | "atan"
  | "sinh" | "cosh" | "tanh" | "ln" | "log10" | "logb" | "exp" | "sqrt" | "root"
  | "abs" | "floor" | "ceil" | "binom";

export type Expr =
  | { t: "num"; v: string } // decimal literal: digits, at most one "."
  | { t: "sym"; name: string } // a variable
  | { t: "const"; name: "pi" | "e" | "i" | "inf" }
  | { t: "add" | "sub" | "mul" | "div" | "pow"; a: Expr; b: Expr }
  | { t: "neg"; a: Expr }
  | { t: "pm"; a: Expr | null; b: Expr } // a ± b (a = null: ±b)
  | { t: "fact"; a: Expr }
  | { t: "fn"; name: Fn; args: Expr[] };

export class ParseError extends Error {}

const MAX_DEPTH = 48;

const GREEK = new Set([
  "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota", "kappa",
  "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega",
  "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
]);

const FUNCS: Record<string, Fn> = {
  sin: "sin", cos: "cos", tan: "tan", sec: "sec", csc: "csc", cot: "cot",
  arcsin: "asin", arccos: "acos", arctan: "atan", sinh: "sinh", cosh: "cosh", tanh: "tanh",
  ln: "ln", log: "ln", lg: "log10", exp: "exp",
};
const INVERSE: Partial<Record<Fn, Fn>> = { sin: "asin", cos: "acos", tan: "atan" };

/** Commands that continue an expression rather than start a factor. */
const INFIX_CMDS = new Set([
  "cdot", "times", "div", "pm", "mp", "le", "ge", "neq", "ne", "cup", "cap", "choose", "to", "rightarrow",
  "Rightarrow", "in", "rfloor", "rceil", "approx", "equiv", "setminus", "over", "}",
]);

/** Plain words that are notation, not text. */
const WORDS: Record<string, string> = {
  sqrt: "sqrt", pi: "pi", sin: "sin", cos: "cos", tan: "tan", ln: "ln", log: "log", exp: "exp",
  arcsin: "arcsin", arccos: "arccos", arctan: "arctan", sec: "sec", csc: "csc", cot: "cot",
};

/** Parse one scalar expression; throws ParseError when it is not one. */
export function parseLatex(src: string): Expr {
  return new Parser(src).parseAll();
}

class Parser {
  private pos = 0;
  private depth = 0;
  private absDepth = 0;
  constructor(private readonly s: string) {}

  parseAll(): Expr {
    // A whole answer in a base above ten (`A3_{16}`): digits and capital letters.
    const based = /^\s*(?=[0-9A-Z]*[0-9])(?=[0-9A-Z]*[A-Z])([0-9A-Z]{1,64})(?=_)/.exec(this.s);
    if (based) {
      this.pos = based[0].length;
      const e: Expr = { t: "num", v: this.baseValue(based[1]) };
      this.ws();
      if (this.pos < this.s.length) this.fail("text after a based number");
      return e;
    }
    const e = this.sum();
    this.ws();
    if (this.pos < this.s.length) this.fail(`unexpected "${this.s.slice(this.pos, this.pos + 12)}"`);
    return e;
  }

  private fail(msg: string): never {
    throw new ParseError(`latex: ${msg} at ${this.pos}`);
  }

  private ws(): void {
    while (this.pos < this.s.length && this.s.charCodeAt(this.pos) <= 32) this.pos++;
  }

  private peek(): string {
    this.ws();
    return this.s[this.pos] ?? "";
  }

  /** The command name at pos (after the backslash), without consuming it. */
  private peekCmd(): string | null {
    this.ws();
    if (this.s[this.pos] !== "\\") return null;
    const m = /^\\([A-Za-z]+|.)/.exec(this.s.slice(this.pos, this.pos + 24));
    return m ? m[1] : null;
  }

  private takeCmd(name: string): boolean {
    if (this.peekCmd() !== name) return false;
    this.pos += 1 + name.length;
    return true;
  }

  private expect(c: string): void {
    if (this.peek() !== c) this.fail(`expected "${c}"`);
    this.pos++;
  }

  private sum(): Expr {
    if (++this.depth > MAX_DEPTH) this.fail("nested too deeply");
    let left = this.term();
    for (;;) {
      const c = this.peek();
      if (c === "+") {
        this.pos++;
        left = { t: "add", a: left, b: this.term() };
      } else if (c === "-") {
        this.pos++;
        left = { t: "sub", a: left, b: this.term() };
      } else if (this.takeCmd("pm") || this.takeCmd("mp")) {
        left = { t: "pm", a: left, b: this.term() };
      } else break;
    }
    this.depth--;
    return left;
  }

  private term(): Expr {
    let left = this.unary();
    let first = true;
    for (;;) {
      const c = this.peek();
      const cmd = this.peekCmd();
      if (c === "*" || cmd === "cdot" || cmd === "times") {
        if (c === "*") this.pos++;
        else this.takeCmd(cmd!);
        left = { t: "mul", a: left, b: this.unary() };
      } else if (c === "/" || cmd === "div") {
        if (c === "/") this.pos++;
        else this.takeCmd("div");
        left = { t: "div", a: left, b: this.unary() };
      } else if (this.startsFactor()) {
        const mixed = first ? this.mixedNumber(left) : null;
        left = mixed ?? { t: "mul", a: left, b: this.power() };
      } else break;
      first = false;
    }
    return left;
  }

  /**
   * `2\frac{1}{2}` is 5/2 (a mixed number), not 2·(1/2): integer parts only,
   * and only when the mixed number is the whole answer (MATH's golds write
   * `6\frac{1}{4}` alone). Inside a sum or product `3\frac{1}{2}` is a
   * product (`1+3\frac12` is 5/2), the reading of DeepScaleR's and
   * Qwen2.5-Math's graders for anything but a lone "a b/c".
   */
  private mixedNumber(left: Expr): Expr | null {
    const whole = left.t === "neg" ? left.a : left;
    if (whole.t !== "num" || whole.v.includes(".")) return null;
    if (!/^\s*[-+]?\s*\d+\s*$/.test(this.s.slice(0, this.pos))) return null;
    const m = /^\s*\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))\s*$/.exec(this.s.slice(this.pos));
    if (!m) return null;
    this.pos += m[0].length;
    const frac: Expr = { t: "div", a: { t: "num", v: m[1] ?? m[2] }, b: { t: "num", v: m[3] ?? m[4] } };
    const sum: Expr = { t: "add", a: whole, b: frac };
    return left.t === "neg" ? { t: "neg", a: sum } : sum;
  }

  private startsFactor(): boolean {
    const c = this.peek();
    if (c === "") return false;
    if (/[0-9.A-Za-z([{]/.test(c)) return true;
    if (c === "|") return this.absDepth === 0;
    if (c === "\\") {
      const cmd = this.peekCmd();
      return cmd !== null && /^[A-Za-z]/.test(cmd) && !INFIX_CMDS.has(cmd);
    }
    return false;
  }

  private unary(): Expr {
    const c = this.peek();
    if (c === "-") {
      this.pos++;
      return { t: "neg", a: this.unary() };
    }
    if (c === "+") {
      this.pos++;
      return this.unary();
    }
    if (this.takeCmd("pm") || this.takeCmd("mp")) return { t: "pm", a: null, b: this.unary() };
    return this.power();
  }

  private power(): Expr {
    const base = this.postfix();
    if (this.peek() === "^") {
      this.pos++;
      let e: Expr = { t: "pow", a: base, b: this.script() };
      while (this.peek() === "!" && this.s[this.pos + 1] !== "=") {
        this.pos++;
        e = { t: "fact", a: e };
      }
      return e;
    }
    return base;
  }

  private postfix(): Expr {
    let a = this.atom();
    while (this.peek() === "!" && this.s[this.pos + 1] !== "=") {
      this.pos++;
      a = { t: "fact", a };
    }
    return a;
  }

  /** A superscript: a brace group, a whole number (`2^10` means 2^{10}), a letter, or a signed one. */
  private script(): Expr {
    const c = this.peek();
    if (c === "{") return this.group("{", "}");
    if (c === "-") {
      this.pos++;
      return { t: "neg", a: this.script() };
    }
    if (c === "+") {
      this.pos++;
      return this.script();
    }
    if (/[0-9]/.test(c)) return this.number();
    if (/[A-Za-z]/.test(c)) {
      this.pos++;
      return this.letter(c);
    }
    if (c === "\\" || c === "(") return this.atom();
    return this.fail("bad exponent");
  }

  /** A macro argument: a brace group, or one digit, letter or command. */
  private arg(): Expr {
    const c = this.peek();
    if (c === "{") return this.group("{", "}");
    if (/[0-9]/.test(c)) {
      this.pos++;
      return { t: "num", v: c };
    }
    if (/[A-Za-z]/.test(c)) {
      this.pos++;
      return this.letter(c);
    }
    if (c === "\\") return this.atom();
    return this.fail("missing argument");
  }

  private group(open: string, close: string): Expr {
    this.expect(open);
    const a = this.sum();
    if (open === "{" && this.takeCmd("over")) {
      const b = this.sum();
      this.expect(close);
      return { t: "div", a, b };
    }
    if (open === "{" && this.takeCmd("choose")) {
      const b = this.sum();
      this.expect(close);
      return { t: "fn", name: "binom", args: [a, b] };
    }
    this.expect(close);
    return a;
  }

  private number(): Expr {
    const m = /^(?:\d+(?:\.\d*)?|\.\d+)/.exec(this.s.slice(this.pos, this.pos + 4096));
    if (!m) return this.fail("bad number");
    this.pos += m[0].length;
    let v = m[0];
    if (v.includes(".")) {
      const rep = /^\s*\\overline\s*\{\s*(\d{1,32})\s*\}/.exec(this.s.slice(this.pos, this.pos + 64));
      if (rep) {
        this.pos += rep[0].length;
        return repeatingDecimal(v, rep[1]);
      }
    }
    if (v.endsWith(".")) v = v.slice(0, -1);
    if (v.startsWith(".")) v = "0" + v;
    if (this.s[this.pos] === "_") return { t: "num", v: this.baseValue(v) };
    return { t: "num", v };
  }

  /**
   * A base subscript after digits (`40_8`, `1011_{2}`, `A3_{16}` via the
   * letter path): the value of the digits in that base, as a decimal string.
   * So `40_8` is 32 and never equals `40_9` (36). Digits not valid in the
   * base (`19_8`), a fraction part, or a base outside 2..36 are no number
   * (a ParseError: the answer is compared as text).
   */
  private baseValue(digits: string): string {
    this.pos++; // "_"
    const m = /^(?:\{\s*(\d{1,2})\s*\}|(\d))/.exec(this.s.slice(this.pos, this.pos + 8));
    if (!m) return this.fail("bad base subscript");
    this.pos += m[0].length;
    const base = Number(m[1] ?? m[2]);
    if (base < 2 || base > 36 || digits.includes(".") || digits.length > 64) return this.fail("bad base");
    let v = 0n;
    for (const ch of digits.toUpperCase()) {
      const d = parseInt(ch, 36);
      if (!(d < base)) return this.fail(`digit ${ch} in base ${base}`);
      v = v * BigInt(base) + BigInt(d);
    }
    return v.toString();
  }

  private letter(c: string): Expr {
    if (c === "e") return { t: "const", name: "e" };
    if (c === "i") return { t: "const", name: "i" };
    let name = c;
    if (this.s[this.pos] === "_") {
      this.pos++;
      const m = /^(?:\{\s*([A-Za-z0-9]{1,8})\s*\}|([A-Za-z0-9]))/.exec(this.s.slice(this.pos, this.pos + 16));
      if (!m) this.fail("bad subscript");
      this.pos += m[0].length;
      name += "_" + (m[1] ?? m[2]);
    }
    return { t: "sym", name };
  }

  private atom(): Expr {
    const c = this.peek();
    if (/[0-9.]/.test(c)) return this.number();
    if (/[A-Za-z]/.test(c)) {
      const word = /^[A-Za-z]+/.exec(this.s.slice(this.pos, this.pos + 64))![0];
      if (word.length >= 3) {
        const w = WORDS[word];
        if (!w) this.fail(`text "${word}"`);
        this.pos += word.length;
        if (w === "pi") return { t: "const", name: "pi" };
        return this.func(w);
      }
      this.pos++;
      return this.letter(c);
    }
    if (c === "(") return this.group("(", ")");
    if (c === "[") return this.group("[", "]");
    if (c === "{") return this.group("{", "}");
    if (c === "|" && this.absDepth === 0) {
      this.pos++;
      this.absDepth++;
      const a = this.sum();
      this.absDepth--;
      this.expect("|");
      return { t: "fn", name: "abs", args: [a] };
    }
    if (c === "\\") {
      const cmd = this.peekCmd();
      if (cmd === null) return this.fail("bad command");
      this.pos += 1 + cmd.length;
      return this.command(cmd);
    }
    return this.fail(c === "" ? "unexpected end" : `unexpected "${c}"`);
  }

  private command(cmd: string): Expr {
    switch (cmd) {
      case "frac": {
        const a = this.arg();
        return { t: "div", a, b: this.arg() };
      }
      case "binom": {
        const a = this.arg();
        return { t: "fn", name: "binom", args: [a, this.arg()] };
      }
      case "sqrt": {
        if (this.peek() === "[") {
          const n = this.group("[", "]");
          return { t: "fn", name: "root", args: [this.arg(), n] };
        }
        return { t: "fn", name: "sqrt", args: [this.arg()] };
      }
      case "pi":
        return { t: "const", name: "pi" };
      case "infty":
      case "infinity":
        return { t: "const", name: "inf" };
      case "lfloor": {
        const a = this.sum();
        if (!this.takeCmd("rfloor")) this.fail("expected \\rfloor");
        return { t: "fn", name: "floor", args: [a] };
      }
      case "lceil": {
        const a = this.sum();
        if (!this.takeCmd("rceil")) this.fail("expected \\rceil");
        return { t: "fn", name: "ceil", args: [a] };
      }
      case "lvert":
      case "vert": {
        const a = this.sum();
        if (!this.takeCmd("rvert") && !this.takeCmd("vert")) this.fail("expected \\rvert");
        return { t: "fn", name: "abs", args: [a] };
      }
    }
    if (GREEK.has(cmd)) return { t: "sym", name: cmd };
    if (cmd in FUNCS || cmd === "arcsec" || cmd === "arccsc" || cmd === "arccot") {
      if (!(cmd in FUNCS)) this.fail(`unsupported function \\${cmd}`);
      return this.func(cmd);
    }
    return this.fail(`unsupported command \\${cmd}`);
  }

  /** `\sin x`, `\sin(x)`, `\sin^2 x`, `\sin^{-1} x`, `\log_2 8`. */
  private func(word: string): Expr {
    if (word === "sqrt") {
      return { t: "fn", name: "sqrt", args: [this.peek() === "(" ? this.group("(", ")") : this.arg()] };
    }
    let name: Fn = FUNCS[word];
    let base: Expr | null = null;
    let power: Expr | null = null;
    for (let k = 0; k < 2; k++) {
      if (this.peek() === "_" && word === "log") {
        this.pos++;
        base = this.script();
      } else if (this.peek() === "^") {
        this.pos++;
        power = this.script();
        if (power.t === "neg" && power.a.t === "num" && power.a.v === "1" && INVERSE[name]) {
          name = INVERSE[name]!;
          power = null;
        }
      }
    }
    const arg = this.peek() === "(" ? this.group("(", ")") : this.term();
    let e: Expr = base
      ? { t: "fn", name: "logb", args: [arg, base] }
      : { t: "fn", name, args: [arg] };
    if (power) e = { t: "pow", a: e, b: power };
    return e;
  }
}

/**
 * A repeating decimal I.N\overline{R} (0.\overline{3}, 0.1\overline{6}) as the
 * exact fraction (INR - IN) / (10^|N| (10^|R| - 1)).
 */
function repeatingDecimal(written: string, rep: string): Expr {
  const [whole, frac] = written.split(".");
  const a = BigInt((whole || "0") + frac + rep) - BigInt((whole || "0") + frac);
  const d = (10n ** BigInt(frac.length)) * (10n ** BigInt(rep.length) - 1n);
  return { t: "div", a: { t: "num", v: a.toString() }, b: { t: "num", v: d.toString() } };
}

/** The expressions an answer with ± stands for (one ± choice for all of them). */
export function expandPm(e: Expr): Expr[] {
  if (!hasPm(e)) return [e];
  return [replacePm(e, 1), replacePm(e, -1)];
}

function hasPm(e: Expr): boolean {
  switch (e.t) {
    case "pm":
      return true;
    case "add": case "sub": case "mul": case "div": case "pow":
      return hasPm(e.a) || hasPm(e.b);
    case "neg": case "fact":
      return hasPm(e.a);
    case "fn":
      return e.args.some(hasPm);
    default:
      return false;
  }
}

function replacePm(e: Expr, sign: 1 | -1): Expr {
  switch (e.t) {
    case "pm": {
      const b = replacePm(e.b, sign);
      if (e.a === null) return sign > 0 ? b : { t: "neg", a: b };
      return { t: sign > 0 ? "add" : "sub", a: replacePm(e.a, sign), b };
    }
    case "add": case "sub": case "mul": case "div": case "pow":
      return { t: e.t, a: replacePm(e.a, sign), b: replacePm(e.b, sign) };
    case "neg": case "fact":
      return { t: e.t, a: replacePm(e.a, sign) };
    case "fn":
      return { t: "fn", name: e.name, args: e.args.map((x) => replacePm(x, sign)) };
    default:
      return e;
  }
}
