// String-level LaTeX clean-up of an answer before it is parsed: everything
// that changes how an answer is written but not what it means. Each rule is
// one regex pass, so the cost is linear in the (capped) answer length.

/** Answers longer than this are compared as normalised strings only. */
export const MAX_ANSWER_CHARS = 600;

const UNITS = [
  "units?", "square units?", "sq units?", "cm\\^?2?", "mm", "km", "meters?", "metres?", "centimeters?",
  "kilometers?", "inches", "inch", "feet", "foot", "ft", "yards?", "miles?", "mph", "hours?", "hrs?",
  "minutes?", "mins?", "seconds?", "secs?", "days?", "weeks?", "months?", "years?", "dollars?", "cents?",
  "degrees?", "radians?", "grams?", "kg", "pounds?", "lbs?", "liters?", "litres?", "gallons?", "people",
  "ways", "times", "points?", "students?", "cups?", "pages?", "books?", "marbles?", "cookies?", "coins?",
  "handshakes?", "games?", "steps?", "boxes?", "squares?", "triangles?", "digits?", "numbers?", "integers?",
  // Percent written as a word means the same as \% (stripped below: 28\% == 28, never 0.28).
  "percent", "per cent", "pct",
];
/** A unit word after a number or a closing bracket, or after a space. */
const UNIT_RE = new RegExp(`^(.*?[0-9})]|.*?\\S\\s)\\s*(?:${UNITS.join("|")})$`);

const UNICODE: [RegExp, string][] = [
  [/\u2212|\u2013|\u2014/g, "-"],
  [/\u00d7/g, "\\times "],
  [/\u00b7|\u22c5/g, "\\cdot "],
  [/\u00f7/g, "\\div "],
  [/\u03c0/g, "\\pi "],
  [/\u221e/g, "\\infty "],
  [/\u221a/g, "\\sqrt "],
  [/\u2264/g, "\\le "],
  [/\u2265/g, "\\ge "],
  [/\u2260/g, "\\ne "],
  [/\u00b1/g, "\\pm "],
  [/\u222a/g, "\\cup "],
  [/\u00b0/g, ""],
];

/**
 * A unit in a text command at the end of an answer, with an optional power:
 * `12\mbox{ cm}^2`, `8\text{ sq ft}`, `50\mathrm{m}^{3}`, `3\text{ m/s}`. Only
 * letters, spaces, dots and slashes inside (so `\text{(B)}` and `\text{5}` are kept), after a digit or
 * a closing bracket. Convention (DeepScaleR's and Qwen2.5-Math's
 * normalisation both drop right-hand units): a unit never changes the value.
 */
const TEXT_UNIT_RE = /([0-9})])(?:\s|~|\\[,;:! ]|\\q?quad(?![A-Za-z]))*\\(?:text|mbox|mathrm|textrm|textnormal|rm)\s*\{\s*[A-Za-z][A-Za-z./ ]{0,24}(?:\^\s*\{?\s*[23]\s*\}?)?\s*\}(?:\s*\^\s*\{?\s*[23]\s*\}?)?\s*$/;

/** Commands whose brace argument is just text: `\text{abc}` -> `abc`. */
const TEXT_CMDS = /\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname|textnormal|mathsf)\s*\{([^{}]*)\}/g;

/**
 * Clean one answer. The result is still LaTeX-like text; `latex.ts` parses it.
 */
