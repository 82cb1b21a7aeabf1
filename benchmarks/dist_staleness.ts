/**
 * Step time of a learner with two rollout workers at staleness 0 (on-policy)
 * and staleness 1 (the next step's rollouts generated during the update),
 * runs alternating (0,1 then 1,0, ...), each a fresh `siri train --broker`
 * from the same config; step 0 (never overlapped) is left out of the medians.
 *
 *   bun benchmarks/dist_staleness.ts [--pairs 3] [--steps 6] [--set field=value ...]
 *
 * Default config: the demo preset without its warm start (a random tiny model
 * whose rollouts mostly run to the cap), validation shrunk. The last line of
 * stdout is one JSON object (adapter, date, command, load averages, per-run
 * figures, medians).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { pairs: { type: "string", default: "3" }, steps: { type: "string", default: "6" }, set: { type: "string", multiple: true, default: [] } } });
const pairs = Number(values.pairs);
const steps = Number(values.steps);
const REPO = join(import.meta.dir, "..");
const ROOT = mkdtempSync(join(tmpdir(), "siri-stale-bench-"));
const sets = ["warmStart.steps=0", "validation.problems=4", "validation.n=1", ...(values.set as string[])];

const port = await new Promise<number>((resolve) => {
  const s = createServer();
  s.listen(0, "127.0.0.1", () => {
    const p = (s.address() as { port: number }).port;
    s.close(() => resolve(p));
  });
});
const url = `redis://127.0.0.1:${port}`;
const redis = Bun.spawn(["redis-server", "--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no", "--dir", ROOT], { stdout: "ignore", stderr: "ignore" });
const siri = (args: string[], log: string) => Bun.spawn([process.execPath, "src/cli.ts", ...args], { cwd: REPO, stdout: Bun.file(`${log}.out`), stderr: Bun.file(log) });
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

interface Run {
  staleness: number;
  stepMedian: number;
  steps: number[];
  /** Median seconds the learner waited for its rollouts (rollout_tokens / rollout_tokens_per_s). */
  waitMedian: number;
  lagMean: number;
  tokens: number;
  wall: number;
}
const runs: Run[] = [];
const load0 = loadavg();
let adapter = "";
try {
  await Bun.sleep(500);
  const workers = ["w1", "w2"].map((n) => siri(["worker", "--broker", url, "--name", n], join(ROOT, `${n}.log`)));
  for (let i = 0; i < pairs; i++) {
    for (const k of i % 2 ? [1, 0] : [0, 1]) {
      const out = join(ROOT, `run-${i}-${k}`);
      const t0 = performance.now();
      const p = siri(["train", "--preset", "demo", "--steps", String(steps), "--out", out, "--no-progress", "--broker", url, "--staleness", String(k), ...sets.flatMap((s) => ["--set", s])], `${out}.log`);
      if ((await p.exited) !== 0) throw new Error(`run ${i} staleness ${k} failed:\n${readFileSync(`${out}.log`, "utf8").slice(-3000)}`);
      const wall = (performance.now() - t0) / 1000;
      adapter ||= /adapter: (.*)/.exec(readFileSync(`${out}.log`, "utf8"))?.[1] ?? "?";
      const m = readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
      const later = m.slice(1);
      const r: Run = { staleness: k, steps: later.map((x) => x.step_time_s), stepMedian: median(later.map((x) => x.step_time_s)), waitMedian: median(later.map((x) => (x.rollout_tokens_per_s > 0 ? x.rollout_tokens / x.rollout_tokens_per_s : 0))), lagMean: later.reduce((a, x) => a + x.rollout_version_lag_mean, 0) / later.length, tokens: later.reduce((a, x) => a + x.rollout_tokens, 0), wall };
      runs.push(r);
      console.log(`pair ${i} staleness ${k}: step time median ${r.stepMedian.toFixed(2)} s (steps 1..${steps - 1}: ${r.steps.map((s) => s.toFixed(2)).join(" ")}), waiting for rollouts ${r.waitMedian.toFixed(2)} s, version lag mean ${r.lagMean.toFixed(2)}, ${r.tokens} rollout tokens, run ${wall.toFixed(0)} s, load ${loadavg()[0].toFixed(1)}`);
    }
  }
  for (const w of workers) w.kill("SIGINT");
  await Promise.all(workers.map((w) => w.exited));
} finally {
  redis.kill("SIGKILL");
  rmSync(ROOT, { recursive: true, force: true });
}
const med = (k: number) => median(runs.filter((r) => r.staleness === k).map((r) => r.stepMedian));
const [s0, s1] = [med(0), med(1)];
const wait = (k: number) => median(runs.filter((r) => r.staleness === k).map((r) => r.waitMedian));
console.log(`median step time: staleness 0 ${s0.toFixed(2)} s, staleness 1 ${s1.toFixed(2)} s (ratio ${(s1 / s0).toFixed(2)}); waiting for rollouts ${wait(0).toFixed(2)} s vs ${wait(1).toFixed(2)} s`);
const command = `bun benchmarks/dist_staleness.ts --pairs ${pairs} --steps ${steps}${(values.set as string[]).map((s) => ` --set ${s}`).join("")}`;
console.log(JSON.stringify({ adapter, date: new Date().toISOString(), command, config: { preset: "demo", sets }, loadavg_start: load0, loadavg_end: loadavg(), runs, median_step_s: { staleness0: s0, staleness1: s1 }, median_wait_s: { staleness0: wait(0), staleness1: wait(1) }, ratio: s1 / s0 }));
