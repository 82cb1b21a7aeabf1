// safetensors checkpoints: a lazy reader (one tensor at a time, by file offset,
// so multi-GB files are never loaded whole), sharded checkpoints through
// model.safetensors.index.json, dtype converters, the Qwen2 weight list, and an
// atomic writer.
//
// File layout: u64 little-endian N, then N bytes of JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {str: str}},
// then the data; offsets are relative to the start of the data.
import { closeSync, existsSync, fstatSync, fsyncSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { f16BitsToF32, f32ToF16Bits } from "../kernels/f16.ts";
import type { Qwen2Config } from "./config.ts";

/** Bytes per element of every dtype the format defines. */
export const DTYPE_BYTES: Readonly<Record<string, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1,
  I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};

/** A header longer than this is corrupt, not a checkpoint (real ones are < 1 MB). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorEntry {
  name: string;
  dtype: string;
  shape: number[];
  file: string;
  start: number; // absolute byte offset in `file`
  byteLength: number;
}

export interface Tensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Uint8Array; // raw little-endian bytes, a fresh (aligned) buffer
}

export interface WeightReader {
  files: string[];
  metadata: Record<string, string>;
  names(): string[];
  has(name: string): boolean;
  entry(name: string): TensorEntry;
  read(name: string): Tensor;
  readF32(name: string): Float32Array;
  readF16Bits(name: string): Uint16Array;
  /**
   * Rows [row0, row0 + rows) of a tensor (its first dimension) in f32 or as
   * f16 bits, reading only those bytes: a 151936-row embedding is converted
   * a part at a time, never whole in host memory.
   */
  readRows(name: string, dtype: "f32" | "f16", row0: number, rows: number): Float32Array | Uint16Array;
  close(): void;
}

// ---------------------------------------------------------------- dtype conversions

/** bfloat16 is the top half of an f32: exact widening. */
export function bf16BitsToF32(h: Uint16Array): Float32Array {
  const out = new Float32Array(h.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < h.length; i++) bits[i] = h[i] << 16;
  return out;
}

/** f32 to bfloat16 bits, round to nearest even; NaN stays NaN. */
export function f32ToBf16Bits(x: Float32Array): Uint16Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const b = bits[i];
    if ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff) out[i] = (b >>> 16) | 0x40;
    else out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** The bytes, copied when their offset is not a multiple of `align` (typed arrays need alignment). */
function aligned(t: Tensor, align: number): Uint8Array {
  return t.data.byteOffset % align === 0 ? t.data : t.data.slice();
}

function u16View(t: Tensor): Uint16Array {
  const d = aligned(t, 2);
  return new Uint16Array(d.buffer, d.byteOffset, d.byteLength / 2);
}

/** A tensor's values as f32 (F32 copied, F16/BF16 widened exactly). */
export function tensorToF32(t: Tensor, file = ""): Float32Array {
  if (t.dtype === "F32") {
    const d = aligned(t, 4);
    return new Float32Array(d.buffer, d.byteOffset, d.byteLength / 4);
  }
  if (t.dtype === "F16") return f16BitsToF32(u16View(t));
  if (t.dtype === "BF16") return bf16BitsToF32(u16View(t));
  throw new Error(`${file}: tensor "${t.name}": dtype ${t.dtype} cannot be converted to f32 (supported: F32, F16, BF16)`);
}

/** Index of the first NaN or ±Inf (exponent bits all ones), or -1. */
export function firstNonFiniteF32(x: Float32Array): number {
  const b = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let i = 0; i < b.length; i++) if ((b[i] & 0x7f800000) === 0x7f800000) return i;
  return -1;
}

/** Index of the first binary16 NaN or ±Inf, or -1. */
export function firstNonFiniteF16(h: Uint16Array): number {
  for (let i = 0; i < h.length; i++) if ((h[i] & 0x7c00) === 0x7c00) return i;
  return -1;
}

/**
 * Weights must be finite: a checkpoint holding NaN/Inf (a diverged run, a
 * corrupt file) would run and print garbage. Checked as each tensor is read
 * or converted, one pass over values already in memory.
 */
