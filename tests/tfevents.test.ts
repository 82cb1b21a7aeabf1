// The TensorBoard event file read back byte by byte with an independent
// decoder: every record's length and data CRCs (masked CRC-32C), the Event
// protobuf fields, the scalar tags and their float32 values against
// metrics.jsonl / evals.jsonl; appends, the rebuild on resume, and a real
// (tiny) training run with `tensorboard: true`.
import { describe, expect, test } from "bun:test";
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveConfig } from "../src/train/config.ts";
import { train } from "../src/train/loop.ts";
import { EVALS_FILE, METRICS_FILE, readMetrics } from "../src/train/metrics.ts";
import { crc32c, maskedCrc32c, openTensorBoard, TENSORBOARD_DIR } from "../src/train/tfevents.ts";
import { gpuOrSkip, hasGpu } from "./helpers.ts";

const GPU = await hasGpu();
const tmp = mkdtempSync(join(tmpdir(), "siri-tb-"));

interface Event {
  wallTime: number;
  step: number;
  fileVersion?: string;
  scalars: Map<string, number>;
}

// ---- an independent protobuf reader (varint, 64-bit, length-delimited, 32-bit)
function readFields(b: Uint8Array): { field: number; wire: number; value: bigint | Uint8Array }[] {
  const out: { field: number; wire: number; value: bigint | Uint8Array }[] = [];
  let i = 0;
  const varint = () => {
    let x = 0n;
    let shift = 0n;
    for (;;) {
      const byte = b[i++]!;
      x |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return x;
      shift += 7n;
    }
  };
  while (i < b.length) {
    const key = Number(varint());
    const field = key >> 3;
    const wire = key & 7;
    if (wire === 0) {
      out.push({ field, wire, value: varint() });
      continue;
    }
    const n = wire === 1 ? 8 : wire === 5 ? 4 : wire === 2 ? Number(varint()) : -1;
    if (n < 0) throw new Error(`wire type ${wire} at byte ${i}`);
    out.push({ field, wire, value: b.slice(i, i + n) });
    i += n;
  }
  expect(i).toBe(b.length);
  return out;
}

function decodeEvent(data: Uint8Array): Event {
  const e: Event = { wallTime: Number.NaN, step: -1, scalars: new Map() };
  for (const f of readFields(data)) {
    const bytes = f.value as Uint8Array;
    if (f.field === 1 && f.wire === 1) e.wallTime = new DataView(bytes.buffer, bytes.byteOffset, 8).getFloat64(0, true);
    else if (f.field === 2 && f.wire === 0) e.step = Number(f.value as bigint);
    else if (f.field === 3 && f.wire === 2) e.fileVersion = new TextDecoder().decode(bytes);
    else if (f.field === 5 && f.wire === 2) {
      for (const v of readFields(bytes)) {
        expect(v.field).toBe(1);
        let tag = "";
        let value = Number.NaN;
        for (const g of readFields(v.value as Uint8Array)) {
          const gb = g.value as Uint8Array;
          if (g.field === 1) tag = new TextDecoder().decode(gb);
          if (g.field === 2 && g.wire === 5) value = new DataView(gb.buffer, gb.byteOffset, 4).getFloat32(0, true);
        }
        e.scalars.set(tag, value);
      }
    } else throw new Error(`unexpected Event field ${f.field} (wire ${f.wire})`);
  }
  return e;
}

/** Every record, with both CRCs checked. */
function readEventFile(path: string): Event[] {
  const buf = new Uint8Array(readFileSync(path));
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const events: Event[] = [];
  let i = 0;
  while (i < buf.length) {
    const len = Number(dv.getBigUint64(i, true));
    expect(dv.getUint32(i + 8, true)).toBe(maskedCrc32c(buf.subarray(i, i + 8)));
    const data = buf.subarray(i + 12, i + 12 + len);
    expect(dv.getUint32(i + 12 + len, true)).toBe(maskedCrc32c(data));
    events.push(decodeEvent(data));
    i += 16 + len;
  }
  expect(i).toBe(buf.length);
  return events;
}

const eventFiles = (run: string) => readdirSync(join(run, TENSORBOARD_DIR)).filter((f) => f.startsWith("events.out.tfevents."));

