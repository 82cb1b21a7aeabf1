// Real processes for the run-robustness tests: started in their own process
// group (as a terminal's foreground job is), output captured, exit awaited.
import { spawn } from "node:child_process";
import { join } from "node:path";

export const REPO = join(import.meta.dir, "..");
export const BUN = process.execPath;

export interface Proc {
  pid: number;
  stdout(): string;
  stderr(): string;
  /** Exit code, or 128 + signal number for a process killed by a signal (as a shell reports it). */
  exited: Promise<number>;
  /** Signal the whole process group, as a terminal's Ctrl-C does. */
  signalGroup(sig: NodeJS.Signals): void;
}

const started = new Set<number>();

/** SIGKILL every group started here that still runs (afterAll: a failed test leaves nothing behind). */
export function killStarted(): void {
  for (const pid of started) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  started.clear();
}

const SIGNUM: Record<string, number> = { SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };

export function startDetached(cmd: string, args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(cmd, args, { cwd: REPO, detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (err += d));
  const exited = new Promise<number>((resolve) => child.on("close", (code, signal) => resolve(code ?? 128 + (SIGNUM[signal ?? ""] ?? 0))));
  const pid = child.pid!;
  started.add(pid);
  void exited.then(() => started.delete(pid));
  return {
    pid,
    stdout: () => out,
    stderr: () => err,
    exited,
    signalGroup(sig) {
      try {
        process.kill(-pid, sig);
      } catch {
        // the group is gone already
      }
    },
  };
}

/** Poll `pred` every 50 ms until it holds; fail naming `what` (with the process's stderr) after `ms`. */
export async function waitFor(pred: () => boolean, ms: number, what: string, p?: Proc): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}${p ? `\n--- stderr:\n${p.stderr()}` : ""}`);
    await Bun.sleep(50);
  }
}

/** Whether a pid runs (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
