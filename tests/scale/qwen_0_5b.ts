// `npm run test:scale`: the real model's shapes end to end on whatever adapter
// there is (the software one on a machine without a GPU). A random checkpoint
// in Qwen2.5-0.5B's exact configuration (vocab 151936 padded over the
// R1-Distill tokenizer's 151,665 ids, hidden 896, 24 layers, 14 / 2 heads,
// intermediate 4864, tied, bf16 as Qwen2.5-0.5B ships) is written tensor by
// tensor (tests/scale/shapes.ts), then:
//   1. whole-model logits (GPU, f32) against the independent CPU reference;
//   2. generation at temperature 1 with the padded vocabulary: the unmasked
//      sampler draws padded ids from this model, the masked engine never does;
//   3. two RL steps through `siri train`'s config and `train()` in a process
//      of their own (tests/scale/rl.ts: tiny rollouts, with a stated reward
//      signal so the gradient is not zero), then the run folder checked:
//      grad_norm > 0, every tensor and every real vocabulary row moved within
//      AdamW's bound, the padded rows not at all, trough / peak / resume
//      checkpoints that transformers and vLLM load as they are;
//   4. `siri export` of the trough checkpoint to bf16, reloaded and compared;
// recording time and peak host memory of each part (JSON on the last line).
// Exits non-zero on the first failed check. Not part of `bun test` (tens of
// minutes on 2 cores, ~10 GiB of memory): run it alone. The suite runs a
// bounded part of it (tests/scale/real_vocab.test.ts).
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../../src/engine/generate.ts";
import { loadModel, sequenceLogits } from "../../src/engine/load.ts";
import { Gpu } from "../../src/gpu/index.ts";
import { referenceLogits, type Weights } from "../../src/model/reference.ts";
import { openCheckpoint, qwen2WeightSpec } from "../../src/model/safetensors.ts";
import { loadTokenizer, vocabLimit } from "../../src/model/tokenizer.ts";
import { compare } from "../helpers.ts";
import { servingProblems } from "../hf_layout.ts";
import { TOL } from "../tolerances.ts";
import { checkRlRun, rlArgs, rlConfig } from "./rl.ts";
import { peakRss, QWEN25_0_5B, R1_TOKENIZER_IDS, writeRandomCheckpoint } from "./shapes.ts";

const REPO = join(import.meta.dir, "../..");
const ROOT = process.env.SIRI_SCALE_DIR ?? mkdtempSync(join(tmpdir(), "siri-scale-"));
const keep = process.env.SIRI_SCALE_KEEP === "1";
const report: Record<string, unknown> = { adapter: "", config: "Qwen2.5-0.5B shape, vocab 151936 over 151665 ids" };
const t00 = performance.now();

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`test:scale: ${what}`);
  console.error(`  ok  ${what}`);
}

async function part<T>(name: string, f: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  console.error(`[scale] ${name}`);
  const r = await f();
  report[name] = { seconds: +((performance.now() - t0) / 1000).toFixed(1), ...(report[name] as object) };
  console.error(`[scale] ${name}: ${((performance.now() - t0) / 1000).toFixed(1)} s, peak RSS so far ${(peakRss() / 2 ** 30).toFixed(2)} GiB`);
  return r;
}

