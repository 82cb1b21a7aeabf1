// `siri datasets list|show|download`: the presets, a look inside a dataset, and fetching from the Hub.
import { defineCommand } from "citty";
import { DEFAULT_CACHE_DIR, downloadPreset, isDownloaded, loadDataset } from "../data/download.ts";
import { parseFieldMap } from "../data/load.ts";
import { PRESETS } from "../data/presets.ts";
import { DEEPSCALER_INSTRUCTION, userMessage } from "../data/prompt.ts";
import { log } from "../log.ts";
import { int } from "./common.ts";

const dirArg = {
  dir: { type: "string", description: `Cache folder for downloaded presets (default ${DEFAULT_CACHE_DIR})` },
} as const;


const list = defineCommand({
  meta: { name: "list", description: "List the dataset presets and whether each is downloaded" },
  args: { ...dirArg, json: { type: "boolean", description: "Print one JSON object" } },
  run({ args }) {
    const dir = args.dir || DEFAULT_CACHE_DIR;
    const rows = PRESETS.map((p) => ({
      name: p.name,
      use: p.use,
      repo: p.repo,
      files: p.files,
      count: p.count ?? null,
      downloaded: isDownloaded(p, dir),
      title: p.title,
    }));
    if (args.json) {
      console.log(JSON.stringify({ dir, presets: rows }));
      return;
    }
    console.log(`presets (cache: ${dir})`);
    for (const r of rows) {
      const mark = r.downloaded ? "downloaded" : "not downloaded";
      console.log(`  ${r.name.padEnd(11)} ${r.use.padEnd(5)} ${mark.padEnd(15)} ${r.repo}  ${r.title}`);
    }
  },
});

const show = defineCommand({
  meta: { name: "show", description: "Load a preset (from the cache) or a .json/.jsonl/.parquet file and print its first problems" },
  args: {
    dataset: { type: "positional", description: "Preset name or file path", required: true },
    ...dirArg,
    n: { type: "string", description: "How many problems to print (default 3)" },
    fields: { type: "string", description: "Field map, e.g. problem=question,answer=ground_truth,id=uid,keep=subject+level" },
    prompt: { type: "boolean", description: "Print the user turn (problem + DeepScaleR's instruction) instead of the bare problem" },
    json: { type: "boolean", description: "Print one JSON object" },
  },
  async run({ args }) {
    const n = int("n", args.n, 3, { min: 1 });
    const ds = await loadDataset(args.dataset, {
      dir: args.dir || DEFAULT_CACHE_DIR,
      fields: args.fields ? parseFieldMap(args.fields) : undefined,
    });
    const head = ds.problems.slice(0, n);
    if (args.json) {
      console.log(JSON.stringify({ name: ds.name, count: ds.problems.length, problems: head }));
      return;
    }
    console.log(`${ds.name}: ${ds.problems.length} problems` + (ds.preset ? ` (${ds.preset.repo})` : ""));
    if (ds.preset?.count && ds.preset.count !== ds.problems.length) {
      console.log(`  warning: preset ${ds.preset.name} should have ${ds.preset.count} problems`);
    }
    for (const p of head) {
      console.log(`\n[${p.id}] answer: ${p.answer}` + (Object.keys(p.meta).length ? `  ${JSON.stringify(p.meta)}` : ""));
      console.log(args.prompt ? userMessage(p.problem) : p.problem);
    }
    if (args.prompt) console.log(`\n(instruction: ${DEEPSCALER_INSTRUCTION})`);
  },
});

const download = defineCommand({
  meta: {
    name: "download",
    description: "Fetch a preset from the Hugging Face Hub (honours HF_ENDPOINT and HF_TOKEN; reuses the local Hugging Face cache)",
  },
  args: {
    name: { type: "positional", description: `Preset: ${PRESETS.map((p) => p.name).join(", ")}`, required: true },
    ...dirArg,
    endpoint: { type: "string", description: "Hub address (default $HF_ENDPOINT or https://huggingface.co)" },
    force: { type: "boolean", description: "Download again even when present" },
    revision: { type: "string", description: "Branch, tag or commit on the Hub (default main); recorded in download.json and in bench run records" },
    "hf-cache": {
      type: "boolean",
      default: true,
      description: "Copy files found in the local Hugging Face cache (HF_HUB_CACHE, ~/.cache/huggingface/hub) instead of fetching them",
      negativeDescription: "Always fetch from the Hub",
    },
    "timeout-s": { type: "string", description: "Per-file time limit in seconds (default 120)" },
  },
  async run({ args }) {
    const dir = args.dir || DEFAULT_CACHE_DIR;
    const paths = await downloadPreset(args.name, dir, {
      endpoint: args.endpoint || undefined,
      force: args.force,
      revision: args.revision || undefined,
      hfCache: args["hf-cache"] === false ? "" : undefined,
      timeoutMs: int("timeout-s", args["timeout-s"], 120, { min: 1 }) * 1000,
      log: (l) => log.info(l),
    });
    console.log(`done: ${paths.join(", ")}`);
  },
});

export default defineCommand({
  meta: { name: "datasets", description: "Dataset presets (DeepScaleR, AIME24/25, MATH500, AMC): list, show, download" },
  subCommands: { list, show, download },
});
