// One writer per run folder, and no leftovers: the run lock (unit cases and two
// real processes on one folder, for train and bench), stale-lock takeover after
// a kill -9, temporaries of dead writers removed at start and on resume, and a
// bad bench setting refused before it is recorded.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { makeTinyModel } from "../src/model/tiny.ts";
import { makeDirAtomically, writeFileAtomic } from "../src/run/atomic.ts";
import { removeStaleTemps } from "../src/run/cleanup.ts";
import { acquireRunLock, holderState, LOCK_FILE, RunLockedError, type LockHolder } from "../src/run/lock.ts";
import { latestCheckpoint } from "../src/train/checkpoint.ts";
import { readMetrics } from "../src/train/metrics.ts";
import { hasGpu } from "./helpers.ts";
import { alive, BUN, killStarted, REPO, startDetached, waitFor } from "./processes.ts";

const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-runfolder-"));
afterAll(() => {
  killStarted();
  rmSync(ROOT, { recursive: true, force: true });
});

/** A pid that certainly ran and has exited. */
async function deadPid(): Promise<number> {
  const p = Bun.spawn(["true"]);
  await p.exited;
  expect(alive(p.pid)).toBe(false);
  return p.pid;
}

function plantLock(dir: string, h: Partial<LockHolder>): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: 1, host: hostname(), started: "2026-01-01T00:00:00.000Z", command: "siri train", token: "planted", ...h }));
}

describe("the run lock", () => {
  test("held: a second taker is refused with the holder named; released: taken again", () => {
    const dir = join(ROOT, "held");
    const a = acquireRunLock(dir, "siri train");
    const h = JSON.parse(readFileSync(join(dir, LOCK_FILE), "utf8"));
    expect([h.pid, h.host, h.command]).toEqual([process.pid, hostname(), "siri train"]);
    expect(Number.isNaN(Date.parse(h.started))).toBe(false);
    expect(() => acquireRunLock(dir, "siri bench")).toThrow(RunLockedError);
    expect(() => acquireRunLock(dir, "siri bench")).toThrow(new RegExp(`in use by another run: pid ${process.pid} on ${hostname()}, since .* \\(siri train\\)`));
    a.release();
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
    const b = acquireRunLock(dir, "siri bench");
    a.release(); // a released lock never removes its successor's
    expect(existsSync(join(dir, LOCK_FILE))).toBe(true);
    b.release();
  });

  test("stale (dead pid on this host, or a reused pid) is taken over; another host's or an unreadable one is refused", async () => {
    const dir = join(ROOT, "stale");
    const dead = await deadPid();
    plantLock(dir, { pid: dead });
    const a = acquireRunLock(dir, "siri train");
    expect(a.tookOver?.pid).toBe(dead);
    expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), "utf8")).pid).toBe(process.pid);
    a.release();
    // Our own pid, but recorded with another process start time: the pid was reused.
    expect(holderState({ pid: process.pid, host: hostname(), started: "", command: "", token: "", procStart: "1" })).toBe(existsSync("/proc/self/stat") ? "dead" : "alive");
    plantLock(dir, { pid: dead, host: "elsewhere.example" });
    expect(() => acquireRunLock(dir, "siri train")).toThrow(/locked by a run on another host: pid \d+ on elsewhere\.example.*remove .*run\.lock/);
    writeFileSync(join(dir, LOCK_FILE), "");
    expect(() => acquireRunLock(dir, "siri train")).toThrow(/run\.lock: the run folder's lock file is unreadable/);
  });
});

describe("stale temporaries", () => {
  test("temporaries of other pids are removed, an orphaned X.old-PID is restored to X, ours are kept", () => {
    const dir = join(ROOT, "temps");
    const ck = join(dir, "checkpoints");
    for (const d of ["step-000004.tmp-999999", "step-000006", "peak-cycle1.old-999999", "step-000006.old-999999", `step-000008.tmp-${process.pid}`]) mkdirSync(join(ck, d), { recursive: true });
    writeFileSync(join(ck, "step-000004.tmp-999999", "model.safetensors"), "x");
    writeFileSync(join(ck, "step-000006", ".model.safetensors.tmp-999999-1700000000000"), "x");
    writeFileSync(join(dir, "run.json.tmp-999999"), "");
    writeFileSync(join(dir, "run.lock.stale-999999-1-2"), "{}");
    writeFileSync(join(dir, "notes.txt"), "kept");
    const r = removeStaleTemps(dir);
    expect(r.restored).toEqual([join(ck, "peak-cycle1")]);
    expect(readdirSync(ck).sort()).toEqual(["peak-cycle1", "step-000006", `step-000008.tmp-${process.pid}`]);
    expect(readdirSync(join(ck, "step-000006"))).toEqual([]);
    expect(readdirSync(dir).sort()).toEqual(["checkpoints", "notes.txt"]);
    expect(r.removed.length).toBe(5);
  });

  test("atomic file and folder writes leave nothing behind, and a failed fill leaves no folder", () => {
    const dir = join(ROOT, "atomic");
    mkdirSync(dir, { recursive: true });
    writeFileAtomic(join(dir, "a.json"), "{}\n");
    expect(readdirSync(dir)).toEqual(["a.json"]);
    makeDirAtomically(join(dir, "base"), (tmp) => makeTinyModel(tmp));
    expect(readdirSync(dir).sort()).toEqual(["a.json", "base"]);
    expect(existsSync(join(dir, "base", "model.safetensors"))).toBe(true);
    expect(() =>
      makeDirAtomically(join(dir, "broken"), (tmp) => {
        mkdirSync(tmp);
        throw new Error("disk full");
      }),
    ).toThrow("disk full");
    expect(readdirSync(dir).sort()).toEqual(["a.json", "base"]);
  });
});

