#!/usr/bin/env bun
/**
 * Everything a GPU machine should tell us, in one run:
 *   bun scripts/gpu_check.ts OUTDIR [--dry-run] [--budget-s 450] [--skip a,b] [--only a,b]
 * (scripts/gpu-check.sh unpacks the carried tools first, then calls this).
 *
 * Steps, each a subprocess with its own time limit inside one overall
 * budget, in order of value (a step that no longer fits is reported "not
 * run", never silently dropped):
 *   adapter     name, description, features, limits, subgroup sizes, subgroup-matrix configs
 *   peaks       (python) measured f32 / f16 matrix-product peaks and copy bandwidth
 *   kernels     benchmarks/kernels.ts --suite gpu-check: every kernel against its reference, timed
 *               (with the tensor-core matmul and the subgroup / tree reduction variants beside ours)
 *   checkpoint  a random checkpoint (1.5B shape: transformers' init, bf16; dry run: tiny)
 *   logits      the engine's logits in f32 and f16, then (python) transformers' on the same tokens
 *   generate    prefill tokens/s, decode tokens/s at batch 1, 16, 64, 128
 *   train       one training step's tokens/s and peak device memory, f32 and f16-mixed
 *   tests       the test suite on this adapter (CI=true: a missing adapter fails)
 *   test-scale  `bun run test:scale` where package.json has it
 * `--dry-run`: the software adapter's shapes (tiny model, small kernels, one
 * test file), so CI runs the whole pipeline in a minute or two; the python
 * steps run where python3 has torch and transformers, else are reported as
 * unavailable (a failure outside the dry run).
 *
 * Writes OUTDIR/report.json, OUTDIR/report.md and OUTDIR/gpu-check.log
 * (every step's output). Exit status 1 when a step failed.
 */
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { QWEN2_1_5B, qwen2ConfigJson } from "../src/model/config.ts";
import { makeTinyModel } from "../src/model/tiny.ts";

const ROOT = resolve(import.meta.dir, "..");
const BUN = process.execPath;

export type StepStatus = "ok" | "failed" | "timeout" | "unavailable" | "not run" | "absent";

export interface StepResult {
  id: string;
  title: string;
  status: StepStatus;
  seconds: number;
  detail: string; // why it failed / was not run, or a one-line summary
  data: unknown; // the step's JSON (last stdout line), when it printed one
}

interface Options {
  out: string;
  dry: boolean;
  budgetS: number;
  skip: Set<string>;
  only: Set<string> | null;
}

export function parseOptions(argv: string[]): Options {
  const out = argv.find((a, i) => !a.startsWith("--") && !["--budget-s", "--skip", "--only"].includes(argv[i - 1] ?? ""));
  if (!out) throw new Error("usage: gpu-check.sh OUTDIR [--dry-run] [--budget-s S] [--skip a,b] [--only a,b]");
  const val = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const list = (flag: string) => (val(flag) ? new Set(val(flag)!.split(",")) : null);
  const dry = argv.includes("--dry-run");
  const budgetS = Number(val("--budget-s") ?? (dry ? 240 : 460));
  if (!(budgetS > 0)) throw new Error(`--budget-s: expected seconds > 0, got "${val("--budget-s")}"`);
  return { out: resolve(out), dry, budgetS, skip: list("--skip") ?? new Set(), only: list("--only") };
}

/** The last line of `text` that parses as a JSON object, or null. */
export function lastJson(text: string): unknown {
  const lines = text.trim().split("\n");
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i].trim();
    if (!l.startsWith("{")) continue;
    try {
      return JSON.parse(l);
    } catch {
      /* not JSON: keep looking */
    }
  }
  return null;
}

/** bun test's summary ("N pass", "M fail", "Ran X tests across Y files"). */
export function parseTestSummary(text: string): { pass: number; fail: number; skip: number; ran: number } | null {
  const n = (re: RegExp) => Number(text.match(re)?.[1] ?? NaN);
  const ran = n(/Ran (\d+) tests?/);
  if (!Number.isFinite(ran)) return null;
  return { pass: n(/^\s*(\d+) pass/m) || 0, fail: n(/^\s*(\d+) fail/m) || 0, skip: n(/^\s*(\d+) skip/m) || 0, ran };
}

