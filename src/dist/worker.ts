/**
 * A rollout worker: loads the newest announced rollout weights, claims
 * generation requests from the broker (its own new ones, or those another
 * worker left unacknowledged past the visibility timeout), runs them through
 * the same engine as local rollouts, and returns each completion keyed by its
 * request id, tagged with the weight version that produced it. A request
 * acknowledged is one whose completion was published (or that was rejected:
 * another run, an old version, a malformed payload; each logged). On-policy:
 * a request is served only by the version it names (the newest). Bounded
 * staleness: a request naming a `minVersion` is served by any version from
 * that one up, so requests published before an update (for a later step)
 * keep being served across the announcement of the new weights, by
 * whichever version a worker holds then. Nothing a message says makes a worker
 * exit: announced weights it cannot load are logged and retried (requests
 * left to other workers meanwhile), a lost broker is waited for. Weights
 * announced as an s3:// URL are downloaded to a local cache folder first
 * (src/dist/weights.ts); an incomplete version is such weights, retried.
 *
 * Presence: from connection to exit a worker refreshes a heartbeat key with a
 * time to live (Broker.alive), so a learner knows whether any worker is there
 * to serve a round (with none, it generates the round itself).
 */
import { hostname } from "node:os";
import { Engine } from "../engine/generate.ts";
import { defaultDtype } from "../engine/load.ts";
import type { Qwen2Gpu } from "../engine/model.ts";
import { sizeEngine } from "../engine/size.ts";
import type { Gpu } from "../gpu/index.ts";
import { Broker, HEARTBEAT_MS, PROTO, type RequestMsg, type WeightsMsg } from "./broker.ts";
import { defaultCacheDir, loadRolloutWeights, localWeights } from "./weights.ts";

export interface WorkerOptions {
  url: string;
  /** This worker's consumer name (default host-pid). */
  name?: string;
  /** Requests claimed at once (default: the engine's maxBatch). */
  batch?: number;
  /** A request pending this long on a silent worker goes to another (ms). */
  claimIdleMs?: number;
  /** Longest wait for new requests before looking again (ms). */
  blockMs?: number;
  /** Stop after this many completions (tests); default: run until stopped. */
  maxCompletions?: number;
  stop?: () => boolean;
  /** Where versions announced as s3:// URLs are downloaded to (default: defaultCacheDir(name), under the OS temp folder). */
  cacheDir?: string;
  /** Fault injection (tests): SIGKILL this process after publishing this many completions, before acknowledging the last. */
  dieAfter?: number;
  log?: (s: string) => void;
}

export const CLAIM_IDLE_MS = 30_000;
/** Wait before trying again to load announced weights that failed to load (ms). */
const RELOAD_WAIT_MS = 5_000;

interface Loaded {
  w: WeightsMsg;
  model: Qwen2Gpu;
  engine: Engine;
}

