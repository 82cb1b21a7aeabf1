// A private redis-server for the broker tests (127.0.0.1, a free port, a temp dir), and worker processes.
// Both are started with Bun.spawn and write to files: a node:child_process pipe in a process that also
// drives the GPU stalls dawn.node's event pump (src/gpu/bun_event_pump.ts parks one callback only).
import { spawnSync, type Subprocess } from "bun";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

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

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface RedisServer {
  url: string;
  stop(): void;
}

/** Start one; a port taken between choosing and binding is retried with another. */
export async function startRedis(): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), "siri-redis-"));
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const p = Bun.spawn(["redis-server", "--bind", "127.0.0.1", "--port", String(port), "--dir", dir, "--save", "", "--appendonly", "no"], { stdout: "ignore", stderr: "ignore" });
    const t0 = Date.now();
    while (p.exitCode === null && Date.now() - t0 < 20_000) {
      if (spawnSync(["redis-cli", "-h", "127.0.0.1", "-p", String(port), "ping"]).stdout.toString().trim() === "PONG") {
        return {
          url: `redis://127.0.0.1:${port}`,
          stop() {
            p.kill("SIGKILL");
            rmSync(dir, { recursive: true, force: true });
          },
        };
      }
      await Bun.sleep(50);
    }
    p.kill("SIGKILL");
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
