// `siri gpu`: show the chosen adapter, its features and the limits that matter.
import { defineCommand } from "citty";
import { listAdapters } from "../gpu/device.ts";
import { runSpin } from "../gpu/selftest.ts";
import { gpuArgs, int, openGpuFromArgs } from "./common.ts";

const MiB = 1024 * 1024;

export default defineCommand({
  meta: { name: "gpu", description: "Print the WebGPU adapter, its features and limits; optionally self-test it" },
  args: {
    ...gpuArgs,
    json: { type: "boolean", description: "Print one JSON object instead of text" },
    "list-adapters": { type: "boolean", description: "List the adapters with the index --adapter takes, in the order Dawn picks from, and exit" },
    "selftest-ms": {
      type: "string",
      description: "Also run a self-checking kernel that keeps the GPU busy for about this many ms",
    },
  },
  async run({ args }) {
    if (args["list-adapters"]) {
      const list = await listAdapters({ software: args.software || undefined, backend: args.backend || undefined });
      if (args.json) console.log(JSON.stringify(list));
      else if (!list.length) console.log("no adapter");
      else for (const a of list) console.log(`${String(a.index).padStart(3)}  ${a.backend}  ${a.name}`);
      return;
    }
    const gpu = await openGpuFromArgs(args);
    const a = gpu.adapter;
    const l = gpu.limits;
    const limits = {
      maxBufferSize: l.maxBufferSize,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    };
    const features = [...gpu.device.features].sort();
    const report: Record<string, unknown> = { adapter: a, features, limits };
    const target = int("selftest-ms", args["selftest-ms"], 0, { min: 0 });
    if (target > 0) {
      // Calibrate on a short run, then run one kernel of about `target` ms.
      const n = 8;
      let iters = 1 << 16;
      await runSpin(gpu, n, iters); // warm-up
      let r = await runSpin(gpu, n, iters);
      while (r.ms < Math.min(50, target / 4) && iters < 1 << 28) {
        iters *= 4;
        r = await runSpin(gpu, n, iters);
      }
      // Size one kernel to `target`; a calibration slowed by a busy machine
      // can undershoot, so resize (a few times at most) until it lasts >= target/2.
      for (let tries = 0; tries < 4; tries++) {
        iters = Math.min(2 ** 31, Math.ceil((iters * target) / Math.max(r.ms, 1)));
        r = await runSpin(gpu, n, iters);
        if (r.ms >= target / 2 || iters >= 2 ** 31 || r.mismatches) break;
      }
      report.selftest = r;
      if (r.mismatches) throw new Error(`self-test kernel: ${r.mismatches} of ${r.n} results differ from the CPU reference`);
    }
    if (args.json) {
      console.log(JSON.stringify(report));
    } else {
      console.log(`adapter      ${a.description}`);
      if (a.chosen) console.log(`chosen       --adapter ${a.chosen}`);
      console.log(`vendor       ${a.vendor}   architecture ${a.architecture}   device ${a.device}`);
      console.log(`backend      ${a.backend}${a.isFallback ? "   (software / fallback adapter)" : ""}`);
      console.log(`subgroups    ${a.subgroupMinSize}..${a.subgroupMaxSize}`);
      console.log(`features     ${features.join(", ")}`);
      console.log(`limits`);
      for (const [k, v] of Object.entries(limits)) {
        const extra = v >= MiB ? `  (${(v / MiB).toFixed(0)} MiB)` : "";
        console.log(`  ${k.padEnd(36)} ${v}${extra}`);
      }
      const s = report.selftest as { ms: number; iters: number } | undefined;
      if (s) console.log(`self-test    ok: one kernel of ${s.ms.toFixed(0)} ms matched its CPU reference`);
    }
    gpu.destroy();
  },
});