export async function runWorker(gpu: Gpu, o: WorkerOptions): Promise<{ completions: number; rejected: number }> {
  const log = o.log ?? ((s: string) => console.error(s));
  const name = o.name ?? `${hostname()}-${process.pid}`;
  const broker = await Broker.connect(o.url, { log: (s) => log(`worker ${name}: ${s}`) });
  log(`worker ${name}: connected to ${o.url}`);
  await broker.alive(name);
  // A timer, not the claim loop: a long generation or weight load must not let the key time out. A failed refresh
  // (the broker restarting) is retried by the next tick; the broker's own calls log the reconnection.
  let beating = false; // one refresh at a time (during a reconnection they would pile up)
  const heartbeat = setInterval(() => {
    if (beating) return;
    beating = true;
    broker
      .alive(name)
      .catch(() => undefined)
      .finally(() => (beating = false));
  }, HEARTBEAT_MS);
  let cur = null as Loaded | null; // (set by refresh)
  let failed: string | null = null; // the announcement (entry id) that would not load
  let completions = 0;
  let rejected = 0;
  const unload = () => {
    cur?.engine.destroy();
    cur?.model.destroy();
    cur = null;
  };
  /** The newest announcement, loaded if it is not the current one; false when it would not load. */
  const refresh = async (): Promise<boolean> => {
    const e = await broker.latestWeights();
    if (!e) return true;
    if (!e.msg) {
      if (failed !== e.id) log(`worker ${name}: rejected weight announcement ${e.id}: ${e.error}`);
      failed = e.id;
      return true; // keep serving the weights loaded (requests for another version are rejected one by one)
    }
    if (cur && cur.w.run === e.msg.run && cur.w.version === e.msg.version) return true;
    unload();
    try {
      const dir = await localWeights(e.msg.dir, o.cacheDir ?? defaultCacheDir(name));
      if (dir !== e.msg.dir) log(`worker ${name}: downloaded ${e.msg.dir} to ${dir}`);
      const model = await loadRolloutWeights(gpu, dir, e.msg.dtype === "auto" ? defaultDtype(gpu) : e.msg.dtype);
      const w = e.msg;
      const opts = w.engine ?? sizeEngine(model.config, model.dtype, gpu.limits.maxStorageBufferBindingSize, { ...w.sizing!, what: `worker ${name} (run ${w.run})` });
      try {
        cur = { w, model, engine: await Engine.create(model, opts) };
      } catch (err) {
        model.destroy();
        throw err;
      }
    } catch (err) {
      if (failed !== e.id) log(`worker ${name}: cannot load run ${e.msg.run} version ${e.msg.version} from ${e.msg.dir}: ${(err as Error).message}; retrying every ${RELOAD_WAIT_MS / 1000} s, leaving requests to other workers`);
      failed = e.id;
      return false;
    }
    failed = null;
    log(`worker ${name}: loaded run ${e.msg.run} version ${e.msg.version} from ${e.msg.dir} (${cur.model.dtype})`);
    return true;
  };
  try {
    while (!o.stop?.() && (o.maxCompletions === undefined || completions < o.maxCompletions)) {
      if (!(await refresh())) {
        await Bun.sleep(RELOAD_WAIT_MS);
        continue;
      }
      const entries = await broker.claim(name, o.batch ?? cur?.engine.opts.maxBatch ?? 16, o.blockMs ?? 1000, o.claimIdleMs ?? CLAIM_IDLE_MS);
      if (!entries.length) continue;
      const reject = async (id: string, why: string) => {
        rejected++;
        log(`worker ${name}: rejected request ${id}: ${why}`);
        await broker.ack([id]);
      };
      let good: { id: string; msg: RequestMsg }[] = [];
      for (const e of entries) {
        if (!e.msg) await reject(e.id, e.error);
        else good.push(e);
      }
      // Requests published after a new announcement: load it before judging them (if it will not load, they wait for another worker).
      if (good.some((e) => !cur || e.msg.run !== cur.w.run || !servable(e.msg, cur.w.version)) && !(await refresh())) continue;
      const kept: typeof good = [];
      for (const e of good) {
        if (!cur) await reject(e.id, `no weights announced for run ${e.msg.run}`);
        else if (e.msg.run !== cur.w.run) await reject(e.id, `request ${e.msg.id} is for run ${e.msg.run}, the announced run is ${cur.w.run}`);
        else if (!servable(e.msg, cur.w.version)) await reject(e.id, e.msg.minVersion === undefined ? `request ${e.msg.id} wants version ${e.msg.version}, the announced version is ${cur.w.version} (on-policy: only the newest is served)` : `request ${e.msg.id} wants version ${e.msg.minVersion} or newer, the announced version is ${cur.w.version}`);
        else {
          const why = refusal(cur.engine, e.msg);
          if (why) await reject(e.id, `the engine refuses it: ${why}`);
          else kept.push(e);
        }
      }
      good = kept;
      if (!good.length || !cur) continue;
      // One engine call per sampling setting (a step's requests share one).
      const bySampling = new Map<string, typeof good>();
      for (const e of good) {
        const k = JSON.stringify(e.msg.sampling);
        bySampling.set(k, [...(bySampling.get(k) ?? []), e]);
      }
      const { engine, w } = cur;
      for (const group of bySampling.values()) {
        const byId = new Map(group.map((e) => [e.msg.id, e]));
        const reqs = group.map((e) => ({ id: e.msg.id, prompt: e.msg.prompt, maxTokens: e.msg.maxTokens, stop: e.msg.stop, key: e.msg.key }));
        try {
          for await (const c of engine.generate(reqs, group[0].msg.sampling)) {
            const e = byId.get(c.id as string)!;
            byId.delete(e.msg.id);
            await broker.complete({ kind: "completion", proto: PROTO, run: w.run, version: w.version, id: e.msg.id, tokens: c.tokens, logprobs: c.logprobs, stopReason: c.stopReason, worker: name });
            if (o.dieAfter !== undefined && completions + 1 >= o.dieAfter) process.kill(process.pid, "SIGKILL");
            await broker.ack([e.id]);
            completions++;
          }
        } catch (err) {
          // Checked one by one above, so this is the engine failing: the group's unserved requests are rejected, the worker goes on.
          for (const e of byId.values()) await reject(e.id, `the engine failed: ${(err as Error).message}`);
        }
      }
    }
  } finally {
    clearInterval(heartbeat);
    await broker.gone(name);
    unload();
    broker.close();
  }
  return { completions, rejected };
}

/** Whether weights of `version` may serve `r`: its own version (on-policy), or any from its minVersion up (bounded staleness). */
export function servable(r: RequestMsg, version: number): boolean {
  return r.minVersion === undefined ? version === r.version : version >= r.minVersion;
}

/** Why `engine` cannot serve request `r` (a token outside the vocabulary, too long for its slots), or null. */
function refusal(engine: Engine, r: RequestMsg): string | null {
  try {
    engine.validate({ id: r.id, prompt: r.prompt, maxTokens: r.maxTokens, stop: r.stop, key: r.key });
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}
