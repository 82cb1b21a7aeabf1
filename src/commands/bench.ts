// `siri bench`: sample, grade and summarise a model on AIME / MATH500 / AMC
// (resumable run folder), and `siri bench compare RUN...` for the Pareto view.
import { existsSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { defineCommand } from "citty";
import { compare, defaultComparePath } from "../bench/report.ts";
import { engineSource, runBench, SIRI_PROTOCOL, type BenchConfig, type CompletionSource } from "../bench/run.ts";
import { DEFAULT_CACHE_DIR } from "../data/download.ts";
import { defaultDtype, loadModel, type LoadedModel } from "../engine/load.ts";
import type { Gpu } from "../gpu/index.ts";
import { log } from "../log.ts";
import { gpuArgs, int, num, openGpuFromArgs, repeatable, repeated } from "./common.ts";

const compareCommand = defineCommand({
  meta: { name: "compare", description: "Print benchmark runs side by side and plot accuracy against mean tokens" },
  args: {
    runs: { type: "positional", required: false, description: "Run folders (one or more)" },
    out: { type: "string", description: "Write the accuracy-vs-mean-tokens plot here (default: compare.svg beside the first run folder)" },
    svg: { type: "string", description: "Same as --out (older name)" },
  },
  run({ args }) {
    const runs = args._.map(String);
    if (runs.length === 0) throw new Error("bench compare: give one or more run folders (siri bench compare runs/a runs/b)");
    for (const r of runs) if (!existsSync(r)) throw new Error(`bench compare: run folder "${r}" does not exist`);
    if (args.out && args.svg) throw new Error("bench compare: give --out or --svg (the same thing), not both");
    const svgPath = args.out || args.svg || defaultComparePath(runs);
    const c = compare(runs, svgPath);
    console.log(c.table);
    log.info(`wrote ${svgPath} (${c.points.length} point(s))`);
  },
});

export default defineCommand({
  meta: {
    name: "bench",
    description: "Benchmark a model: n samples per problem, graded, with avg@n, pass@k, maj@k, lengths; resumable",
  },
  args: {
    ...gpuArgs,
    model: { type: "string", description: "Hugging Face model folder" },
    dataset: repeatable({ type: "string", description: "aime24|aime25|math500|amc|PATH; repeat the flag or comma-separate for several" }),
    n: { type: "string", description: "Samples per problem (default 16; SIRI preset 64)" },
    "max-tokens": { type: "string", description: "Most response tokens per sample (default 16384)" },
    temperature: { type: "string", description: "Sampling temperature; 0 = greedy (default 0.6)" },
    "top-p": { type: "string", description: "Nucleus sampling mass (default 0.95)" },
    "top-k": { type: "string", description: "Keep the k most likely tokens; 0 = off (default 0)" },
    seed: { type: "string", description: "Random seed (default 0)" },
    limit: { type: "string", description: "Only the first N problems of each dataset" },
    out: { type: "string", description: "Run folder (default runs/bench-<model>-<datasets>-n<N>-len<L>-seed<S>); rerun to resume" },
    name: { type: "string", description: "Label of the run in reports and compare (default: the folder name)" },
    preset: { type: "string", description: "siri: SIRI's protocol (64 samples, temperature 0.6, top-p 0.95, 16384 tokens); flags given override it" },
    "after-think": { type: "boolean", description: "Take the answer only from the text after </think> (DeepScaleR's rule)" },
    "max-batch": { type: "string", description: "Most sequences decoding at once (default 64)" },
    "cache-tokens": { type: "string", description: "KV cache size in tokens (default: max-batch full sequences, within the adapter's binding limit)" },
    dtype: { type: "string", description: "f32 or f16 (default: f16 where the adapter has shader-f16)" },
    "dataset-dir": { type: "string", description: `Where dataset presets are downloaded (default ${DEFAULT_CACHE_DIR})` },
  },
  subCommands: { compare: compareCommand },
  async run({ args, rawArgs }) {
    if (args._.length) throw new Error(`bench: unexpected argument "${args._[0]}" (did you mean: siri bench compare RUN...?)`);
    let base: { n: number; temperature: number; topP: number; maxTokens: number } = { n: 16, temperature: 0.6, topP: 0.95, maxTokens: 16384 };
    if (args.preset !== undefined) {
      if (args.preset !== "siri") throw new Error(`--preset: unknown preset "${args.preset}"; known: siri`);
      base = { ...SIRI_PROTOCOL };
    }
    // Flags that stand alone are checked before any file is looked at.
    const maxBatch = int("max-batch", args["max-batch"], 64, { min: 1 });
    const cacheTokens = args["cache-tokens"] === undefined ? undefined : int("cache-tokens", args["cache-tokens"], 0, { min: 1 });
    const n = int("n", args.n, base.n, { min: 1 });
    const maxTokens = int("max-tokens", args["max-tokens"], base.maxTokens, { min: 1 });
    const seed = int("seed", args.seed, 0);
    const limit = args.limit === undefined ? undefined : int("limit", args.limit, 0, { min: 1 });
    if (!args.model) throw new Error("bench: --model DIR is required (a Hugging Face model folder)");
    if (!existsSync(join(args.model, "config.json"))) throw new Error(`bench: --model ${args.model}: no config.json there; is this a Hugging Face model folder?`);
    const datasets = repeated(rawArgs, "dataset");
    if (datasets.length === 0) throw new Error("bench: --dataset is required (aime24, aime25, math500, amc or a .json/.jsonl/.parquet file)");
    const modelName = basename(resolve(args.model));
    const dsLabel = datasets.map((d) => basename(d).replace(/\.[^.]+$/, "")).join("+");
    const out = args.out || join("runs", `bench-${modelName}-${dsLabel}-n${n}-len${maxTokens}-seed${seed}`);
    const config: BenchConfig = {
      datasets,
      n,
      maxTokens,
      temperature: num("temperature", args.temperature, base.temperature, { min: 0 }),
      topP: num("top-p", args["top-p"], base.topP, { min: 0, max: 1 }),
      topK: int("top-k", args["top-k"], 0, { min: 0 }),
      seed,
      limit,
      afterThink: Boolean(args["after-think"]),
      out,
      model: resolve(args.model),
      dtype: args.dtype || "auto",
      name: args.name || undefined,
      datasetDir: args["dataset-dir"] || undefined,
    };

    // The GPU and the model open only when there is something to generate.
    let gpu: Gpu | null = null;
    let m: LoadedModel | null = null;
    const source: CompletionSource = async function* (requests, sampling) {
      gpu = await openGpuFromArgs(args);
      m = await loadModel(gpu, args.model!, defaultDtype(gpu, args.dtype));
      log.info(`bench: ${requests.length} sample(s) to generate with ${basename(m.dir)} (${m.model.dtype}) on ${gpu.adapter.description}`);
      yield* engineSource(m, { maxBatch, cacheTokens })(requests, sampling);
    };
    // No SIGINT handler on purpose: each sample is appended with a synchronous
    // write as it finishes, so the default Ctrl-C (immediate exit) loses nothing
    // finished, and a JS handler would not even run while the engine keeps the
    // GPU event pump busy (src/gpu/bun_event_pump.ts). Rerun to resume.
    try {
      const r = await runBench(config, source);
      console.log(r.report);
      log.info(
        `bench: ${r.generated} new sample(s), ${r.resumed} already done; run folder ${r.runDir}` +
          (r.complete ? "" : " (unfinished: rerun the same command to resume)"),
      );
    } finally {
      (m as LoadedModel | null)?.model.destroy();
      (gpu as Gpu | null)?.destroy();
    }
  },
});
