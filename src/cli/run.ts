/**
 * How `siri` runs a command line, on top of citty's command definitions:
 *
 * - global flags anywhere before `--`: --help/-h, --version, --quiet/-q, --verbose;
 * - every flag checked against the args the command declares (citty accepts
 *   any flag and ignores it): an unknown one is an error with a did-you-mean,
 *   a value flag needs a value, a flag given twice is an error unless the
 *   command marks it repeatable (`repeatable()` in src/commands/common.ts);
 * - errors: `error: ...` on stderr (one or two lines: what was expected, what
 *   was found, what to do), exit 1; the stack only with --verbose or SIRI_DEBUG=1;
 * - exit code: 0 when the command finishes, or the code it set in
 *   `process.exitCode` or returned as a number (130 for an interrupted run).
 */
import { type ArgsDef, type CommandDef, renderUsage, runCommand } from "citty";
import { isRepeatable } from "../commands/common.ts";
import { colorEnabled, isVerbose, log, setVerbosity, stripAnsi, writeLine } from "../log.ts";

// biome-ignore lint/suspicious/noExplicitAny: citty's command type is generic over its args
type AnyCommand = CommandDef<any>;

/** A mistake on the command line: printed with a pointer to --help. */
export class UsageError extends Error {
  override name = "UsageError";
  constructor(
    message: string,
    readonly command: string,
  ) {
    super(message);
  }
}

const GLOBAL_FLAGS = ["help", "version", "quiet", "verbose"];

async function resolve<T>(v: T | (() => T | Promise<T>) | Promise<T>): Promise<T> {
  return typeof v === "function" ? await (v as () => T | Promise<T>)() : await v;
}

function kebab(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase();
}

/** Edit distance (insert, delete, substitute, swap of neighbours). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** The closest candidate within a few edits (or a prefix match), if any. */
export function didYouMean(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = c.startsWith(word) || word.startsWith(c) ? Math.min(editDistance(word, c), 1) : editDistance(word, c);
    if (d < bestD) [best, bestD] = [c, d];
  }
  const limit = Math.max(2, Math.floor(word.length / 3));
  return bestD <= limit ? best : undefined;
}

interface Global {
  help: boolean;
  version: boolean;
  verbosity: "quiet" | "normal" | "verbose";
  rest: string[];
}

/** Take the global flags out of argv (before a `--`). */
export function splitGlobalFlags(argv: string[]): Global {
  const g: Global = { help: false, version: false, verbosity: "normal", rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      g.rest.push(...argv.slice(i));
      break;
    }
    if (a === "--help" || a === "-h") g.help = true;
    else if (a === "--version") g.version = true;
    else if (a === "--quiet" || a === "-q") g.verbosity = "quiet";
    else if (a === "--verbose") g.verbosity = "verbose";
    else g.rest.push(a);
  }
  return g;
}

interface Level {
  cmd: AnyCommand;
  path: string[]; // e.g. ["siri", "bench", "compare"]
  args: string[]; // the part of argv this command owns
}

/** The chain of commands an argv names, each with the flags it owns. */
export async function resolveChain(root: AnyCommand, argv: string[]): Promise<Level[]> {
  const levels: Level[] = [];
  let cmd = root;
  let path = [String((await resolve(root.meta))?.name ?? "siri")];
  let rest = argv;
  for (;;) {
    const subs = await resolve(cmd.subCommands);
    const defs = ((await resolve(cmd.args)) ?? {}) as ArgsDef;
    let idx = -1;
    if (subs && Object.keys(subs).length) {
      for (let i = 0; i < rest.length; i++) {
        const a = rest[i]!;
        if (a === "--") break;
        if (a.startsWith("-")) {
          const name = kebab(a.replace(/^-+/, "").split("=")[0]!);
          const def = (defs as Record<string, { type?: string }>)[name];
          if (!a.includes("=") && def && def.type !== "boolean" && def.type !== "positional") i++;
          continue;
        }
        idx = i;
        break;
      }
    }
    if (idx < 0) {
      levels.push({ cmd, path, args: rest });
      return levels;
    }
    const name = rest[idx]!;
    const sub = subs![name];
    if (!sub) {
      if (cmd.run) {
        levels.push({ cmd, path, args: rest }); // a positional of this command (it checks it)
        return levels;
      }
      const hint = didYouMean(name, Object.keys(subs!));
      throw new UsageError(
        `unknown command "${name}" for ${path.join(" ")}` + (hint ? `; did you mean "${hint}"?` : ` (commands: ${Object.keys(subs!).join(", ")})`),
        path.join(" "),
      );
    }
    levels.push({ cmd, path, args: rest.slice(0, idx) });
    cmd = await resolve(sub as AnyCommand);
    path = [...path, name];
    rest = rest.slice(idx + 1);
  }
}