describe("TensorBoard event file", () => {
  test("CRC-32C and its mask against known values", () => {
    expect(crc32c(new TextEncoder().encode("123456789"))).toBe(0xe3069283); // the Castagnoli check value
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
    const c = 0xe3069283;
    expect(maskedCrc32c(new TextEncoder().encode("123456789"))).toBe(((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0);
  });

  test("mirrors metrics.jsonl and evals.jsonl; appends on sync; rebuilt on resume", () => {
    const run = join(tmp, "run");
    const rows = [
      { step: 0, cap: 96, accuracy: 0.25, length_mean: 40.5, grad_norm: 0.123456789, skipped: false, phase: "compression", mismatch_logp_abs_max: null },
      { step: 1, cap: 80, accuracy: 0.5, length_mean: 35.25, grad_norm: 1e-7, skipped: true, phase: "compression", mismatch_logp_abs_max: null },
    ];
    mkdirSync(run, { recursive: true });
    writeFileSync(join(run, METRICS_FILE), rows.map((r) => `${JSON.stringify(r)}\n`).join(""));
    writeFileSync(join(run, EVALS_FILE), `${JSON.stringify({ step: 1, label: "trough-cycle1", accuracy: 0.75, length_mean: 30 })}\n`);
    let t = 1_700_000_000;
    const tb = openTensorBoard(run, () => t++);
    expect(eventFiles(run)).toEqual([tb.path.split("/").pop()!]);
    let ev = readEventFile(tb.path);
    expect(ev[0]!.fileVersion).toBe("brain.Event:2");
    expect(ev[0]!.scalars.size).toBe(0);
    expect(ev.map((e) => e.step)).toEqual([0, 0, 1, 1]);
    for (const e of ev) expect(Number.isFinite(e.wallTime)).toBe(true);
    const want = (r: (typeof rows)[number]) =>
      new Map<string, number>([
        ["train/cap", r.cap],
        ["train/accuracy", r.accuracy],
        ["train/length_mean", r.length_mean],
        ["train/grad_norm", Math.fround(r.grad_norm)],
        ["train/skipped", r.skipped ? 1 : 0],
      ]);
    expect(ev[1]!.scalars).toEqual(want(rows[0]!)); // strings and nulls are not scalars
    expect(ev[2]!.scalars).toEqual(want(rows[1]!));
    expect(ev[3]!.scalars).toEqual(new Map([["eval/accuracy", 0.75], ["eval/length_mean", 30]]));

    // A new step appended by the trainer, and a half-written line not yet read.
    appendFileSync(join(run, METRICS_FILE), `${JSON.stringify({ step: 2, cap: 64, accuracy: 1 })}\n{"step": 3, "ca`);
    tb.sync();
    ev = readEventFile(tb.path);
    expect(ev.length).toBe(5);
    expect([ev[4]!.step, [...ev[4]!.scalars]]).toEqual([2, [["train/cap", 64], ["train/accuracy", 1]]]);
    tb.sync();
    expect(readEventFile(tb.path).length).toBe(5);

    // Resume from step 1: metrics.jsonl cut back; the log is rebuilt in a new file, the old one gone.
    writeFileSync(join(run, METRICS_FILE), `${JSON.stringify(rows[0])}\n`);
    writeFileSync(join(run, EVALS_FILE), "");
    t += 10;
    const again = openTensorBoard(run, () => t++);
    expect(eventFiles(run)).toEqual([again.path.split("/").pop()!]);
    expect(readEventFile(again.path).map((e) => e.step)).toEqual([0, 0]);
  });

  test("config switch: off by default, on with tensorboard: true", () => {
    expect(resolveConfig("demo", []).tensorboard).toBe(false);
    expect(resolveConfig("demo", [{ source: "test", values: { tensorboard: true } }]).tensorboard).toBe(true);
    expect(() => resolveConfig("demo", [{ source: "test", values: { tensorboard: "yes" } }])).toThrow(/tensorboard/);
  });

  test.skipIf(!GPU)("a training run with tensorboard: true writes every step and validation", async () => {
    const gpu = await gpuOrSkip();
    const out = join(tmp, "train");
    const cfg = resolveConfig("demo", [
      {
        source: "test",
        values: {
          out,
          model: "tiny:tiny",
          steps: 3,
          promptsPerStep: 2,
          groupSize: 2,
          schedule: { kind: "cosine", lMax: 8, lMin: 4, period: 2 },
          warmStart: { steps: 0, batchSize: 4, lr: 3e-3 },
          validation: { problems: 2 },
          checkpoint: { every: 3, keepLast: 1 },
          tensorboard: true,
        },
      },
    ]);
    await train(gpu, cfg, { log: () => {}, hooks: { progress: false } });
    const files = eventFiles(out);
    expect(files.length).toBe(1);
    const ev = readEventFile(join(out, TENSORBOARD_DIR, files[0]!));
    const metrics = readMetrics(join(out, METRICS_FILE));
    const trainEv = ev.filter((e) => e.scalars.has("train/cap"));
    expect(trainEv.map((e) => e.step)).toEqual(metrics.map((m) => m.step));
    trainEv.forEach((e, i) => {
      expect(e.scalars.get("train/cap")).toBe(Math.fround(metrics[i]!.cap));
      expect(e.scalars.get("train/accuracy")).toBe(Math.fround(metrics[i]!.accuracy));
    });
    const evals = readFileSync(join(out, EVALS_FILE), "utf8").trim().split("\n").filter(Boolean);
    expect(ev.filter((e) => e.scalars.has("eval/accuracy")).length).toBe(evals.length);
    expect(evals.length).toBeGreaterThan(0);
  });
});
