/**
 * Benchmark metrics over per-sample records: pass@1 as avg@n (SIRI's and
 * DeepScaleR's "Pass@1": mean accuracy over n samples), the unbiased pass@k
 * estimator, maj@k (majority vote over extracted answers), response length
 * and truncation rate; per dataset and overall.
 *
 * Legend: n = samples drawn for a problem, c = correct ones, k = budget.
 */
import { median, standardError } from "../util/stats.ts";

/** One generated sample, one line of a run's samples.jsonl. */
export interface SampleRecord {
  problem_id: string;
  /** Sample index within the problem, 0..n-1. */
  sample: number;
  /** Sequence length: prompt tokens + response tokens. */
  tokens: number;
  /** Generated tokens (the length SIRI reports). */
  response_tokens: number;
  /** The extracted final answer, or null when none was found. */
  extracted: string | null;
  correct: boolean;
  /** Why generation stopped: "eos"/"stop" (finished) or "length" (hit the cap: truncated). */
  stop_reason: string;
  /** Dataset name; required when one run covers several datasets whose ids could collide. */
  dataset?: string;
  [extra: string]: unknown;
}

/** The problems of one dataset in a run, and how many samples each should get. */
export interface DatasetMeta {
  name: string;
  problem_ids: string[];
  /** Planned samples per problem (to report completeness). */
  n?: number;
}

/** Answer equivalence for maj@k; plug the grader in here. */
export type Equivalent = (a: string, b: string) => boolean;

/** Fallback equivalence: identical after dropping whitespace. */
export const sameText: Equivalent = (a, b) => a.replace(/\s+/g, "") === b.replace(/\s+/g, "");

/**
 * Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), computed as
 * 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms a binomial coefficient
 * (those overflow a double past n ~ 1000).
 */
export function passAtK(n: number, c: number, k: number): number {
  if (!Number.isInteger(n) || !Number.isInteger(c) || !Number.isInteger(k) || n < 1 || c < 0 || c > n || k < 1 || k > n) {
    throw new Error(`passAtK: need integers 0 <= c <= n, 1 <= k <= n; got n=${n} c=${c} k=${k}`);
  }
  if (n - c < k) return 1;
  let q = 1;
  for (let i = n - c + 1; i <= n; i++) q *= 1 - k / i;
  return 1 - q;
}

/**
 * The majority answer of a group of samples: answers are clustered by
 * `equivalent` against each cluster's first member; the largest cluster wins,
 * ties going to the cluster seen first. Samples without an answer do not vote.
 * Returns null when no sample has an answer.
 */
export function majorityVote<T extends { extracted: string | null }>(samples: T[], equivalent: Equivalent): { rep: T; votes: number } | null {
  const clusters: { rep: T; votes: number }[] = [];
  for (const s of samples) {
    if (s.extracted === null) continue;
    const hit = clusters.find((c) => equivalent(c.rep.extracted!, s.extracted!));
    if (hit) hit.votes++;
    else clusters.push({ rep: s, votes: 1 });
  }
  let best: { rep: T; votes: number } | null = null;
  for (const c of clusters) if (!best || c.votes > best.votes) best = c;
  return best;
}

/**
 * maj@k for one problem: samples sorted by index are cut into floor(n/k)
 * consecutive blocks of k; each block votes; the score is the fraction of
 * blocks whose majority answer is correct (the representative's `correct`).
 * maj@1 equals avg@n.
 */
export function majAtK(samples: { sample: number; extracted: string | null; correct: boolean }[], k: number, equivalent: Equivalent): number {
  const n = samples.length;
  if (!Number.isInteger(k) || k < 1 || k > n) throw new Error(`majAtK: need 1 <= k <= n=${n}, got k=${k}`);
  const sorted = [...samples].sort((a, b) => a.sample - b.sample);
  const blocks = Math.floor(n / k);
  let hits = 0;
  for (let b = 0; b < blocks; b++) {
    const win = majorityVote(sorted.slice(b * k, (b + 1) * k), equivalent);
    if (win?.rep.correct) hits++;
  }
  return hits / blocks;
}

