// Answer forms of issue 12, each class with true and false cases of its own
// (tests/grade_forms.jsonl, both argument orders); the numeric-closeness
// option in both settings; budgets in work units (deterministic, exact
// threshold, no clock in the grader); identical verdicts of `siri grade
// --file` on an idle machine and under a CPU-saturating load.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { compareAnswers, gradeResponse, isEquivalent, lengthCappedReward, normalizeAnswer, warmUpGrader } from "../src/grade/index.ts";
import { loadCases } from "./grade_helpers.ts";

const ROOT = join(import.meta.dir, "..");
const FORMS = loadCases("grade_forms.jsonl");

const CLASSES = [
  "relation", "equation-form", "label", "solution-set", "percent", "thousands", "matrix-form", "unit-power",
  "commuted", "fractional-power", "base", "approx", "repeating-decimal",
];

describe("answer forms", () => {
  test("every class has true and false cases", () => {
    for (const cat of CLASSES) {
      const cs = FORMS.filter((c) => c.category === cat);
      expect(cs.filter((c) => c.correct).length, `true cases in ${cat}`).toBeGreaterThan(0);
      expect(cs.filter((c) => !c.correct).length, `false cases in ${cat}`).toBeGreaterThanOrEqual(2);
    }
    expect(new Set(FORMS.map((c) => c.category))).toEqual(new Set(CLASSES));
  });

  test.each(FORMS.map((c) => [`${c.category}: ${c.gold} vs ${c.pred}${c.note ? ` (${c.note})` : ""}`, c] as const))("%s", (_n, c) => {
    expect(isEquivalent(c.gold, c.pred)).toBe(c.correct);
    expect(isEquivalent(c.pred, c.gold), "symmetric").toBe(c.correct);
  });

  test("base subscript on the gold only: its digits count (one way: a prediction's base is a claim)", () => {
    expect(isEquivalent("40_8", "40")).toBe(true);
    expect(isEquivalent("1011_{2}", "1011")).toBe(true);
    expect(isEquivalent("40", "40_8")).toBe(false); // gold forty, predicted 32
    expect(isEquivalent("10", "10_2")).toBe(false);
    expect(isEquivalent("40_8", "41")).toBe(false);
  });

  test("normalisation of the new forms", () => {
    expect(normalizeAnswer("x >= 3")).toBe("x \\ge 3");
    expect(normalizeAnswer("x<=3")).toBe("x\\le 3");
    expect(normalizeAnswer("x != 3")).toBe("x \\ne 3");
    expect(normalizeAnswer("11,\\! 111,\\! 111,\\! 100")).toBe("11111111100");
    expect(normalizeAnswer("28 percent")).toBe("28");
    expect(normalizeAnswer("12\\mbox{ cm}^2")).toBe("12");
    expect(normalizeAnswer("x^2")).toBe("x^2"); // a power that is no unit's stays
    expect(normalizeAnswer("\\text{(B)}")).toBe("(B)"); // a choice is no unit
  });
});

describe("numeric closeness option (approxDigits)", () => {
  test("default: a decimal approximation of an exact value is wrong (DeepScaleR's rule)", () => {
    expect(isEquivalent("\\sqrt2", "1.41421356")).toBe(false);
    expect(isEquivalent("\\frac{2}{3}", "0.6667")).toBe(false);
    expect(isEquivalent("\\pi", "3.14159265")).toBe(false);
    expect(gradeResponse("\\boxed{1.41421356}", "\\sqrt{2}").correct).toBe(false);
  });

  test("on: accepted at its written precision with enough significant digits", () => {
    const on = { approxDigits: 6 };
    expect(isEquivalent("\\sqrt2", "1.41421356", on)).toBe(true);
    expect(isEquivalent("1.41421356", "\\sqrt2", on)).toBe(true);
    expect(isEquivalent("\\sqrt2", "1.414214", on)).toBe(true); // rounded at the 6th decimal
    expect(isEquivalent("\\pi", "3.14159265", on)).toBe(true);
    expect(isEquivalent("\\frac{2}{3}", "0.666667", on)).toBe(true);
    expect(isEquivalent("\\sqrt2", "\\approx 1.414214", on)).toBe(true);
    expect(gradeResponse("\\boxed{1.41421356}", "\\sqrt{2}", on).correct).toBe(true);
    const reward = lengthCappedReward({ text: "\\boxed{1.41421356}", length: 5, truncated: false, cap: 100, gold: "\\sqrt2", options: on });
    expect(reward.reward).toBe(1);
  });

  test("on: still wrong when too few digits, a wrong digit, or no decimal at all", () => {
    const on = { approxDigits: 6 };
    expect(isEquivalent("\\sqrt2", "1.414", on)).toBe(false); // 4 significant digits < 6
    expect(isEquivalent("\\sqrt2", "1.41431356", on)).toBe(false); // wrong 4th decimal
    expect(isEquivalent("\\sqrt2", "1.41421366", on)).toBe(false); // off by 10 units in the last place
    expect(isEquivalent("\\pi", "3", { approxDigits: 1 })).toBe(false); // an integer is never an approximation
    expect(isEquivalent("0.333333", "0.333334", on)).toBe(false); // two decimals: both exact, different
    expect(isEquivalent("\\sqrt2", "-1.41421356", on)).toBe(false);
    expect(isEquivalent("2i", "1.41421356", on)).toBe(false); // complex values are never approximated
  });
});

