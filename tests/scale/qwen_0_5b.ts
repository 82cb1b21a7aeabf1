// `npm run test:scale`: the real model's shapes end to end on whatever adapter
// there is (the software one in CI). A random checkpoint in Qwen2.5-0.5B's
// exact configuration (vocab 151936 padded over the R1-Distill tokenizer's
// 151,665 ids, hidden 896, 24 layers, 14 / 2 heads, intermediate 4864, tied,
// bf16 as Qwen2.5-0.5B ships) is written tensor by tensor, then:
//   1. whole-model logits (GPU, f32) against the independent CPU reference;
//   2. generation at temperature 1 with the padded vocabulary: the unmasked
//      sampler draws padded ids from this model, the masked engine never does;
//   3. two RL steps through `siri train --model DIR` (tiny rollouts), with
//      trough / peak checkpoints;
//   4. `siri export` of the trough checkpoint to bf16, reloaded and compared;
// recording time and peak host memory of each part (JSON on the last line).
// Exits non-zero on the first failed check. Not part of `bun test` (minutes,
// several GiB of memory): run it alone.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../../src/engine/generate.ts";
import { loadModel, sequenceLogits } from "../../src/engine/load.ts";
import { Gpu } from "../../src/gpu/index.ts";
import { qwen2ConfigJson, type Qwen2Config } from "../../src/model/config.ts";
import { referenceLogits, type Weights } from "../../src/model/reference.ts";
import { openCheckpoint, qwen2WeightSpec } from "../../src/model/safetensors.ts";
import { writeModelWeights } from "../../src/model/shards.ts";
import { loadTokenizer, vocabLimit } from "../../src/model/tokenizer.ts";
import { compare } from "../helpers.ts";
import { TOL } from "../tolerances.ts";
import { writeR1Tokenizer } from "../fixtures/r1_tokenizer.ts";

/** Qwen2.5-0.5B's config.json (Qwen/Qwen2.5-0.5B), as published. */
export const QWEN25_0_5B: Qwen2Config = {
  hiddenSize: 896,
  intermediateSize: 4864,
  numLayers: 24,
  numHeads: 14,
  numKvHeads: 2,
  headDim: 64,
  ropeTheta: 1000000,
  rmsNormEps: 1e-6,
  tieWordEmbeddings: true,
  vocabSize: 151936,
  maxPositions: 32768,
  bosTokenId: 151643,
  eosTokenIds: [151643],
  torchDtype: "bfloat16",
};

const REPO = join(import.meta.dir, "../..");
const ROOT = process.env.SIRI_SCALE_DIR ?? mkdtempSync(join(tmpdir(), "siri-scale-"));
const keep = process.env.SIRI_SCALE_KEEP === "1";
const report: Record<string, unknown> = { adapter: "", config: "Qwen2.5-0.5B shape, vocab 151936 over 151665 ids" };
const t00 = performance.now();

/** The peak resident set of a process so far (VmHWM), bytes. */
function peakRss(pid: number | "self" = "self"): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

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

/**
 * A random tensor with the spread of HF's init (std 0.02; norms 1 ± 0.05),
 * seeded by its index: uniform values from xorshift32 (a normal draw per
 * element would take minutes at 494M parameters). The embedding is biased
 * toward the padded rows (column 0 is 1 for real ids, 2 for padded ones, as
 * makeTinyModel's padBias does, with the final norm's weight 0 raised to 20
 * so that the 24 random layers do not wash it out), so a sampler that did
 * not mask them would draw them.
 */
function randomTensor(c: Qwen2Config, limit: number, name: string, shape: number[], index: number): Float32Array {
  const data = new Float32Array(shape.reduce((a, d) => a * d, 1));
  const isNorm = name.endsWith("layernorm.weight") || name === "model.norm.weight";
  const [base, std] = isNorm ? [1, 0.05] : [0, 0.02];
  const scale = (2 * Math.sqrt(3) * std) / 4294967296; // uniform on ±√3·std has standard deviation std
  let x = (0x9e3779b9 ^ (index * 2654435761)) >>> 0 || 1;
  for (let i = 0; i < data.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    data[i] = base + ((x >>> 0) - 2147483648) * scale;
  }
  if (name === "model.embed_tokens.weight") for (let r = 0; r < c.vocabSize; r++) data[r * c.hiddenSize] = r < limit ? 1 : 2;
  // The final norm scales h_0 up (~20·x_0/rms): a padded row's logit exceeds a real one's by h_0.
  if (name === "model.norm.weight") data[0] = 20;
  return data;
}

