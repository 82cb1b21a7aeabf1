// scripts/gpu-check.sh: its helpers, and the whole dry run on this adapter
// (CI runs it so the script cannot rot before a GPU machine runs it for real).
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lastJson, markdown, parseOptions, parseTestSummary, STEP_IDS, type StepResult } from "../scripts/gpu_check.ts";
import { pickSgmatConfig, sgmatTile, DEFAULT_SGMAT_TILING } from "../src/kernels/matmul_sgmat.ts";
import { hasGpu } from "./helpers.ts";

const ROOT = join(import.meta.dir, "..");
const GPU = await hasGpu();

describe("gpu-check helpers", () => {
  test("options: OUTDIR, dry run, budget, step lists", () => {
    const o = parseOptions(["out", "--dry-run", "--budget-s", "30", "--skip", "tests,train"]);
    expect(o.out).toBe(join(process.cwd(), "out"));
    expect(o.dry).toBe(true);
    expect(o.budgetS).toBe(30);
    expect([...o.skip]).toEqual(["tests", "train"]);
    expect(o.only).toBeNull();
    expect(parseOptions(["--only", "adapter", "x"]).out).toBe(join(process.cwd(), "x"));
    expect(parseOptions(["x"]).budgetS).toBe(460);
    expect(() => parseOptions(["--dry-run"])).toThrow(/usage/);
    expect(() => parseOptions(["x", "--budget-s", "soon"])).toThrow(/--budget-s/);
  });

  test("the JSON line is the last line that parses", () => {
    expect(lastJson('noise\n{"a":1}\n{"b":2}\ntrailing text\n')).toEqual({ b: 2 });
    expect(lastJson("{not json\n")).toBeNull();
    expect(lastJson("")).toBeNull();
  });

  test("bun test summary", () => {
    const s = " 796 pass\n 2 skip\n 3 fail\n 52413 expect() calls\nRan 801 tests across 25 files. [90.20s]\n";
    expect(parseTestSummary(s)).toEqual({ pass: 796, fail: 3, skip: 2, ran: 801 });
    expect(parseTestSummary(" 10 pass\n 0 fail\nRan 10 tests across 1 file. [1.0s]")).toEqual({ pass: 10, fail: 0, skip: 0, ran: 10 });
    expect(parseTestSummary("error: no tests found")).toBeNull();
  });

  test("markdown report: a row per step, a failed run says so", () => {
    const steps: StepResult[] = STEP_IDS.map((id) => ({ id, title: id, status: "ok", seconds: 1, detail: `${id} | fine`, data: null }));
    steps[2] = { ...steps[2], status: "failed", detail: "2 of 9 cases match" };
    const md = markdown({ date: "d", dryRun: false, command: "c", seconds: 3, ok: false, steps, ratios: [] });
    expect(md).toContain("**FAILED**");
    for (const id of STEP_IDS) expect(md).toContain(`| ${id} |`);
    expect(md).toContain("\\| fine"); // table cells escape |
    expect(md).toContain(`| ${STEP_IDS[2]} | failed | 1 | 2 of 9 cases match |`);
  });
});

describe("subgroup-matrix configuration", () => {
  const cfg = (componentType: string, resultComponentType: string, M: number, N: number, K: number) => ({ componentType, resultComponentType, M, N, K });
  test("picks an f16 -> f32 configuration, the largest, first on a tie", () => {
    expect(pickSgmatConfig([])).toBeNull();
    expect(pickSgmatConfig([cfg("f16", "f16", 16, 16, 16), cfg("i8", "i32", 16, 16, 32)])).toBeNull();
    const a = cfg("f16", "f32", 16, 8, 16);
    const b = cfg("f16", "f32", 16, 16, 16);
    const c = cfg("f16", "f32", 16, 16, 16);
    expect(pickSgmatConfig([a, b, c])).toBe(b);
    expect(pickSgmatConfig([cfg("f32", "f32", 8, 8, 8), a])).toBe(a);
  });
  test("tile and shared memory of the default tiling", () => {
    const t = sgmatTile(cfg("f16", "f32", 16, 16, 16), DEFAULT_SGMAT_TILING, 32);
    expect(t).toEqual({ BM: 64, BN: 64, BK: 32, threads: 128, sharedBytes: 2 * 128 * 32 + 4 * 64 * 64 });
    expect(t.sharedBytes).toBeLessThanOrEqual(32768); // WebGPU's default maxComputeWorkgroupStorageSize
  });
});

describe.skipIf(!GPU)("gpu-check.sh --dry-run", () => {
  test("every step runs on this adapter and the reports say so", () => {
    const out = mkdtempSync(join(tmpdir(), "siri-gpu-check-test-"));
    try {
      const p = Bun.spawnSync(["bash", "scripts/gpu-check.sh", out, "--dry-run"], { cwd: ROOT, stdout: "pipe", stderr: "pipe", timeout: 280_000 });
      const err = p.stderr.toString();
      const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as { ok: boolean; dryRun: boolean; steps: StepResult[] };
      const status = Object.fromEntries(report.steps.map((s) => [s.id, s.status]));
      if (p.exitCode !== 0) console.error(err.slice(-4000));
      expect(p.exitCode).toBe(0);
      expect(report.ok).toBe(true);
      expect(report.dryRun).toBe(true);
      expect(report.steps.map((s) => s.id)).toEqual(STEP_IDS);
      for (const id of ["adapter", "kernels", "checkpoint", "generate", "train", "tests"]) expect(`${id}: ${status[id]}`).toBe(`${id}: ok`);
      // peaks needs CUDA; logits needs torch + transformers (ok where python3 has them); test:scale may not exist yet.
      expect(status.peaks).toBe("unavailable");
      expect(["ok", "unavailable"]).toContain(status.logits);
      if (status.logits === "unavailable") expect(report.steps.find((s) => s.id === "logits")!.detail).toMatch(/torch|transformers/);
      expect(["absent", "unavailable"]).toContain(status["test-scale"]);
      const kernels = report.steps.find((s) => s.id === "kernels")!.data as { results: { ok: boolean; ms: number }[] };
      expect(kernels.results.length).toBeGreaterThanOrEqual(10);
      for (const r of kernels.results) {
        expect(r.ok).toBe(true);
        expect(Number.isFinite(r.ms)).toBe(true); // a timing: only that one was taken (a loaded machine can make it 0)
      }
      const train = report.steps.find((s) => s.id === "train")!.data as { tokens_per_s: number; peak_device_mib: number; f16_mixed: { precision: string; tokens_per_s: number; peak_device_mib: number; skipped_steps: number } };
      expect(Number.isFinite(train.tokens_per_s)).toBe(true);
      expect(train.peak_device_mib).toBeGreaterThan(0);
      // the mixed-precision step in the same run, in its own process
      expect(train.f16_mixed.precision).toBe("f16-mixed");
      expect(Number.isFinite(train.f16_mixed.tokens_per_s)).toBe(true);
      expect(train.f16_mixed.peak_device_mib).toBeGreaterThan(0);
      expect(train.f16_mixed.skipped_steps).toBe(0);
      const md = readFileSync(join(out, "report.md"), "utf8");
      expect(md).toContain("## Kernels");
      expect(md).toContain("| attention decode f32 2x256 | ours | yes |");
      expect(readFileSync(join(out, "gpu-check.log"), "utf8")).toContain("== train");
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 300_000);
});
