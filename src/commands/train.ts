// `siri train`: SIRI reinforcement learning (GRPO + clip-higher under a cosine rollout-length schedule).
import { join } from "node:path";
import { defineCommand } from "citty";
import { BrokerRollouts, WORKERS_GRACE_MS } from "../dist/learner.ts";
import { checkWeightsRoot } from "../dist/weights.ts";
import { log } from "../log.ts";
import type { Rollouts } from "../train/rollouts.ts";
import { runDiskPlan } from "../train/checkpoint.ts";
import { train } from "../train/loop.ts";
import { formatPlan, planFor, trainingMemoryPlan } from "../train/plan.ts";
import { modelMissing, modelSource, parseOverride, PRESETS, readConfigFile, resolveConfig, type TrainConfig } from "../train/config.ts";
import { adapterLine, gpuArgs, int, num, openGpuFromArgs, repeatable, repeated } from "./common.ts";

/** Split "a.b=1,c=[1,2]" at the commas that start a new `field=`. */
export function splitOverrides(text: string): string[] {
  return text
    .split(/,(?=\s*[A-Za-z_][\w.]*\s*=)/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/** The config of a command line: preset, then the file, then the flags. */
export function configFromArgs(a: Record<string, string | string[] | boolean | undefined>): TrainConfig {
  const preset = (a.preset as string) || "demo";
  if (!PRESETS[preset]) throw new Error(`--preset: unknown preset "${preset}" (known: ${Object.keys(PRESETS).join(", ")})`);
  const layers: { source: string; values: Record<string, unknown> }[] = [];
  if (a.config) layers.push({ source: `config file ${a.config}`, values: readConfigFile(a.config as string) });
  const flags: Record<string, unknown> = {};
  const numFlag = (flag: string, field: string, integer: boolean) => {
    const v = a[flag];
    if (v === undefined || v === "") return;
    const x = Number(v);
    if (!Number.isFinite(x) || (integer && !Number.isInteger(x))) throw new Error(`--${flag}: expected ${integer ? "an integer" : "a number"}, got "${v}"`);
    flags[field] = x;
  };
  numFlag("steps", "steps", true);
  numFlag("seed", "seed", true);
  numFlag("prompts-per-step", "promptsPerStep", true);
  numFlag("group-size", "groupSize", true);
  if (a.staleness !== undefined && a.staleness !== "") {
    const k = Number(a.staleness);
    if (!Number.isInteger(k) || k < 0) throw new Error(`--staleness: expected an integer >= 0 (0 = on-policy), got "${a.staleness}"`);
    if (!a.broker) throw new Error("--staleness: needs --broker (rollout workers generate the next steps while the learner updates)");
    flags.dist = { staleness: k };
  }
  if (a.model) flags.model = a.model;
  if (a.out) flags.out = a.out;
  if (a.lr !== undefined && a.lr !== "") {
    const lr = Number(a.lr);
    if (!Number.isFinite(lr)) throw new Error(`--lr: expected a number, got "${a.lr}"`);
    flags.optim = { lr };
  }
  if (Object.keys(flags).length) layers.push({ source: "flags", values: flags });
  // --set overrides apply last, each typed by the field it names.
  let cfg = resolveConfig(preset, layers);
  const sets = Array.isArray(a.set) ? a.set : a.set ? [a.set as string] : [];
  for (const spec of sets.flatMap(splitOverrides)) {
    layers.push({ source: `--set ${spec}`, values: parseOverride(spec, cfg) });
    cfg = resolveConfig(preset, layers);
  }
  return cfg;
}

/** The --broker learner's flags, checked before the GPU opens (they mean nothing without --broker). */
function learnerFlags(args: Record<string, unknown>, out: string) {
  const grace = args["workers-grace"] as string | undefined;
  if (!args.broker) {
    if (grace !== undefined) throw new Error("--workers-grace: only with --broker");
    if (args.local === false) throw new Error("--no-local: only with --broker");
  }
  const weightsDir = (args["weights-dir"] as string) || join(out, "rollout-weights");
  if (args.broker) checkWeightsRoot(weightsDir);
  return { weightsDir, local: args.local !== false, graceMs: num("workers-grace", grace, WORKERS_GRACE_MS / 1000, { min: 0 }) * 1000 };
}

export default defineCommand({
  meta: { name: "train", description: "SIRI RL: G rollouts per prompt capped at L(t), length-capped reward, GRPO + clip-higher; checkpoints, metrics, resume" },
  args: {
    ...gpuArgs,
    preset: { type: "string", description: `Starting config: ${Object.keys(PRESETS).join(" | ")} (default demo: tiny model + synthetic task, ~10 min on 2 cores)` },
    config: { type: "string", description: "A JSON or TOML config file merged over the preset (same field names as the printed config)" },
    model: { type: "string", description: "Hugging Face Qwen2 folder, or tiny:<preset>" },
    out: { type: "string", description: "Run folder (metrics.jsonl, plot.svg, cycles.md, checkpoints/)" },
    steps: { type: "string", description: "Training steps" },
    seed: { type: "string", description: "Seed; every random choice of a step is a function of (seed, step)" },
    lr: { type: "string", description: "Learning rate" },
    "prompts-per-step": { type: "string", description: "Prompts per step" },
    "group-size": { type: "string", description: "Rollouts per prompt (G)" },
    set: repeatable({ type: "string", description: 'Other fields: "policy.epsHigh=0.28,dapo.dynamicSampling=true,schedule={\\"kind\\":\\"constant\\",\\"cap\\":64}"; repeat the flag for more, all apply in order' }),
    resume: { type: "boolean", description: "Continue the run in --out from its newest checkpoint (exactly)" },
    plan: { type: "boolean", description: "Validate the config, print it and the memory plan, and exit" },
    // citty reads --no-X as X = false, so the switch is "progress" (a flag named "no-progress" was never set).
    progress: { type: "boolean", default: true, description: "Progress bar on stderr", negativeDescription: "No progress bar" },
    broker: { type: "string", description: "Redis URL: rollouts come from `siri worker` processes on this broker" },
    "weights-dir": { type: "string", description: "With --broker: the shared folder for the versioned rollout weights (default <out>/rollout-weights), or s3://BUCKET/PREFIX (credentials and endpoint from S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_ENDPOINT, S3_REGION or AWS_*)" },
    "workers-grace": { type: "string", description: `With --broker: a round that starts with no live worker waits this many seconds for one, then is generated locally (default ${WORKERS_GRACE_MS / 1000})` },
    local: { type: "boolean", default: true, description: "With --broker: generate a round locally when no worker is alive", negativeDescription: "With --broker: never generate locally, always wait for workers" },
    staleness: { type: "string", description: "With --broker: bounded staleness k (dist.staleness): the next k steps' rollouts are generated while the learner updates, completions up to k versions old are accepted (default 0, on-policy)" },
  },
  async run({ args, rawArgs }) {
    // Every --set applies, in order (citty alone keeps only the last).
    const cfg = configFromArgs({ ...(args as Record<string, string | boolean | undefined>), set: repeated(rawArgs, "set", false) });
    if (args.plan || !cfg.model.startsWith("tiny:")) {
      // Printed before anything loads, so a missing model folder still shows what the run would need.
      const { config, note } = planFor(cfg);
      const dtype = cfg.rollout.dtype === "auto" ? "f16" : cfg.rollout.dtype;
      console.log(formatPlan(trainingMemoryPlan(config, cfg, dtype), `memory plan for ${cfg.preset} (${note}; rollout dtype ${dtype}):`));
      console.log(formatPlan(runDiskPlan(config, cfg, cfg.model.startsWith("tiny:") ? null : cfg.model), `disk plan for ${cfg.out}/checkpoints (checkpoint.keepLast ${cfg.checkpoint.keepLast}, keepExtremes ${cfg.checkpoint.keepExtremes || "all"}):`));
    }
    if (args.plan) {
      console.log(JSON.stringify(cfg, null, 2));
      // The plan is what a user reads before downloading the model: a missing folder is a note, not an error.
      const missing = modelMissing(cfg);
      if (missing) console.log(`\n${missing}`);
      return;
    }
    modelSource(cfg); // a missing model folder is an error naming it
    const learner = learnerFlags(args, cfg.out);
    const gpu = await openGpuFromArgs(args);
    log.info(adapterLine(gpu));
    try {
      const say = (s: string) => log.info(s);
      const url = args.broker as string | undefined;
      const rolloutSource = url ? (local: Rollouts, configJson: string) => BrokerRollouts.create(local, configJson, { ...learner, url, staleness: cfg.dist.staleness }, say) : undefined;
      // SIRI_TRAIN_STOP_AT_STEP=n: fault injection for the tests (as the worker's SIRI_WORKER_DIE_AFTER): act as if Ctrl-C came during step n.
      const stopAtStep = process.env.SIRI_TRAIN_STOP_AT_STEP ? int("SIRI_TRAIN_STOP_AT_STEP", process.env.SIRI_TRAIN_STOP_AT_STEP, 0, { min: 0 }) : undefined;
      const r = await train(gpu, cfg, { resume: Boolean(args.resume), hooks: { progress: args.progress !== false, stopAtStep }, log: say, rolloutSource });
      // Shells read 130 as "stopped by Ctrl-C"; the CLI runner keeps this code.
      if (r.stopped === "interrupted") process.exitCode = 130;
      console.log(`\n${r.stopped === "done" ? "finished" : "interrupted"} after ${r.stepsDone} steps; run folder ${cfg.out} (metrics.jsonl, plot.svg, cycles.md, checkpoints/)\n`);
      console.log(r.table);
    } finally {
      gpu.destroy();
    }
  },
});
