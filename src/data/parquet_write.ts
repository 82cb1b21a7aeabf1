/**
 * A minimal Parquet writer, only for this project's own fixtures and tests:
 * one row group, one uncompressed PLAIN data page (v1) per column, flat
 * schema of string / int64 / double columns, required or optional.
 * Reading real Hub files is hyparquet's job (src/data/load.ts); this exists
 * because no Parquet writer is installed and fixtures must be written here.
 *
 * Format: "PAR1", column chunks (page header + values), FileMetaData in the
 * Thrift compact protocol, its 4-byte little-endian length, "PAR1".
 */

export type ParquetColumnType = "string" | "int64" | "double";

export interface ParquetColumn {
  name: string;
  type: ParquetColumnType;
  /** Optional columns may hold null; required ones may not. */
  optional?: boolean;
  values: (string | number | bigint | null)[];
}

// Parquet enums (parquet.thrift).
const TYPE = { int64: 2, double: 5, string: 6 } as const; // INT64, DOUBLE, BYTE_ARRAY
const REQUIRED = 0;
const OPTIONAL = 1;
const UTF8 = 0; // ConvertedType
const PLAIN = 0;
const RLE = 3;
const UNCOMPRESSED = 0;
const DATA_PAGE = 0;

// Thrift compact protocol element types.
const T_I32 = 5;
const T_I64 = 6;
const T_BINARY = 8;
const T_LIST = 9;
const T_STRUCT = 12;