interface StepDef {
  id: string;
  title: string;
  limitS: number;
  /** Run the step; returns its JSON data and a one-line summary, or throws. */
  run(ctx: StepContext): Promise<{ data: unknown; detail: string }>;
}

interface StepContext {
  opts: Options;
  work: string; // scratch folder for the run (checkpoint, logits)
  limitS: number;
  results: Map<string, StepResult>;
  /** Run a command under ROOT with a time limit; output goes to the log. */
  exec(cmd: string[], env?: Record<string, string>): Promise<Exec>;
}

/** A finished command: stdout alone (where the JSON line is) and stdout + stderr (for messages). */
interface Exec {
  code: number;
  out: string;
  all: string;
  timedOut: boolean;
}

class StepUnavailable extends Error {}
class StepTimeout extends Error {}

function requireOk(r: Exec, what: string): unknown {
  if (r.timedOut) throw new StepTimeout(`${what}: over its time limit`);
  if (r.code !== 0) throw new Error(`${what}: exit ${r.code}: ${tail(r.all)}`);
  const data = lastJson(r.out);
  if (data === null) throw new Error(`${what}: printed no JSON line: ${tail(r.all)}`);
  return data;
}

const tail = (s: string, n = 400) => s.trim().slice(-n).replace(/\s+/g, " ");

let pythonOk: string | null | undefined; // null: available; string: why not
async function needPython(ctx: StepContext): Promise<void> {
  if (pythonOk === undefined) {
    const r = await ctx.exec(["python3", "-c", "import numpy, torch, transformers; print(torch.__version__, transformers.__version__)"]);
    pythonOk = r.code === 0 ? null : `python3 with numpy, torch and transformers is not available here (${tail(r.all, 160)})`;
  }
  if (pythonOk) throw new StepUnavailable(pythonOk);
}

const modelDir = (ctx: StepContext) => join(ctx.work, "model");
function needCheckpoint(ctx: StepContext): void {
  if (ctx.results.get("checkpoint")?.status !== "ok") throw new StepUnavailable("no checkpoint (step checkpoint did not succeed)");
}