describe("budgets in work units", () => {
  const pairs: [string, string][] = [
    ["x^2+2x+1", "(x+1)^2"],
    ["2x+4y-3=0", "y=-\\frac12x+\\frac34"],
    ["x<1", "-x>-1"],
    [Array.from({ length: 32 }, (_, i) => `\\sin(${i}x)+x`).join(","), Array.from({ length: 32 }, (_, i) => `x+\\sin(${31 - i}x)`).join(",")],
  ];

  test.each(pairs)("%s vs %s: the same work every time; exactly that much is needed", (a, b) => {
    const first = compareAnswers(a, b);
    expect(first.equal).toBe(true);
    expect(first.work).toBeGreaterThan(0);
    for (let i = 0; i < 3; i++) expect(compareAnswers(a, b)).toEqual(first); // caches warm now: same work
    expect(compareAnswers(a, b, { workBudget: first.work }).equal).toBe(true);
    expect(compareAnswers(a, b, { workBudget: first.work - 1 }).equal).toBe(false);
  });

  test("an answer too costly for the budget is different, whatever the clock", () => {
    const a = Array.from({ length: 32 }, (_, i) => `\\sin(${i}x)+x`).join(",");
    const b = Array.from({ length: 32 }, (_, i) => `x+\\sin(${31 - i}x)`).join(",");
    expect(isEquivalent(a, b, { workBudget: 1000 })).toBe(false);
    expect(isEquivalent(a, b)).toBe(true);
  });

  test("no clock anywhere in the grader", () => {
    const dir = join(ROOT, "src", "grade");
    for (const f of readdirSync(dir)) {
      const src = readFileSync(join(dir, f), "utf8");
      expect(src, f).not.toMatch(/performance\.now|Date\.now|new Date|process\.hrtime|setTimeout/);
    }
  });

  test("warmUpGrader is idempotent and leaves verdicts alone", () => {
    warmUpGrader();
    warmUpGrader();
    expect(isEquivalent("x^2+2x", "x(x+2)")).toBe(true);
    expect(isEquivalent("x^2+2x", "x(x+3)")).toBe(false);
  });
});

describe("verdicts under load", () => {
  test("siri grade --file: identical verdicts on an idle and a saturated CPU", async () => {
    const cases = [...loadCases("grade_cases.jsonl"), ...FORMS];
    const dir = mkdtempSync(join(tmpdir(), "siri-grade-load-"));
    const input = join(dir, "cases.jsonl");
    // Each answer boxed in a response, in both argument orders.
    const rows = cases.flatMap((c, i) => [
      { id: `${i}a`, gold: c.gold, response: `so \\boxed{${c.pred}}`, want: c.correct },
      { id: `${i}b`, gold: c.pred, response: `so \\boxed{${c.gold}}`, want: c.correct },
    ]);
    writeFileSync(input, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
    const grade = async () => {
      const p = Bun.spawn([process.execPath, "src/cli.ts", "grade", "--file", input], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
      const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
      expect(code).toBe(0);
      return out.trim().split("\n").map((l) => JSON.parse(l) as { id: string; extracted: string | null; correct: boolean; want: boolean });
    };
    const idle = await grade();
    // Busy loops on every core (and one more), started before and killed after the graded run.
    const burners = Array.from({ length: cpus().length + 1 }, () =>
      Bun.spawn([process.execPath, "-e", "let x = 0; for (;;) x = (x * 1103515245 + 12345) | 0;"], { stdout: "ignore", stderr: "ignore" }),
    );
    let busy;
    try {
      busy = await grade();
    } finally {
      for (const b of burners) b.kill();
      await Promise.all(burners.map((b) => b.exited));
    }
    expect(busy).toEqual(idle);
    expect(idle.length).toBe(rows.length);
    // And they are the table's verdicts wherever the box held the answer as written.
    const checked = idle.filter((r, i) => r.extracted === (i % 2 === 0 ? cases[i >> 1].pred : cases[i >> 1].gold));
    expect(checked.length).toBeGreaterThan(rows.length * 0.9);
    for (const r of checked) expect(r.correct, r.id).toBe(r.want);
  });
});
