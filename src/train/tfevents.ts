/**
 * An optional TensorBoard log of a training run (config `tensorboard: true`):
 * <run>/tensorboard/events.out.tfevents.<time>.<host>, readable by TensorBoard
 * (`tensorboard --logdir runs/`) and by the tools that read its files.
 *
 * Why TensorBoard's event file, written here: it is the offline format the
 * most tools read, needs no network and no account (wandb's offline mode needs
 * its client and a later sync), and its format is small enough to write
 * without a dependency (the TensorFlow/TensorBoard writers would pull in a
 * protobuf runtime for two messages):
 *
 *   record  = uint64 length (LE) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
 *   masked  = ((crc >>> 15) | (crc << 17)) + 0xa282ead8   (CRC-32C, Castagnoli)
 *   data    = an Event message: wall_time (1, double), step (2, int64),
 *             file_version (3, string: "brain.Event:2", first record only),
 *             summary (5): Summary { value (1): Value { tag (1, string), simple_value (2, float) } }
 *
 * The log mirrors metrics.jsonl and evals.jsonl (the record of the run): it
 * is rebuilt from them when a run starts or resumes (so a resumed run never
 * shows the steps it rolled back), then each sync appends the new lines.
 * Tags: train/<field> for every numeric field of a step (booleans as 0/1),
 * eval/<field> for each validation (trough, peak, periodic and final).
 */
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readSync, rmSync, statSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { EVALS_FILE, METRICS_FILE } from "./metrics.ts";

export const TENSORBOARD_DIR = "tensorboard";

// ---- CRC-32C (reflected polynomial 0x82F63B78), table-driven
const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC32C_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15, add a constant (mod 2^32). */
export function maskedCrc32c(bytes: Uint8Array): number {
  const c = crc32c(bytes);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

// ---- the few protobuf encodings an Event needs
class Proto {
  private parts: number[] = [];
  private varint(v: bigint | number): void {
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) {
      this.parts.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.parts.push(Number(x));
  }
  private key(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }
  private fixed(field: number, wire: 1 | 5, size: 8 | 4, put: (dv: DataView) => void): this {
    this.key(field, wire);
    const b = new Uint8Array(size);
    put(new DataView(b.buffer));
    this.parts.push(...b);
    return this;
  }
  double(field: number, v: number): this {
    return this.fixed(field, 1, 8, (dv) => dv.setFloat64(0, v, true));
  }
  float(field: number, v: number): this {
    return this.fixed(field, 5, 4, (dv) => dv.setFloat32(0, v, true));
  }
  int64(field: number, v: number): this {
    this.key(field, 0);
    this.varint(v);
    return this;
  }
  bytes(field: number, b: Uint8Array): this {
    this.key(field, 2);
    this.varint(b.length);
    this.parts.push(...b);
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }
  done(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

/** One Event: scalars at a step (or, with no scalars, the file-version header). */
export function encodeEvent(wallTime: number, step: number, scalars: [string, number][], fileVersion?: string): Uint8Array {
  const e = new Proto().double(1, wallTime).int64(2, step);
  if (fileVersion !== undefined) e.string(3, fileVersion);
  if (scalars.length) {
    const summary = new Proto();
    for (const [tag, v] of scalars) summary.bytes(1, new Proto().string(1, tag).float(2, v).done());
    e.bytes(5, summary.done());
  }
  return e.done();
}

/** A TFRecord: length, its masked CRC, the data, its masked CRC. */
export function frameRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + data.length);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(data.length), true);
  dv.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  dv.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

/** The numeric fields of a record as (prefix/field, value); NaN and infinities are left out. */
export function scalarsOf(prefix: string, rec: Record<string, unknown>, skip: readonly string[] = []): [string, number][] {
  const out: [string, number][] = [];
  for (const [k, v] of Object.entries(rec)) {
    if (skip.includes(k)) continue;
    if (typeof v === "number" && Number.isFinite(v)) out.push([`${prefix}/${k}`, v]);
    else if (typeof v === "boolean") out.push([`${prefix}/${k}`, v ? 1 : 0]);
  }
  return out;
}

/** Byte-offset reader of a JSONL file that others append to. */
function newLines(path: string, from: number): { lines: Record<string, unknown>[]; next: number } {
  if (!existsSync(path)) return { lines: [], next: 0 };
  const size = statSync(path).size;
  if (size <= from) return { lines: [], next: from };
  const fd = openSync(path, "r");
  const buf = Buffer.alloc(size - from);
  try {
    readSync(fd, buf, 0, buf.length, from);
  } finally {
    closeSync(fd);
  }
  const text = buf.toString("utf8");
  const end = text.lastIndexOf("\n") + 1; // only complete lines
  const lines = text
    .slice(0, end)
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { lines, next: from + Buffer.byteLength(text.slice(0, end)) };
}

export interface TensorBoardLog {
  /** Append the lines of metrics.jsonl and evals.jsonl written since the last sync. */
  sync(): void;
  readonly path: string;
}

/**
 * Start the run's TensorBoard log: earlier event files in <run>/tensorboard
 * are replaced by one rebuilt from metrics.jsonl and evals.jsonl as they are now.
 */
export function openTensorBoard(runDir: string, now: () => number = () => Date.now() / 1000): TensorBoardLog {
  const dir = join(runDir, TENSORBOARD_DIR);
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(dir)) if (f.startsWith("events.out.tfevents.")) rmSync(join(dir, f), { force: true });
  const path = join(dir, `events.out.tfevents.${Math.floor(now())}.${hostname()}`);
  const fd = openSync(path, "w");
  const write = (data: Uint8Array) => writeSync(fd, frameRecord(data));
  write(encodeEvent(now(), 0, [], "brain.Event:2"));
  closeSync(fd);
  let metricsAt = 0;
  let evalsAt = 0;
  const log: TensorBoardLog = {
    path,
    sync() {
      const m = newLines(join(runDir, METRICS_FILE), metricsAt);
      const e = newLines(join(runDir, EVALS_FILE), evalsAt);
      metricsAt = m.next;
      evalsAt = e.next;
      if (!m.lines.length && !e.lines.length) return;
      const out = openSync(path, "a");
      try {
        for (const r of m.lines) writeSync(out, frameRecord(encodeEvent(now(), Number(r.step ?? 0), scalarsOf("train", r, ["step", "cycle"]))));
        for (const r of e.lines) writeSync(out, frameRecord(encodeEvent(now(), Number(r.step ?? 0), scalarsOf("eval", r, ["step"]))));
      } finally {
        closeSync(out);
      }
    },
  };
  log.sync();
  return log;
}
