// Checkpoint folders that serving tools read as they are: the model's weights
// alone at the top level (sharded like transformers' save_pretrained, with its
// model.safetensors.index.json), the training state in a subfolder, trough /
// peak checkpoints in the base model's dtype, `siri export`, retention and the
// disk plan. Python's transformers is not installed here, so the layout is
// checked against the documented format: the index is
// {"metadata": {"total_size": bytes of all tensors}, "weight_map": {tensor: shard}},
// shards are named model-0000i-of-0000N.safetensors, and a loader that reads
// every top-level *.safetensors (vLLM / SGLang without an index) must find
// exactly the model's tensors (tests/hf_layout.ts: what transformers and vLLM read).
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel, sequenceLogits } from "../src/engine/load.ts";
import { QWEN2_1_5B } from "../src/model/config.ts";
import { loadReferenceModel, referenceLogits } from "../src/model/reference.ts";
import { bf16BitsToF32, f32ToBf16Bits, openCheckpoint, openSafetensors, qwen2WeightSpec, writeSafetensors } from "../src/model/safetensors.ts";
import { planShards, shardName, writeModelWeights } from "../src/model/shards.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { diskPlan, exportCheckpoint, loadCheckpoint, pruneCheckpoints, saveCheckpoint, STATE_DIR } from "../src/train/checkpoint.ts";
import { TrainModel } from "../src/train/model.ts";
import { Optimizer } from "../src/train/optim.ts";
import { expectClose, gpuOrSkip, hasGpu } from "./helpers.ts";
import { servedTensors, servingProblems } from "./hf_layout.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-ckpt-layout-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));
const CLI = join(import.meta.dir, "../src/cli.ts");

/** The index is transformers' format and consistent with its shards. */
function checkIndex(dir: string): { shards: string[]; total: number } {
  const idx = JSON.parse(readFileSync(join(dir, "model.safetensors.index.json"), "utf8"));
  expect(Object.keys(idx).sort()).toEqual(["metadata", "weight_map"]);
  const shards = [...new Set(Object.values(idx.weight_map as Record<string, string>))].sort();
  shards.forEach((s, i) => expect(s).toBe(`model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`));
  let total = 0;
  for (const s of shards) {
    const r = openSafetensors(join(dir, s));
    for (const n of r.names()) {
      expect(idx.weight_map[n]).toBe(s);
      total += r.entry(n).byteLength;
    }
    r.close();
  }
  expect(idx.metadata.total_size).toBe(total);
  // Every top-level .safetensors is a listed shard: nothing else for a glob loader to misread.
  expect(readdirSync(dir).filter((f) => f.endsWith(".safetensors")).sort()).toEqual(shards);
  return { shards, total };
}

describe("sharded writer (CPU)", () => {
  test("planShards closes a shard before it would exceed the limit; an oversized tensor gets its own", () => {
    const t = (name: string, n: number) => ({ name, shape: [n] });
    const plan = planShards([t("a", 10), t("b", 10), t("c", 30), t("d", 5)], "F32", 80);
    expect(plan.map((s) => s.map((x) => x.name))).toEqual([["a", "b"], ["c"], ["d"]]);
    expect(planShards([t("a", 10), t("b", 10)], "BF16", 40).length).toBe(1);
    expect(shardName(0, 1)).toBe("model.safetensors");
    expect(shardName(1, 12)).toBe("model-00002-of-00012.safetensors");
  });

  test("a tiny model written in 3 bf16 shards reads back as the rounded weights, with a transformers index", async () => {
    const src = join(ROOT, "tiny-src");
    makeTinyModel(src, { preset: "tiny-untied", seed: 4 });
    const ref = loadReferenceModel(src);
    const specs = qwen2WeightSpec(ref.config);
    const total = specs.reduce((a, s) => a + 2 * s.shape.reduce((x, y) => x * y, 1), 0);
    const dir = join(ROOT, "tiny-sharded");
    mkdirSync(dir);
    const asked: string[] = [];
    const files = await writeModelWeights(dir, specs, (n) => (asked.push(n), ref.weights.get(n)!), { dtype: "BF16", maxShardBytes: Math.ceil(total / 3) });
    expect(asked).toEqual(specs.map((s) => s.name)); // each tensor produced once, in order
    const n = planShards(specs, "BF16", Math.ceil(total / 3)).length;
    expect(n).toBeGreaterThanOrEqual(3);
    expect(files.length).toBe(n + 1); // shards + index
    const { shards, total: t } = checkIndex(dir);
    expect(shards.length).toBe(n);
    expect(t).toBe(total);
    const r = openCheckpoint(dir);
    for (const s of specs) expectClose(r.readF32(s.name), bf16BitsToF32(f32ToBf16Bits(ref.weights.get(s.name)!)), 0, 0, s.name);
    r.close();
    expect(readdirSync(dir).some((f) => f.includes(".tmp"))).toBe(false);
  });
});