function checkFinite<T extends Float32Array | Uint16Array>(out: T, t: Tensor, file: string): T {
  const i = out instanceof Float32Array ? firstNonFiniteF32(out) : firstNonFiniteF16(out);
  if (i < 0) return out;
  const v = out instanceof Float32Array ? out[i] : f16BitsToF32(out.subarray(i, i + 1))[0];
  const overflow = out instanceof Uint16Array && t.dtype !== "F16" && Number.isFinite(tensorToF32({ ...t, data: t.data.subarray(i * DTYPE_BYTES[t.dtype], (i + 1) * DTYPE_BYTES[t.dtype]) }, file)[0]);
  if (overflow) throw new Error(`${file}: tensor "${t.name}": element ${i} of ${out.length} is beyond f16's range (max 65504); load this model in f32 (--dtype f32)`);
  throw new Error(`${file}: tensor "${t.name}": element ${i} of ${out.length} is ${v}; a checkpoint with non-finite weights cannot be run (a diverged run, or a corrupt file)`);
}

/** A tensor's values as binary16 bits (F16 as is; F32 and BF16 rounded to nearest even). */
export function tensorToF16Bits(t: Tensor, file = ""): Uint16Array {
  if (t.dtype === "F16") return u16View(t);
  if (t.dtype === "F32" || t.dtype === "BF16") return f32ToF16Bits(tensorToF32(t, file));
  throw new Error(`${file}: tensor "${t.name}": dtype ${t.dtype} cannot be converted to f16 (supported: F32, F16, BF16)`);
}

// ---------------------------------------------------------------- reading

function readExactly(fd: number, file: string, what: string, start: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, out, done, Math.min(length - done, 1 << 30), start + done);
    if (n <= 0) throw new Error(`${file}: ${what}: file ends after ${start + done} bytes (truncated?)`);
    done += n;
  }
  return out;
}

interface ParsedFile {
  file: string;
  fd: number;
  entries: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

/** Parse and validate one file's header; the caller owns `fd`. */
function parseHeader(file: string, fd: number): ParsedFile {
  const size = fstatSync(fd).size;
  if (size < 8) throw new Error(`${file}: truncated safetensors file: ${size} bytes, the 8-byte header length is missing`);
  const lenBytes = readExactly(fd, file, "header length", 0, 8);
  const n64 = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    throw new Error(`${file}: header length ${n64} bytes is absurd (limit ${MAX_HEADER_BYTES}); not a safetensors file or corrupt`);
  }
  const n = Number(n64);
  if (8 + n > size) throw new Error(`${file}: header length ${n} bytes runs past the end of the file (${size} bytes); file truncated?`);
  const headerText = new TextDecoder("utf-8", { fatal: false }).decode(readExactly(fd, file, "header", 8, n));
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (e) {
    throw new Error(`${file}: header is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new Error(`${file}: header must be a JSON object of tensors`);
  }
  const dataStart = 8 + n;
  const dataSize = size - dataStart;
  const entries = new Map<string, TensorEntry>();
  const spans: [number, number, string][] = [];
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof v !== "object" || v === null || Array.isArray(v) || Object.values(v).some((x) => typeof x !== "string")) {
        throw new Error(`${file}: "__metadata__" must be an object of strings`);
      }
      metadata = v as Record<string, string>;
      continue;
    }
    const where = `${file}: tensor "${name}"`;
    if (typeof v !== "object" || v === null) throw new Error(`${where}: header entry must be an object`);
    const { dtype, shape, data_offsets: off } = v as Record<string, unknown>;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
      throw new Error(`${where}: unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(", ")})`);
    }
    if (!Array.isArray(shape) || shape.some((d) => typeof d !== "number" || !Number.isInteger(d) || d < 0)) {
      throw new Error(`${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(off) || off.length !== 2 || off.some((d) => typeof d !== "number" || !Number.isInteger(d) || d < 0)) {
      throw new Error(`${where}: data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(off)}`);
    }
    const [b, e] = off as [number, number];
    if (e < b) throw new Error(`${where}: data_offsets [${b}, ${e}] end before they begin`);
    const numel = (shape as number[]).reduce((a, d) => a * d, 1);
    const want = numel * DTYPE_BYTES[dtype];
    if (e - b !== want) {
      throw new Error(`${where}: data_offsets [${b}, ${e}] hold ${e - b} bytes but shape [${shape}] of ${dtype} needs ${want}`);
    }
    if (e > dataSize) {
      throw new Error(`${where}: data_offsets [${b}, ${e}] run past the end of the data (${dataSize} bytes); file truncated?`);
    }
    entries.set(name, { name, dtype, shape: shape as number[], file, start: dataStart + b, byteLength: e - b });
    spans.push([b, e, name]);
  }
  spans.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i][0] < spans[i - 1][1]) {
      throw new Error(`${file}: tensors "${spans[i - 1][2]}" [${spans[i - 1][0]}, ${spans[i - 1][1]}) and "${spans[i][2]}" [${spans[i][0]}, ${spans[i][1]}) overlap`);
    }
    // The format packs tensors back to back: bytes between two belong to nothing.
    if (spans[i][0] > spans[i - 1][1]) {
      throw new Error(`${file}: data bytes [${spans[i - 1][1]}, ${spans[i][0]}) between tensors "${spans[i - 1][2]}" and "${spans[i][2]}" belong to no tensor; the file is corrupt`);
    }
  }
  if (spans.length && spans[0][0] > 0) throw new Error(`${file}: data bytes [0, ${spans[0][0]}) before tensor "${spans[0][2]}" belong to no tensor; the file is corrupt`);
  const end = spans.length ? spans[spans.length - 1][1] : 0;
  if (end < dataSize) {
    throw new Error(`${file}: ${dataSize - end} trailing byte(s) after the last tensor (the tensors end at data byte ${end}, the file at ${dataSize}); the file is corrupt or was written twice`);
  }
  return { file, fd, entries, metadata };
}