export function mean(xs: number[]): number {
  if (xs.length === 0) return NaN;
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

export { median };

/** The k values reported by default: powers of two up to n, and n itself. */
export function defaultKs(n: number): number[] {
  const ks: number[] = [];
  for (let k = 1; k <= n; k *= 2) ks.push(k);
  if (n >= 1 && ks[ks.length - 1] !== n) ks.push(n);
  return ks;
}

export interface ProblemSummary {
  dataset: string;
  problem_id: string;
  n: number;
  correct: number;
  /** Majority answer over all n samples (maj@n's vote), or null. */
  majority: string | null;
  majority_correct: boolean;
  mean_response_tokens: number;
  /** Samples stopped at the length cap. */
  truncated: number;
}

export interface DatasetSummary {
  name: string;
  /** Problems in the dataset, and how many have at least one sample. */
  problems: number;
  problems_scored: number;
  /** Problems with fewer samples than planned (meta n), i.e. an unfinished run. */
  problems_incomplete: number;
  samples: number;
  /** Smallest and largest sample count over scored problems. */
  n_min: number;
  n_max: number;
  /** avg@n averaged over problems (SIRI's Pass@1). */
  pass_at_1: number;
  /**
   * Standard error of pass@1: the sample standard deviation of the problems'
   * avg@n over sqrt(problems); NaN for fewer than two problems. It treats the
   * problems as drawn from a larger pool and includes the sampling noise of
   * each problem's n samples (the "stderr" of lm-evaluation-harness). With
   * AIME's 30 problems it is several points even at n = 64; two runs on the
   * same problems differ beyond noise when the gap exceeds about
   * 2 * sqrt(se_a^2 + se_b^2) (a conservative, unpaired rule).
   */
  pass_at_1_se: number;
  /** Unbiased pass@k averaged over problems, keyed by k ("1", "2", ...), for k <= n_min. */
  pass_at_k: Record<string, number>;
  maj_at_k: Record<string, number>;
  /** Over all samples. */
  mean_response_tokens: number;
  median_response_tokens: number;
  /** Fraction of samples with stop_reason "length". */
  truncation_rate: number;
  /** Fraction of samples with no extracted answer. */
  no_answer_rate: number;
}

export interface Summary {
  created: string;
  datasets: DatasetSummary[];
  /** All problems of all datasets pooled (each problem weighs the same). */
  overall: DatasetSummary;
  problems: ProblemSummary[];
}

export interface SummarizeOptions {
  equivalent?: Equivalent;
  /** k values for pass@k and maj@k (default: defaultKs(n_min)); those above n_min are dropped. */
  ks?: number[];
}

function summarizeGroup(
  name: string,
  problemIds: number,
  groups: { dataset: string; id: string; recs: SampleRecord[]; planned?: number }[],
  opts: Required<SummarizeOptions>,
): { summary: DatasetSummary; problems: ProblemSummary[] } {
  const scored = groups.filter((g) => g.recs.length > 0);
  const all = scored.flatMap((g) => g.recs);
  const nMin = scored.length ? Math.min(...scored.map((g) => g.recs.length)) : 0;
  const nMax = scored.length ? Math.max(...scored.map((g) => g.recs.length)) : 0;
  const ks = [...new Set(opts.ks)].filter((k) => Number.isInteger(k) && k >= 1 && k <= nMin).sort((a, b) => a - b);
  const passK: Record<string, number> = {};
  const majK: Record<string, number> = {};
  for (const k of ks) {
    passK[k] = mean(scored.map((g) => passAtK(g.recs.length, g.recs.filter((r) => r.correct).length, k)));
    majK[k] = mean(scored.map((g) => majAtK(g.recs, k, opts.equivalent)));
  }
  const problems = scored.map((g): ProblemSummary => {
    const win = majorityVote(g.recs, opts.equivalent);
    return {
      dataset: g.dataset,
      problem_id: g.id,
      n: g.recs.length,
      correct: g.recs.filter((r) => r.correct).length,
      majority: win ? win.rep.extracted : null,
      majority_correct: win ? win.rep.correct : false,
      mean_response_tokens: mean(g.recs.map((r) => r.response_tokens)),
      truncated: g.recs.filter((r) => r.stop_reason === "length").length,
    };
  });
  const lengths = all.map((r) => r.response_tokens);
  const perProblem = scored.map((g) => g.recs.filter((r) => r.correct).length / g.recs.length); // avg@n of each problem
  return {
    problems,
    summary: {
      name,
      problems: problemIds,
      problems_scored: scored.length,
      problems_incomplete: groups.filter((g) => g.planned !== undefined && g.recs.length < g.planned).length,
      samples: all.length,
      n_min: nMin,
      n_max: nMax,
      pass_at_1: mean(perProblem),
      pass_at_1_se: standardError(perProblem),
      pass_at_k: passK,
      maj_at_k: majK,
      mean_response_tokens: mean(lengths),
      median_response_tokens: median(lengths),
      truncation_rate: all.length ? all.filter((r) => r.stop_reason === "length").length / all.length : NaN,
      no_answer_rate: all.length ? all.filter((r) => r.extracted === null).length / all.length : NaN,
    },
  };
}

/**
 * Summarise a run. Each record is matched to its dataset by its `dataset`
 * field, or else by a problem id that exactly one dataset holds; a record for
 * an unknown problem, an ambiguous id or a repeated (problem, sample) is an error.
 */
export function summarize(records: SampleRecord[], datasetsMeta: DatasetMeta[], options: SummarizeOptions = {}): Summary {
  if (datasetsMeta.length === 0) throw new Error("summarize: no datasets given");
  const names = new Set<string>();
  const owner = new Map<string, string[]>(); // problem id -> datasets holding it
  const groups = new Map<string, { dataset: string; id: string; recs: SampleRecord[]; planned?: number }>();
  const key = (ds: string, id: string) => `${ds}\u0000${id}`;
  for (const d of datasetsMeta) {
    if (names.has(d.name)) throw new Error(`summarize: dataset "${d.name}" listed twice`);
    names.add(d.name);
    for (const id of d.problem_ids) {
      if (groups.has(key(d.name, id))) throw new Error(`summarize: dataset "${d.name}" lists problem "${id}" twice`);
      groups.set(key(d.name, id), { dataset: d.name, id, recs: [], planned: d.n });
      owner.set(id, [...(owner.get(id) ?? []), d.name]);
    }
  }
  const seen = new Set<string>();
  for (const r of records) {
    let ds = r.dataset;
    if (ds === undefined) {
      const holders = owner.get(r.problem_id) ?? [];
      if (holders.length !== 1) {
        throw new Error(
          `summarize: record for problem "${r.problem_id}" sample ${r.sample} has no "dataset" field and ` +
            (holders.length === 0 ? "no dataset holds that id" : `the id is in several datasets (${holders.join(", ")})`),
        );
      }
      ds = holders[0];
    }
    const g = groups.get(key(ds, r.problem_id));
    if (!g) throw new Error(`summarize: record for problem "${r.problem_id}" (dataset "${ds}") is not in the datasets given`);
    const sk = `${key(ds, r.problem_id)}\u0000${r.sample}`;
    if (seen.has(sk)) throw new Error(`summarize: problem "${r.problem_id}" (dataset "${ds}") sample ${r.sample} appears twice`);
    seen.add(sk);
    g.recs.push(r);
  }
  const all = [...groups.values()];
  const minN = Math.min(...all.filter((g) => g.recs.length > 0).map((g) => g.recs.length));
  const opts: Required<SummarizeOptions> = {
    equivalent: options.equivalent ?? sameText,
    ks: options.ks ?? defaultKs(Number.isFinite(minN) ? minN : 0),
  };
  const perDataset = datasetsMeta.map((d) =>
    summarizeGroup(d.name, d.problem_ids.length, all.filter((g) => g.dataset === d.name), opts),
  );
  const overall = summarizeGroup("overall", all.length, all, opts);
  return {
    created: new Date().toISOString(),
    datasets: perDataset.map((x) => x.summary),
    overall: overall.summary,
    problems: overall.problems,
  };
}
