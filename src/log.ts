/**
 * The one logger for human-readable lines (consola), kept off stdout so a
 * command's stdout stays its data (tables, JSON, completions).
 *
 * - Levels: `--quiet` keeps warnings and errors; default adds info; `--verbose`
 *   (or SIRI_DEBUG=1) adds debug lines and error stack traces.
 * - Info lines are plain text (no "[info]" prefix, no red: Bun paints every
 *   console.error red on a terminal); warnings start "warning:", errors "error:".
 * - Colour only when stderr is a terminal, never with NO_COLOR (any value,
 *   no-color.org) or TERM=dumb.
 */
import { writeSync } from "node:fs";
import { createConsola, LogLevels, type ConsolaReporter, type LogObject } from "consola";

export type Verbosity = "quiet" | "normal" | "verbose";

/** True when text written to this stream may carry ANSI colour codes. */
export function colorEnabled(stream: { isTTY?: boolean } = process.stderr): boolean {
  const env = process.env;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== "") return false;
  if (env.TERM === "dumb") return false;
  return Boolean(stream.isTTY);
}

// ESC [ ... m (SGR colour codes); built from a string so no control character sits in a regex literal.
const ANSI = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");
export function stripAnsi(s: string): string {
  return s.replace(ANSI, "");
}

function paint(code: number, s: string): string {
  return colorEnabled() ? `\x1b[${code}m${s}\x1b[39m` : s;
}

function formatArgs(args: unknown[]): string {
  return args.map((a) => (a instanceof Error ? a.message : typeof a === "string" ? a : JSON.stringify(a))).join(" ");
}

/** Write a line to fd 1 or 2 now; a pipe that is full falls back to the stream. */
export function writeLine(fd: 1 | 2, line: string): void {
  try {
    writeSync(fd, `${line}\n`);
  } catch {
    (fd === 1 ? process.stdout : process.stderr).write(`${line}\n`);
  }
}

/** One line per call on stderr, written synchronously (nothing lost at exit). */
const reporter: ConsolaReporter = {
  log(obj: LogObject) {
    const msg = formatArgs(obj.args);
    let line: string;
    if (obj.level <= LogLevels.error) line = `${paint(31, "error:")} ${msg}`;
    else if (obj.level === LogLevels.warn) line = `${paint(33, "warning:")} ${msg}`;
    else if (obj.level >= LogLevels.debug) line = paint(90, msg);
    else line = msg;
    writeLine(2, line);
  },
};

export const log = createConsola({ level: LogLevels.info, reporters: [reporter] });

let verbosity: Verbosity = "normal";

/** Set by --quiet / --verbose; SIRI_DEBUG=1 makes "normal" verbose. */
export function setVerbosity(v: Verbosity): void {
  if (v === "normal" && process.env.SIRI_DEBUG === "1") v = "verbose";
  verbosity = v;
  log.level = v === "quiet" ? LogLevels.warn : v === "verbose" ? LogLevels.debug : LogLevels.info;
}

/** --verbose given, or SIRI_DEBUG=1: stack traces and debug lines. */
export function isVerbose(): boolean {
  return verbosity === "verbose" || process.env.SIRI_DEBUG === "1";
}

if (process.env.SIRI_DEBUG === "1") setVerbosity("verbose");
