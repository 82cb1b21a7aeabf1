/**
 * The Pareto view SIRI is judged by: accuracy (pass@1) against mean response
 * tokens, one panel per dataset, one colour per run, the non-dominated runs
 * joined by a dashed line. Plain SVG text, no dependencies.
 */

export interface PlotPoint {
  run: string;
  dataset: string;
  /** pass@1 as a fraction, 0..1. */
  accuracy: number;
  meanTokens: number;
}

/**
 * The non-dominated points (no other point is at least as accurate with at
 * most as many tokens, and strictly better in one), by tokens ascending.
 */
export function paretoFront<T extends { accuracy: number; meanTokens: number }>(points: T[]): T[] {
  const front = points.filter(
    (p) =>
      !points.some(
        (q) => q !== p && q.meanTokens <= p.meanTokens && q.accuracy >= p.accuracy && (q.meanTokens < p.meanTokens || q.accuracy > p.accuracy),
      ),
  );
  return front.sort((a, b) => a.meanTokens - b.meanTokens || b.accuracy - a.accuracy);
}

/**
 * About `count` round tick values covering [lo, hi]: steps of 1, 2, 2.5 or 5
 * times a power of ten; with `integer`, only whole steps of 1, 2 or 5 times a
 * power of ten (steps and token counts: no tick at 2.5 or 7.5).
 */
export function niceTicks(lo: number, hi: number, count = 5, opts: { integer?: boolean } = {}): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const mults = opts.integer ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10];
  let step = mults.map((m) => m * mag).find((s) => s >= raw)!;
  if (opts.integer) step = Math.max(1, Math.round(step));
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

/**
 * A generous width estimate (px) of a line of sans-serif text: 0.6 em per
 * character (measured glyph widths average ~0.55 em), so a layout sized with
 * it never cuts a title or a legend entry.
 */
export function textWidth(s: string, fontSize: number): number {
  return s.length * fontSize * 0.6;
}

export function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

export interface PanelLayout {
  x0: number;
  y0: number;
  width: number;
  height: number;
  /** Data ranges: tokens on x, accuracy (%) on y. */
  xMin: number;
  xMax: number;
  yMin: number;
  yMax: number;
}

/** Pixel position of a data point inside a panel (y grows downwards in SVG). */
export function toPixel(p: PanelLayout, tokens: number, accPct: number): [number, number] {
  const x = p.x0 + ((tokens - p.xMin) / (p.xMax - p.xMin)) * p.width;
  const y = p.y0 + p.height - ((accPct - p.yMin) / (p.yMax - p.yMin)) * p.height;
  return [x, y];
}

/** Padded data range so no point sits on the frame; a single value gets a window around it. */
function range(values: number[], pad: number, floor?: number, ceil?: number): [number, number] {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  const span = hi - lo || Math.max(Math.abs(hi) * 0.2, 1);
  lo -= span * pad;
  hi += span * pad;
  if (floor !== undefined) lo = Math.max(lo, floor);
  if (ceil !== undefined) hi = Math.min(hi, ceil);
  return [lo, hi];
}

