/**
 * Grader agreement and throughput, on the CPU (no GPU involved).
 *
 *   bun benchmarks/grade.ts [--against DIR] [--n 2000] [--rounds 8]
 *
 * Grades with this checkout's src/grade/ and, with --against, with the
 * src/grade/ of another checkout (e.g. a copy of main) in the same process,
 * throughput rounds alternating between the two, so both are measured on the
 * same machine under the same load.
 * Agreement: the case table tests/grade_cases.jsonl (both argument orders),
 * and the answer-form cases tests/grade_forms.jsonl (this checkout's, so both
 * versions are measured on the same cases); misses are listed.
 * Throughput: extract + grade of distinct responses of ~1,700 characters (no
 * parse or compile cache helps), n per round, median over the rounds, per
 * CPU-second of this process (steady on a shared, loaded machine) and per
 * wall-clock second.
 * The last line of stdout is one JSON object with every figure.
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { gradeMix, loadCases, mixResponse, type Case } from "../tests/grade_helpers.ts";

const { values } = parseArgs({
  options: {
    against: { type: "string" },
    n: { type: "string", default: "2000" },
    rounds: { type: "string", default: "8" },
  },
});

interface Grader {
  isEquivalent(gold: string, pred: string): boolean;
  gradeResponse(response: string, gold: string, opts: { afterThink?: boolean }): { correct: boolean };
}

const roots = [join(import.meta.dir, ".."), ...(values.against ? [resolve(values.against)] : [])];
const graders: Grader[] = [];
for (const r of roots) graders.push((await import(join(r, "src/grade/index.ts"))) as Grader);

interface Agreement {
  agree: number;
  total: number;
  falseAccepts: number;
  misses: string[];
  byCategory: Record<string, string>;
}

function agreement(g: Grader, cases: Case[]): Agreement {
  let agree = 0;
  let falseAccepts = 0;
  const misses: string[] = [];
  const cat = new Map<string, [number, number]>();
  for (const c of cases) {
    for (const [a, b] of [[c.gold, c.pred], [c.pred, c.gold]]) {
      const v = g.isEquivalent(a, b);
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

const tables = { table: loadCases("grade_cases.jsonl"), forms: loadCases("grade_forms.jsonl") };
const agreements = graders.map((g) => ({ table: agreement(g, tables.table), forms: agreement(g, tables.forms) }));

const n = Number(values.n);
const rounds = Number(values.rounds);
const cpuRates: number[][] = graders.map(() => []);
const wallRates: number[][] = graders.map(() => []);
let offset = 1_000_000; // new answers every round: no cache hits
for (let r = 0; r < rounds; r++) {
  for (let k = 0; k < graders.length; k++) {
    // Alternate which version goes first, so neither always follows the other.
    const gi = r % 2 === 0 ? k : graders.length - 1 - k;
    let right = 0;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const [gold, pred, want] = gradeMix(offset + i);
      if (graders[gi].gradeResponse(mixResponse(pred), gold, { afterThink: true }).correct === want) right++;
    }
    const wall = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    offset += n;
    cpuRates[gi].push(n / ((c.user + c.system) / 1e6));
    wallRates[gi].push(n / wall);
    if (right !== n) throw new Error(`${roots[gi]}: throughput mix: ${n - right} wrong verdicts`);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const pct = (x: { agree: number; total: number }) => ((100 * x.agree) / x.total).toFixed(2);
const report = roots.map((root, k) => {
  const a = agreements[k];
  console.log(`== ${root}`);
  for (const name of ["table", "forms"] as const) {
    console.log(`${name}: ${a[name].agree}/${a[name].total} (${pct(a[name])}%), false accepts ${a[name].falseAccepts}`);
    for (const m of a[name].misses) console.log(`  ${name} miss: ${m}`);
  }
  const cpu = median(cpuRates[k]);
  const wall = median(wallRates[k]);
  console.log(`throughput: ${cpu.toFixed(0)} responses per CPU-second, ${wall.toFixed(0)} per wall second (medians of ${rounds} rounds of ${n})`);
  return {
    root,
    table: { agree: a.table.agree, total: a.table.total, falseAccepts: a.table.falseAccepts },
    forms: { agree: a.forms.agree, total: a.forms.total, falseAccepts: a.forms.falseAccepts, byCategory: a.forms.byCategory },
    responsesPerCpuSec: Math.round(cpu),
    responsesPerSec: Math.round(wall),
  };
});
console.log(JSON.stringify(report));