/** Spawn the CLI, polling its peak RSS; throws with its output on failure. */
async function cli(args: string[], what: string): Promise<{ out: string; peak: number }> {
  const p = Bun.spawn([process.execPath, join(REPO, "src/cli.ts"), ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
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
    writeR1Tokenizer(dir);
    const limit = loadTokenizer(dir).size;
    writeFileSync(join(dir, "config.json"), JSON.stringify(qwen2ConfigJson(c), null, 2) + "\n");
    const index = new Map(specs.map((s, i) => [s.name, i]));
    await writeModelWeights(dir, specs, (n) => randomTensor(c, limit, n, specs[index.get(n)!].shape, index.get(n)!), { dtype: "BF16" });
    report["write checkpoint"] = { bytes: readdirSync(dir).filter((f) => f.endsWith(".safetensors")).reduce((a, f) => a + Bun.file(join(dir, f)).size, 0) };
  });
  const tok = loadTokenizer(dir);
  const limit = vocabLimit(c.vocabSize, tok);
  check(limit === 151665 && c.vocabSize === 151936, `padded vocabulary: config ${c.vocabSize} rows, tokenizer ${tok.size} ids`);
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

  // ---- 3. two RL steps through `siri train --model DIR`
  const run = join(ROOT, "run");
  await part("siri train (2 RL steps)", async () => {
    const set = [
      "warmStart.steps=0",
      "promptsPerStep=2",
      "groupSize=2",
      'schedule={"kind":"cosine","lMax":16,"lMin":8,"period":2}',
      "rollout.maxBatch=4",
      "rollout.dtype=f32",
      "policy.microBatchTokens=512",
      "validation.problems=2",
      "validation.n=1",
      "validation.maxTokens=8",
      "checkpoint.every=2",
      "checkpoint.keepLast=1",
    ].join(",");
    const r = await cli(["train", "--preset", "demo", "--model", dir, "--out", run, "--steps", "2", "--no-progress", "--set", set], "siri train");
    const metrics = readFileSync(join(run, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    report["siri train (2 RL steps)"] = { peakRssBytes: r.peak, steps: metrics.map((m) => ({ cap: m.cap, loss: m.loss, grad_norm: m.grad_norm, rollout_tokens: m.rollout_tokens, step_time_s: m.step_time_s })) };
    check(metrics.length === 2 && metrics.every((m) => Number.isFinite(m.loss) && m.grad_norm > 0 && !m.skipped), `2 RL steps with finite loss and gradient (${metrics.map((m) => m.loss).join(", ")})`);
    for (const n of ["step-000002", "trough-cycle1", "peak-cycle1"]) check(existsSync(join(run, "checkpoints", n, "config.json")), `checkpoint ${n}`);
    check(JSON.parse(readFileSync(join(run, "checkpoints", "trough-cycle1", "config.json"), "utf8")).torch_dtype === "bfloat16", "the trough checkpoint is bf16, as the base ships");
  });

  // ---- 4. export the trough checkpoint to bf16 and reload it
  await part("export + reload", async () => {
    const out = join(ROOT, "trough-bf16");
    const r = await cli(["export", join(run, "checkpoints", "trough-cycle1"), "--dtype", "bf16", "--out", out], "siri export");
    report["export + reload"] = { peakRssBytes: r.peak };
    const a = openCheckpoint(join(run, "checkpoints", "trough-cycle1"));
    const b = openCheckpoint(out);
    let same = true;
    for (const s of specs) same &&= Buffer.from(a.read(s.name).data).equals(Buffer.from(b.read(s.name).data));
    a.close();
    b.close();
    check(same, "the exported bf16 tensors equal the trough checkpoint's");
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
