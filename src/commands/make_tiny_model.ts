// `siri make-tiny-model DIR`: write a tiny random Qwen2 checkpoint (HF layout, own BPE tokenizer).
import { defineCommand } from "citty";
import { memoryPlan } from "../model/config.ts";
import { TINY_PRESETS, makeTinyModel, type TinyDtype, type TinyPreset } from "../model/tiny.ts";
import { int } from "./common.ts";

export default defineCommand({
  meta: { name: "make-tiny-model", description: "Write a tiny random Qwen2 checkpoint with a byte-level BPE tokenizer and the DeepSeek-R1-Distill chat template" },
  args: {
    dir: { type: "positional", required: true, description: "Output directory (created if missing)" },
    preset: { type: "string", default: "tiny", description: `Shape: ${Object.keys(TINY_PRESETS).join(" | ")} (tiny: hidden 64, 2 layers, 4 heads, 2 kv heads, tied)` },
    dtype: { type: "string", default: "f32", description: "Weight dtype in model.safetensors: f32 | f16 | bf16" },
    seed: { type: "string", default: "0", description: "Seed of the deterministic init" },
  },
  run({ args }) {
    const preset = args.preset as TinyPreset;
    if (!(preset in TINY_PRESETS)) throw new Error(`--preset: expected one of ${Object.keys(TINY_PRESETS).join(", ")}, got "${args.preset}"`);
    const dtype = args.dtype as TinyDtype;
    if (!["f32", "f16", "bf16"].includes(dtype)) throw new Error(`--dtype: expected f32, f16 or bf16, got "${args.dtype}"`);
    const seed = int("seed", args.seed, 0);
    const { config, files } = makeTinyModel(args.dir, { preset, dtype, seed });
    const plan = memoryPlan(config);
    console.log(
      `wrote ${args.dir}: preset ${preset}, ${config.numLayers} layers, hidden ${config.hiddenSize}, ` +
        `${config.numHeads}/${config.numKvHeads} heads, vocab ${config.vocabSize}, ${plan.params} parameters (${dtype}, ${plan.paramBytes} bytes)`,
    );
    for (const f of files) console.log(`  ${f}`);
  },
});
