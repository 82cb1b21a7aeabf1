// The plots people read, rendered to PNG by rsvg-convert (librsvg) and checked
// in pixels: the image has the SVG's size and is not blank; the legend draws
// nothing inside the data area (the plot rendered without its legend is
// identical there); the title's ink lies inside the canvas; ticks on steps and
// tokens are whole numbers. scripts/setup.sh installs rsvg-convert (Debian
// librsvg2-bin); without it these tests are skipped locally and fail in CI.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { niceTicks, paretoSvg, type PlotPoint } from "../src/bench/plot.ts";
import { metricsSvg, STEP_FIELDS, type StepMetrics } from "../src/train/metrics.ts";
import { decodePng, type Image, inkColumns, inkCount } from "./png.ts";

const RSVG = Bun.which("rsvg-convert");
if (!RSVG) {
  if (process.env.CI === "true") throw new Error("CI=true and rsvg-convert is missing: run scripts/setup.sh (installs librsvg2-bin)");
  console.warn("[tests] plot render tests skipped: rsvg-convert not found (apt-get install librsvg2-bin, or run scripts/setup.sh)");
}
const tmp = mkdtempSync(join(tmpdir(), "siri-plots-"));
let nth = 0;

function render(svg: string): Image & { bytes: number } {
  const base = join(tmp, `p${nth++}`);
  writeFileSync(`${base}.svg`, svg);
  const p = Bun.spawnSync([RSVG!, "-f", "png", "-o", `${base}.png`, `${base}.svg`], { stdout: "pipe", stderr: "pipe", timeout: 60_000 });
  if (p.exitCode !== 0) throw new Error(`rsvg-convert failed: ${p.stderr.toString()}`);
  return { ...decodePng(readFileSync(`${base}.png`)), bytes: statSync(`${base}.png`).size };
}

const svgSize = (svg: string) => {
  const m = svg.match(/^<svg[^>]* width="(\d+)" height="(\d+)"/)!;
  return { width: Number(m[1]), height: Number(m[2]) };
};
const withoutLegend = (svg: string) => svg.replace(/<g class="legend">[\s\S]*?<\/g>/, "");

/** True when two renders have the same pixels in a rectangle. */
function samePixels(a: Image, b: Image, x0: number, y0: number, w: number, h: number): boolean {
  for (let y = y0; y < y0 + h; y++) {
    for (let x = x0; x < x0 + w; x++) {
      const i = (y * a.width + x) * 4;
      for (let k = 0; k < 4; k++) if (a.data[i + k] !== b.data[i + k]) return false;
    }
  }
  return true;
}

function differsSomewhere(a: Image, b: Image): boolean {
  return a.data.some((v, i) => v !== b.data[i]);
}

function expectTitleInside(img: Image, bandTop: number, bandBottom: number) {
  const cols = inkColumns(img, bandTop, bandBottom);
  expect(cols).not.toBeNull();
  expect(cols!.min).toBeGreaterThanOrEqual(4);
  expect(cols!.max).toBeLessThanOrEqual(img.width - 5);
}

function trainingRows(steps: number): StepMetrics[] {
  return Array.from({ length: steps }, (_, step) => {
    const cap = step % 10 < 5 ? 96 : 48;
    return {
      ...Object.fromEntries(STEP_FIELDS.map((f) => [f, 0])),
      step,
      cap,
      length_mean: cap * 0.7,
      accuracy: 0.2 + 0.6 * (step / steps),
      phase: "compression",
      cycle: 0,
      skipped: false,
      mismatch_logp_abs_mean: Number.NaN,
      mismatch_logp_abs_max: Number.NaN,
    } as StepMetrics;
  });
}

describe("ticks", () => {
  test("integer ticks never fall between whole numbers", () => {
    expect(niceTicks(0, 10, 5, { integer: true })).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(0, 9, 5, { integer: true })).toEqual([0, 2, 4, 6, 8]);
    expect(niceTicks(0, 3, 5, { integer: true })).toEqual([0, 1, 2, 3]);
    expect(niceTicks(0, 12820, 5, { integer: true })).toEqual([0, 5000, 10000]);
    // 11 steps: the plain rule gave the training plot ticks at 2.5 and 7.5
    expect(niceTicks(0, 11)).toEqual([0, 2.5, 5, 7.5, 10]);
    expect(niceTicks(0, 11, 5, { integer: true })).toEqual([0, 5, 10]);
  });
});