export function normalizeAnswer(raw: string): string {
  let s = raw.length > 4 * MAX_ANSWER_CHARS ? raw.slice(0, 4 * MAX_ANSWER_CHARS) : raw;
  for (const [re, to] of UNICODE) s = s.replace(re, to);
  // ASCII relations read as their LaTeX commands (>= is \ge, != is \ne).
  s = s.replace(/>=/g, "\\ge ").replace(/<=/g, "\\le ").replace(/!=/g, "\\ne ");
  s = s.replace(/\\neq?(?![A-Za-z])/g, "\\ne ");
  s = s.replace(/\\(?:boxed|fbox)\s*\{/g, "{"); // a box inside the box
  s = s.replace(/\\?\$/g, "").replace(/\\[()[\]]/g, ""); // math delimiters (\( \) \[ \])
  s = s.replace(/\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)(?![A-Za-z])\s*/g, "");
  s = s.replace(/\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits)(?![A-Za-z])/g, "");
  s = s.replace(/\\[dtc]frac(?![A-Za-z])/g, "\\frac").replace(/\\[dt]binom(?![A-Za-z])/g, "\\binom");
  s = s.replace(/\\(?:leqslant|leq|le)(?![A-Za-z])/g, "\\le ").replace(/\\(?:geqslant|geq|ge)(?![A-Za-z])/g, "\\ge ");
  s = s.replace(/\\(?:emptyset|varnothing)(?![A-Za-z])/g, "\\{\\}");
  s = s.replace(/\\mathbb\s*\{?R\}?/g, "(-\\infty,\\infty)");
  s = s.replace(/\\lt(?![A-Za-z])/g, "<").replace(/\\gt(?![A-Za-z])/g, ">");
  // Thousands separators written as {,} or ",\!" (MATH500's own gold writes
  // "11,\! 111,\! 111,\! 100", with a space), or thin spaces between digit groups.
  s = s.replace(/(\d)(?:\{,\}|,\\!)\s*(?=\d{3}(?!\d))/g, "$1");
  s = s.replace(/(\d)(?:\\,|\\!|\\ |~|\\;|\\:)(?=\d{3}(?!\d))/g, "$1");
  // Degrees and percent carry no value of their own here.
  s = s.replace(/\^\s*\{?\s*\\circ\s*\}?/g, "").replace(/\\(?:circ|degree)(?![A-Za-z])/g, "");
  s = s.replace(/\\?%/g, "");
  s = s.replace(TEXT_UNIT_RE, "$1");
  // Text answers and text units: multiple choice \text{(B)}, units \text{ cm}.
  s = s.replace(/\\text\{\s*(?:or|and)\s*\}/g, ",");
  for (let i = 0; i < 3 && TEXT_CMDS.test(s); i++) {
    TEXT_CMDS.lastIndex = 0;
    s = s.replace(TEXT_CMDS, (_m, inner: string) => inner);
  }
  TEXT_CMDS.lastIndex = 0;
  s = s.replace(/\s+(?:or|and)\s+/g, ",");
  // Spacing commands (but not the row break \\ of a matrix).
  s = s.replace(/(?<!\\)\\(?:!|,|;|:|quad|qquad|enspace|thinspace)(?![A-Za-z])/g, " ");
  s = s.replace(/(?<!\\)\\ /g, " ").replace(/~/g, " ");
  s = s.replace(/\s+/g, " ").trim();
  // Trailing full stop (not a decimal point: "5." -> "5", "\pi." -> "\pi").
  s = s.replace(/(?:\s*\.)+$/, "").trim();
  s = s.replace(/\s*\\?[.,;]\s*$/, "").trim();
  // A trailing unit word after a number or expression.
  for (let i = 0; i < 2; i++) {
    const m = UNIT_RE.exec(s);
    if (!m || /^[a-zA-Z]?$/.test(m[1].trim())) break;
    s = m[1].trim();
  }
  // Thousands separators with plain commas or spaces: only for a lone number.
  if (/^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$/.test(s)) s = s.replace(/,/g, "");
  if (/^[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?$/.test(s)) s = s.replace(/ /g, "");
  return s;
}

export interface Choice {
  letter: string;
  /** What follows the letter ("(B) 42" -> "42"), or "" for a bare letter. */
  rest: string;
}

/**
 * A multiple-choice answer: "B", "(B)", "B)", "(B) 42", "B: 42". Null when
 * it is not one, or when it names two letters ("(C) or (D)" is a hedge).
 */
export function splitChoice(s: string): Choice | null {
  const t = s.trim();
  let m = /^\(?\s*([A-E])\s*\)?$/.exec(t);
  if (m) return { letter: m[1], rest: "" };
  m = /^\(\s*([A-E])\s*\)/.exec(t) ?? /^([A-E])\)/.exec(t) ?? /^([A-E])\s*[:.]\s/.exec(t);
  if (!m) return null;
  const rest = t.slice(m[0].length).trim();
  if (/\(\s*[A-E]\s*\)|^[A-E]$|[,;]\s*[A-E]\b/.test(rest)) return null;
  return { letter: m[1], rest };
}

/** A canonical string for plain text answers: lower case, no spaces or braces. */
export function textKey(s: string): string {
  return s.toLowerCase().replace(/[\s{}]/g, "").replace(/\\/g, "");
}
