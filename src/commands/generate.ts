// `siri generate`: sample completions from a model, streamed as they finish.
import { defineCommand } from "citty";
import { Engine } from "../engine/generate.ts";
import { defaultDtype, loadModel } from "../engine/load.ts";
import { sizeEngine } from "../engine/size.ts";
import { log } from "../log.ts";
import { vocabLimit } from "../model/tokenizer.ts";
import { gpuArgs, int, num, openGpuFromArgs } from "./common.ts";

export default defineCommand({
  meta: { name: "generate", description: "Generate completions for a prompt with batched KV-cache decoding" },
  args: {
    ...gpuArgs,
    model: { type: "string", description: "Hugging Face model folder", required: true },
    prompt: { type: "string", description: "The prompt text", required: true },
    chat: { type: "boolean", description: "Wrap the prompt as a user turn with the model's chat template" },
    n: { type: "string", description: "Completions to sample (default 1)" },
    "max-tokens": { type: "string", description: "Most new tokens per completion (default 256)" },
    temperature: { type: "string", description: "Sampling temperature; 0 = greedy (default 0.6)" },
    "top-p": { type: "string", description: "Nucleus sampling mass (default 0.95)" },
    "top-k": { type: "string", description: "Keep the k most likely tokens; 0 = off (default 0)" },
    seed: { type: "string", description: "Random seed (default 1)" },
    dtype: { type: "string", description: "f32 or f16 (default: f16 where the adapter has shader-f16)" },
    json: { type: "boolean", description: "Print one JSON line per completion" },
  },
  async run({ args }) {
    // Every flag is checked before the GPU opens.
    const n = int("n", args.n, 1, { min: 1 });
    const maxTokens = int("max-tokens", args["max-tokens"], 256, { min: 1 });
    const sampling = {
      temperature: num("temperature", args.temperature, 0.6, { min: 0 }),
      topP: num("top-p", args["top-p"], 0.95, { min: 0, max: 1 }),
      topK: int("top-k", args["top-k"], 0, { min: 0 }),
      seed: int("seed", args.seed, 1),
    };
    const gpu = await openGpuFromArgs(args);
    const m = await loadModel(gpu, args.model, defaultDtype(gpu, args.dtype));
    const tok = m.tokenizer;
    const text = args.chat ? tok.applyChatTemplate([{ role: "user", content: args.prompt }], { addGenerationPrompt: true }) : args.prompt;
    const prompt = tok.encode(text);
    const newTokens = Math.min(maxTokens, m.config.maxPositions - prompt.length);
    if (newTokens < 1) throw new Error(`--prompt: ${prompt.length} tokens leave no room in the model's ${m.config.maxPositions} positions`);
    const engine = await Engine.create(m.model, sizeEngine(m.config, m.model.dtype, gpu.limits.maxStorageBufferBindingSize, { what: "generate", maxBatch: Math.min(n, 64), promptTokens: prompt.length, newTokens, prefillChunk: 256, vocabLimit: vocabLimit(m.config.vocabSize, tok) }));
    const requests = Array.from({ length: n }, (_, i) => ({ id: i, prompt, maxTokens: newTokens, stop: tok.eosTokenIds }));
    const t0 = performance.now();
    let total = 0;
    for await (const c of engine.generate(requests, sampling)) {
      total += c.tokens.length;
      const out = tok.decode(c.tokens, { skipSpecialTokens: false });
      if (args.json) console.log(JSON.stringify({ id: c.id, text: out, tokens: c.tokens, logprobs: c.logprobs, stop_reason: c.stopReason }));
      else console.log(`--- completion ${c.id} (${c.tokens.length} tokens, ${c.stopReason})\n${text}${out}`);
    }
    const s = (performance.now() - t0) / 1000;
    log.info(`${n} completion(s), ${total} tokens in ${s.toFixed(2)} s (${(total / s).toFixed(1)} tokens/s) on ${gpu.adapter.description}`);
    engine.destroy();
    m.model.destroy();
    gpu.destroy();
  },
});