function readerOver(parsed: ParsedFile[], where: Map<string, ParsedFile>, label: string): WeightReader {
  let closed = false;
  const entry = (name: string): TensorEntry => {
    if (closed) throw new Error(`${label}: reader is closed`);
    const p = where.get(name);
    const e = p?.entries.get(name);
    if (!e) throw new Error(`${label}: missing tensor "${name}"`);
    return e;
  };
  const read = (name: string): Tensor => {
    const e = entry(name);
    const fd = where.get(name)!.fd;
    const data = readExactly(fd, e.file, `tensor "${name}"`, e.start, e.byteLength);
    return { name, dtype: e.dtype, shape: e.shape.slice(), data };
  };
  return {
    files: parsed.map((p) => p.file),
    metadata: Object.assign({}, ...parsed.map((p) => p.metadata)),
    names: () => [...where.keys()],
    has: (name) => where.has(name),
    entry,
    read,
    readF32: (name) => {
      const t = read(name);
      return checkFinite(tensorToF32(t, entry(name).file), t, entry(name).file);
    },
    readF16Bits: (name) => {
      const t = read(name);
      return checkFinite(tensorToF16Bits(t, entry(name).file), t, entry(name).file);
    },
    readRows: (name, dtype, row0, rows) => {
      const e = entry(name);
      const total = e.shape[0] ?? 1;
      if (!Number.isInteger(row0) || !Number.isInteger(rows) || row0 < 0 || rows < 1 || row0 + rows > total) {
        throw new Error(`${e.file}: tensor "${name}": rows [${row0}, ${row0 + rows}) are outside its ${total} rows`);
      }
      const rowBytes = e.byteLength / total;
      const data = readExactly(where.get(name)!.fd, e.file, `tensor "${name}" rows [${row0}, ${row0 + rows})`, e.start + row0 * rowBytes, rows * rowBytes);
      const t: Tensor = { name, dtype: e.dtype, shape: [rows, ...e.shape.slice(1)], data };
      try {
        return checkFinite(dtype === "f16" ? tensorToF16Bits(t, e.file) : tensorToF32(t, e.file), t, e.file);
      } catch (err) {
        throw new Error(`${(err as Error).message} (counted within rows [${row0}, ${row0 + rows}) of ${total})`);
      }
    },
    close() {
      if (closed) return;
      closed = true;
      for (const p of parsed) closeSync(p.fd);
    },
  };
}