describe.skipIf(!RSVG)("plots rendered to PNG", () => {
  test("training plot: size, curves drawn, legend outside the data, whole-number step ticks, title inside", () => {
    const svg = metricsSvg(trainingRows(10), [{ step: 9, label: "final", cap: 96, accuracy: 0.7, length_mean: 60, truncation_rate: 0, max_tokens: 96 }]);
    const ticks = [...svg.matchAll(/class="step-tick"[^>]*>([^<]+)</g)].map((m) => Number(m[1]));
    expect(ticks).toEqual([0, 2, 4, 6, 8]);
    const area = svg.match(/<rect class="plot-area" x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)"/)!.slice(1).map(Number) as [number, number, number, number];
    const img = render(svg);
    const size = svgSize(svg);
    expect([img.width, img.height]).toEqual([size.width, size.height]);
    expect(img.bytes).toBeGreaterThan(2000);
    const [ax, ay, aw, ah] = area;
    expect(inkCount(img, ax + 2, ay + 2, ax + aw - 2, ay + ah - 2)).toBeGreaterThan(500); // three curves
    const bare = render(withoutLegend(svg));
    expect(differsSomewhere(img, bare)).toBe(true); // the legend draws something...
    expect(samePixels(img, bare, ax, ay, aw + 1, ah + 1)).toBe(true); // ...but nothing on the data
    expectTitleInside(img, 0, 26);
  });

  test("training plot with a long title widens to fit it", () => {
    const title = "SIRI siri-1.5b: cap, mean length, accuracy — a run with a very long descriptive name that would not fit in 720 px";
    const svg = metricsSvg(trainingRows(40), [], title);
    const img = render(svg);
    expect(img.width).toBeGreaterThan(720);
    expectTitleInside(img, 0, 26);
  });

  const pts = (runs: [string, number, number][], dataset = "aime24"): PlotPoint[] => runs.map(([run, accuracy, meanTokens]) => ({ run, dataset, accuracy, meanTokens }));

  test("bench compare, one dataset: the title fits, legend below the panel, whole-number token ticks", () => {
    const svg = paretoSvg(pts([["DeepSeek-R1-Distill-Qwen-1.5B", 0.289, 12990], ["SIRI-low (checkpoint step 1520)", 0.431, 7093], ["SIRI-high", 0.472, 9870]]), {
      title: "Accuracy vs mean response tokens (upper left is better)",
    });
    const img = render(svg);
    const size = svgSize(svg);
    expect([img.width, img.height]).toEqual([size.width, size.height]);
    expectTitleInside(img, 0, 32);
    const panel = svg.match(/<g class="panel" data-dataset="aime24" data-x="(\d+)" data-y="(\d+)" data-width="(\d+)" data-height="(\d+)"/)!.slice(1).map(Number) as [number, number, number, number];
    const [px, py, pw, ph] = panel;
    expect(inkCount(img, px + 2, py + 2, px + pw - 2, py + ph - 2)).toBeGreaterThan(100); // three points
    const bare = render(withoutLegend(svg));
    expect(differsSomewhere(img, bare)).toBe(true);
    expect(samePixels(img, bare, px, py, pw + 1, ph + 1)).toBe(true);
    // Every legend entry's text lies inside the canvas.
    for (const y of [...svg.matchAll(/<g class="legend">[\s\S]*?<\/g>/g)].flatMap((g) => [...g[0].matchAll(/<text x="\d+" y="(\d+)"/g)].map((m) => Number(m[1])))) {
      expectTitleInside(img, y - 11, y + 4);
    }
    const xTicks = [...svg.matchAll(/<text x="[\d.]+" y="(\d+)" text-anchor="middle">(\d[^<]*)</g)].filter((m) => Number(m[1]) === py + ph + 16).map((m) => Number(m[2]));
    expect(xTicks.length).toBeGreaterThanOrEqual(3);
    for (const t of xTicks) expect(Number.isInteger(t)).toBe(true);
  });

  test("bench compare, four datasets: every panel free of the legend", () => {
    const all = ["aime24", "aime25", "math500", "amc"].flatMap((d, i) => pts([["base", 0.3 + 0.1 * i, 9000 + 500 * i], ["siri", 0.35 + 0.1 * i, 6000 + 400 * i]], d));
    const svg = paretoSvg(all);
    const img = render(svg);
    const bare = render(withoutLegend(svg));
    const panels = [...svg.matchAll(/<g class="panel" data-dataset="[^"]+" data-x="(\d+)" data-y="(\d+)" data-width="(\d+)" data-height="(\d+)"/g)].map((m) => m.slice(1).map(Number));
    expect(panels.length).toBe(4);
    for (const [px, py, pw, ph] of panels) expect(samePixels(img, bare, px!, py!, pw! + 1, ph! + 1)).toBe(true);
    expectTitleInside(img, 0, 32);
  });
});
