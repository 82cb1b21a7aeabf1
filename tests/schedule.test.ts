// Rollout-length schedules: the paper's values, the ablation shapes, the
// checkpoint steps, scaling, errors, and `siri schedule` in a subprocess.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { plotSchedule } from "../src/commands/schedule.ts";
import {
  DEEPSCALER_SCHEDULE,
  type Schedule,
  SIRI_SCHEDULE,
  capAt,
  capsAt,
  cycleAt,
  parsePoints,
  peakSteps,
  phaseAt,
  rawCapAt,
  scaleSchedule,
  troughSteps,
  validateSchedule,
} from "../src/rl/schedule.ts";

const P = { lMax: 16384, lMin: 8192, period: 640 };

describe("cosine", () => {
  test("the paper's values: L_max at t = 0, L_min at T/2, L_max at T; 16384/12288/8192/12288", () => {
    const s: Schedule = { kind: "cosine", ...P };
    expect(capsAt(s, [0, 160, 320, 480, 640])).toEqual([16384, 12288, 8192, 12288, 16384]);
    // Three cycles: troughs at 320, 960, 1600, peaks at 640, 1280, 1920.
    expect(capsAt(s, [960, 1280, 1600, 1920])).toEqual([8192, 16384, 8192, 16384]);
    expect(capAt(SIRI_SCHEDULE, 1600)).toBe(8192);
  });

  test("in between: L = 12288 + 4096 cos(2 pi t / 640), rounded", () => {
    const s: Schedule = { kind: "cosine", ...P };
    // t = 80: 12288 + 4096 * cos(pi/4) = 15184.309 -> 15184; t = 400: 12288 + 4096 * cos(5pi/4) = 9391.691 -> 9392.
    expect(capAt(s, 80)).toBe(15184);
    expect(capAt(s, 400)).toBe(9392);
    expect(rawCapAt(s, 80)).toBeCloseTo(15184.3094, 3);
  });

  test("caps are whole tokens, rounded to nearest", () => {
    // L(t) = 6.5 + 4.5 cos(pi t / 3): t = 1 -> 8.75 -> 9; t = 2 -> 4.25 -> 4; t = 3 -> 2.
    const s: Schedule = { kind: "cosine", lMax: 11, lMin: 2, period: 6 };
    expect(capsAt(s, [0, 1, 2, 3, 4, 5, 6])).toEqual([11, 9, 4, 2, 4, 9, 11]);
    for (let t = 0; t <= 1920; t++) expect(Number.isInteger(capAt(SIRI_SCHEDULE, t))).toBe(true);
  });

  test("bounded by L_min and L_max, symmetric around the trough", () => {
    const s: Schedule = { kind: "cosine", ...P };
    for (let t = 0; t <= 1920; t++) {
      const c = capAt(s, t);
      expect(c).toBeGreaterThanOrEqual(8192);
      expect(c).toBeLessThanOrEqual(16384);
      expect(c).toBe(capAt(s, (t % 640 === 0 ? 0 : 640 - (t % 640)) + 640 * Math.floor(t / 640)));
    }
  });
});

describe("stair-cosine", () => {
  const s: Schedule = { kind: "stair-cosine", ...P };
  test("flat at L_max for phi < pi/4 and phi >= 7pi/4, at L_min for 3pi/4 <= phi < 5pi/4", () => {
    // phi = pi/4, 3pi/4, 5pi/4, 7pi/4 at t = 80, 240, 400, 560.
    for (const t of [0, 40, 79, 80, 560, 600, 639, 640, 1280]) expect(capAt(s, t)).toBe(16384);
    for (const t of [240, 300, 320, 399, 400, 880, 1040]) expect(capAt(s, t)).toBe(8192);
  });

  test("the cosine ramps: cos(2(phi - pi/4)) down, cos(2(phi - 3pi/4)) up", () => {
    // t = 120: phi = 3pi/8, cos(pi/4) = 0.7071 -> 15184.309 -> 15184; t = 160: cos(pi/2) = 0 -> 12288;
    // t = 440: phi = 11pi/8, cos(5pi/4) -> 9392; t = 480: cos(3pi/2) = 0 -> 12288.
    expect(capsAt(s, [120, 160, 200, 440, 480, 520])).toEqual([15184, 12288, 9392, 9392, 12288, 15184]);
  });

  test("continuous at the joins, falls then rises", () => {
    for (const j of [80, 240, 400, 560]) {
      expect(Math.abs(rawCapAt(s, j - 1e-6) - rawCapAt(s, j))).toBeLessThan(1e-3);
    }
    for (let t = 0; t < 320; t++) expect(rawCapAt(s, t + 1)).toBeLessThanOrEqual(rawCapAt(s, t));
    for (let t = 320; t < 640; t++) expect(rawCapAt(s, t + 1)).toBeGreaterThanOrEqual(rawCapAt(s, t));
  });
});

