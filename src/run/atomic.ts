/**
 * Atomic writes by temporary name + rename: a kill at any point leaves the
 * old content or the new, never half. Temporary names carry the writer's pid
 * (`<name>.tmp-<pid>`) so `removeStaleTemps` (cleanup.ts) can tell a dead
 * writer's leftovers from a live one's.
 */
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

function fsyncPath(path: string): void {
  try {
    const fd = openSync(path, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // some filesystems refuse fsync on directories; the rename still orders the writes
  }
}

/** Write `text` to `path` through `path.tmp-<pid>`, fsynced, then renamed over it. */
export function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  fsyncPath(tmp);
  renameSync(tmp, path);
  fsyncPath(dirname(path));
}

/**
 * Make the folder `dir` by filling `dir.tmp-<pid>`, then renaming it into
 * place; an incomplete `dir` (none of ours would be) is replaced.
 */
export function makeDirAtomically<T>(dir: string, fill: (tmp: string) => T): T {
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  let out: T;
  try {
    out = fill(tmp);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  fsyncPath(tmp);
  if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  fsyncPath(dirname(dir));
  return out;
}