/** Run a Bun script of this repository (the CLI, or tests/scale/rl.ts), polling its peak RSS; throws with its output on failure. */
async function bunScript(script: string, args: string[], what: string): Promise<{ out: string; peak: number }> {
  const p = Bun.spawn([process.execPath, join(REPO, script), ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  let peak = 0;
  const poll = setInterval(() => (peak = Math.max(peak, peakRss(p.pid))), 200);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  const code = await p.exited;
  clearInterval(poll);
  if (code !== 0) throw new Error(`test:scale: ${what} exited ${code}\n${out}\n${err}`);
  return { out: out + err, peak };
}

async function main(): Promise<void> {
  const c = QWEN25_0_5B;
  const dir = join(ROOT, "qwen2.5-0.5b-shaped");
  const gpu = await Gpu.open();
  report.adapter = gpu.adapter.description;
  console.error(`[scale] adapter ${gpu.adapter.description}, folder ${ROOT}`);

  // ---- the checkpoint, tensor by tensor
  const specs = qwen2WeightSpec(c);
  await part("write checkpoint", async () => {
    report["write checkpoint"] = { bytes: await writeRandomCheckpoint(dir, c) };
  });
  const tok = loadTokenizer(dir);
  const limit = vocabLimit(c.vocabSize, tok);
  check(limit === R1_TOKENIZER_IDS && c.vocabSize === 151936, `padded vocabulary: config ${c.vocabSize} rows, tokenizer ${tok.size} ids`);
  const tokens = tok.encode(tok.applyChatTemplate([{ role: "user", content: "What is 2+3? Let's think step by step." }], { addGenerationPrompt: true }));

  // ---- 1. whole-model logits vs the CPU reference
  await part("logits vs reference", async () => {
    const m = await loadModel(gpu, dir, "f32");
    const got = await sequenceLogits(m.model, tokens);
    m.model.destroy();
    // The reference reads each tensor when it needs it (no copy of the whole model).
    const reader = openCheckpoint(dir);
    const lazy = { get: (n: string) => (reader.has(n) ? reader.readF32(n) : undefined) } as unknown as Weights;
    const want = referenceLogits(lazy, c, tokens);
    reader.close();
    const r = compare(got, want, TOL.model_logits_f32.atol, TOL.model_logits_f32.rtol);
    report["logits vs reference"] = { tokens: tokens.length, maxAbs: r.maxAbs, maxRel: r.maxRel };
    check(r.ok, `logits of ${tokens.length} tokens x ${c.vocabSize} within atol ${TOL.model_logits_f32.atol} / rtol ${TOL.model_logits_f32.rtol} (max abs ${r.maxAbs.toExponential(2)}) ${r.mismatches.slice(0, 3).join("; ")}`);
  });

  // ---- 2. generation at temperature 1 with the padded vocabulary
  await part("generation", async () => {
    const m = await loadModel(gpu, dir, gpu.features.f16 ? "f16" : "f32");
    const reqs = Array.from({ length: 4 }, (_, i) => ({ id: i, prompt: tokens, maxTokens: 8, stop: [] as number[] }));
    const draw = async (vocab: number | undefined) => {
      const e = await Engine.create(m.model, { maxBatch: 4, maxSeqLen: 64, cacheTokens: 4 * 64, blockSize: 16, prefillChunk: 64, vocabLimit: vocab });
      const ids: number[] = [];
      try {
        for await (const r of e.generate(reqs, { temperature: 1, topP: 1, topK: 0, seed: 3 })) ids.push(...r.tokens);
      } finally {
        e.destroy();
      }
      return ids;
    };
    const unmasked = await draw(undefined);
    const masked = await draw(limit);
    m.model.destroy();
    const padded = unmasked.filter((t) => t >= limit).length;
    report.generation = { tokens: masked.length, unmaskedPaddedDraws: padded, maskedPaddedDraws: masked.filter((t) => t >= limit).length };
    check(padded > 0, `without the mask the sampler draws padded ids (${padded} of ${unmasked.length})`);
    check(masked.length === 4 * 8 && masked.every((t) => t < limit), `with the mask: ${masked.length} tokens, none >= ${limit}`);
    tok.decode(masked); // throws on an unknown id
  });
  gpu.destroy();

  // ---- 3. two RL steps: siri train's config and train() in a process of their own, with a reward signal
  const cfg = rlConfig(dir, join(ROOT, "run"), 2);
  const run = cfg.out;
  await part("siri train (2 RL steps)", async () => {
    // What `siri train --plan` says these steps need (an estimate, recorded beside the measured peak).
    const plan = await bunScript("src/cli.ts", ["train", "--plan", ...rlArgs(dir, run, 2)], "siri train --plan");
    const planTotal = /^\s*([\d.]+ \w+)\s+total$/m.exec(plan.out)?.[1];
    check(planTotal !== undefined && !existsSync(run), `siri train --plan at these shapes: ${planTotal} of adapter memory, nothing written`);
    const r = await bunScript("tests/scale/rl.ts", [dir, run, "2"], "RL steps");
    const rl = checkRlRun(dir, cfg, c, limit);
    const ms = rl.metrics;
    report["siri train (2 RL steps)"] = {
      peakRssBytes: r.peak,
      planTotal,
      maxWeightStep: rl.maxStep,
      steps: ms.map((m) => ({
        cap: m.cap,
        loss: m.loss,
        grad_norm: m.grad_norm,
        rollout_tokens: m.rollout_tokens,
        step_time_s: m.step_time_s,
        rollout_s: m.rollout_tokens_per_s > 0 ? m.rollout_tokens / m.rollout_tokens_per_s : 0,
        mismatch_logp_abs_mean: m.mismatch_logp_abs_mean,
        mismatch_logp_abs_max: m.mismatch_logp_abs_max,
      })),
    };
    check(rl.problems.length === 0, `2 RL steps: ${rl.problems.length ? rl.problems.slice(0, 10).join("; ") : `finite loss (${ms.map((m) => m.loss).join(", ")}), grad_norm ${ms.map((m) => m.grad_norm.toExponential(2)).join(", ")}`}`);
    check(rl.changedTensors === qwen2WeightSpec(c).length && rl.realRowsChanged === limit && rl.paddedRowsSame === c.vocabSize - limit, `every tensor moved (${rl.changedTensors}), every real row (${rl.realRowsChanged}), no padded row (${rl.paddedRowsSame} unchanged); largest step ${rl.maxStep.toExponential(3)} <= ${rl.stepBound.toExponential(3)}`);
    for (const n of ["trough-cycle1", "peak-cycle1"]) {
      const problems = servingProblems(join(run, "checkpoints", n), c);
      check(problems.length === 0, `checkpoint ${n} is what transformers / vLLM load ${problems.join("; ")}`);
    }
    check(JSON.parse(readFileSync(join(run, "checkpoints", "trough-cycle1", "config.json"), "utf8")).torch_dtype === "bfloat16", "the trough checkpoint is bf16, as the base ships");
    check(!existsSync(join(run, "checkpoints", "trough-cycle1", "training_state", "optimizer.safetensors")), "no optimiser state in the trough checkpoint");
  });

  // ---- 4. export the trough checkpoint to bf16 and reload it
  await part("export + reload", async () => {
    const out = join(ROOT, "trough-bf16");
    const r = await bunScript("src/cli.ts", ["export", join(run, "checkpoints", "trough-cycle1"), "--dtype", "bf16", "--out", out], "siri export");
    report["export + reload"] = { peakRssBytes: r.peak };
    const a = openCheckpoint(join(run, "checkpoints", "trough-cycle1"));
    const b = openCheckpoint(out);
    let same = true;
    for (const s of specs) same &&= Buffer.from(a.read(s.name).data).equals(Buffer.from(b.read(s.name).data));
    a.close();
    b.close();
    check(same, "the exported bf16 tensors equal the trough checkpoint's");
    const problems = servingProblems(out, c);
    check(problems.length === 0, `the export is what transformers / vLLM load ${problems.join("; ")}`);
    const g = await Gpu.open();
    const m = await loadModel(g, out, "f32");
    const logits = await sequenceLogits(m.model, tokens.slice(0, 8));
    m.model.destroy();
    g.destroy();
    check(logits.every((x) => Number.isFinite(x)), "the export loads in the engine and gives finite logits");
  });

  report.totalSeconds = +((performance.now() - t00) / 1000).toFixed(1);
  report.peakRssBytes = peakRss();
  console.log(JSON.stringify(report));
}

try {
  await main();
} finally {
  if (!keep && !process.env.SIRI_SCALE_DIR) rmSync(ROOT, { recursive: true, force: true });
}