const STEPS: StepDef[] = [
  {
    id: "adapter",
    title: "Adapter",
    limitS: 60,
    async run(ctx) {
      const data = requireOk(await ctx.exec([BUN, "src/cli.ts", "gpu", "--json"], { SIRI_EXPERIMENTAL: "1" }), "siri gpu --json") as {
        adapter: { description: string; isFallback: boolean; subgroupMatrixConfigs: unknown[] };
        features: string[];
      };
      if (!ctx.opts.dry && data.adapter.isFallback) throw new Error(`Dawn chose the software adapter (${data.adapter.description}): no GPU driver was found`);
      return { data, detail: `${data.adapter.description}; ${data.features.length} features, ${data.adapter.subgroupMatrixConfigs.length} subgroup-matrix configs` };
    },
  },
  {
    id: "peaks",
    title: "Measured ceilings (PyTorch)",
    limitS: 60,
    async run(ctx) {
      if (ctx.opts.dry) throw new StepUnavailable("dry run: needs a CUDA device");
      await needPython(ctx);
      const data = requireOk(await ctx.exec(["python3", "scripts/gpu_check_hf.py", "peaks"]), "gpu_check_hf.py peaks") as Record<string, number>;
      return {
        data,
        detail: `f32 ${data.matmul_f32_tflops?.toFixed(1)} TFLOP/s, f16 ${data.matmul_f16_tflops?.toFixed(1)} TFLOP/s, copy ${data.copy_gbps?.toFixed(0)} GB/s`,
      };
    },
  },
  {
    id: "kernels",
    title: "Kernels at the real shapes",
    limitS: 200,
    async run(ctx) {
      const args = ["benchmarks/kernels.ts", "--suite", "gpu-check", "--quick", "--impls", "ours,sgmat,subgroup,sg_tree,sg_row"];
      if (ctx.opts.dry) args.push("--rounds", "1");
      const r = await ctx.exec([BUN, ...args], { SIRI_EXPERIMENTAL: "1" });
      if (r.timedOut) throw new StepTimeout("benchmarks/kernels.ts: over its time limit");
      const data = lastJson(r.out) as { results: { ok: boolean }[]; failed: number } | null;
      if (!data) throw new Error(`benchmarks/kernels.ts: exit ${r.code}, no JSON: ${tail(r.all)}`);
      const detail = `${data.results.length - data.failed} of ${data.results.length} cases match their reference`;
      if (data.failed || r.code !== 0) throw Object.assign(new Error(detail), { data });
      return { data, detail };
    },
  },
  {
    id: "checkpoint",
    title: "Random checkpoint",
    limitS: 120,
    async run(ctx) {
      const dir = modelDir(ctx);
      rmSync(dir, { recursive: true, force: true });
      if (ctx.opts.dry) {
        const { config } = makeTinyModel(dir, { preset: "tiny-gqa", seed: 3 });
        return { data: { shape: "tiny-gqa", hidden: config.hiddenSize, layers: config.numLayers, vocab: config.vocabSize }, detail: "tiny-gqa (dry run)" };
      }
      await needPython(ctx);
      // Tokenizer files from the tiny maker (ids < its vocab, all valid at V 151936), the 1.5B config, weights from transformers.
      const tiny = makeTinyModel(dir, { preset: "tiny", seed: 3 }).config;
      rmSync(join(dir, "model.safetensors"));
      const config = { ...QWEN2_1_5B, bosTokenId: tiny.bosTokenId, eosTokenIds: tiny.eosTokenIds, torchDtype: "bfloat16" as const };
      writeFileSync(join(dir, "config.json"), JSON.stringify(qwen2ConfigJson(config), null, 2));
      const data = requireOk(await ctx.exec(["python3", "scripts/gpu_check_hf.py", "make", "--dir", dir]), "gpu_check_hf.py make") as { params: number };
      return { data, detail: `${(data.params / 1e9).toFixed(2)}B parameters, bf16` };
    },
  },
  {
    id: "logits",
    title: "Logits against Hugging Face transformers",
    limitS: 150,
    async run(ctx) {
      needCheckpoint(ctx);
      const ours = join(ctx.work, "logits");
      const tokens = ctx.opts.dry ? "16" : "64";
      const mine = requireOk(await ctx.exec([BUN, "scripts/gpu_check_logits.ts", "--model", modelDir(ctx), "--out", ours, "--tokens", tokens]), "gpu_check_logits.ts");
      await needPython(ctx);
      const hf = requireOk(await ctx.exec(["python3", "scripts/gpu_check_hf.py", "compare", "--model", modelDir(ctx), "--ours", ours]), "gpu_check_hf.py compare") as Record<
        string,
        { max_rel_err: number; finite: boolean }
      >;
      const pairs = Object.entries(hf).filter(([k]) => k.startsWith("ours_"));
      const detail = pairs.map(([k, v]) => `${k} max rel err ${v.max_rel_err.toExponential(2)}`).join("; ");
      if (pairs.some(([, v]) => !v.finite)) throw Object.assign(new Error(`non-finite logits: ${detail}`), { data: { ours: mine, hf } });
      return { data: { ours: mine, hf }, detail };
    },
  },
  {
    id: "generate",
    title: "Generation throughput",
    limitS: 120,
    async run(ctx) {
      needCheckpoint(ctx);
      // One run of each length per batch (--reps 1): the check's time limit was set for that.
      const args = ctx.opts.dry ? ["--prompt", "32", "--decode", "4", "--batches", "1,4", "--reps", "1"] : ["--prompt", "512", "--decode", "32", "--batches", "1,16,64,128", "--reps", "1"];
      const data = requireOk(await ctx.exec([BUN, "benchmarks/generate.ts", "--model", modelDir(ctx), ...args]), "benchmarks/generate.ts") as Record<string, number>;
      const decode = Object.entries(data).filter(([k]) => k.startsWith("decode_b") && k.endsWith("_tokens_per_s")).map(([k, v]) => `${k.replace("_tokens_per_s", "")} ${v}`);
      return { data, detail: `prefill ${data.prefill_tokens_per_s} tok/s; decode tok/s ${decode.join(", ")}` };
    },
  },
  {
    id: "train",
    title: "One training step, f32 and f16-mixed",
    limitS: 240,
    async run(ctx) {
      needCheckpoint(ctx);
      const args = ctx.opts.dry ? ["--tokens", "64", "--seqs", "2", "--steps", "1"] : ["--tokens", "4096", "--seqs", "4", "--steps", "2"];
      // One process per precision, so each peak of device memory is its own.
      const run = async (precision: string) =>
        requireOk(await ctx.exec([BUN, "benchmarks/train.ts", "--model", modelDir(ctx), ...args, "--precision", precision]), `benchmarks/train.ts --precision ${precision}`) as Record<string, number>;
      const f32 = await run("f32");
      const mixed = await run("f16-mixed");
      const speedup = +(mixed.tokens_per_s / f32.tokens_per_s).toFixed(3);
      const memory = +(mixed.peak_device_mib / f32.peak_device_mib).toFixed(3);
      const data = { ...f32, f16_mixed: mixed, f16_mixed_speedup: speedup, f16_mixed_memory_ratio: memory };
      return {
        data,
        detail:
          `f32 ${f32.tokens_per_s} tok/s (${f32.tokens_per_step} tokens/step), peak ${f32.peak_device_mib} MiB of buffers; ` +
          `f16-mixed ${mixed.tokens_per_s} tok/s (x${speedup}), peak ${mixed.peak_device_mib} MiB (x${memory}), ${mixed.skipped_steps} skipped, loss scale ${mixed.loss_scale}`,
      };
    },
  },
  {
    id: "tests",
    title: "Test suite on this adapter",
    limitS: 240,
    async run(ctx) {
      // The dry run checks the plumbing on one GPU test file; CI runs the whole suite anyway.
      const files = ctx.opts.dry ? ["tests/gpu.test.ts"] : [];
      const r = await ctx.exec([BUN, "test", "--timeout", "300000", ...files], { CI: "true" });
      if (r.timedOut) throw new StepTimeout("bun test: over its time limit");
      const summary = parseTestSummary(r.all);
      if (!summary) throw new Error(`bun test: exit ${r.code}, no summary: ${tail(r.all)}`);
      const detail = `${summary.pass} pass, ${summary.fail} fail, ${summary.skip} skip of ${summary.ran}`;
      if (r.code !== 0 || summary.fail > 0) throw Object.assign(new Error(detail), { data: summary });
      return { data: summary, detail };
    },
  },
  {
    id: "test-scale",
    title: "Real-shape test tier (npm run test:scale)",
    limitS: 180,
    async run(ctx) {
      const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts?: Record<string, string> };
      if (!pkg.scripts?.["test:scale"]) throw Object.assign(new StepUnavailable("package.json has no test:scale script yet"), { absent: true });
      if (ctx.opts.dry) throw new StepUnavailable("dry run: the real-shape tier needs a GPU");
      const r = await ctx.exec([BUN, "run", "test:scale"], { CI: "true" });
      if (r.timedOut) throw new StepTimeout("test:scale: over its time limit");
      const summary = parseTestSummary(r.all);
      const detail = summary ? `${summary.pass} pass, ${summary.fail} fail of ${summary.ran}` : `exit ${r.code}`;
      if (r.code !== 0) throw Object.assign(new Error(`${detail}: ${tail(r.all)}`), { data: summary });
      return { data: summary, detail };
    },
  },
];