/** Check one command's flags against what it declares; throws UsageError. */
export async function checkFlags(level: Level, isLeaf: boolean): Promise<void> {
  const defs = ((await resolve(level.cmd.args)) ?? {}) as Record<string, { type?: string }>;
  const where = level.path.join(" ");
  const flags = Object.keys(defs).filter((k) => defs[k]!.type !== "positional");
  const positionals = Object.keys(defs).filter((k) => defs[k]!.type === "positional");
  const seen = new Map<string, string>();
  const args = level.args;
  let positionalCount = 0;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") break;
    if (!a.startsWith("-") || /^-\d/.test(a)) {
      positionalCount++;
      continue;
    }
    const body = a.replace(/^-+/, "");
    const eq = body.indexOf("=");
    const rawName = eq >= 0 ? body.slice(0, eq) : body;
    let name = kebab(rawName);
    let def = defs[name];
    if (!def && name.startsWith("no-") && defs[name.slice(3)]?.type === "boolean") {
      name = name.slice(3);
      def = defs[name];
    }
    if (!def || !a.startsWith("--")) {
      const negated = flags.filter((k) => defs[k]!.type === "boolean").map((k) => `no-${k}`);
      const hint = didYouMean(name, [...flags, ...negated, ...GLOBAL_FLAGS]);
      throw new UsageError(`unknown flag ${a.split("=")[0]} for ${where}` + (hint ? `; did you mean --${hint}?` : ""), where);
    }
    let value: string | undefined;
    if (def.type !== "boolean") {
      if (eq >= 0) value = body.slice(eq + 1);
      else {
        value = args[i + 1];
        if (value === undefined || (value.startsWith("--") && value !== "--")) {
          throw new UsageError(`--${name} needs a value (${where} --${name} VALUE)`, where);
        }
        i++;
      }
    } else if (eq >= 0 && !["true", "false", "1", "0"].includes(body.slice(eq + 1))) {
      throw new UsageError(`--${name} is a switch: give it alone (or --no-${name}), not "=${body.slice(eq + 1)}"`, where);
    }
    const prev = seen.get(name);
    if (prev !== undefined && def.type !== "boolean" && !isRepeatable(def)) {
      throw new UsageError(`--${name} given twice ("${prev}" and "${value}"); give it once`, where);
    }
    seen.set(name, value ?? "");
  }
  if (isLeaf && positionalCount > 0 && positionals.length === 0 && !(await resolve(level.cmd.subCommands))) {
    const first = args.find((a) => !a.startsWith("-") || /^-\d/.test(a));
    throw new UsageError(`unexpected argument "${first}" for ${where} (it takes only flags)`, where);
  }
}

/** The command's help text; colour only on a terminal without NO_COLOR. */
export async function helpText(levels: Level[]): Promise<string> {
  const leaf = levels[levels.length - 1]!;
  const parent = levels.length > 1 ? levels[levels.length - 2]!.cmd : undefined;
  let text = await renderUsage(leaf.cmd, parent);
  text += "\n\nGLOBAL FLAGS\n\n  --quiet, -q   only warnings and errors\n  --verbose     debug lines and stack traces (also SIRI_DEBUG=1)\n  --help, -h    this help\n";
  return colorEnabled(process.stdout) ? text : stripAnsi(text);
}

/** Print an error the way every command does; the stack only when verbose. */
export function reportError(e: unknown, command = "siri"): void {
  let err = e instanceof Error ? e : new Error(String(e));
  // citty's own argument errors (a missing required flag) are usage errors too.
  if (err.name === "CLIError") err = Object.assign(new UsageError(err.message, command), { stack: err.stack });
  const msg = stripAnsi(err.message).replace(/^error:\s*/i, "");
  const internal = !(err instanceof UsageError) && ["TypeError", "ReferenceError", "RangeError", "SyntaxError"].includes(err.name);
  log.error(internal ? `internal error (${err.name}): ${msg}` : msg);
  if (err instanceof UsageError) log.info(`Run \`${err.command} --help\` for its flags.`);
  else if (internal && !isVerbose()) log.info("This is a bug in siri; run again with --verbose for the stack trace, and report it.");
  if (isVerbose() && err.stack) log.debug(err.stack);
}

/**
 * Run argv against the command tree; returns the exit code (the caller exits).
 * Never throws.
 */
export async function runCli(root: AnyCommand, argv: string[]): Promise<number> {
  const g = splitGlobalFlags(argv);
  setVerbosity(g.verbosity);
  let command = "siri";
  try {
    if (g.version && !g.help) {
      writeLine(1, String((await resolve(root.meta))?.version ?? "unknown"));
      return 0;
    }
    const levels = await resolveChain(root, g.rest);
    if (g.help) {
      process.stdout.write(`${await helpText(levels)}\n`);
      return 0;
    }
    for (let i = 0; i < levels.length; i++) await checkFlags(levels[i]!, i === levels.length - 1);
    const leaf = levels[levels.length - 1]!;
    command = leaf.path.join(" ");
    if (!leaf.cmd.run) {
      process.stdout.write(`${await helpText(levels)}\n`);
      log.error(`${leaf.path.join(" ")} needs a command`);
      return 1;
    }
    // The leaf alone: a parent's run() is not repeated after its subcommand.
    const { result } = await runCommand(leaf.cmd, { rawArgs: leaf.args });
    if (typeof result === "number") return result;
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (e) {
    reportError(e, command);
    return 1;
  }
}