describe("stair", () => {
  test("L_max while cos(2 pi t / T) >= 0, else L_min", () => {
    const s: Schedule = { kind: "stair", ...P };
    for (const t of [0, 100, 160, 480, 600, 639, 640, 800]) expect(capAt(s, t)).toBe(16384);
    for (const t of [161, 320, 479, 801, 960, 1119]) expect(capAt(s, t)).toBe(8192);
    // Exactly two jumps per cycle.
    let jumps = 0;
    for (let t = 1; t < 640; t++) if (capAt(s, t) !== capAt(s, t - 1)) jumps++;
    expect(jumps).toBe(2);
  });
});

describe("constant and piecewise", () => {
  test("constant", () => {
    const s: Schedule = { kind: "constant", cap: 4096.4 };
    expect(capsAt(s, [0, 1, 10000])).toEqual([4096, 4096, 4096]);
    expect(phaseAt(s, 5)).toBe("constant");
    expect(troughSteps(s, 1000)).toEqual([]);
  });

  test("DeepScaleR's 8K -> 16K at 1040 -> 24K at 1520", () => {
    const s = DEEPSCALER_SCHEDULE;
    expect(capsAt(s, [0, 1039, 1040, 1519, 1520, 5000])).toEqual([8192, 8192, 16384, 16384, 24576, 24576]);
    expect(phaseAt(s, 0)).toBe("expansion");
    expect(phaseAt(s, 1519)).toBe("expansion");
    expect(phaseAt(s, 1520)).toBe("constant");
    expect(parsePoints("0:8192, 1040:16384,1520:24576")).toEqual(s.points.map((p) => ({ ...p })));
  });

  test("piecewise that falls and rises has a trough and a peak", () => {
    const s: Schedule = { kind: "piecewise", points: parsePoints("0:100,10:50,20:100,30:50") };
    expect(troughSteps(s, 100)).toEqual([19]);
    expect(peakSteps(s, 100)).toEqual([29]);
    expect(phaseAt(s, 0)).toBe("compression");
    expect(phaseAt(s, 15)).toBe("expansion");
  });
});

describe("phases and checkpoint steps", () => {
  test("compression in the first half of each cycle, expansion in the second", () => {
    const s = SIRI_SCHEDULE;
    expect([0, 160, 319, 320, 639, 640, 959, 960].map((t) => phaseAt(s, t))).toEqual([
      "compression", "compression", "compression", "expansion", "expansion", "compression", "compression", "expansion",
    ]);
    expect([0, 639, 640, 1919, 1920].map((t) => cycleAt(s, t))).toEqual([0, 0, 1, 2, 3]);
  });

  test("troughs (SIRI-low) and peaks (SIRI-high) over the paper's three cycles", () => {
    expect(troughSteps(SIRI_SCHEDULE, 1920)).toEqual([320, 960, 1600]);
    expect(peakSteps(SIRI_SCHEDULE, 1920)).toEqual([640, 1280, 1920]);
    expect(peakSteps(SIRI_SCHEDULE, 1919)).toEqual([640, 1280]);
    for (const t of troughSteps(SIRI_SCHEDULE, 1920)) expect(capAt(SIRI_SCHEDULE, t)).toBe(8192);
    for (const t of peakSteps(SIRI_SCHEDULE, 1920)) expect(capAt(SIRI_SCHEDULE, t)).toBe(16384);
  });
});

describe("scaling to a small task", () => {
  test("the paper's three cycles in 60 steps at 64 tokens", () => {
    const s = scaleSchedule(SIRI_SCHEDULE, { lMax: 64, fromSteps: 1920, toSteps: 60 });
    expect(s).toEqual({ kind: "cosine", lMax: 64, lMin: 32, period: 20 });
    expect(capsAt(s, [0, 5, 10, 15, 20, 50, 60])).toEqual([64, 48, 32, 48, 64, 32, 64]);
    expect(troughSteps(s, 60)).toEqual([10, 30, 50]);
    expect(peakSteps(s, 60)).toEqual([20, 40, 60]);
  });

  test("piecewise steps and caps scale together", () => {
    const s = scaleSchedule(DEEPSCALER_SCHEDULE, { lMax: 96, fromSteps: 1520, toSteps: 152 });
    expect(s).toEqual({ kind: "piecewise", points: [{ step: 0, cap: 32 }, { step: 104, cap: 64 }, { step: 152, cap: 96 }] });
  });
});

