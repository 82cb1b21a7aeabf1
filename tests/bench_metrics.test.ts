// Benchmark metrics against closed forms, the run folder (append-only, resumable, torn last line),
// the reports, and compare() with its Pareto SVG; all on synthetic records.
import { afterAll, describe, expect, test } from "bun:test";
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  defaultKs,
  majAtK,
  majorityVote,
  mean,
  median,
  passAtK,
  summarize,
  type DatasetMeta,
  type SampleRecord,
} from "../src/bench/metrics.ts";
import { paretoFront, paretoSvg, niceTicks } from "../src/bench/plot.ts";
import { compare, donePairs, openRunLog, readSamples, RUN_FILES, writeReports, writeRunConfig } from "../src/bench/report.ts";
import { expectClose } from "./helpers.ts";

const tmp = mkdtempSync(join(tmpdir(), "siri-bench-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let dirCount = 0;
const newDir = (name: string) => join(tmp, `${name}-${dirCount++}`);

/** C(n, k) exactly. */
function binom(n: number, k: number): bigint {
  if (k < 0 || k > n) return 0n;
  let r = 1n;
  for (let i = 1; i <= k; i++) r = (r * BigInt(n - k + i)) / BigInt(i);
  return r;
}

/** 1 - C(n-c,k)/C(n,k) from exact integers, rounded to a double. */
function passAtKExact(n: number, c: number, k: number): number {
  const num = binom(n - c, k);
  const den = binom(n, k);
  const scale = 10n ** 40n;
  return 1 - Number((num * scale) / den) / 1e40;
}

function rec(problem_id: string, sample: number, correct: boolean, extracted: string | null, response_tokens: number, stop_reason = "eos", dataset?: string): SampleRecord {
  const r: SampleRecord = { problem_id, sample, tokens: response_tokens + 50, response_tokens, extracted, correct, stop_reason };
  if (dataset !== undefined) r.dataset = dataset;
  return r;
}

describe("pass@k", () => {
  test("equals 1 - C(n-c,k)/C(n,k) for every n <= 40, c, k", () => {
    const got: number[] = [];
    const want: number[] = [];
    for (let n = 1; n <= 40; n++) {
      for (let c = 0; c <= n; c++) {
        for (let k = 1; k <= n; k++) {
          got.push(passAtK(n, c, k));
          want.push(passAtKExact(n, c, k));
        }
      }
    }
    expectClose(got, want, 1e-12, 1e-12, "pass@k vs exact binomials");
  });

  test("stays accurate where binomials overflow a double (n up to 4096)", () => {
    const cases: [number, number, number][] = [
      [1024, 1, 1],
      [1024, 3, 100],
      [2000, 17, 64],
      [4096, 1, 4095],
      [4096, 4000, 2],
      [4096, 10, 512],
    ];
    expectClose(
      cases.map(([n, c, k]) => passAtK(n, c, k)),
      cases.map(([n, c, k]) => passAtKExact(n, c, k)),
      1e-12,
      1e-10,
      "pass@k large n",
    );
  });

  test("special cases: pass@1 = c/n, pass@n = [c > 0]", () => {
    const got: number[] = [];
    const want: number[] = [];
    for (let n = 1; n <= 64; n++) {
      for (let c = 0; c <= n; c++) {
        got.push(passAtK(n, c, 1), passAtK(n, c, n));
        want.push(c / n, c > 0 ? 1 : 0);
      }
    }
    expectClose(got, want, 1e-14, 1e-14, "pass@1 and pass@n");
  });

  test("invalid arguments are errors", () => {
    expect(() => passAtK(4, 5, 1)).toThrow(/need integers 0 <= c <= n, 1 <= k <= n; got n=4 c=5 k=1/);
    expect(() => passAtK(4, 1, 5)).toThrow(/k=5/);
    expect(() => passAtK(4, 1, 0)).toThrow(/k=0/);
    expect(() => passAtK(4, 1.5, 1)).toThrow(/c=1.5/);
  });
});

describe("maj@k", () => {
  const numeric = (a: string, b: string) => {
    const v = (s: string) => (s.includes("/") ? Number(s.split("/")[0]) / Number(s.split("/")[1]) : Number(s));
    return Math.abs(v(a) - v(b)) < 1e-12;
  };
  const S = (answers: (string | null)[], gold: string, eq: (a: string, b: string) => boolean) =>
    answers.map((a, i) => ({ sample: i, extracted: a, correct: a !== null && eq(a, gold) }));

  test("largest cluster wins; null answers do not vote; ties go to the first seen", () => {
    const s = S(["1", "2", "2", null], "2", (a, b) => a === b);
    expect(majAtK(s, 4, (a, b) => a === b)).toBe(1);
    // Blocks [1,2] (tie: "1" first, wrong) and [2,null] ("2", right).
    expect(majAtK(s, 2, (a, b) => a === b)).toBe(0.5);
    expect(majorityVote([{ extracted: null }, { extracted: null }], (a, b) => a === b)).toBeNull();
    expect(majAtK(S([null, null, "3"], "4", (a, b) => a === b), 3, (a, b) => a === b)).toBe(0);
  });

  test("the equivalence function decides the clusters", () => {
    // Gold 1/2; "0.5" and "1/2" agree only under numeric equivalence.
    const s = S(["3", "0.5", "1/2"], "1/2", numeric);
    expect(majAtK(s, 3, numeric)).toBe(1); // {0.5, 1/2} has 2 votes
    expect(majAtK(s, 3, (a, b) => a === b)).toBe(0); // three singletons: "3" seen first
    expect(majorityVote(s, numeric)).toEqual({ rep: s[1], votes: 2 });
  });

  test("samples are taken in index order, whatever the record order", () => {
    const s = S(["7", "7", "8", "8", "8", "7"], "7", (a, b) => a === b);
    const shuffled = [s[4], s[0], s[5], s[2], s[1], s[3]];
    // Blocks of 3: [7,7,8] -> 7 (right), [8,8,7] -> 8 (wrong).
    expect(majAtK(shuffled, 3, (a, b) => a === b)).toBe(0.5);
  });

  test("maj@1 equals avg@n on random samples", () => {
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const got: number[] = [];
    const want: number[] = [];
    for (let t = 0; t < 200; t++) {
      const n = 1 + Math.floor(rnd() * 16);
      const s = Array.from({ length: n }, (_, i) => {
        const a = rnd() < 0.2 ? null : `${Math.floor(rnd() * 3)}`;
        return { sample: i, extracted: a, correct: a === "1" };
      });
      got.push(majAtK(s, 1, (a, b) => a === b));
      want.push(s.filter((x) => x.correct).length / n);
    }
    expectClose(got, want, 0, 0, "maj@1 vs avg@n");
  });

  test("k out of range is an error", () => {
    expect(() => majAtK(S(["1"], "1", (a, b) => a === b), 2, (a, b) => a === b)).toThrow(/need 1 <= k <= n=1, got k=2/);
  });
});

describe("helpers", () => {
  test("mean, median, default ks", () => {
    expect(mean([1, 2, 3, 10])).toBe(4);
    expect(median([10, 1, 3])).toBe(3);
    expect(median([10, 1, 3, 4])).toBe(3.5);
    expect(Number.isNaN(median([]))).toBe(true);
    expect(defaultKs(64)).toEqual([1, 2, 4, 8, 16, 32, 64]);
    expect(defaultKs(12)).toEqual([1, 2, 4, 8, 12]);
    expect(defaultKs(1)).toEqual([1]);
  });
});

/**
 * Two datasets: A has p1 (3 of 4 right) and p2 (1 of 4 right); B has q1 (0 of 4) — id "p1"
 * also exists in B, so records carry their dataset.
 */
function syntheticRun(): { records: SampleRecord[]; meta: DatasetMeta[] } {
  const records = [
    rec("p1", 0, true, "5", 100, "eos", "A"),
    rec("p1", 1, true, "5", 200, "eos", "A"),
    rec("p1", 2, false, "6", 300, "length", "A"),
    rec("p1", 3, true, "5.0", 400, "eos", "A"),
    rec("p2", 0, false, null, 1000, "length", "A"),
    rec("p2", 1, false, "9", 50, "eos", "A"),
    rec("p2", 2, true, "8", 60, "eos", "A"),
    rec("p2", 3, false, "9", 70, "eos", "A"),
    rec("p1", 0, false, "1", 10, "eos", "B"),
    rec("p1", 1, false, "2", 20, "eos", "B"),
    rec("p1", 2, false, null, 30, "length", "B"),
    rec("p1", 3, false, "2", 40, "eos", "B"),
  ];
  return { records, meta: [{ name: "A", problem_ids: ["p1", "p2"], n: 4 }, { name: "B", problem_ids: ["p1"], n: 4 }] };
}

describe("summarize", () => {
  test("per dataset and overall against hand-computed values", () => {
    const { records, meta } = syntheticRun();
    const eq = (a: string, b: string) => Number(a) === Number(b);
    const s = summarize(records, meta, { equivalent: eq });
    const [a, b] = s.datasets;
    expect([a.name, a.problems, a.problems_scored, a.problems_incomplete, a.samples, a.n_min, a.n_max]).toEqual(["A", 2, 2, 0, 8, 4, 4]);
    // pass@k for (n=4, c=3) and (4, 1): k=1: .75, .25; k=2: 1, 1 - C(3,2)/C(4,2) = .5; k=4: 1, 1.
    expectClose(
      [a.pass_at_1, a.pass_at_k[1], a.pass_at_k[2], a.pass_at_k[4]],
      [0.5, 0.5, 0.75, 1],
      1e-15,
      0,
      "A pass@k",
    );
    // maj@4: p1 {5,5,5.0} right; p2 {9,9} wrong -> .5. maj@2: p1 [5,5] right, [6,5.0] tie -> 6 wrong; p2 [null,9] wrong, [8,9] tie -> 8 right.
    expectClose([a.maj_at_k[1], a.maj_at_k[2], a.maj_at_k[4]], [0.5, 0.5, 0.5], 0, 0, "A maj@k");
    expectClose(
      [a.mean_response_tokens, a.median_response_tokens, a.truncation_rate, a.no_answer_rate],
      [(100 + 200 + 300 + 400 + 1000 + 50 + 60 + 70) / 8, (100 + 200) / 2, 2 / 8, 1 / 8],
      1e-12,
      0,
      "A lengths",
    );
    expectClose([b.pass_at_1, b.pass_at_k[4], b.maj_at_k[4], b.mean_response_tokens, b.truncation_rate], [0, 0, 0, 25, 0.25], 1e-15, 0, "B");
    const o = s.overall;
    expect([o.problems, o.samples]).toEqual([3, 12]);
    expectClose([o.pass_at_1, o.pass_at_k[2], o.maj_at_k[4], o.median_response_tokens], [1 / 3, 0.5, 1 / 3, 65], 1e-15, 0, "overall");
    expect(s.problems.map((p) => [p.dataset, p.problem_id, p.n, p.correct, p.majority, p.majority_correct])).toEqual([
      ["A", "p1", 4, 3, "5", true],
      ["A", "p2", 4, 1, "9", false],
      ["B", "p1", 4, 0, "2", false],
    ]);
  });

  test("records without a dataset field are matched by unique id; ks above n are dropped", () => {
    const records = [rec("x", 0, true, "1", 5), rec("x", 1, false, "2", 7), rec("y", 0, false, "3", 9), rec("y", 1, false, "3", 11)];
    const s = summarize(records, [{ name: "D", problem_ids: ["x", "y", "z"], n: 2 }], { ks: [1, 2, 3] });
    const d = s.datasets[0];
    expect([d.problems, d.problems_scored, d.problems_incomplete, d.samples]).toEqual([3, 2, 1, 4]);
    expect(Object.keys(d.pass_at_k)).toEqual(["1", "2"]);
    // x: [1 right, 2 wrong] ties, "1" seen first wins -> right; y: [3, 3] wrong. maj@2 = 1/2.
    expectClose([d.pass_at_1, d.pass_at_k[2], d.maj_at_k[2]], [0.25, 0.5, 0.5], 0, 0, "D");
  });

  test("errors: unknown problem, ambiguous id, repeated sample, no datasets", () => {
    const { meta } = syntheticRun();
    expect(() => summarize([rec("zz", 0, true, "1", 1, "eos", "A")], meta)).toThrow(/problem "zz" \(dataset "A"\) is not in the datasets given/);
    expect(() => summarize([rec("p1", 0, true, "1", 1)], meta)).toThrow(/has no "dataset" field and the id is in several datasets \(A, B\)/);
    expect(() => summarize([rec("q", 0, true, "1", 1)], meta)).toThrow(/no dataset holds that id/);
    expect(() => summarize([rec("p2", 0, true, "1", 1), rec("p2", 0, true, "1", 1)], meta)).toThrow(/problem "p2" \(dataset "A"\) sample 0 appears twice/);
    expect(() => summarize([], [])).toThrow(/no datasets given/);
  });
});

describe("run folder", () => {
  test("append, reopen, and the done set", () => {
    const dir = newDir("run");
    const log = openRunLog(dir);
    log.append(rec("p1", 0, true, "5", 10, "eos", "A"));
    log.append(rec("p1", 1, false, null, 20, "length", "A"));
    expect(() => log.append(rec("p1", 1, false, null, 20, "length", "A"))).toThrow(/sample 1 is already recorded/);
    expect(() => log.append({ ...rec("p1", 2, true, "5", 10), correct: "yes" } as unknown as SampleRecord)).toThrow(/field "correct" must be a boolean, got "yes"/);
    const again = openRunLog(dir);
    expect(again.records).toEqual([rec("p1", 0, true, "5", 10, "eos", "A"), rec("p1", 1, false, null, 20, "length", "A")]);
    expect(again.isDone("p1", 1, "A")).toBe(true);
    expect(again.isDone("p1", 1)).toBe(false);
    expect(again.isDone("p1", 2, "A")).toBe(false);
    expect(donePairs(dir).size).toBe(2);
  });

  test("a torn last line is dropped and cut off before the next append", () => {
    const dir = newDir("torn");
    const log = openRunLog(dir);
    log.append(rec("a", 0, true, "1", 3));
    const path = join(dir, RUN_FILES.samples);
    appendFileSync(path, '{"problem_id":"a","sample":1,"tok');
    const read = readSamples(path);
    expect(read.tornTail).toBe(true);
    expect(read.records.length).toBe(1);
    const resumed = openRunLog(dir);
    expect(resumed.isDone("a", 1)).toBe(false);
    resumed.append(rec("a", 1, false, "2", 4));
    expect(readFileSync(path, "utf8")).toBe(JSON.stringify(rec("a", 0, true, "1", 3)) + "\n" + JSON.stringify(rec("a", 1, false, "2", 4)) + "\n");
  });

  test("a complete last record without its newline is kept and the newline added", () => {
    const dir = newDir("nonl");
    const path = join(dir, RUN_FILES.samples);
    openRunLog(dir);
    writeFileSync(path, JSON.stringify(rec("a", 0, true, "1", 3)));
    const log = openRunLog(dir);
    expect(log.isDone("a", 0)).toBe(true);
    log.append(rec("a", 1, true, "1", 3));
    expect(readSamples(path).records.map((r) => r.sample)).toEqual([0, 1]);
  });

  test("a bad line before the end is an error naming the line; so is a bad field", () => {
    const dir = newDir("bad");
    const path = join(dir, RUN_FILES.samples);
    openRunLog(dir);
    writeFileSync(path, JSON.stringify(rec("a", 0, true, "1", 3)) + "\n{oops\n" + JSON.stringify(rec("a", 1, true, "1", 3)) + "\n");
    expect(() => readSamples(path)).toThrow(/samples\.jsonl line 2: invalid JSON/);
    writeFileSync(path, JSON.stringify({ ...rec("a", 0, true, "1", 3), sample: -1 }) + "\n");
    expect(() => readSamples(path)).toThrow(/samples\.jsonl line 1: field "sample" must be an integer >= 0, got -1/);
    writeFileSync(path, JSON.stringify(rec("a", 0, true, "1", 3)) + "\n" + JSON.stringify(rec("a", 0, true, "1", 3)) + "\n");
    expect(() => openRunLog(dir)).toThrow(/problem "a" sample 0 recorded twice/);
  });

  test("an interrupted run resumes without losing or repeating a sample and summarises the same", () => {
    const meta: DatasetMeta[] = [{ name: "D", problem_ids: ["p0", "p1", "p2"], n: 5 }];
    // A deterministic stand-in for generation + grading.
    const generate = (pid: string, s: number): SampleRecord => {
      const h = (Number(pid.slice(1)) * 7 + s * 3) % 5;
      return rec(pid, s, h < 2, h === 4 ? null : `${h}`, 100 + 10 * h, h === 3 ? "length" : "eos");
    };
    const runAll = (dir: string, crashAfter: number) => {
      const log = openRunLog(dir);
      let written = 0;
      for (const pid of meta[0].problem_ids) {
        for (let s = 0; s < 5; s++) {
          if (log.isDone(pid, s)) continue;
          if (written === crashAfter) {
            appendFileSync(join(dir, RUN_FILES.samples), JSON.stringify(generate(pid, s)).slice(0, 20)); // killed mid-write
            return false;
          }
          log.append(generate(pid, s));
          written++;
        }
      }
      return true;
    };
    const dir = newDir("resume");
    writeRunConfig(dir, { name: "resume-test", n: 5, temperature: 0.6 });
    expect(runAll(dir, 7)).toBe(false);
    expect(donePairs(dir).size).toBe(7);
    expect(() => writeRunConfig(dir, { name: "resume-test", n: 5, temperature: 1.0 })).toThrow(/other settings \(temperature: 0.6 -> 1\)/);
    writeRunConfig(dir, { name: "resume-test", n: 5, temperature: 0.6 });
    expect(runAll(dir, 4)).toBe(false);
    expect(runAll(dir, Infinity)).toBe(true);
    const records = readSamples(join(dir, RUN_FILES.samples)).records;
    expect(records.length).toBe(15);
    expect(records.map((r) => `${r.problem_id}/${r.sample}`)).toEqual(meta[0].problem_ids.flatMap((p) => [0, 1, 2, 3, 4].map((s) => `${p}/${s}`)));
    const uninterrupted = meta[0].problem_ids.flatMap((p) => [0, 1, 2, 3, 4].map((s) => generate(p, s)));
    const { created: _a, ...got } = summarize(records, meta);
    const { created: _b, ...want } = summarize(uninterrupted, meta);
    expect(got).toEqual(want);
  });
});

describe("reports and compare", () => {
  test("writeReports writes summary.json and a Markdown table", () => {
    const dir = newDir("report");
    writeRunConfig(dir, { name: "siri-low", model: "m", n: 4 });
    const { records, meta } = syntheticRun();
    const s = summarize(records, meta, { equivalent: (a, b) => Number(a) === Number(b) });
    writeReports(dir, s);
    expect(JSON.parse(readFileSync(join(dir, RUN_FILES.summary), "utf8"))).toEqual(JSON.parse(JSON.stringify(s)));
    const md = readFileSync(join(dir, RUN_FILES.report), "utf8");
    expect(md).toContain("| dataset | problems | n | pass@1 (avg@n) % | ± SE % | pass@2 % | pass@4 % | maj@2 % | maj@4 % | mean tokens | median tokens | truncated % | no answer % |");
    // SE by hand: A's avg@n are .75 and .25: sd .3536 / sqrt 2 = .25; B has one problem: none;
    // overall .75, .25, 0: sqrt((.4167^2 + .0833^2 + .3333^2) / 2) / sqrt 3 = .2205
    expect(md).toContain("| A | 2 | 4 | 50.0 | 25.0 | 75.0 | 100.0 | 50.0 | 50.0 | 273 | 150 | 25.0 | 12.5 |");
    expect(md).toContain("| B | 1 | 4 | 0.0 | - | 0.0 | 0.0 | 0.0 | 0.0 | 25 | 25 | 25.0 | 25.0 |");
    expect(md).toContain("| overall | 3 | 4 | 33.3 | 22.0 |");
    expect(s.datasets[0]!.pass_at_1_se).toBeCloseTo(0.25, 12);
    expect(s.datasets[1]!.pass_at_1_se).toBeNaN();
    expect(s.overall.pass_at_1_se).toBeCloseTo(Math.sqrt(((0.75 - 1 / 3) ** 2 + (0.25 - 1 / 3) ** 2 + (1 / 3) ** 2) / 2 / 3), 12);
    // The per-problem table (two datasets: a dataset column); truncated counts stop_reason "length".
    expect(md).toContain("| dataset | problem | correct / n | mean tokens | truncated |\n|---|---|---|---|---|\n| A | p1 | 3 / 4 | 250 | 1 |\n| A | p2 | 1 / 4 | 295 | 1 |\n| B | p1 | 0 / 4 | 25 | 1 |");
    expect(md).toContain('name = siri-low, model = m, n = 4');
  });

  test("compare: side-by-side table and an SVG whose points sit where the data says", () => {
    const mk = (name: string, accs: [number, number], toks: [number, number]) => {
      const dir = newDir(name);
      writeRunConfig(dir, { name });
      // One problem per dataset with 10 samples; `acc` of them right; all of `tok` tokens.
      const records: SampleRecord[] = [];
      (["aime24", "math500"] as const).forEach((ds, j) => {
        for (let s = 0; s < 10; s++) records.push(rec("q", s, s < accs[j] * 10, "1", toks[j], "eos", ds));
      });
      writeReports(dir, summarize(records, [{ name: "aime24", problem_ids: ["q"] }, { name: "math500", problem_ids: ["q"] }]));
      return dir;
    };
    const runs = [mk("base", [0.3, 0.8], [12000, 4700]), mk("siri-low", [0.4, 0.9], [7000, 2900]), mk("<long&run>", [0.2, 0.7], [9000, 3000])];
    const svgPath = join(tmp, "pareto.svg");
    const c = compare(runs, svgPath);
    expect(c.table.split("\n").slice(0, 5)).toEqual([
      "| run | aime24 pass@1 % ± SE / tokens | math500 pass@1 % ± SE / tokens | overall pass@1 % ± SE / tokens |",
      "|---|---|---|---|",
      // one problem per dataset: no SE; overall over two problems, e.g. (.3, .8): sd .3536 / sqrt 2 = .25
      "| base | 30.0 / 12000 | 80.0 / 4700 | 55.0 ± 25.0 / 8350 |",
      "| siri-low | 40.0 / 7000 | 90.0 / 2900 | 65.0 ± 25.0 / 4950 |",
      "| <long&run> | 20.0 / 9000 | 70.0 / 3000 | 45.0 ± 25.0 / 6000 |",
    ]);
    expect(readFileSync(svgPath, "utf8")).toBe(c.svg);
    expect(c.svg.startsWith("<svg xmlns=\"http://www.w3.org/2000/svg\"")).toBe(true);
    expect(c.svg).toContain("&lt;long&amp;run&gt;");
    expect(c.svg).not.toContain("<long&run>");
    // Every point: one circle with its data; within a panel, more accuracy -> higher (smaller y), more tokens -> further right.
    const circles = [...c.svg.matchAll(/<circle cx="([\d.]+)" cy="([\d.]+)" r="[\d.]+" fill="[^"]+"(?: stroke="black")? data-run="([^"]+)" data-dataset="([^"]+)" data-accuracy="([\d.]+)" data-tokens="([\d.]+)">/g)];
    expect(circles.length).toBe(9);
    const pts = circles.map((m) => ({ x: Number(m[1]), y: Number(m[2]), run: m[3], ds: m[4], acc: Number(m[5]), tok: Number(m[6]) }));
    expect(pts.map((p) => [p.run, p.ds]).sort()).toEqual(c.points.map((p) => [p.run.replace("<long&run>", "&lt;long&amp;run&gt;"), p.dataset]).sort());
    for (const ds of ["aime24", "math500", "overall"]) {
      const panel = pts.filter((p) => p.ds === ds);
      expect(panel.length).toBe(3);
      for (const p of panel) {
        for (const q of panel) {
          if (p.acc > q.acc) expect(p.y).toBeLessThan(q.y);
          if (p.tok > q.tok) expect(p.x).toBeGreaterThan(q.x);
        }
      }
    }
    // siri-low dominates both others in every panel: the front is that one point, so no dashed line.
    expect(c.svg).not.toContain('class="pareto"');
    expect(c.svg.match(/stroke="black" data-run="siri-low"/g)?.length).toBe(3);
  });

  test("compare errors on a run without a summary", () => {
    const dir = newDir("nosummary");
    openRunLog(dir);
    expect(() => compare([dir])).toThrow(/no summary\.json; finish the run/);
    expect(() => compare([])).toThrow(/no runs given/);
  });
});

describe("plot", () => {
  test("Pareto front keeps exactly the non-dominated points, by tokens", () => {
    const P = (accuracy: number, meanTokens: number, run: string) => ({ accuracy, meanTokens, run });
    const pts = [P(0.4, 7000, "a"), P(0.43, 10000, "b"), P(0.41, 8500, "c"), P(0.3, 12000, "d"), P(0.43, 11000, "e"), P(0.4, 7000, "f"), P(0.2, 6000, "g")];
    expect(paretoFront(pts).map((p) => p.run)).toEqual(["g", "a", "f", "c", "b"]);
    expect(paretoFront([])).toEqual([]);
  });

  test("a front of several points draws its dashed line through them in token order", () => {
    const svg = paretoSvg([
      { run: "r1", dataset: "d", accuracy: 0.5, meanTokens: 100 },
      { run: "r2", dataset: "d", accuracy: 0.6, meanTokens: 200 },
      { run: "r3", dataset: "d", accuracy: 0.55, meanTokens: 300 },
    ]);
    const line = svg.match(/<polyline class="pareto" points="([^"]+)"/);
    expect(line).not.toBeNull();
    const xy = line![1].split(" ").map((s) => s.split(",").map(Number));
    expect(xy.length).toBe(2);
    expect(xy[0][0]).toBeLessThan(xy[1][0]);
    expect(xy[0][1]).toBeGreaterThan(xy[1][1]);
  });

  test("non-finite values are rejected; ticks are round and cover the range", () => {
    expect(() => paretoSvg([{ run: "r", dataset: "d", accuracy: NaN, meanTokens: 1 }])).toThrow(/run "r" dataset "d" has a non-finite value/);
    expect(niceTicks(0, 100)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(niceTicks(2650, 12820)).toEqual([5000, 7500, 10000, 12500]); // step 2500 >= span/5 = 2034
    expect(existsSync(tmp)).toBe(true);
  });
});
