/**
 * Grader agreement and throughput, on the CPU (no GPU involved).
 *
 *   bun benchmarks/grade.ts [--root DIR] [--n 7000] [--rounds 3]
 *
 * --root grades with the src/grade/ of another checkout (e.g. a copy of main),
 * so one run compares two versions on the same machine at the same time.
 * Agreement: the case table tests/grade_cases.jsonl (both argument orders),
 * and the answer-form cases tests/grade_forms.jsonl when present (taken from
 * this checkout, so both versions are measured on the same cases).
 * Throughput: responses/s of extract + grade over n distinct responses of
 * ~1,700 characters (no parse or compile cache helps), median of the rounds,
 * per wall-clock second and per CPU-second of this process (the second is
 * steadier on a shared, loaded machine).
 * The last line of stdout is one JSON object with every figure.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { gradeMix, loadCases, mixResponse, type Case } from "../tests/grade_helpers.ts";

const { values } = parseArgs({
  options: {
    root: { type: "string", default: join(import.meta.dir, "..") },
    n: { type: "string", default: "7000" },
    rounds: { type: "string", default: "3" },
  },
});
const root = resolve(values.root!);
const g = await import(join(root, "src/grade/index.ts"));
if (typeof g.warmUpGrader === "function") g.warmUpGrader();

function agreement(cases: Case[]): { agree: number; total: number; falseAccepts: number; misses: string[]; byCategory: Record<string, string> } {
  let agree = 0;
  let falseAccepts = 0;
  const misses: string[] = [];
  const cat = new Map<string, [number, number]>();
  for (const c of cases) {
    for (const [a, b] of [[c.gold, c.pred], [c.pred, c.gold]]) {
      const v = g.isEquivalent(a, b) as boolean;
      const e = cat.get(c.category) ?? [0, 0];
      e[1]++;
      if (v === c.correct) e[0]++;
      cat.set(c.category, e);
      if (v === c.correct) agree++;
      else {
        if (v) falseAccepts++;
        misses.push(`${JSON.stringify(a)} vs ${JSON.stringify(b)}: want ${c.correct}`);
      }
    }
  }
  const byCategory = Object.fromEntries([...cat].map(([k, [a, t]]) => [k, `${a}/${t}`]));
  return { agree, total: 2 * cases.length, falseAccepts, misses, byCategory };
}

const table = agreement(loadCases("grade_cases.jsonl"));
const forms = existsSync(join(import.meta.dir, "..", "tests", "grade_forms.jsonl")) ? agreement(loadCases("grade_forms.jsonl")) : null;

const n = Number(values.n);
const rates: number[] = [];
const cpuRates: number[] = [];
for (let r = 0; r < Number(values.rounds); r++) {
  const off = (r + 1) * 1_000_000; // new answers every round: no cache hits
  let right = 0;
  const c0 = process.cpuUsage();
  const t = performance.now();
  for (let i = 0; i < n; i++) {
    const [gold, pred, want] = gradeMix(off + i);
    const res = g.gradeResponse(mixResponse(pred), gold, { afterThink: true });
    if (res.correct === want) right++;
  }
  rates.push(n / ((performance.now() - t) / 1000));
  const c = process.cpuUsage(c0);
  cpuRates.push(n / ((c.user + c.system) / 1e6));
  if (right !== n) throw new Error(`throughput mix: ${n - right} wrong verdicts`);
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const median = med(rates);
const cpuMedian = med(cpuRates);

const pct = (x: { agree: number; total: number }) => ((100 * x.agree) / x.total).toFixed(2);
console.log(`root ${root}`);
console.log(`table: ${table.agree}/${table.total} (${pct(table)}%), false accepts ${table.falseAccepts}`);
for (const m of table.misses) console.log(`  table miss: ${m}`);
if (forms) {
  console.log(`forms: ${forms.agree}/${forms.total} (${pct(forms)}%), false accepts ${forms.falseAccepts}`);
  for (const m of forms.misses) console.log(`  forms miss: ${m}`);
}
console.log(`throughput: ${median.toFixed(0)} responses/s wall (median of ${rates.length}; ${rates.map((x) => x.toFixed(0)).join(", ")})`);
console.log(`throughput: ${cpuMedian.toFixed(0)} responses per CPU-second (median; ${cpuRates.map((x) => x.toFixed(0)).join(", ")})`);
console.log(JSON.stringify({
  root,
  table: { agree: table.agree, total: table.total, falseAccepts: table.falseAccepts },
  forms: forms && { agree: forms.agree, total: forms.total, falseAccepts: forms.falseAccepts, byCategory: forms.byCategory },
  responsesPerSec: Math.round(median),
  responsesPerCpuSec: Math.round(cpuMedian),
}));
