// `siri experiment pareto`: SIRI's cosine schedule against constant caps, on the accuracy-vs-tokens plane.
import { defineCommand } from "citty";
import { runPareto } from "../experiment/pareto.ts";
import { log } from "../log.ts";
import { PRESETS } from "../train/config.ts";
import { adapterLine, gpuArgs, int, openGpuFromArgs } from "./common.ts";

/** "1,2,3" as seeds, with an error naming the flag. */
export function parseSeeds(text: string): number[] {
  const parts = text.split(",").map((s) => s.trim());
  return parts.map((s) => {
    const x = Number(s);
    if (s === "" || !Number.isInteger(x) || x < 0) throw new Error(`--seeds: expected integers >= 0 separated by commas (e.g. 1,2,3), got "${text}"`);
    return x;
  });
}

const pareto = defineCommand({
  meta: {
    name: "pareto",
    description: "From one warm-started base: RL with the cosine schedule and with constant caps at L_max and L_min, equal steps, several seeds; every checkpoint evaluated on the same held-out set; pareto.svg, pareto.md, pareto.json",
  },
  args: {
    ...gpuArgs,
    preset: { type: "string", description: `Starting config (default demo; needs the arith task): ${Object.keys(PRESETS).join(" | ")}` },
    seeds: { type: "string", description: "Seeds of the RL runs (default 1,2,3)" },
    quick: { type: "boolean", description: "A few steps and a tiny evaluation: checks the machinery, measures nothing" },
    out: { type: "string", description: "Output folder (default runs/pareto, quick: runs/pareto-quick); a rerun continues it" },
    n: { type: "string", description: "Samples per held-out problem, avg@n (default 32; quick 2)" },
    steps: { type: "string", description: "RL steps per run (default the preset's)" },
    stair: { type: "boolean", description: "Add the stair schedule as a fourth arm" },
    // citty reads --no-X as X = false, so the switch is "progress".
    progress: { type: "boolean", default: true, description: "Progress bars on stderr", negativeDescription: "No progress bars" },
  },
  async run({ args }) {
    const quick = Boolean(args.quick);
    const opts = {
      preset: (args.preset as string) || "demo",
      seeds: parseSeeds((args.seeds as string) || "1,2,3"),
      out: (args.out as string) || (quick ? "runs/pareto-quick" : "runs/pareto"),
      quick,
      stair: Boolean(args.stair),
      n: args.n ? int("n", args.n as string, 0, { min: 1 }) : undefined,
      steps: args.steps ? int("steps", args.steps as string, 0, { min: 1 }) : undefined,
      progress: args.progress !== false,
    };
    const gpu = await openGpuFromArgs(args);
    log.info(adapterLine(gpu));
    try {
      const r = await runPareto(gpu, { ...opts, log: (s) => log.info(s) });
      console.log(r.table);
    } finally {
      gpu.destroy();
    }
  },
});

export default defineCommand({
  meta: { name: "experiment", description: "Experiments that test SIRI's claims on this machine" },
  subCommands: { pareto },
});