export const STEP_IDS = STEPS.map((s) => s.id);

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  for (const id of [...opts.skip, ...(opts.only ?? [])]) {
    if (!STEP_IDS.includes(id)) throw new Error(`--skip/--only: unknown step "${id}" (steps: ${STEP_IDS.join(", ")})`);
  }
  mkdirSync(opts.out, { recursive: true });
  const logPath = join(opts.out, "gpu-check.log");
  writeFileSync(logPath, `gpu-check ${new Date().toISOString()} ${opts.dry ? "(dry run) " : ""}budget ${opts.budgetS} s\n`);
  const log = (s: string) => {
    appendFileSync(logPath, s.endsWith("\n") ? s : s + "\n");
    console.error(s);
  };
  const work = mkdtempSync(join(process.env.SIRI_GPU_CHECK_WORK ?? tmpdir(), "siri-gpu-check-"));
  const t0 = performance.now();
  const results = new Map<string, StepResult>();
  for (const step of STEPS) {
    const started = performance.now();
    const leftS = opts.budgetS - (started - t0) / 1000;
    const res: StepResult = { id: step.id, title: step.title, status: "ok", seconds: 0, detail: "", data: null };
    results.set(step.id, res);
    if (opts.skip.has(step.id) || (opts.only && !opts.only.has(step.id))) {
      Object.assign(res, { status: "not run", detail: "skipped on the command line" });
      continue;
    }
    if (leftS < 10) {
      Object.assign(res, { status: "not run", detail: `out of time: ${leftS.toFixed(0)} s of the ${opts.budgetS} s budget left` });
      log(`== ${step.id}: not run (out of time)`);
      continue;
    }
    const limitS = Math.min(step.limitS, leftS);
    log(`== ${step.id} (limit ${limitS.toFixed(0)} s)`);
    const ctx: StepContext = {
      opts,
      work,
      limitS,
      results,
      async exec(cmd, env = {}) {
        log(`$ ${cmd.join(" ")}`);
        const deadline = started + limitS * 1000;
        const p = Bun.spawn(cmd, { cwd: ROOT, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
        const timer = setTimeout(() => p.kill("SIGKILL"), Math.max(1000, deadline - performance.now()));
        const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
        const code = await p.exited;
        clearTimeout(timer);
        const timedOut = p.signalCode === "SIGKILL";
        appendFileSync(logPath, out + err + `[exit ${code}${timedOut ? ", killed at the time limit" : ""}]\n`);
        return { code, out, all: `${out}\n${err}`, timedOut };
      },
    };
    try {
      const { data, detail } = await step.run(ctx);
      Object.assign(res, { status: "ok", data, detail });
    } catch (e) {
      const err = e as Error & { data?: unknown; absent?: boolean };
      const status: StepStatus = err.absent ? "absent" : e instanceof StepUnavailable ? "unavailable" : e instanceof StepTimeout ? "timeout" : "failed";
      Object.assign(res, { status, detail: err.message, data: err.data ?? null });
    }
    res.seconds = +((performance.now() - started) / 1000).toFixed(1);
    log(`   ${res.status} in ${res.seconds} s: ${res.detail}`);
  }
  rmSync(work, { recursive: true, force: true });
  const steps = [...results.values()];
  // Unavailable is a failure outside the dry run; "absent" (a tier not written yet) and skips are not.
  const bad = steps.filter((s) => s.status === "failed" || s.status === "timeout" || (!opts.dry && s.status === "unavailable"));
  const report = {
    date: new Date().toISOString(),
    dryRun: opts.dry,
    command: `scripts/gpu-check.sh ${process.argv.slice(2).join(" ")}`,
    seconds: +((performance.now() - t0) / 1000).toFixed(1),
    ok: bad.length === 0,
    steps,
    ratios: ratios(results),
  };
  writeAtomic(join(opts.out, "report.json"), JSON.stringify(report, null, 2) + "\n");
  writeAtomic(join(opts.out, "report.md"), markdown(report));
  log(`gpu-check: ${report.ok ? "ok" : `${bad.length} step(s) failed: ${bad.map((s) => s.id).join(", ")}`} in ${report.seconds} s; reports in ${opts.out}`);
  process.exit(report.ok ? 0 : 1);
}

function writeAtomic(path: string, text: string) {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

interface KernelRow {
  name: string;
  impl: string;
  ok: boolean;
  ms: number | null;
  gflops: number | null;
  gbps: number | null;
  pctCopyBw: number | null;
  check: string;
}

/** Each kernel's share of the ceilings measured in this run (WebGPU copy bandwidth; PyTorch's matrix peaks). */
function ratios(results: Map<string, StepResult>) {
  const k = results.get("kernels")?.data as { copyGBps: number; results: KernelRow[] } | null;
  const p = results.get("peaks")?.data as Record<string, number> | null;
  if (!k) return [];
  return k.results.map((r) => {
    // f32 kernels against the f32 (no TF32) peak; the subgroup-matrix kernel (f16 inputs) against the f16 peak.
    const peak = r.impl === "sgmat" ? p?.matmul_f16_tflops : p?.matmul_f32_tflops;
    return {
      name: r.name,
      impl: r.impl,
      ok: r.ok,
      ms: r.ms,
      gflops: r.gflops,
      gbps: r.gbps,
      pctCopyBw: r.pctCopyBw,
      pctMatrixPeak: r.gflops && peak ? (100 * r.gflops) / (peak * 1000) : null,
    };
  });
}

const fmt = (x: number | null | undefined, d = 2) => (x === null || x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(d));

export function markdown(report: { date: string; dryRun: boolean; command: string; seconds: number; ok: boolean; steps: StepResult[]; ratios: ReturnType<typeof ratios> }): string {
  const L: string[] = [];
  const step = (id: string) => report.steps.find((s) => s.id === id);
  L.push(`# gpu-check ${report.dryRun ? "(dry run) " : ""}${report.date}`, "");
  L.push(`\`${report.command}\`: **${report.ok ? "ok" : "FAILED"}** in ${report.seconds} s`, "");
  L.push("| step | status | s | detail |", "| --- | --- | --- | --- |");
  for (const s of report.steps) L.push(`| ${s.id} | ${s.status} | ${s.seconds} | ${s.detail.replace(/\|/g, "\\|").slice(0, 300)} |`);
  const ad = step("adapter")?.data as { adapter: Record<string, unknown>; features: string[]; limits: Record<string, number> } | null;
  if (ad) {
    L.push("", "## Adapter", "");
    for (const [k, v] of Object.entries(ad.adapter)) L.push(`- ${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
    L.push(`- features: ${ad.features.join(", ")}`);
    for (const [k, v] of Object.entries(ad.limits)) L.push(`- ${k}: ${v}`);
  }
  const peaks = step("peaks")?.data as Record<string, number | string> | null;
  if (peaks) L.push("", "## Ceilings measured with PyTorch", "", ...Object.entries(peaks).map(([k, v]) => `- ${k}: ${typeof v === "number" ? v.toFixed(1) : v}`));
  const k = step("kernels")?.data as { copyGBps: number } | null;
  if (report.ratios.length) {
    L.push("", "## Kernels", "", `WebGPU copy bandwidth (copyBufferToBuffer, read + write): ${fmt(k?.copyGBps, 1)} GB/s`, "");
    L.push("| kernel | impl | ok | ms | GFLOP/s | GB/s | % copy bw | % matrix peak |", "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (const r of report.ratios) {
      L.push(`| ${r.name} | ${r.impl} | ${r.ok ? "yes" : "NO"} | ${fmt(r.ms, 3)} | ${fmt(r.gflops, 1)} | ${fmt(r.gbps, 1)} | ${fmt(r.pctCopyBw, 1)} | ${fmt(r.pctMatrixPeak, 1)} |`);
    }
  }
  for (const id of ["checkpoint", "generate", "train", "logits", "tests", "test-scale"]) {
    const s = step(id);
    if (s?.data) L.push("", `## ${s.title}`, "", "```json", JSON.stringify(s.data, null, 1).slice(0, 4000), "```");
  }
  return L.join("\n") + "\n";
}

if (import.meta.main) {
  if (!existsSync(join(ROOT, "package.json"))) throw new Error(`gpu_check.ts: ${ROOT} is not the project root`);
  await main();
}
