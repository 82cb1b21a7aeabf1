// `bun tests/scale/write_model.ts DIR qwen2.5-0.5b|r1-distill-1.5b`: a random
// checkpoint at a real model's shapes (tests/scale/shapes.ts), for measuring
// `siri generate`, `siri train --plan` and the like without the download
// (the figures in benchmarks/RESULTS.md). Refuses a folder that exists.
import { existsSync } from "node:fs";
import { QWEN2_1_5B, type Qwen2Config } from "../../src/model/config.ts";
import { QWEN25_0_5B, writeRandomCheckpoint } from "./shapes.ts";

const SHAPES: Record<string, Qwen2Config> = { "qwen2.5-0.5b": QWEN25_0_5B, "r1-distill-1.5b": QWEN2_1_5B };
const [dir, name] = process.argv.slice(2);
const c = SHAPES[name ?? ""];
if (!dir || !c) throw new Error(`usage: bun tests/scale/write_model.ts DIR ${Object.keys(SHAPES).join("|")}`);
if (existsSync(dir)) throw new Error(`${dir} exists; give a new folder`);
const bytes = await writeRandomCheckpoint(dir, c);
console.log(`${dir}: ${name}-shaped random checkpoint, ${(bytes / 1e9).toFixed(2)} GB of bf16 weights`);
