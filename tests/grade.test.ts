// Answer extraction and grading: the case table in grade_cases.jsonl (both
// argument orders), extraction rules, pathological inputs within the work
// budget (and a generous hang guard), throughput (logged; the figures are in
// benchmarks/RESULTS.md), and the `siri grade` command in a subprocess.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compareAnswers, extractAnswer, gradeResponse, isEquivalent, normalizeAnswer, WORK_BUDGET } from "../src/grade/index.ts";
import { gradeMix, loadCases, mixResponse } from "./grade_helpers.ts";

const ROOT = join(import.meta.dir, "..");
const CASES = loadCases("grade_cases.jsonl");

/**
 * Hang guard only: verdicts never depend on time (budgets are work units),
 * and a pathological input costs at most WORK_BUDGET units (~tens of ms idle);
 * this catches an unbounded loop, not a slow machine.
 */
const HANG_GUARD_MS = 5000;
/** The most one comparison may spend: its budget plus the one step that overran it (<= 320 nodes, compiled and evaluated at 6 points). */
const MAX_WORK = WORK_BUDGET + 2 * 160 * 50;

function timed<T>(f: () => T): { v: T; ms: number } {
  const t = performance.now();
  const v = f();
  return { v, ms: performance.now() - t };
}

describe("grading table", () => {
  test("has at least 150 cases, true and false in every category", () => {
    expect(CASES.length).toBeGreaterThanOrEqual(150);
    const cats = new Map<string, { t: number; f: number }>();
    for (const c of CASES) {
      const e = cats.get(c.category) ?? { t: 0, f: 0 };
      if (c.correct) e.t++;
      else e.f++;
      cats.set(c.category, e);
    }
    for (const cat of ["integer", "bigint", "decimal", "fraction", "mixed", "normalize", "roots", "pi", "power",
      "factorial", "polynomial", "complex", "functions", "tuple", "set", "matrix", "choice", "equation", "trap", "text"]) {
      const e = cats.get(cat);
      expect(e, `category ${cat}`).toBeDefined();
      expect(e!.t, `true cases in ${cat}`).toBeGreaterThan(0);
      expect(e!.f, `false cases in ${cat}`).toBeGreaterThan(0);
    }
  });

  test.each(CASES.map((c) => [`${c.category}: ${c.gold} vs ${c.pred}${c.note ? ` (${c.note})` : ""}`, c] as const))(
    "%s",
    (_name, c) => {
      expect(isEquivalent(c.gold, c.pred)).toBe(c.correct);
      expect(isEquivalent(c.pred, c.gold), "symmetric").toBe(c.correct);
    },
  );

  test("a missing prediction is wrong, an identical one right", () => {
    expect(isEquivalent("5", null)).toBe(false);
    expect(isEquivalent("\\text{anything at all}", "\\text{anything at all}")).toBe(true);
  });
});

describe("normalisation", () => {
  test.each([
    ["\\left( 1, 2 \\right)", "( 1, 2 )"],
    ["\\dfrac{1}{2}", "\\frac{1}{2}"],
    ["1{,}234{,}567", "1234567"],
    ["1,234,567", "1234567"],
    ["$12$", "12"],
    ["30^{\\circ}", "30"],
    ["45\\%", "45"],
    ["12\\text{ cm}", "12"],
    ["7.", "7"],
    ["\\text{(B)}", "(B)"],
  ])("%s -> %s", (raw, want) => {
    expect(normalizeAnswer(raw)).toBe(want);
  });
});