describe("bad input names the field", () => {
  test("errors", () => {
    expect(() => validateSchedule({ kind: "cosine", lMax: 100, lMin: 200, period: 10 })).toThrow(/l_min \(200\) must not exceed l_max/);
    expect(() => validateSchedule({ kind: "stair", lMax: 100, lMin: 50, period: 0 })).toThrow(/period must be > 0/);
    expect(() => validateSchedule({ kind: "constant", cap: 0 })).toThrow(/cap must be/);
    expect(() => validateSchedule({ kind: "piecewise", points: [{ step: 5, cap: 10 }] })).toThrow(/first point must be at step 0/);
    expect(() => validateSchedule({ kind: "piecewise", points: [{ step: 0, cap: 10 }, { step: 0, cap: 20 }] })).toThrow(/increasing steps/);
    expect(() => validateSchedule({ kind: "linear" } as unknown as Schedule)).toThrow(/unknown kind "linear"/);
    expect(() => capAt(SIRI_SCHEDULE, -1)).toThrow(/step must be/);
    expect(() => parsePoints("0-8192")).toThrow(/--points: expected "step:cap"/);
  });
});

describe("plot", () => {
  test("peaks on the top row, troughs on the bottom row, exact labels", () => {
    // 97 columns over 1920 steps: column c is step 20c, so troughs 320/960/1600 are columns 16/48/80.
    const lines = plotSchedule(SIRI_SCHEDULE, 1920, 97, 9).split("\n");
    expect(lines.length).toBe(11);
    const grid = (r: number) => lines[r].slice(lines[r].indexOf("┤") + 1);
    expect(lines[0].trimStart().startsWith("16384 ┤")).toBe(true);
    expect(lines[8].trimStart().startsWith("8192 ┤")).toBe(true);
    for (const c of [0, 32, 64, 96]) expect(grid(0)[c]).toBe("█");
    for (const c of [16, 48, 80]) expect(grid(8)[c]).toBe("█");
    // One mark per column on the curve; nothing on the bottom row at a peak.
    expect(grid(8)[32]).toBe(" ");
    expect(lines[10]).toContain("1920");
  });
});

describe("siri schedule (subprocess)", () => {
  const ROOT = join(import.meta.dir, "..");
  const run = (args: string[]) => {
    const p = Bun.spawnSync([join(ROOT, "node_modules/.bin/bun"), "run", "siri", "schedule", ...args], {
      cwd: ROOT,
      stdout: "pipe",
      stderr: "pipe",
      timeout: 60_000,
    });
    return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
  };

  test("--json prints the paper's values as the last line", () => {
    const r = run(["--kind", "cosine", "--l-max", "16384", "--l-min", "8192", "--period", "640", "--steps", "0,160,320,480,640", "--json"]);
    expect(r.code).toBe(0);
    const last = JSON.parse(r.out.trim().split("\n").pop()!);
    expect(last).toEqual({ steps: [0, 160, 320, 480, 640], caps: [16384, 12288, 8192, 12288, 16384] });
  });

  test("stair and piecewise through the CLI", () => {
    const a = JSON.parse(run(["--kind", "stair", "--steps", "160,161,479,480", "--json"]).out.trim().split("\n").pop()!);
    expect(a.caps).toEqual([16384, 8192, 8192, 16384]);
    const b = JSON.parse(run(["--preset", "deepscaler", "--steps", "1039,1040,1520", "--json"]).out.trim().split("\n").pop()!);
    expect(b.caps).toEqual([8192, 16384, 24576]);
  });

  test("without --json: the curve and the checkpoint steps", () => {
    const r = run(["--period", "640"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("cosine: L_max 16384, L_min 8192, period 640 steps");
    expect(r.out).toMatch(/^16384 ┤█/m);
    expect(r.out).toContain("SIRI-low candidates): 320, 960, 1600");
    expect(r.out).toContain("SIRI-high candidates):    640, 1280, 1920");
  });

  test("a bad flag fails with a message naming it", () => {
    const r = run(["--kind", "cosine", "--l-min", "20000", "--json"]);
    expect(r.code).not.toBe(0);
    expect(r.out + r.err).toContain("l_min (20000) must not exceed l_max");
    const k = run(["--kind", "zigzag"]);
    expect(k.code).not.toBe(0);
    expect(k.out + k.err).toContain("--kind: expected one of");
  });
});
