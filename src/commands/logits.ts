// `siri logits`: full-vocabulary logits at every position, as one JSON line,
// so any other implementation of Qwen2 can be compared with this one.
import { defineCommand } from "citty";
import { defaultDtype, loadModel, sequenceLogits } from "../engine/load.ts";
import { log } from "../log.ts";
import { gpuArgs, openGpuFromArgs } from "./common.ts";

export function parseTokenList(s: string, flag = "tokens"): number[] {
  const parts = s.split(",").map((x) => x.trim()).filter(Boolean);
  if (!parts.length) throw new Error(`--${flag}: expected comma-separated token ids, got "${s}"`);
  return parts.map((p) => {
    const n = Number(p);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${flag}: "${p}" is not a token id`);
    return n;
  });
}

export default defineCommand({
  meta: { name: "logits", description: "Print the logits at every position of a token sequence as JSON (last line)" },
  args: {
    ...gpuArgs,
    model: { type: "string", description: "Hugging Face model folder", required: true },
    tokens: { type: "string", description: "Comma-separated token ids, e.g. 1,2,3" },
    text: { type: "string", description: "Or: text to tokenize (no special tokens added)" },
    dtype: { type: "string", description: "f32 or f16 (default: f16 where the adapter has shader-f16)" },
  },
  async run({ args }) {
    const gpu = await openGpuFromArgs(args);
    const m = await loadModel(gpu, args.model, defaultDtype(gpu, args.dtype));
    let tokens: number[];
    if (args.tokens) tokens = parseTokenList(args.tokens);
    else if (args.text) tokens = m.tokenizer.encode(args.text);
    else throw new Error("give --tokens 1,2,3 or --text '...'");
    const V = m.config.vocabSize;
    const flat = await sequenceLogits(m.model, tokens);
    const rows: number[][] = [];
    for (let t = 0; t < tokens.length; t++) rows.push(Array.from(flat.subarray(t * V, (t + 1) * V)));
    log.info(`${tokens.length} positions x ${V} logits (${m.model.dtype}) on ${gpu.adapter.description}`);
    console.log(JSON.stringify({ tokens, dtype: m.model.dtype, logits: rows }));
    m.model.destroy();
    gpu.destroy();
  },
});
