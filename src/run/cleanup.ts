/**
 * Leftovers of interrupted atomic writes. Every atomic write in this project
 * goes through a temporary name carrying the writer's pid, then a rename:
 *
 *   step-000020.tmp-<pid>/          a checkpoint being written (checkpoint.ts)
 *   step-000020.old-<pid>/          the previous folder of that name, moved aside
 *   .model.safetensors.tmp-<pid>-…  a safetensors file (safetensors.ts)
 *   run.json.tmp-<pid>              bench settings (atomic.ts)
 *   base.tmp-<pid>/                 the tiny base model being made (tiny.ts)
 *   run.lock.tmp-<pid>-… / .stale-… the run lock (lock.ts)
 *
 * A kill in the middle leaves one behind; at 1.5B a checkpoint temp is
 * ~21 GB. `removeStaleTemps` runs at the start (and resume) of `siri train`
 * and `siri bench`, after the run lock is taken: under the lock no other
 * process writes in the folder, so every temporary of another pid is a dead
 * writer's. One case is a rescue, not a removal: `X.old-<pid>` without `X`
 * (killed between the two renames of a replace) is renamed back to `X`.
 */
import { existsSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";

const TEMP = /^(.+?)\.(tmp|old|stale)-(\d+)(?:-[\w-]*)?$/;

export interface CleanupResult {
  removed: string[];
  restored: string[];
}

/**
 * Remove temporaries of other processes under `dir` (down to `depth` folder
 * levels), restoring an orphaned `X.old-<pid>` to `X`. Call only while
 * holding the folder's run lock.
 */
export function removeStaleTemps(dir: string, depth = 3): CleanupResult {
  const res: CleanupResult = { removed: [], restored: [] };
  if (!existsSync(dir)) return res;
  const walk = (d: string, level: number) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const name of names) {
      const path = join(d, name);
      const m = TEMP.exec(name);
      if (m && Number(m[3]) !== process.pid) {
        const target = join(d, m[1]);
        if (m[2] === "old" && !existsSync(target)) {
          renameSync(path, target);
          res.restored.push(target);
        } else {
          rmSync(path, { recursive: true, force: true });
          res.removed.push(path);
        }
        continue;
      }
      if (level < depth) {
        let isDir = false;
        try {
          isDir = statSync(path).isDirectory();
        } catch {
          // vanished meanwhile
        }
        if (isDir) walk(path, level + 1);
      }
    }
  };
  walk(dir, 1);
  return res;
}

/** One line for the log, or null when there was nothing to clean. */
export function describeCleanup(r: CleanupResult): string | null {
  if (!r.removed.length && !r.restored.length) return null;
  const parts: string[] = [];
  if (r.removed.length) parts.push(`removed ${r.removed.length} leftover temporar${r.removed.length === 1 ? "y" : "ies"} of an interrupted writer (${r.removed.join(", ")})`);
  if (r.restored.length) parts.push(`restored ${r.restored.join(", ")} from a replace cut short`);
  return parts.join("; ");
}
