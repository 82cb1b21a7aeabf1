/**
 * A terminal progress bar with rate and ETA on stderr. On a TTY it redraws
 * one line in place; otherwise (CI logs, files) it prints a plain line at
 * most every `intervalMs`, so a log of a day-long run stays readable.
 * No dependency: consola has no progress bar and nothing else is installed.
 * Silent under --quiet (the logger's level below info) unless a stream is given.
 */
import { LogLevels } from "consola";
import { log } from "../log.ts";

export interface ProgressOptions {
  /** What is counted ("samples"). */
  unit?: string;
  /** Where to write; default process.stderr. */
  stream?: { write(s: string): unknown; isTTY?: boolean; columns?: number };
  /** Least time between plain (non-TTY) lines, and between TTY redraws. */
  intervalMs?: number;
  /** Injected clock (ms), for tests. */
  now?: () => number;
}

/** "1h02m", "3m05s", "12s"; "?" when unknown. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m${String(r).padStart(2, "0")}s`;
  return `${r}s`;
}

export interface Progress {
  /** Count `n` more finished items; `extra` is shown after the counts (e.g. "412 tok/s"). */
  tick(n?: number, extra?: string): void;
  /** Draw the final state and end the line. */
  done(extra?: string): void;
}

/**
 * A bar for `total` items. The rate and ETA are measured from the first
 * call, over the items done in this process (a resumed run's earlier samples
 * count toward the bar but not the rate).
 */
export function progressBar(label: string, total: number, alreadyDone = 0, opts: ProgressOptions = {}): Progress {
  const stream = opts.stream ?? process.stderr;
  const tty = Boolean(stream.isTTY);
  const unit = opts.unit ?? "items";
  const now = opts.now ?? (() => performance.now());
  const interval = opts.intervalMs ?? (tty ? 100 : 10_000);
  const t0 = now();
  let done = alreadyDone;
  let last = -Infinity;
  let extraText = "";

  const line = (): string => {
    const elapsed = (now() - t0) / 1000;
    const fresh = done - alreadyDone;
    const rate = elapsed > 0 ? fresh / elapsed : 0;
    const eta = rate > 0 ? (total - done) / rate : NaN;
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const width = 24;
    const fill = Math.round(frac * width);
    const bar = tty ? `[${"#".repeat(fill)}${".".repeat(width - fill)}] ` : "";
    const rateText = rate > 0 ? `${rate >= 10 ? rate.toFixed(0) : rate.toFixed(2)} ${unit}/s` : `- ${unit}/s`;
    return `${label} ${bar}${done}/${total} ${unit} (${(100 * frac).toFixed(1)}%) ${rateText}, elapsed ${formatDuration(elapsed)}, ETA ${done >= total ? "0s" : formatDuration(eta)}${extraText ? `, ${extraText}` : ""}`;
  };
  const silent = !opts.stream && log.level < LogLevels.info;
  const draw = (force: boolean) => {
    if (silent) return;
    const t = now();
    if (!force && t - last < interval) return;
    last = t;
    if (tty) {
      let s = line();
      const cols = stream.columns ?? 0;
      if (cols > 10 && s.length >= cols) s = s.slice(0, cols - 1);
      stream.write(`\r\x1b[2K${s}`);
    } else {
      stream.write(line() + "\n");
    }
  };
  return {
    tick(n = 1, extra) {
      done += n;
      if (extra !== undefined) extraText = extra;
      draw(false);
    },
    done(extra) {
      if (extra !== undefined) extraText = extra;
      draw(true);
      if (tty && !silent) stream.write("\n");
    },
  };
}