describe("extraction", () => {
  test.each([
    ["the answer is \\boxed{42}.", "42"],
    ["first \\boxed{1} then \\boxed{2}", "2"],
    ["\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"],
    ["\\boxed{\\{1,2\\}}", "\\{1,2\\}"],
    ["\\boxed{{a}_{1}}", "{a}_{1}"],
    ["so $\\boxed 5$.", "5"],
    ["\\boxed 17\nmore text", "17"],
    ["\\fbox{7}", "7"],
    ["\\boxed {  3  }", "3"],
    ["$$\\boxed{x = \\left(1, 2\\right]}$$", "x = \\left(1, 2\\right]"],
    ["no box here: 42", null],
    ["\\boxed{}", null],
    ["an answer \\boxed{5} then cut off \\boxed{12", null],
    ["\\boxedfoo{3}", null],
    ["\\boxed{\\text{(C)}}", "\\text{(C)}"],
  ] as [string, string | null][])("%s", (response, want) => {
    expect(extractAnswer(response)).toBe(want);
  });

  test("after </think>: only the text after it (DeepScaleR's rule)", () => {
    const r = "<think>maybe \\boxed{3}</think> The answer is \\boxed{4}.";
    expect(extractAnswer(r, { afterThink: true })).toBe("4");
    expect(extractAnswer("<think>maybe \\boxed{3}</think> so it is 3.", { afterThink: true })).toBe(null);
    expect(extractAnswer("<think>still thinking \\boxed{3}", { afterThink: true })).toBe(null);
    expect(extractAnswer("<think>still thinking \\boxed{3}")).toBe("3");
    expect(extractAnswer("a</think>b</think> \\boxed{9}", { afterThink: true })).toBe("9");
  });

  test("gradeResponse: extract then compare", () => {
    expect(gradeResponse("... so $\\boxed{\\dfrac{1}{2}}$", "0.5")).toEqual({ extracted: "\\dfrac{1}{2}", correct: true });
    expect(gradeResponse("\\boxed{1} ... \\boxed{2}", "1")).toEqual({ extracted: "2", correct: false });
    expect(gradeResponse("no box", "1")).toEqual({ extracted: null, correct: false });
  });
});

describe("pathological inputs return in bounded time", () => {
  const junk = Array.from({ length: 20_000 }, (_, i) => String.fromCharCode(33 + ((i * 7919) % 90))).join("");
  const cases: [string, string, string, boolean][] = [
    ["3000 nested braces", "5", "{".repeat(3000) + "5" + "}".repeat(3000), false],
    ["10^{10^{10^{10}}}", "5", "10^{10^{10^{10}}}", false],
    ["tower vs tower + 1", "10^{10^{10}}", "10^{10^{10}}+1", false],
    ["huge factorial", "5", "99999999!", false],
    ["huge binomial", "5", "\\binom{10^{9}}{5\\cdot 10^{8}}", false],
    ["huge factorial difference", "5", "(10^{100})! - (10^{100})! + 5", false],
    ["20,000 letters", "5", "x".repeat(20_000), false],
    ["20,000 characters of junk", "5", junk, false],
    ["500 nested fractions", "5", "\\frac{".repeat(500) + "1" + "}{2}".repeat(500), false],
    ["5000 nested parentheses", "5", "(".repeat(5000) + "5" + ")".repeat(5000), false],
    ["2000 \\left( \\right)", "5", "\\left(".repeat(2000) + "5" + "\\right)".repeat(2000), false],
    ["5000 minus signs", "5", "-".repeat(5000) + "5", false],
    ["3000 terms", "5", "1+".repeat(3000) + "1", false],
    ["2000 nested roots", "5", "\\sqrt{".repeat(2000) + "5" + "}".repeat(2000), false],
    ["a power tower of 2000", "5", "2^".repeat(2000) + "2", false],
    ["a set of 5000 numbers", "5", "\\{" + Array.from({ length: 5000 }, (_, i) => i).join(",") + "\\}", false],
    ["a list of 5000 numbers vs a permutation", Array.from({ length: 5000 }, (_, i) => i).join(","),
      Array.from({ length: 5000 }, (_, i) => 4999 - i).join(","), false],
    ["100 large factorials", "5", Array(100).fill("2999!").join("+"), false],
    ["100 distinct large factorials", "5", Array.from({ length: 100 }, (_, i) => `${2900 + i}!`).join("+"), false],
    ["60 powers of 2^{39999}", "5", Array(60).fill("(2^{39999})").join("\\cdot "), false],
    ["100 nested exponent towers", "x", Array(100).fill("x^{x^{x}}").join("+"), false],
    ["a union of 30 sets", "5", Array(30).fill("\\{1,2,3,4,5\\}").join("\\cup "), false],
    ["32 shuffled expressions in x, equal", Array.from({ length: 32 }, (_, i) => `x+${i}`).join(","),
      Array.from({ length: 32 }, (_, i) => `${31 - i}+x`).join(","), true],
    ["450-digit integers, equal", "123456789".repeat(50), "123456789".repeat(50), true],
    ["450-digit integers, last digit differs", "123456789".repeat(50), "123456789".repeat(49) + "123456788", false],
  ];
  test.each(cases)("%s", (_name, gold, pred, want) => {
    const a = timed(() => compareAnswers(gold, pred));
    expect(a.v.equal).toBe(want);
    expect(a.v.work).toBeLessThanOrEqual(MAX_WORK);
    expect(a.ms).toBeLessThan(HANG_GUARD_MS);
    const b = timed(() => gradeResponse(`<think>${junk}</think> so \\boxed{${pred}}`, gold, { afterThink: true }));
    expect(b.v.correct).toBe(want);
    expect(b.ms).toBeLessThan(HANG_GUARD_MS);
  });

  test("a response of 20,000 characters with thousands of unclosed braces", () => {
    const r = timed(() => gradeResponse("\\boxed{" + "{".repeat(20_000), "1"));
    expect(r.v).toEqual({ extracted: null, correct: false });
    expect(r.ms).toBeLessThan(HANG_GUARD_MS);
  });
});

