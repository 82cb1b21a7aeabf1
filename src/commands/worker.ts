// `siri worker`: a rollout worker for a learner (`siri train --broker URL`), one per GPU.
import { defineCommand } from "citty";
import { CLAIM_IDLE_MS, runWorker } from "../dist/worker.ts";
import { log } from "../log.ts";
import { watchInterrupts } from "../run/signals.ts";
import { adapterLine, gpuArgs, int, openGpuFromArgs } from "./common.ts";

export default defineCommand({
  meta: { name: "worker", description: "Rollout worker: serve a learner's generation requests from a Redis broker with the announced weights" },
  args: {
    ...gpuArgs,
    broker: { type: "string", description: "Broker URL, e.g. redis://host:6379", required: true },
    name: { type: "string", description: "This worker's name on the broker (default host-pid)" },
    batch: { type: "string", description: "Requests claimed at once (default: the learner's engine batch)" },
    "cache-dir": { type: "string", description: "Where weights announced in an S3 bucket are downloaded to, one per worker (default: a folder per worker under the OS temp folder)" },
    "claim-after": { type: "string", description: `Take over requests another worker left pending this many seconds (default ${CLAIM_IDLE_MS / 1000})` },
  },
  async run({ args }) {
    const claimIdleMs = int("claim-after", args["claim-after"], CLAIM_IDLE_MS / 1000) * 1000;
    const gpu = await openGpuFromArgs(args);
    log.info(adapterLine(gpu));
    const stop = watchInterrupts({ log: (s) => log.info(s), firstStop: "finishing the requests in hand, then stopping (the others stay on the broker for other workers)" });
    try {
      // SIRI_WORKER_DIE_AFTER=n: fault injection for the tests (die by SIGKILL after n completions, the last unacknowledged).
      const dieAfter = process.env.SIRI_WORKER_DIE_AFTER ? int("SIRI_WORKER_DIE_AFTER", process.env.SIRI_WORKER_DIE_AFTER, 0) : undefined;
      const r = await runWorker(gpu, { url: args.broker, name: args.name || undefined, claimIdleMs, log: (s) => log.info(s), batch: args.batch ? int("batch", args.batch, 1) : undefined, dieAfter, cacheDir: args["cache-dir"] || undefined, stop: () => stop.requested });
      log.info(`worker stopped: ${r.completions} completions, ${r.rejected} requests rejected`);
    } finally {
      stop.dispose();
      gpu.destroy();
    }
  },
});
