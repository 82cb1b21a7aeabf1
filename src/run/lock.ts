/**
 * One writer per run folder: `siri train` and `siri bench` hold `run.lock`
 * in their folder for as long as they write there, so a second process on
 * the same `--out` is refused with a message naming the holder instead of
 * overwriting checkpoints and mixing metrics.
 *
 * The lock file holds the writer's pid, host, start time and command. It is
 * created atomically with its content in place: written to a private temp
 * file, then hard-linked to `run.lock` (link fails with EEXIST like an
 * O_EXCL open, and no reader ever sees a half-written lock). On a filesystem
 * without hard links it falls back to an O_EXCL open ("wx").
 *
 * A lock whose holder is gone (same host, that pid no longer runs, or the pid
 * now belongs to a process started later: Linux /proc start time) is stale:
 * it is taken over after being moved aside, so two processes that both find
 * it stale cannot both win. A lock from another host cannot be checked and
 * is refused; the message says how to remove it.
 */
import { closeSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { describeCleanup, removeStaleTemps } from "./cleanup.ts";

export const LOCK_FILE = "run.lock";

export interface LockHolder {
  pid: number;
  host: string;
  /** When the lock was taken (ISO 8601). */
  started: string;
  /** The holder's process start time from /proc/<pid>/stat (Linux; detects a reused pid). */
  procStart?: string;
  command: string;
  /** Distinguishes two locks taken by one process. */
  token: string;
}

export interface RunLock {
  path: string;
  holder: LockHolder;
  /** The dead writer whose stale lock this one replaced, if any. */
  tookOver?: LockHolder;
  /** Remove the lock if it is still ours (idempotent). */
  release(): void;
}

export class RunLockedError extends Error {}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or undefined off Linux. */
function procStartOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

/** "alive", "dead" (same host, provably gone) or "unknown" (another host). */
export function holderState(h: LockHolder): "alive" | "dead" | "unknown" {
  if (h.host !== hostname()) return "unknown";
  try {
    process.kill(h.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ESRCH") return "dead";
    // EPERM: the pid exists (another user's process); judge by start time below
  }
  const now = procStartOf(h.pid);
  if (h.procStart && now !== undefined && now !== h.procStart) return "dead"; // the pid was reused
  return "alive";
}

function parseHolder(text: string): LockHolder | null {
  try {
    const h = JSON.parse(text) as LockHolder;
    return Number.isInteger(h.pid) && typeof h.host === "string" ? h : null;
  } catch {
    return null;
  }
}

export function describeHolder(h: LockHolder): string {
  return `pid ${h.pid} on ${h.host}, since ${h.started} (${h.command})`;
}

let counter = 0;

/** Create `path` holding `text`, failing with EEXIST when it exists. */
function createExclusive(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}-${++counter}`;
  writeFileSync(tmp, text);
  try {
    linkSync(tmp, path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EEXIST") throw e;
    // No hard links here (some network/FUSE filesystems): an O_EXCL create instead.
    const fd = openSync(path, "wx");
    try {
      writeSync(fd, text);
    } finally {
      closeSync(fd);
    }
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Take the run folder's lock (creating the folder), or throw a RunLockedError
 * naming the holder. `command` is recorded for that message ("siri train").
 */
export function acquireRunLock(dir: string, command: string): RunLock {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, LOCK_FILE);
  const holder: LockHolder = {
    pid: process.pid,
    host: hostname(),
    started: new Date().toISOString(),
    procStart: procStartOf(process.pid),
    command,
    token: `${process.pid}-${Date.now()}-${++counter}`,
  };
  const text = JSON.stringify(holder, null, 2) + "\n";
  let tookOver: LockHolder | undefined;
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      createExclusive(path, text);
      return ownLock(path, holder, tookOver);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw new Error(`${path}: cannot create the run lock: ${(e as Error).message}`);
    }
    let seen: string;
    try {
      seen = readFileSync(path, "utf8");
    } catch {
      continue; // released meanwhile: try again
    }
    const other = parseHolder(seen);
    if (!other) {
      throw new RunLockedError(`${path}: the run folder's lock file is unreadable (${JSON.stringify(seen.slice(0, 80))}); if no run is using ${dir}, remove it`);
    }
    const state = holderState(other);
    if (state === "alive") {
      throw new RunLockedError(`${dir} is in use by another run: ${describeHolder(other)}; wait for it to finish, stop it, or pick another --out (lock file ${path})`);
    }
    if (state === "unknown") {
      throw new RunLockedError(
        `${dir} is locked by a run on another host: ${describeHolder(other)}; this host cannot tell whether it still runs. ` +
          `If it does not, remove ${path} and try again`,
      );
    }
    // Stale: move it aside under a name of our own, and remove it only if it is the lock we judged.
    const aside = `${path}.stale-${holder.token}`;
    try {
      renameSync(path, aside);
    } catch {
      continue; // someone else moved it first
    }
    const moved = readFileSync(aside, "utf8");
    if (moved === seen) tookOver = other;
    else {
      // We took a fresh lock by someone else: put it back unless another appeared meanwhile.
      try {
        linkSync(aside, path);
      } catch {
        // a newer lock is in place; the one we moved is stale by now or its holder will find it gone
      }
    }
    rmSync(aside, { force: true });
  }
  throw new RunLockedError(`${path}: could not take the run lock after repeated attempts (several processes racing for ${dir}?)`);
}

const held = new Set<RunLock>();
let exitHookInstalled = false;

function ownLock(path: string, holder: LockHolder, tookOver?: LockHolder): RunLock {
  const lock: RunLock = {
    path,
    holder,
    tookOver,
    release() {
      if (!held.delete(lock)) return;
      try {
        const now = parseHolder(readFileSync(path, "utf8"));
        if (now?.token === holder.token) rmSync(path, { force: true });
      } catch {
        // already gone
      }
    },
  };
  held.add(lock);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // process.exit (a deliberate second Ctrl-C) skips `finally` blocks; this still runs.
    process.on("exit", () => {
      for (const l of [...held]) l.release();
    });
  }
  return lock;
}

/**
 * Run `fn` holding `dir`'s run lock, after removing temporaries that dead
 * writers left there (logged); the lock is released however `fn` ends.
 */
export async function withRunLock<T>(dir: string, command: string, fn: () => Promise<T>, log: (s: string) => void = (s) => console.error(s)): Promise<T> {
  const lock = acquireRunLock(dir, command);
  try {
    if (lock.tookOver) log(`${dir}: took over the lock of a run that is gone (${describeHolder(lock.tookOver)})`);
    const cleaned = describeCleanup(removeStaleTemps(dir));
    if (cleaned) log(`${dir}: ${cleaned}`);
    return await fn();
  } finally {
    lock.release();
  }
}