describe("what serving tools read (CPU)", () => {
  test("servingProblems is empty for make-tiny-model's folder and names each thing a loader would misread", () => {
    const dir = join(ROOT, "serve");
    makeTinyModel(dir, { preset: "tiny", seed: 3 });
    const c = loadReferenceModel(dir).config;
    expect(servingProblems(dir, c)).toEqual([]);
    const spoil = (name: string, f: (d: string) => void): string[] => {
      const d = join(ROOT, `serve-${name}`);
      cpSync(dir, d, { recursive: true });
      f(d);
      return servingProblems(d, c);
    };
    // The old layout: optimiser moments beside the model (vLLM without an index reads them as weights).
    const opt = spoil("optimizer", (d) => writeSafetensors(join(d, "optimizer.safetensors"), { "m.model.norm.weight": { dtype: "F32", shape: [c.hiddenSize], data: new Float32Array(c.hiddenSize) } }, { format: "pt" }));
    expect(opt.join("\n")).toContain("not [model.safetensors]");
    expect(opt.join("\n")).toContain("extra [m.model.norm.weight]");
    expect(spoil("bin", (d) => writeFileSync(join(d, "optimizer.pt"), "x"))).toEqual(["top-level optimizer.pt (a loader may read it as weights)"]);
    const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    expect(spoil("dtype", (d) => writeFileSync(join(d, "config.json"), JSON.stringify({ ...cfg, torch_dtype: "bfloat16" })))).toEqual(["config.json torch_dtype bfloat16, the weights are F32"]);
    expect(spoil("arch", (d) => writeFileSync(join(d, "config.json"), JSON.stringify({ ...cfg, model_type: "llama" })))).toEqual(['config.json model_type "llama"']);
    // A weights file without format "pt" in its metadata: transformers refuses it.
    const w = loadReferenceModel(dir).weights;
    const noFormat = spoil("format", (d) => writeSafetensors(join(d, "model.safetensors"), Object.fromEntries([...w].map(([n, x]) => [n, { dtype: "F32", shape: qwen2WeightSpec(c).find((s) => s.name === n)!.shape, data: x }]))));
    expect(noFormat).toEqual(["model.safetensors (format undefined): transformers refuses metadata without format pt"]);
  });
});

describe("retention and the disk plan (CPU)", () => {
  test("pruneCheckpoints keeps the newest keepLast resume points and keepExtremes trough/peak ones (0 = all)", () => {
    const root = join(ROOT, "prune");
    const make = (n: string, step: number) => {
      mkdirSync(join(root, n, STATE_DIR), { recursive: true });
      writeFileSync(join(root, n, STATE_DIR, "trainer_state.json"), JSON.stringify({ step }));
    };
    [2, 4, 6].forEach((s) => make(`step-00000${s}`, s));
    make("trough-cycle1", 2);
    make("peak-cycle1", 4);
    make("trough-cycle2", 6);
    pruneCheckpoints(root, { keepLast: 2, keepExtremes: 0 });
    expect(readdirSync(root).sort()).toEqual(["peak-cycle1", "step-000004", "step-000006", "trough-cycle1", "trough-cycle2"]);
    pruneCheckpoints(root, { keepLast: 1, keepExtremes: 2 });
    expect(readdirSync(root).sort()).toEqual(["peak-cycle1", "step-000006", "trough-cycle2"]);
  });

  test("disk plan at 1.5B: a resume point is f32 weights + AdamW (~21 GB), a bf16 trough/peak 3.55 GB", () => {
    const P = 1_777_088_000;
    const rows = diskPlan(QWEN2_1_5B, { keepLast: 2, keepExtremes: 0, extremes: 6, extremesDtype: "BF16" });
    expect(rows[0].bytes).toBe(3 * 12 * P);
    expect(rows[1].bytes).toBe(6 * 2 * P);
    expect(diskPlan(QWEN2_1_5B, { keepLast: 1, keepExtremes: 2, extremes: 6, extremesDtype: "F16" })[1].bytes).toBe(2 * 2 * P);
  });
});

