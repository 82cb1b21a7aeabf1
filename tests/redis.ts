// A private redis-server for the broker tests (127.0.0.1, a free port, a temp dir), and worker processes.
// Both are started with Bun.spawn and write to files: a node:child_process pipe in a process that also
// drives the GPU stalls dawn.node's event pump (src/gpu/bun_event_pump.ts parks one callback only).
import { afterAll, beforeAll } from "bun:test";
import { spawnSync, type Subprocess } from "bun";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Broker, type CompletionMsg, type RequestMsg } from "../src/dist/broker.ts";

/** Why broker tests cannot run here (null: they can); under CI=true a missing redis-server is a failure. */
export function redisMissing(): string | null {
  let ok = false;
  try {
    ok = spawnSync(["redis-server", "--version"]).exitCode === 0;
  } catch {
    ok = false;
  }
  if (ok) return null;
  const why = "redis-server is not installed (scripts/setup.sh installs it)";
  if (process.env.CI === "true") throw new Error(`CI=true and ${why}`);
  console.warn(`[tests] broker tests skipped: ${why}`);
  return why;
}

/**
 * A port no one listens on, below the kernel's ephemeral range (32768+ on Linux), so no outgoing
 * connection holds it while the server is down and restarted, and a client reconnecting to the
 * closed port can never connect to itself.
 */
function freePort(): Promise<number> {
  const port = 20_000 + Math.floor(Math.random() * 12_000);
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(freePort()));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(port)));
  });
}

export interface RedisServer {
  url: string;
  /** SIGKILL it (no shutdown save) and start it again on the same port: with `persist` its append-only file brings the data back. */
  restart(): Promise<void>;
  stop(): void;
}

function ping(port: number): boolean {
  return spawnSync(["redis-cli", "-h", "127.0.0.1", "-p", String(port), "ping"]).stdout.toString().trim() === "PONG";
}

/** redis-server on `port`, once it answers; null if it exits or stays silent for 20 s. */
async function launch(port: number, dir: string, persist: boolean): Promise<Subprocess | null> {
  // persist: every write to the append-only file before the reply (a SIGKILL loses nothing acknowledged).
  const keep = persist ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"];
  const p = Bun.spawn(["redis-server", "--bind", "127.0.0.1", "--port", String(port), "--dir", dir, "--save", "", ...keep], { stdout: "ignore", stderr: "ignore" });
  const t0 = Date.now();
  while (p.exitCode === null && Date.now() - t0 < 20_000) {
    if (ping(port)) return p;
    await Bun.sleep(50);
  }
  p.kill("SIGKILL");
  return null;
}

/** Start one (persist: an append-only file, so a restart keeps the streams); a port taken meanwhile is retried with another. */
export async function startRedis(o: { persist?: boolean } = {}): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), "siri-redis-"));
  const persist = o.persist ?? false;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    let p = await launch(port, dir, persist);
    if (!p) continue;
    return {
      url: `redis://127.0.0.1:${port}`,
      async restart() {
        p!.kill("SIGKILL");
        await p!.exited;
        p = await launch(port, dir, persist);
        if (!p) throw new Error(`redis-server would not start again on port ${port}`);
      },
      stop() {
        p?.kill("SIGKILL");
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error("redis-server would not start on a free port in 5 attempts");
}

export interface WorkerProc {
  proc: Subprocess;
  stderr(): string;
  stdout(): string;
}

const REPO = join(import.meta.dir, "..");

/** `siri <args>` as a process, its stderr in the file <dir>/<name>.log, stdout in <name>.out (one file for both: each writer would overwrite the other's bytes). */
export function startSiri(dir: string, name: string, args: string[], env: Record<string, string> = {}): WorkerProc {
  const log = join(dir, `${name}.log`);
  const out = join(dir, `${name}.out`);
  const proc = Bun.spawn([process.execPath, "src/cli.ts", ...args], { cwd: REPO, env: { ...process.env, ...env }, stdout: Bun.file(out), stderr: Bun.file(log) });
  return { proc, stderr: () => readFileSync(log, "utf8"), stdout: () => readFileSync(out, "utf8") };
}

/** Poll `pred` every 100 ms until it holds; fail naming `what` after `ms`. */
export async function until(pred: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!(await pred())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(100);
  }
}

/** Entries in the requests stream of the broker at `url` (a short-lived client of its own). */
export async function queued(url: string): Promise<number> {
  const b = await Broker.connect(url, { log: () => undefined });
  try {
    return await b.length("requests");
  } finally {
    b.close();
  }
}

/** The completions a stopped worker says it published. */
export const served = (p: WorkerProc) => Number(/worker stopped: (\d+) completions/.exec(p.stderr())?.[1]);

/**
 * The distributed tests' run (steps set by each): 2 prompts x 4 rollouts on the tiny model, caps of a few tokens. A short
 * warm start teaches it to stop sometimes, and DAPO's soft overlong punishment makes the rewards differ by length, so an
 * update moves the weights.
 */
export const TINY_RUN = {
  model: "tiny:tiny",
  promptsPerStep: 2,
  groupSize: 4,
  schedule: { kind: "constant", cap: 12 },
  warmStart: { steps: 6, batchSize: 4, lr: 1e-2 },
  validation: { problems: 2 },
  checkpoint: { every: 2, keepLast: 2 },
  optim: { lr: 3e-2 },
  dapo: { softOverlong: true, overlongCache: 1 },
};

/**
 * A broker test file's surroundings: a temporary folder, a redis-server of its
 * own for the file (when one is installed) and every `siri` process the file
 * starts, all stopped and removed after the file's tests.
 */
export function brokerFixture(prefix: string, noRedis: string | null) {
  const root = mkdtempSync(join(tmpdir(), prefix));
  const procs: WorkerProc[] = [];
  let redis: RedisServer | null = null;
  beforeAll(async () => {
    if (!noRedis) redis = await startRedis();
  });
  afterAll(() => {
    for (const p of procs) p.proc.kill("SIGKILL");
    redis?.stop();
    rmSync(root, { recursive: true, force: true });
  });
  return {
    root,
    /** The file's broker (started before its first test). */
    redis: (): RedisServer => redis!,
    /** A `siri` process in the file's folder, killed after the file if still running. */
    siri(name: string, args: string[], env: Record<string, string> = {}): WorkerProc {
      const p = startSiri(root, name, args, env);
      procs.push(p);
      return p;
    },
  };
}

/** A well-formed generation request (fields overridden by `over`). */
export const requestMsg = (over: Partial<RequestMsg> = {}): RequestMsg => ({
  kind: "request",
  proto: 1,
  run: "r1",
  version: 0,
  id: "0.0.0",
  prompt: [1, 2, 3],
  maxTokens: 4,
  stop: [0],
  key: 0,
  sampling: { temperature: 1, topP: 1, topK: 0, seed: 7 },
  ...over,
});

/** The completions of `run` the broker has received, read on from where the last `read` stopped. */
export function completionReader(b: Broker, run: string) {
  const got: CompletionMsg[] = [];
  let after = "0-0";
  return {
    got,
    /** Read what arrived since the last call; the number read in all. */
    async read(): Promise<number> {
      const c = await b.completions(run, after, 200);
      after = c.last;
      for (const e of c.entries) got.push(e.msg!);
      return got.length;
    },
  };
}