function openParsed(file: string): ParsedFile {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (e) {
    throw new Error(`${file}: cannot open: ${(e as Error).message}`);
  }
  try {
    return parseHeader(file, fd);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** Open one .safetensors file (reads only the header now). */
export function openSafetensors(file: string): WeightReader {
  const p = openParsed(file);
  return readerOver([p], new Map([...p.entries.keys()].map((k) => [k, p])), file);
}

/**
 * Open a checkpoint directory (model.safetensors.index.json with its shards,
 * else model.safetensors), or a .safetensors / .index.json path.
 */
export function openCheckpoint(path: string): WeightReader {
  let index: string | null = null;
  let single: string | null = null;
  if (statSync(path).isDirectory()) {
    if (existsSync(join(path, "model.safetensors.index.json"))) index = join(path, "model.safetensors.index.json");
    else if (existsSync(join(path, "model.safetensors"))) single = join(path, "model.safetensors");
    else throw new Error(`${path}: no model.safetensors or model.safetensors.index.json in this directory`);
  } else if (path.endsWith(".json")) index = path;
  else single = path;
  if (single) return openSafetensors(single);

  const file = index!;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`${file}: cannot read the shard index: ${(e as Error).message}`);
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) throw new Error(`${file}: field "weight_map" must be an object {tensor: shard file}`);
  const dir = dirname(file);
  const shards = new Map<string, ParsedFile>();
  const where = new Map<string, ParsedFile>();
  try {
    for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
      if (typeof shard !== "string" || shard !== basename(shard) || shard === "" || shard === "." || shard === "..") {
        throw new Error(`${file}: weight_map["${name}"] must be a file name in ${dir}, got ${JSON.stringify(shard)}`);
      }
      let p = shards.get(shard);
      if (!p) {
        const sf = join(dir, shard);
        if (!existsSync(sf)) throw new Error(`${file}: shard "${shard}" (for tensor "${name}") does not exist`);
        p = openParsed(sf);
        shards.set(shard, p);
      }
      if (!p.entries.has(name)) throw new Error(`${file}: weight_map puts tensor "${name}" in "${shard}", which does not contain it`);
      where.set(name, p);
    }
  } catch (e) {
    for (const p of shards.values()) closeSync(p.fd);
    throw e;
  }
  return readerOver([...shards.values()], where, file);
}

// ---------------------------------------------------------------- Qwen2 weight list

export interface WeightSpec {
  name: string;
  shape: number[];
}

