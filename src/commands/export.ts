// `siri export CKPT --dtype bf16|f16|f32 --out DIR`: any checkpoint as a model folder to serve or publish.
import { defineCommand } from "citty";
import { exportCheckpoint, type ExportDtype } from "../train/checkpoint.ts";
import { num } from "./common.ts";

export default defineCommand({
  meta: {
    name: "export",
    description: "Write a checkpoint (or any HF Qwen2 folder) as a model folder in bf16/f16/f32, sharded like save_pretrained, without training state",
  },
  args: {
    checkpoint: { type: "positional", required: true, description: "Checkpoint folder (e.g. runs/x/checkpoints/trough-cycle1)" },
    dtype: { type: "string", default: "bf16", description: "Stored dtype: bf16 (as R1-Distill ships) | f16 | f32" },
    out: { type: "string", required: true, description: "New output folder (must not exist)" },
    "max-shard-gb": { type: "string", default: "5", description: "Largest weight shard in GB (transformers' default 5)" },
  },
  async run({ args }) {
    const dtype = args.dtype as ExportDtype;
    if (!["bf16", "f16", "f32"].includes(dtype)) throw new Error(`--dtype: expected bf16, f16 or f32, got "${args.dtype}"`);
    const gb = num("max-shard-gb", args["max-shard-gb"], 5);
    if (!(gb > 0)) throw new Error(`--max-shard-gb: expected a number > 0, got "${args["max-shard-gb"]}"`);
    const files = await exportCheckpoint(args.checkpoint, args.out, dtype, gb * 1e9);
    console.log(`wrote ${args.out} (${dtype}):`);
    for (const f of files) console.log(`  ${f}`);
  },
});