/** Growable byte sink with the Thrift compact encoders we need. */
class Out {
  bytes: number[] = [];
  byte(b: number): void {
    this.bytes.push(b & 0xff);
  }
  raw(a: ArrayLike<number>): void {
    for (let i = 0; i < a.length; i++) this.bytes.push(a[i]);
  }
  varint(v: bigint): void {
    let x = v;
    while (x >= 0x80n) {
      this.byte(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.byte(Number(x));
  }
  zigzag(v: number | bigint): void {
    const x = BigInt(v);
    this.varint(x >= 0n ? x << 1n : ((-x) << 1n) - 1n);
  }
}

/** A Thrift struct as an ordered list of [field id, value]; undefined fields are skipped. */
type TValue =
  | { t: "i32"; v: number }
  | { t: "i64"; v: number | bigint }
  | { t: "bin"; v: string | Uint8Array }
  | { t: "list"; elem: "i32" | "bin" | "struct"; v: TValue[] }
  | { t: "struct"; v: [number, TValue | undefined][] };

const i32 = (v: number): TValue => ({ t: "i32", v });
const i64 = (v: number | bigint): TValue => ({ t: "i64", v });
const bin = (v: string | Uint8Array): TValue => ({ t: "bin", v });
const struct = (...v: [number, TValue | undefined][]): TValue => ({ t: "struct", v });
const list = (elem: "i32" | "bin" | "struct", v: TValue[]): TValue => ({ t: "list", elem, v });

function typeCode(x: TValue): number {
  return { i32: T_I32, i64: T_I64, bin: T_BINARY, list: T_LIST, struct: T_STRUCT }[x.t];
}

function writeValue(o: Out, x: TValue): void {
  switch (x.t) {
    case "i32":
    case "i64":
      o.zigzag(x.v);
      return;
    case "bin": {
      const b = typeof x.v === "string" ? new TextEncoder().encode(x.v) : x.v;
      o.varint(BigInt(b.length));
      o.raw(b);
      return;
    }
    case "list": {
      const et = { i32: T_I32, bin: T_BINARY, struct: T_STRUCT }[x.elem];
      if (x.v.length < 15) o.byte((x.v.length << 4) | et);
      else {
        o.byte(0xf0 | et);
        o.varint(BigInt(x.v.length));
      }
      for (const e of x.v) writeValue(o, e);
      return;
    }
    case "struct": {
      let last = 0;
      for (const [id, v] of x.v) {
        if (v === undefined) continue;
        const delta = id - last;
        if (delta > 0 && delta <= 15) o.byte((delta << 4) | typeCode(v));
        else {
          o.byte(typeCode(v));
          o.zigzag(id);
        }
        writeValue(o, v);
        last = id;
      }
      o.byte(0); // stop
      return;
    }
  }
}

/** Definition levels (bit width 1) in the RLE/bit-packed hybrid, 4-byte length prefixed. */
function defLevels(present: boolean[]): Uint8Array {
  const groups = Math.ceil(present.length / 8);
  const o = new Out();
  o.varint(BigInt((groups << 1) | 1)); // bit-packed run of `groups` groups of 8
  for (let g = 0; g < groups; g++) {
    let b = 0;
    for (let j = 0; j < 8; j++) if (present[g * 8 + j]) b |= 1 << j;
    o.byte(b);
  }
  const out = new Uint8Array(4 + o.bytes.length);
  new DataView(out.buffer).setUint32(0, o.bytes.length, true);
  out.set(o.bytes, 4);
  return out;
}

function plainValues(col: ParquetColumn): Uint8Array {
  const o = new Out();
  for (const v of col.values) {
    if (v === null) continue;
    if (col.type === "string") {
      if (typeof v !== "string") throw new Error(`parquet writer: column "${col.name}" is string, got ${typeof v}`);
      const b = new TextEncoder().encode(v);
      const len = new Uint8Array(4);
      new DataView(len.buffer).setUint32(0, b.length, true);
      o.raw(len);
      o.raw(b);
    } else {
      const b = new Uint8Array(8);
      const dv = new DataView(b.buffer);
      if (col.type === "int64") dv.setBigInt64(0, BigInt(v), true);
      else dv.setFloat64(0, Number(v), true);
      o.raw(b);
    }
  }
  return Uint8Array.from(o.bytes);
}

/** Serialise columns (all the same length) into the bytes of one Parquet file. */
export function writeParquet(columns: ParquetColumn[]): Uint8Array {
  if (columns.length === 0) throw new Error("parquet writer: no columns");
  const numRows = columns[0].values.length;
  const file = new Out();
  file.raw(new TextEncoder().encode("PAR1"));
  const chunks: TValue[] = [];
  let totalBytes = 0;
  for (const col of columns) {
    if (col.values.length !== numRows) {
      throw new Error(`parquet writer: column "${col.name}" has ${col.values.length} values, expected ${numRows}`);
    }
    const present = col.values.map((v) => v !== null);
    if (!col.optional && present.includes(false)) {
      throw new Error(`parquet writer: required column "${col.name}" holds null`);
    }
    const levels = col.optional ? defLevels(present) : new Uint8Array(0);
    const values = plainValues(col);
    const body = new Uint8Array(levels.length + values.length);
    body.set(levels, 0);
    body.set(values, levels.length);
    const header = new Out();
    writeValue(
      header,
      struct(
        [1, i32(DATA_PAGE)],
        [2, i32(body.length)],
        [3, i32(body.length)],
        [5, struct([1, i32(numRows)], [2, i32(PLAIN)], [3, i32(RLE)], [4, i32(RLE)])],
      ),
    );
    const offset = file.bytes.length;
    file.raw(header.bytes);
    file.raw(body);
    const size = header.bytes.length + body.length;
    totalBytes += size;
    const meta = struct(
      [1, i32(TYPE[col.type])],
      [2, list("i32", [i32(PLAIN), i32(RLE)])],
      [3, list("bin", [bin(col.name)])],
      [4, i32(UNCOMPRESSED)],
      [5, i64(numRows)],
      [6, i64(size)],
      [7, i64(size)],
      [9, i64(offset)],
    );
    chunks.push(struct([2, i64(offset)], [3, meta]));
  }
  const schema: TValue[] = [struct([4, bin("schema")], [5, i32(columns.length)])];
  for (const col of columns) {
    schema.push(
      struct(
        [1, i32(TYPE[col.type])],
        [3, i32(col.optional ? OPTIONAL : REQUIRED)],
        [4, bin(col.name)],
        [6, col.type === "string" ? i32(UTF8) : undefined],
      ),
    );
  }
  const footer = new Out();
  writeValue(
    footer,
    struct(
      [1, i32(1)],
      [2, list("struct", schema)],
      [3, i64(numRows)],
      [4, list("struct", [struct([1, list("struct", chunks)], [2, i64(totalBytes)], [3, i64(numRows)])])],
      [6, bin("siri-webgpu parquet_write.ts")],
    ),
  );
  file.raw(footer.bytes);
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, footer.bytes.length, true);
  file.raw(len);
  file.raw(new TextEncoder().encode("PAR1"));
  return Uint8Array.from(file.bytes);
}
