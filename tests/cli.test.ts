// The command line as users meet it, in real subprocesses (no GPU needed):
// exit codes, one-line errors, unknown flags with a did-you-mean on every
// command, flag values checked before anything loads, colour only on a
// terminal and never with NO_COLOR, --quiet / --verbose.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { didYouMean, editDistance, splitGlobalFlags } from "../src/cli/run.ts";

const ROOT = join(import.meta.dir, "..");
const BUN = process.execPath;
const ESC = "\x1b[";

function run(args: string[], env: Record<string, string | undefined> = {}) {
  const e: Record<string, string | undefined> = { ...process.env, SIRI_DEBUG: undefined, NO_COLOR: undefined, ...env };
  const p = Bun.spawnSync([BUN, "src/cli.ts", ...args], { cwd: ROOT, env: e as Record<string, string>, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}
const lines = (s: string) => s.split("\n").filter((l) => l.length > 0);

describe("did-you-mean", () => {
  test("edit distance counts insertions, deletions, substitutions and swaps", () => {
    expect(editDistance("kind", "kind")).toBe(0);
    expect(editDistance("kindd", "kind")).toBe(1);
    expect(editDistance("temprature", "temperature")).toBe(1);
    expect(editDistance("tpo-p", "top-p")).toBe(1); // a swap of neighbours
    expect(editDistance("abc", "xyz")).toBe(3);
  });
  test("suggests the closest flag within a few edits, nothing for a far one", () => {
    expect(didYouMean("kindd", ["kind", "cap", "period"])).toBe("kind");
    expect(didYouMean("max-token", ["max-tokens", "max-batch"])).toBe("max-tokens");
    expect(didYouMean("zzzzzz", ["kind", "cap"])).toBeUndefined();
  });
  test("global flags come out anywhere before --", () => {
    const g = splitGlobalFlags(["schedule", "--verbose", "--kind", "cosine", "-q", "--", "--help"]);
    expect(g.verbosity).toBe("quiet");
    expect(g.help).toBe(false);
    expect(g.rest).toEqual(["schedule", "--kind", "cosine", "--", "--help"]);
  });
});

describe("unknown flags are errors on every command", () => {
  test("siri schedule --kindd stair: two plain lines on stderr, exit 1, nothing on stdout", () => {
    const r = run(["schedule", "--kindd", "stair"]);
    expect(r.code).toBe(1);
    expect(r.out).toBe("");
    expect(lines(r.err)).toEqual(["error: unknown flag --kindd for siri schedule; did you mean --kind?", "Run `siri schedule --help` for its flags."]);
  });

  test("siri bench --temprature 0.6 suggests --temperature", () => {
    const r = run(["bench", "--temprature", "0.6"]);
    expect(r.code).toBe(1);
    expect(lines(r.err)[0]).toBe("error: unknown flag --temprature for siri bench; did you mean --temperature?");
  });

  const commands = [
    ["gpu"],
    ["make-tiny-model", "x"],
    ["generate"],
    ["logits"],
    ["grade"],
    ["datasets", "list"],
    ["datasets", "show", "x"],
    ["datasets", "download", "x"],
    ["schedule"],
    ["bench"],
    ["bench", "compare"],
    ["train"],
    ["export", "x"],
  ];
  test.each(commands.map((c) => [c.join(" "), c] as const))("siri %s --bogus-flag", (name, c) => {
    const r = run([...c, "--bogus-flag", "1"]);
    expect(r.code).toBe(1);
    const first = lines(r.err)[0] ?? "";
    expect(first).toStartWith(`error: unknown flag --bogus-flag for siri ${name.replace(/ x$/, "")}`);
    expect(lines(r.err).length).toBeLessThanOrEqual(2);
  });

  test("an unknown command suggests the nearest", () => {
    const r = run(["schedulee"]);
    expect(r.code).toBe(1);
    expect(lines(r.err)[0]).toBe('error: unknown command "schedulee" for siri; did you mean "schedule"?');
  });

  test("a flag given twice is an error unless it is repeatable", () => {
    const r = run(["schedule", "--total", "5", "--total", "6"]);
    expect(r.code).toBe(1);
    expect(lines(r.err)[0]).toBe('error: --total given twice ("5" and "6"); give it once');
  });

  test("--no-X switches a boolean off (citty's reading), and is accepted as a flag", () => {
    const r = run(["train", "--plan", "--no-progress"]);
    expect(r.code).toBe(0);
    const bad = run(["train", "--plan", "--no-pogress"]);
    expect(bad.code).toBe(1);
    expect(lines(bad.err)[0]).toBe("error: unknown flag --no-pogress for siri train; did you mean --no-progress?");
  });

  test("a value flag without its value", () => {
    const r = run(["schedule", "--total"]);
    expect(r.code).toBe(1);
    expect(lines(r.err)[0]).toBe("error: --total needs a value (siri schedule --total VALUE)");
  });
});

describe("flag values are checked before anything loads", () => {
  test.each([
    [["generate", "--model", "nowhere", "--prompt", "hi", "--n", "-1"], "error: --n: expected an integer >= 1, got -1"],
    [["generate", "--model", "nowhere", "--prompt", "hi", "--n", "0"], "error: --n: expected an integer >= 1, got 0"],
    [["generate", "--model", "nowhere", "--prompt", "hi", "--max-tokens", "0"], "error: --max-tokens: expected an integer >= 1, got 0"],
    [["bench", "--max-batch", "0"], "error: --max-batch: expected an integer >= 1, got 0"],
    [["bench", "--n", "2.5"], 'error: --n: expected an integer, got "2.5"'],
    [["schedule", "--width", "3"], "error: --width: expected an integer >= 8, got 3"],
  ] as const)("siri %p", (args, want) => {
    const r = run([...args]);
    expect(r.code).toBe(1);
    expect(lines(r.err)).toEqual([want]);
  });

  test("every repeated --set applies, in order", () => {
    const r = run(["train", "--plan", "--set", "policy.epsHigh=0.31", "--set", "steps=7,seed=5", "--set", "seed=9"]);
    expect(r.code).toBe(0);
    const start = r.out.indexOf("\n{\n");
    const cfg = JSON.parse(r.out.slice(start, r.out.indexOf("\n}\n", start) + 3));
    expect(cfg.policy.epsHigh).toBe(0.31);
    expect(cfg.steps).toBe(7);
    expect(cfg.seed).toBe(9);
  });
});

describe("errors, stack traces and exit codes", () => {
  const dir = mkdtempSync(join(tmpdir(), "siri-cli-"));
  const graded = join(dir, "in.jsonl");
  writeFileSync(graded, `${JSON.stringify({ gold: "2", response: "\\boxed{2}" })}\n`);

  test("a failing command: one line, no stack; --verbose and SIRI_DEBUG=1 add the stack", () => {
    const missing = join(dir, "missing.jsonl");
    const plain = run(["grade", "--file", missing]);
    expect(plain.code).toBe(1);
    expect(lines(plain.err)).toHaveLength(1);
    expect(plain.err).toStartWith("error: ");
    expect(plain.err).toContain(missing);
    expect(plain.err).not.toMatch(/^\s+at /m);
    for (const r of [run(["grade", "--file", missing, "--verbose"]), run(["grade", "--file", missing], { SIRI_DEBUG: "1" })]) {
      expect(r.code).toBe(1);
      expect(r.err).toStartWith("error: ");
      expect(r.err).toMatch(/^\s+at /m);
    }
  });

  test("a finished command exits 0; its info lines are plain, and --quiet drops them", () => {
    const r = run(["grade", "--file", graded]);
    expect(r.code).toBe(0);
    expect(JSON.parse(lines(r.out)[0]!).correct).toBe(true);
    expect(lines(r.err)).toHaveLength(1);
    expect(r.err).toStartWith("graded 1 responses: 1 correct");
    expect(r.err).not.toContain(ESC);
    const q = run(["grade", "--file", graded, "--quiet"]);
    expect(q.code).toBe(0);
    expect(q.err).toBe("");
    expect(q.out).toBe(r.out);
  });

  test("exit codes through the runner: 130 set or returned is kept, 0 finished, 1 error; a bug says so", () => {
    const fx = (args: string[]) => {
      const p = Bun.spawnSync([BUN, "tests/fixtures/cli_exit_code.ts", ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe", timeout: 60_000 });
      return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
    };
    expect(fx(["exit130"]).code).toBe(130);
    expect(fx(["return130"]).code).toBe(130);
    const ok = fx(["ok"]);
    expect([ok.code, ok.out]).toEqual([0, "done\n"]);
    const boom = fx(["boom"]);
    expect(boom.code).toBe(1);
    expect(lines(boom.err)).toEqual(["error: model folder runs/x: no config.json there; give a Hugging Face model folder"]);
    const bug = fx(["bug"]);
    expect(bug.code).toBe(1);
    expect(lines(bug.err)[0]).toStartWith("error: internal error (TypeError): ");
    expect(lines(bug.err)[1]).toContain("--verbose");
  });

  test("--version prints the version; no command prints the help and exits 1", () => {
    const v = run(["--version"]);
    expect([v.code, v.out.trim()]).toEqual([0, "0.1.0"]);
    const none = run([]);
    expect(none.code).toBe(1);
    expect(none.out).toContain("COMMANDS");
    expect(lines(none.err)).toEqual(["error: siri needs a command"]);
  });
});

describe("colour", () => {
  test("help piped to a file has no escape codes (and lists the global flags)", () => {
    const r = run(["schedule", "--help"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("--kind");
    expect(r.out).toContain("--verbose");
    expect(r.out).not.toContain(ESC);
  });

  // `script` runs the command on a pseudo-terminal, as an interactive shell would.
  const script = Bun.which("script");
  const onTty = (cmd: string, env: Record<string, string | undefined>) => {
    // CI is unset too: citty's help colours follow std-env, which turns colour off whenever CI is set.
    const e: Record<string, string | undefined> = { ...process.env, NO_COLOR: undefined, CI: undefined, TERM: "xterm", ...env };
    const p = Bun.spawnSync(["script", "-qec", cmd, "/dev/null"], { cwd: ROOT, env: e as Record<string, string>, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
    return p.stdout.toString();
  };
  describe.skipIf(!script)("on a terminal (util-linux `script`)", () => {
    test("help is coloured on a terminal, plain with NO_COLOR", () => {
      const cmd = `${BUN} src/cli.ts schedule --help`;
      expect(onTty(cmd, {})).toContain(ESC);
      const plain = onTty(cmd, { NO_COLOR: "1" });
      expect(plain).toContain("--kind");
      expect(plain).not.toContain(ESC);
    });
    test("an error is red on a terminal, plain with NO_COLOR", () => {
      const cmd = `${BUN} src/cli.ts schedule --kindd x`;
      expect(onTty(cmd, {})).toContain(`${ESC}31merror:`);
      const plain = onTty(cmd, { NO_COLOR: "1" });
      expect(plain).toContain("error: unknown flag --kindd");
      expect(plain).not.toContain(ESC);
    });
  });
  if (!script) {
    // bsdutils is essential on Debian, so CI always has `script`; a missing one must not pass silently there.
    if (process.env.CI === "true") throw new Error("CI=true and util-linux `script` is missing (apt-get install bsdutils)");
    console.warn("[tests] terminal colour tests skipped: util-linux `script` not found (apt-get install bsdutils)");
  }
});
