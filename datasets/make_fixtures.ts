/**
 * Writes the loader fixtures in datasets/fixtures/: the same six problems
 * (written for this project, not taken from any benchmark) as JSON, JSONL
 * and Parquet. Run: bun datasets/make_fixtures.ts
 * tests/datasets.test.ts checks that the three load to the same problems and
 * that the committed files equal what this script writes.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeParquet } from "../src/data/parquet_write.ts";

export interface FixtureRow {
  id: string;
  problem: string;
  answer: string;
  solution: string | null;
  subject: string;
  level: number;
}

export const FIXTURE_ROWS: FixtureRow[] = [
  { id: "tiny/1", problem: "What is $7 \\times 6$?", answer: "42", solution: "$7 \\times 6 = \\boxed{42}$.", subject: "Arithmetic", level: 1 },
  { id: "tiny/2", problem: "Simplify $\\frac{6}{8}$.", answer: "\\frac{3}{4}", solution: "Divide both by 2: $\\boxed{\\frac{3}{4}}$.", subject: "Arithmetic", level: 1 },
  { id: "tiny/3", problem: "Solve $x^2 = 2$ for $x > 0$.", answer: "\\sqrt{2}", solution: null, subject: "Algebra", level: 2 },
  { id: "tiny/4", problem: "How many subsets does a set of 5 elements have?", answer: "32", solution: "Each element is in or out: $2^5 = \\boxed{32}$.", subject: "Counting & Probability", level: 2 },
  { id: "tiny/5", problem: "Find the interval of $x$ with $|x - 1| < 2$.", answer: "(-1,3)", solution: "$-2 < x - 1 < 2$ gives $\\boxed{(-1,3)}$.", subject: "Algebra", level: 3 },
  { id: "tiny/6", problem: "Caf\u00e9 prices: 3 coffees at \u20ac2 each cost how many euros?", answer: "6", solution: "$3 \\cdot 2 = \\boxed{6}$.", subject: "Prealgebra", level: 1 },
];

/** JSON keeps numeric answers as numbers (the loader reads 42 as "42") and omits null solutions. */
function jsonRow(r: FixtureRow): Record<string, unknown> {
  const o: Record<string, unknown> = { id: r.id, problem: r.problem, answer: /^\d+$/.test(r.answer) ? Number(r.answer) : r.answer };
  if (r.solution !== null) o.solution = r.solution;
  o.subject = r.subject;
  o.level = r.level;
  return o;
}

export function fixtureFiles(): Record<string, Uint8Array | string> {
  return {
    "tiny.json": JSON.stringify(FIXTURE_ROWS.map(jsonRow), null, 2) + "\n",
    "tiny.jsonl": FIXTURE_ROWS.map((r) => JSON.stringify(jsonRow(r))).join("\n") + "\n",
    "tiny.parquet": writeParquet([
      { name: "id", type: "string", values: FIXTURE_ROWS.map((r) => r.id) },
      { name: "problem", type: "string", values: FIXTURE_ROWS.map((r) => r.problem) },
      { name: "answer", type: "string", values: FIXTURE_ROWS.map((r) => r.answer) },
      { name: "solution", type: "string", optional: true, values: FIXTURE_ROWS.map((r) => r.solution) },
      { name: "subject", type: "string", values: FIXTURE_ROWS.map((r) => r.subject) },
      { name: "level", type: "int64", values: FIXTURE_ROWS.map((r) => r.level) },
    ]),
  };
}

if (import.meta.main) {
  const dir = join(import.meta.dir, "fixtures");
  mkdirSync(dir, { recursive: true });
  for (const [name, data] of Object.entries(fixtureFiles())) {
    writeFileSync(join(dir, name), data);
    console.log(`wrote ${join(dir, name)}`);
  }
}