describe("throughput", () => {
  test("ordinary responses: all verdicts right (rate logged)", () => {
    const n = 3500;
    const t = performance.now();
    let right = 0;
    for (let i = 0; i < n; i++) {
      const [gold, pred, want] = gradeMix(i);
      const g = gradeResponse(mixResponse(pred), gold, { afterThink: true });
      if (g.correct === want) right++;
    }
    const perSec = n / ((performance.now() - t) / 1000);
    console.log(`[grade] ${perSec.toFixed(0)} responses/s (all answers distinct)`);
    expect(right).toBe(n); // speed is measured, not asserted (shared CI machines)
  });
});

describe("siri grade (subprocess)", () => {
  const run = (args: string[]) => {
    const p = Bun.spawnSync([process.execPath, "src/cli.ts", "grade", ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
  };

  test("--gold --response prints the extracted answer and the verdict", () => {
    const r = run(["--gold", "\\frac12", "--response", "<think>hmm</think> so $\\boxed{0.5}$."]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/extracted\s+0\.5\n/);
    expect(r.out).toMatch(/verdict\s+correct/);
    const w = run(["--gold", "3", "--response", "<think>\\boxed{3}", "--after-think"]);
    expect(w.out).toMatch(/extracted\s+\(none\)/);
    expect(w.out).toMatch(/verdict\s+wrong/);
  });

  test("--file writes one line per input line, in order, other fields kept", () => {
    const dir = mkdtempSync(join(tmpdir(), "siri-grade-"));
    const input = join(dir, "cases.jsonl");
    const out = join(dir, "out.jsonl");
    const rows = [
      { id: "a", gold: "5", response: "</think>\\boxed{5}", extra: [1, 2] },
      { id: "b", gold: "(1,2)", response: "</think>\\boxed{[1,2]}" },
      { id: "e", gold: "5", response: "no think tags \\boxed{5}" },
      { id: "c", gold: 7, response: "no answer" },
      { id: "d", gold: "4", response: "<think>\\boxed{3}</think>\\boxed{4}" },
    ];
    writeFileSync(input, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
    const r = run(["--file", input, "--out", out, "--after-think"]);
    expect(r.code).toBe(0);
    const got = readFileSync(out, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(got).toEqual([
      { ...rows[0], extracted: "5", correct: true },
      { ...rows[1], extracted: "[1,2]", correct: false },
      { ...rows[2], extracted: null, correct: false }, // no </think>: no answer under --after-think
      { ...rows[3], extracted: null, correct: false },
      { ...rows[4], extracted: "4", correct: true },
    ]);
    const plain = run(["--file", input]); // stdout, without the after-think rule
    expect(plain.code).toBe(0);
    const lines = plain.out.trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.id, l.extracted, l.correct])).toEqual([
      ["a", "5", true],
      ["b", "[1,2]", false],
      ["e", "5", true],
      ["c", null, false],
      ["d", "4", true],
    ]);
  });

  test("--file names the line of bad input", () => {
    const dir = mkdtempSync(join(tmpdir(), "siri-grade-"));
    const input = join(dir, "bad.jsonl");
    writeFileSync(input, '{"gold": "1", "response": "\\\\boxed{1}"}\n{"gold": "1"}\n');
    const r = run(["--file", input]);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(`${input}:2`);
    expect(r.err).toContain('"response"');
    writeFileSync(input, "{not json\n");
    const j = run(["--file", input]);
    expect(j.code).not.toBe(0);
    expect(j.err).toContain(`${input}:1: not valid JSON`);
  });
});