export function paretoSvg(points: PlotPoint[], opts: { title?: string } = {}): string {
  for (const p of points) {
    if (!Number.isFinite(p.accuracy) || !Number.isFinite(p.meanTokens)) {
      throw new Error(`paretoSvg: run "${p.run}" dataset "${p.dataset}" has a non-finite value (accuracy ${p.accuracy}, tokens ${p.meanTokens})`);
    }
  }
  const title = opts.title ?? "Accuracy vs mean response tokens";
  const note = "outlined and dashed: Pareto front";
  const datasets = [...new Set(points.map((p) => p.dataset))];
  const runs = [...new Set(points.map((p) => p.run))];
  const color = (run: string) => PALETTE[runs.indexOf(run) % PALETTE.length];
  const cols = Math.min(3, Math.max(1, datasets.length));
  const rows = Math.max(1, Math.ceil(datasets.length / cols));
  const pw = 300;
  const ph = 220;
  const top = 50;
  const gapX = 90;
  const gapY = 80;
  const margin = 20;
  // The canvas is as wide as the widest of: the panels, the title, a legend entry.
  const panelsW = 60 + cols * pw + (cols - 1) * gapX + 30;
  const legendW = Math.max(textWidth(note, 12), ...runs.map((r) => 18 + textWidth(r, 12)));
  const width = Math.ceil(Math.max(panelsW, textWidth(title, 15) + 2 * margin, legendW + 2 * margin));
  const left = 60 + Math.floor((width - panelsW) / 2);
  const legendTop = top + rows * ph + (rows - 1) * gapY + 55;
  const height = legendTop + 22 * runs.length + 22;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text class="title" x="${width / 2}" y="24" text-anchor="middle" font-size="15">${escapeXml(title)}</text>`,
  ];
  if (points.length === 0) out.push(`<text x="${width / 2}" y="${top + 20}" text-anchor="middle">no data</text>`);
  datasets.forEach((ds, i) => {
    const pts = points.filter((p) => p.dataset === ds);
    const [xMin, xMax] = range(pts.map((p) => p.meanTokens), 0.12, 0);
    const [yMin, yMax] = range(pts.map((p) => 100 * p.accuracy), 0.15, 0, 100);
    const panel: PanelLayout = {
      x0: left + (i % cols) * (pw + gapX),
      y0: top + Math.floor(i / cols) * (ph + gapY),
      width: pw,
      height: ph,
      xMin,
      xMax,
      yMin,
      yMax,
    };
    const { x0, y0 } = panel;
    out.push(`<g class="panel" data-dataset="${escapeXml(ds)}" data-x="${x0}" data-y="${y0}" data-width="${pw}" data-height="${ph}">`);
    out.push(`<rect x="${x0}" y="${y0}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
    out.push(`<text x="${x0 + pw / 2}" y="${y0 - 8}" text-anchor="middle" font-weight="bold">${escapeXml(ds)}</text>`);
    for (const t of niceTicks(xMin, xMax, 5, { integer: xMax - xMin >= 5 })) {
      const [x] = toPixel(panel, t, yMin);
      out.push(`<line x1="${x.toFixed(1)}" y1="${y0 + ph}" x2="${x.toFixed(1)}" y2="${y0 + ph + 4}" stroke="#444"/>`);
      out.push(`<text x="${x.toFixed(1)}" y="${y0 + ph + 16}" text-anchor="middle">${t}</text>`);
    }
    for (const t of niceTicks(yMin, yMax)) {
      const [, y] = toPixel(panel, xMin, t);
      out.push(`<line x1="${x0 - 4}" y1="${y.toFixed(1)}" x2="${x0 + pw}" y2="${y.toFixed(1)}" stroke="#ddd"/>`);
      out.push(`<text x="${x0 - 7}" y="${(y + 4).toFixed(1)}" text-anchor="end">${t}</text>`);
    }
    out.push(`<text x="${x0 + pw / 2}" y="${y0 + ph + 34}" text-anchor="middle">mean response tokens</text>`);
    out.push(`<text transform="translate(${x0 - 44},${y0 + ph / 2}) rotate(-90)" text-anchor="middle">pass@1 %</text>`);
    const front = paretoFront(pts);
    if (front.length > 1) {
      const d = front.map((p) => toPixel(panel, p.meanTokens, 100 * p.accuracy).map((v) => v.toFixed(1)).join(",")).join(" ");
      out.push(`<polyline class="pareto" points="${d}" fill="none" stroke="#888" stroke-dasharray="4 3"/>`);
    }
    for (const p of pts) {
      const [x, y] = toPixel(panel, p.meanTokens, 100 * p.accuracy);
      const onFront = front.includes(p);
      out.push(
        `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${onFront ? 6 : 4.5}" fill="${color(p.run)}"${onFront ? ' stroke="black"' : ""} ` +
          `data-run="${escapeXml(p.run)}" data-dataset="${escapeXml(ds)}" data-accuracy="${p.accuracy}" data-tokens="${p.meanTokens}">` +
          `<title>${escapeXml(`${p.run}: ${(100 * p.accuracy).toFixed(1)}% at ${Math.round(p.meanTokens)} tokens`)}</title></circle>`,
      );
    }
    out.push(`</g>`);
  });
  // The legend sits below every panel: one row per run, then the note.
  const lx = margin;
  out.push(`<g class="legend">`);
  runs.forEach((r, j) => {
    out.push(`<circle cx="${lx + 6}" cy="${legendTop + 22 * j}" r="5" fill="${color(r)}"/>`);
    out.push(`<text x="${lx + 18}" y="${legendTop + 22 * j + 4}">${escapeXml(r)}</text>`);
  });
  out.push(`<text x="${lx}" y="${legendTop + 22 * runs.length + 4}" fill="#666">${note}</text>`);
  out.push(`</g>`);
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}