/** Every tensor a Qwen2ForCausalLM checkpoint must hold, with its shape (HF names). */
export function qwen2WeightSpec(c: Qwen2Config): WeightSpec[] {
  const H = c.hiddenSize;
  const Q = c.numHeads * c.headDim;
  const KV = c.numKvHeads * c.headDim;
  const I = c.intermediateSize;
  const out: WeightSpec[] = [{ name: "model.embed_tokens.weight", shape: [c.vocabSize, H] }];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}.`;
    out.push(
      { name: `${p}input_layernorm.weight`, shape: [H] },
      { name: `${p}self_attn.q_proj.weight`, shape: [Q, H] },
      { name: `${p}self_attn.q_proj.bias`, shape: [Q] },
      { name: `${p}self_attn.k_proj.weight`, shape: [KV, H] },
      { name: `${p}self_attn.k_proj.bias`, shape: [KV] },
      { name: `${p}self_attn.v_proj.weight`, shape: [KV, H] },
      { name: `${p}self_attn.v_proj.bias`, shape: [KV] },
      { name: `${p}self_attn.o_proj.weight`, shape: [H, Q] },
      { name: `${p}post_attention_layernorm.weight`, shape: [H] },
      { name: `${p}mlp.gate_proj.weight`, shape: [I, H] },
      { name: `${p}mlp.up_proj.weight`, shape: [I, H] },
      { name: `${p}mlp.down_proj.weight`, shape: [H, I] },
    );
  }
  out.push({ name: "model.norm.weight", shape: [H] });
  if (!c.tieWordEmbeddings) out.push({ name: "lm_head.weight", shape: [c.vocabSize, H] });
  return out;
}

/** Throw one error listing every missing tensor, wrong shape or unusable dtype. */
export function checkQwen2Weights(c: Qwen2Config, reader: WeightReader, label = reader.files.join(", ")): WeightSpec[] {
  const spec = qwen2WeightSpec(c);
  const problems: string[] = [];
  for (const s of spec) {
    if (!reader.has(s.name)) {
      problems.push(`missing tensor "${s.name}" (expected shape [${s.shape}])`);
      continue;
    }
    const e = reader.entry(s.name);
    if (e.shape.length !== s.shape.length || e.shape.some((d, i) => d !== s.shape[i])) {
      problems.push(`tensor "${s.name}" in ${e.file} has shape [${e.shape}], config.json implies [${s.shape}]`);
    }
    if (e.dtype !== "F32" && e.dtype !== "F16" && e.dtype !== "BF16") {
      problems.push(`tensor "${s.name}" in ${e.file} has dtype ${e.dtype}; expected F32, F16 or BF16`);
    }
  }
  // Every tensor must be one the config implies: extra ones mean another shape (e.g. more layers than
  // num_hidden_layers), which would silently run a truncated model. Two known non-parameters are allowed.
  const wanted = new Set(spec.map((s) => s.name));
  for (const name of reader.names()) {
    if (wanted.has(name) || /\.rotary_emb\.inv_freq$/.test(name) || (c.tieWordEmbeddings && name === "lm_head.weight")) continue;
    const layer = /^model\.layers\.(\d+)\./.exec(name);
    const why = layer && Number(layer[1]) >= c.numLayers ? ` (layer ${layer[1]}; config.json has num_hidden_layers = ${c.numLayers})` : "";
    problems.push(`unexpected tensor "${name}" in ${reader.entry(name).file}${why}`);
  }
  if (problems.length) {
    const shown = problems.slice(0, 12);
    if (problems.length > shown.length) shown.push(`... and ${problems.length - shown.length} more`);
    throw new Error(`${label}: checkpoint does not match config.json:\n  ${shown.join("\n  ")}`);
  }
  return spec;
}

// ---------------------------------------------------------------- writing

export type WriteDtype = "F32" | "F16" | "BF16";

export interface WriteTensor {
  dtype: WriteDtype;
  shape: number[];
  /** f32 values (converted to `dtype`, round to nearest even), or raw F16/BF16 bits. */
  data: Float32Array | Uint16Array;
}

function encode(name: string, t: WriteTensor): Uint8Array {
  const numel = t.shape.reduce((a, d) => a * d, 1);
  if (t.data.length !== numel) throw new Error(`writeSafetensors: tensor "${name}": ${t.data.length} values for shape [${t.shape}] (${numel})`);
  let out: Float32Array | Uint16Array;
  if (t.data instanceof Float32Array) {
    out = t.dtype === "F32" ? t.data : t.dtype === "F16" ? f32ToF16Bits(t.data) : f32ToBf16Bits(t.data);
  } else {
    if (t.dtype === "F32") throw new Error(`writeSafetensors: tensor "${name}": raw 16-bit data given for dtype F32`);
    out = t.data;
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Write a .safetensors file atomically: a temp file beside `path`, fsync,
 * rename over `path` (a crash leaves the old file or the new one, never half).
 */
export function writeSafetensors(path: string, tensors: Record<string, WriteTensor>, metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (!["F32", "F16", "BF16"].includes(t.dtype)) throw new Error(`writeSafetensors: tensor "${name}": unsupported dtype ${t.dtype}`);
    const bytes = encode(name, t);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
    blobs.push(bytes);
  }
  let json = JSON.stringify(header);
  const jsonBytes0 = new TextEncoder().encode(json);
  json += " ".repeat((8 - (jsonBytes0.byteLength % 8)) % 8); // data starts 8-byte aligned
  const jsonBytes = new TextEncoder().encode(json);
  const lenBytes = new Uint8Array(8);
  new DataView(lenBytes.buffer).setBigUint64(0, BigInt(jsonBytes.byteLength), true);

  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Date.now()}`);
  const fd = openSync(tmp, "w");
  try {
    const writeAll = (b: Uint8Array) => {
      let done = 0;
      while (done < b.byteLength) done += writeSync(fd, b, done, b.byteLength - done);
    };
    writeAll(lenBytes);
    writeAll(jsonBytes);
    for (const b of blobs) writeAll(b);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw new Error(`${path}: write failed: ${(e as Error).message}`);
  }
  closeSync(fd);
  renameSync(tmp, path);
  try {
    const dfd = openSync(dirname(path), "r");
    fsyncSync(dfd);
    closeSync(dfd);
  } catch {
    // directory fsync is not possible on every platform; the rename is already done
  }
}