const BENCH_FIXTURE = join(REPO, "datasets/fixtures/tiny.jsonl");

describe("two real processes on one run folder", () => {
  test("siri bench: a folder locked by a live process is refused naming it; a bad --dtype is refused before run.json is written", async () => {
    const model = join(ROOT, "bench-model");
    makeTinyModel(model);
    const out = join(ROOT, "bench-out");
    const holder = startDetached(BUN, ["-e", `import { acquireRunLock } from "${join(REPO, "src/run/lock.ts")}"; acquireRunLock(${JSON.stringify(out)}, "siri bench"); console.error("locked"); await Bun.sleep(60000);`]);
    await waitFor(() => holder.stderr().includes("locked"), 30_000, "the holder", holder);
    const args = ["src/cli.ts", "bench", "--model", model, "--dataset", BENCH_FIXTURE, "--limit", "1", "--n", "1", "--max-tokens", "4", "--out", out];
    const p = Bun.spawnSync([BUN, ...args, "--dtype", "f32"], { cwd: REPO, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
    expect(p.exitCode).not.toBe(0);
    expect(p.stderr.toString()).toContain(`${out} is in use by another run: pid ${holder.pid} on ${hostname()}`);
    expect(existsSync(join(out, "run.json"))).toBe(false);
    holder.signalGroup("SIGKILL");
    await holder.exited;

    // The holder was killed -9: its lock is stale now, and is no obstacle to the next command.
    const bad = Bun.spawnSync([BUN, ...args, "--dtype", "int8"], { cwd: REPO, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr.toString()).toContain('--dtype must be f32, f16 or auto, got "int8"');
    expect(existsSync(join(out, "run.json"))).toBe(false);
  }, 240_000);

  test.skipIf(!GPU)("siri bench: after a refused --dtype int8 and a killed writer's stale lock, the corrected command runs", async () => {
    const model = join(ROOT, "bench-model2");
    makeTinyModel(model);
    const out = join(ROOT, "bench-out2");
    plantLock(out, { pid: await deadPid(), command: "siri bench" });
    const args = ["src/cli.ts", "bench", "--model", model, "--dataset", BENCH_FIXTURE, "--limit", "1", "--n", "1", "--max-tokens", "4", "--out", out];
    const bad = Bun.spawnSync([BUN, ...args, "--dtype", "int8"], { cwd: REPO, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
    expect(bad.exitCode).not.toBe(0);
    expect(existsSync(join(out, "run.json"))).toBe(false);
    const good = Bun.spawnSync([BUN, ...args, "--dtype", "f32"], { cwd: REPO, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
    expect(good.stderr.toString()).toContain("took over the lock of a run that is gone");
    expect(good.exitCode).toBe(0);
    expect(JSON.parse(readFileSync(join(out, "run.json"), "utf8")).dtype).toBe("f32");
    expect(existsSync(join(out, LOCK_FILE))).toBe(false);
  }, 240_000);

  test.skipIf(!GPU)("siri train: a second run on a running folder is refused naming the first; after kill -9 of the first, --resume takes over and removes its leftovers", async () => {
    const out = join(ROOT, "train-out");
    const cfg = join(ROOT, "train.json");
    // cap 24 (not 8): with fused decode a step is fast enough that the first run could finish before the second starts
    writeFileSync(cfg, JSON.stringify({ model: "tiny:tiny", steps: 40, promptsPerStep: 2, groupSize: 4, schedule: { kind: "constant", cap: 24 }, validation: { problems: 2, n: 1 }, warmStart: { steps: 0, batchSize: 4, lr: 0.003 }, checkpoint: { every: 2, keepLast: 2 }, optim: { lr: 0.003 } }));
    const first = startDetached(BUN, ["src/cli.ts", "train", "--config", cfg, "--out", out]);
    await waitFor(() => existsSync(join(out, "metrics.jsonl")) && readMetrics(join(out, "metrics.jsonl")).length >= 2, 120_000, "two RL steps", first);
    const second = Bun.spawnSync([BUN, "src/cli.ts", "train", "--config", cfg, "--out", out, "--resume"], { cwd: REPO, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
    expect(second.exitCode).not.toBe(0);
    expect(second.stderr.toString()).toContain(`${out} is in use by another run: pid ${first.pid} on ${hostname()}`);
    expect(alive(first.pid)).toBe(true); // the first run goes on, untouched
    first.signalGroup("SIGKILL");
    expect(await first.exited).toBe(137);
    // What a kill inside a checkpoint write leaves: a temp folder with a model file, a half-written safetensors file.
    const dead = await deadPid();
    const ck = join(out, "checkpoints");
    mkdirSync(join(ck, `step-000099.tmp-${dead}`));
    writeFileSync(join(ck, `step-000099.tmp-${dead}`, "model.safetensors"), "partial");
    writeFileSync(join(ck, `.x.safetensors.tmp-${dead}-1`), "partial");
    const last = latestCheckpoint(out)!;
    const resumed = Bun.spawnSync([BUN, "src/cli.ts", "train", "--config", cfg, "--out", out, "--resume", "--steps", "40"], { cwd: REPO, stdout: "pipe", stderr: "pipe", timeout: 240_000 });
    const err = resumed.stderr.toString();
    expect(err).toContain(`took over the lock of a run that is gone (pid ${first.pid}`);
    expect(err).toMatch(/removed \d+ leftover temporar/);
    expect(err).toContain(`resumed from ${last}`);
    expect(resumed.exitCode).toBe(0);
    expect(readdirSync(ck).filter((n) => n.includes(".tmp-"))).toEqual([]);
    expect(readMetrics(join(out, "metrics.jsonl")).map((m) => m.step)).toEqual(Array.from({ length: 40 }, (_, i) => i));
  }, 300_000);
});
