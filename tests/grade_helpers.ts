// Shared by the grader's tests and benchmarks/grade.ts: the labelled case
// tables, and the response mix of the throughput figures (every answer new,
// so no parse or compile cache helps: integers, fractions, roots,
// polynomials, π, tuples; right and wrong).
import { readFileSync } from "node:fs";
import { join } from "node:path";

/** One labelled case of tests/grade_cases.jsonl or tests/grade_forms.jsonl. */
export interface Case {
  category: string;
  gold: string;
  pred: string;
  correct: boolean;
  note?: string;
}

/** The cases of a JSONL table in tests/. */
export function loadCases(name: string): Case[] {
  return readFileSync(join(import.meta.dir, name), "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Case);
}

/** ~1,700 characters of reasoning before the answer. */
export const FILLER = "Let me compute step by step. ".repeat(60);

/** Case i: [gold, predicted answer, expected verdict]. */
export function gradeMix(i: number): [string, string, boolean] {
  switch (i % 7) {
    case 0: return [`${i}`, `${i}`, true];
    case 1: return [`\\frac{${i}}{7}`, `\\dfrac{${2 * i}}{14}`, true];
    case 2: return [`${i}\\sqrt{2}`, `\\sqrt{${2 * i * i}}`, true];
    case 3: return [`x^2+${i}x`, `x(x+${i})`, true];
    case 4: return [`\\frac{${i}\\pi}{3}`, `${i}\\pi/3 + 1`, false];
    case 5: return [`(${i}, ${i + 1})`, `\\left(${i}, ${i + 1}\\right)`, true];
    default: return [`${i}`, `${i + 1}`, false];
  }
}

/** A response that boxes `pred` after a closed think block. */
export function mixResponse(pred: string): string {
  return `<think>${FILLER}</think> The answer is $\\boxed{${pred}}$.`;
}
