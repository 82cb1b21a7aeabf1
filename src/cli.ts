#!/usr/bin/env bun
/**
 * siri: SIRI reinforcement learning on hand-written WGSL kernels.
 * One entry point; each command is loaded only when it runs, so commands
 * that need no GPU never load dawn.node. How a command line is checked,
 * run and reported (unknown flags, errors, exit codes): src/cli/run.ts.
 */
import { defineCommand } from "citty";
import { runCli } from "./cli/run.ts";

export const main = defineCommand({
  meta: {
    name: "siri",
    version: "0.1.0",
    description: "SIRI (interleaved compression/expansion RL) for reasoning models on WebGPU",
  },
  subCommands: {
    gpu: () => import("./commands/gpu.ts").then((m) => m.default),
    "make-tiny-model": () => import("./commands/make_tiny_model.ts").then((m) => m.default),
    generate: () => import("./commands/generate.ts").then((m) => m.default),
    logits: () => import("./commands/logits.ts").then((m) => m.default),
    grade: () => import("./commands/grade.ts").then((m) => m.default),
    datasets: () => import("./commands/datasets.ts").then((m) => m.default),
    schedule: () => import("./commands/schedule.ts").then((m) => m.default),
    bench: () => import("./commands/bench.ts").then((m) => m.default),
    train: () => import("./commands/train.ts").then((m) => m.default),
    worker: () => import("./commands/worker.ts").then((m) => m.default),
    export: () => import("./commands/export.ts").then((m) => m.default),
    experiment: () => import("./commands/experiment.ts").then((m) => m.default),
  },
});

if (import.meta.main) {
  const code = await runCli(main, process.argv.slice(2));
  // A finished command exits by itself (stdout fully flushed); an error or an
  // interrupted run exits now with its code (1, 130).
  if (code !== 0) process.exit(code);
}