describe.skipIf(!GPU)("checkpoints of a training model", () => {
  test("resume point: model weights alone at the top, optimiser and trainer state in training_state/; trough: bf16, no optimiser; export", async () => {
    const gpu = await gpuOrSkip();
    const base = join(ROOT, "base");
    makeTinyModel(base, { preset: "tiny", seed: 12, padRows: 8 });
    const ref = loadReferenceModel(base);
    const model = await TrainModel.create(gpu, ref.config, ref.weights);
    const opt = await Optimizer.create(gpu, model.params, { lr: 1e-3, warmupSteps: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 });
    const names = model.params.map((p) => p.name);
    const specNames = qwen2WeightSpec(ref.config).map((s) => s.name).sort();
    const total = model.params.reduce((a, p) => a + 4 * p.size, 0);

    // A resume point in 2 shards: only the model's tensors are served.
    const step = join(ROOT, "run", "step-000002");
    await saveCheckpoint(step, model, opt, { tokenizerDir: base, trainerState: { step: 2 }, maxShardBytes: Math.ceil(total / 2) });
    expect([...servedTensors(step).keys()].sort()).toEqual(specNames);
    expect(checkIndex(step).shards.length).toBe(planShards(model.params, "F32", Math.ceil(total / 2)).length);
    expect(checkIndex(step).shards.length).toBeGreaterThanOrEqual(2);
    expect(servingProblems(step, ref.config)).toEqual([]);
    expect(readdirSync(join(step, STATE_DIR)).sort()).toEqual(["optimizer.safetensors", "trainer_state.json"]);
    expect(JSON.parse(readFileSync(join(step, "config.json"), "utf8")).torch_dtype).toBe("float32");
    const back = loadCheckpoint(step, names);
    expect(back.optimizer!.m.length).toBe(names.length);
    expect(back.trainerState!.step).toBe(2);
    for (const [n, w] of ref.weights) expect(Buffer.from(back.weights.get(n)!.buffer).equals(Buffer.from(w.buffer))).toBe(true);

    // A trough checkpoint as R1-Distill ships: bf16, one file, no optimiser state.
    const trough = join(ROOT, "run", "trough-cycle1");
    await saveCheckpoint(trough, model, null, { tokenizerDir: base, trainerState: { step: 2 }, dtype: "BF16" });
    const served = servedTensors(trough);
    expect([...served.keys()].sort()).toEqual(specNames);
    expect([...served.values()].every((t) => t.dtype === "BF16")).toBe(true);
    expect(existsSync(join(trough, "model.safetensors.index.json"))).toBe(false);
    expect(servingProblems(trough, ref.config)).toEqual([]);
    expect(readdirSync(join(trough, STATE_DIR))).toEqual(["trainer_state.json"]);
    expect(JSON.parse(readFileSync(join(trough, "config.json"), "utf8")).torch_dtype).toBe("bfloat16");
    for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) expect(existsSync(join(trough, f))).toBe(true);
    // The bf16 folder loads in the engine and agrees with the reference on its own (rounded) weights.
    const m = await loadModel(gpu, trough, "f32");
    const r16 = loadReferenceModel(trough);
    const tokens = m.tokenizer.encode("The quick brown fox");
    expectClose(await sequenceLogits(m.model, tokens), referenceLogits(r16.weights, r16.config, tokens), TOL.model_logits_f32.atol, TOL.model_logits_f32.rtol, "bf16 trough logits");
    m.model.destroy();
    await expect(saveCheckpoint(join(ROOT, "run", "bad"), model, opt, { tokenizerDir: base, trainerState: {}, dtype: "BF16" })).rejects.toThrow(/a resume point \(with optimiser state\) needs f32 weights/);

    // siri export: the resume point as bf16 (3 shards), and back to f32 bit for bit.
    const out16 = join(ROOT, "export-bf16");
    const p = Bun.spawnSync([process.execPath, CLI, "export", step, "--dtype", "bf16", "--out", out16, "--max-shard-gb", String(total / 2 / 3 / 1e9)], { stdout: "pipe", stderr: "pipe" });
    expect(p.stderr.toString()).toBe("");
    expect(p.exitCode).toBe(0);
    expect(checkIndex(out16).shards.length).toBeGreaterThanOrEqual(3);
    expect(existsSync(join(out16, STATE_DIR))).toBe(false);
    expect(servingProblems(out16, ref.config)).toEqual([]);
    expect(JSON.parse(readFileSync(join(out16, "config.json"), "utf8")).torch_dtype).toBe("bfloat16");
    const e16 = openCheckpoint(out16);
    for (const [n, w] of ref.weights) expectClose(e16.readF32(n), bf16BitsToF32(f32ToBf16Bits(w)), 0, 0, `exported ${n}`);
    e16.close();
    const out32 = join(ROOT, "export-f32");
    await exportCheckpoint(step, out32, "f32");
    const e32 = openCheckpoint(out32);
    for (const [n, w] of ref.weights) expect(Buffer.from(e32.readF32(n).buffer).equals(Buffer.from(w.buffer))).toBe(true);
    e32.close();
    await expect(exportCheckpoint(step, out32, "f32")).rejects.toThrow(`export: ${out32} already exists`);
    const bad = Bun.spawnSync([process.execPath, CLI, "export", step, "--dtype", "fp8", "--out", join(ROOT, "x")], { stdout: "pipe", stderr: "pipe" });
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr.toString() + bad.stdout.toString()).toContain('--dtype: expected bf16, f16 or f32, got "fp8"');
    opt.destroy();
    model.destroy();
  });
});
