// Checkpoint loading: config.json validation, the safetensors reader/writer
// (including every kind of corrupt file), shards, dtype conversions, the Qwen2
// weight list, and the tiny-model maker.
import { afterAll, describe, expect, test } from "bun:test";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { f16BitsToF32, f32ToF16Bits } from "../src/kernels/f16.ts";
import { QWEN2_1_5B, loadQwen2Config, memoryPlan, parseQwen2Config, qwen2ConfigJson } from "../src/model/config.ts";
import {
  MAX_HEADER_BYTES,
  bf16BitsToF32,
  checkQwen2Weights,
  f32ToBf16Bits,
  openCheckpoint,
  openSafetensors,
  qwen2WeightSpec,
  writeSafetensors,
} from "../src/model/safetensors.ts";
import { TINY_PRESETS, makeTinyModel, tinyWeights } from "../src/model/tiny.ts";
import { expectClose, randn } from "./helpers.ts";

const tmp = mkdtempSync(join(tmpdir(), "siri-checkpoint-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string) => join(tmp, `${n++}-${name}`);

/** A safetensors file built byte by byte, independent of writeSafetensors. */
function rawFile(header: unknown, data: Uint8Array, opts: { headerLen?: bigint; headerText?: string } = {}): string {
  const text = opts.headerText ?? JSON.stringify(header);
  const hb = new TextEncoder().encode(text);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, opts.headerLen ?? BigInt(hb.length), true);
  const out = new Uint8Array(8 + hb.length + data.length);
  out.set(len, 0);
  out.set(hb, 8);
  out.set(data, 8 + hb.length);
  const p = fresh("raw.safetensors");
  writeFileSync(p, out);
  return p;
}

const f32Bytes = (xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);

describe("config.json", () => {
  test("DeepSeek-R1-Distill-Qwen-1.5B's published config.json parses to QWEN2_1_5B", () => {
    const c = loadQwen2Config(join(import.meta.dir, "fixtures/deepseek_r1_distill_qwen_1.5b_config.json"));
    expect(c).toEqual(QWEN2_1_5B);
    expect(c.headDim).toBe(128); // 1536 / 12
  });

  test("memoryPlan counts the 1.5B model's parameters", () => {
    // Hand count: embed = lm_head = 151936*1536 = 233,373,696.
    // Per layer: q 1536*1536+1536, k and v 256*1536+256 each, o 1536*1536,
    // MLP 3*8960*1536, norms 2*1536 -> 46,797,824; 28 layers -> 1,310,339,072.
    // Plus the final norm 1536: 1,777,088,000 parameters, 3,554,176,000 bytes in bf16.
    const p = memoryPlan(QWEN2_1_5B, "bfloat16");
    expect(p.perLayerParams).toBe(46_797_824);
    expect(p.embedParams).toBe(233_373_696);
    expect(p.lmHeadParams).toBe(233_373_696);
    expect(p.params).toBe(1_777_088_000);
    expect(p.paramBytes).toBe(3_554_176_000);
    expect(memoryPlan(QWEN2_1_5B, "float32").paramBytes).toBe(4 * 1_777_088_000);
    expect(memoryPlan({ ...QWEN2_1_5B, tieWordEmbeddings: true }).params).toBe(1_777_088_000 - 233_373_696);
  });

  test("memoryPlan agrees with the tensors qwen2WeightSpec lists", () => {
    for (const preset of Object.keys(TINY_PRESETS) as (keyof typeof TINY_PRESETS)[]) {
      const c = { ...QWEN2_1_5B, ...TINY_PRESETS[preset], vocabSize: 97 };
      const total = qwen2WeightSpec(c).reduce((a, s) => a + s.shape.reduce((x, d) => x * d, 1), 0);
      expect(memoryPlan(c).params).toBe(total);
    }
  });

  test("qwen2ConfigJson round-trips through the parser", () => {
    for (const c of [QWEN2_1_5B, { ...QWEN2_1_5B, headDim: 64, eosTokenIds: [1, 2], tieWordEmbeddings: true }]) {
      expect(parseQwen2Config(JSON.parse(JSON.stringify(qwen2ConfigJson(c))))).toEqual(c);
    }
  });

  const base = JSON.parse(readFileSync(join(import.meta.dir, "fixtures/deepseek_r1_distill_qwen_1.5b_config.json"), "utf8"));
  const bad: [string, Record<string, unknown>][] = [
    ["architectures", { architectures: ["LlamaForCausalLM"] }],
    ["architectures", { architectures: undefined }],
    ["model_type", { model_type: "llama" }],
    ["hidden_act", { hidden_act: "gelu" }],
    ["hidden_size", { hidden_size: 0 }],
    ["hidden_size", { hidden_size: "1536" }],
    ["hidden_size", { hidden_size: undefined }],
    ["intermediate_size", { intermediate_size: 1.5 }],
    ["num_hidden_layers", { num_hidden_layers: -1 }],
    ["num_attention_heads", { num_attention_heads: 10 }], // 1536 % 10 != 0
    ["num_key_value_heads", { num_key_value_heads: 5 }], // 12 % 5 != 0
    ["rope_theta", { rope_theta: 0 }],
    ["rms_norm_eps", { rms_norm_eps: null }],
    ["tie_word_embeddings", { tie_word_embeddings: "no" }],
    ["vocab_size", { vocab_size: 0 }],
    ["max_position_embeddings", { max_position_embeddings: undefined }],
    ["bos_token_id", { bos_token_id: 151936 }],
    ["eos_token_id", { eos_token_id: [151643, -1] }],
    ["torch_dtype", { torch_dtype: "int8" }],
    ["rope_scaling", { rope_scaling: { type: "yarn", factor: 4 } }],
    ["use_sliding_window", { use_sliding_window: true }],
    ["head_dim", { head_dim: 0 }],
    ["rope_parameters", { rope_parameters: { rope_type: "yarn", rope_theta: 10000, factor: 4 } }],
    ["rope_parameters", { rope_parameters: { rope_type: "default", rope_theta: 0 } }],
    ["rope_parameters", { rope_parameters: { rope_type: "default", rope_theta: 1e6 } }], // fixture's rope_theta is 10000
  ];
  for (const [field, patch] of bad) {
    test(`bad ${field} ${JSON.stringify(patch[field])} names the file and field`, () => {
      const j = { ...base, ...patch };
      for (const k of Object.keys(patch)) if (patch[k] === undefined) delete j[k];
      expect(() => parseQwen2Config(j, "/m/config.json")).toThrow(new RegExp(`^/m/config\\.json: field "${field}"`));
    });
  }

  test("rope_theta from transformers 5's rope_parameters when the top-level key is absent", () => {
    const j = { ...base, rope_parameters: { rope_type: "default", rope_theta: 1e6 } };
    delete j.rope_theta;
    expect(parseQwen2Config(j).ropeTheta).toBe(1e6);
    expect(parseQwen2Config({ ...base, rope_parameters: { rope_type: "default", rope_theta: base.rope_theta } }).ropeTheta).toBe(base.rope_theta);
    const none = { ...base };
    delete none.rope_theta;
    expect(parseQwen2Config(none).ropeTheta).toBe(10000);
  });

  test("unreadable or non-JSON config.json names the file", () => {
    const p = fresh("config.json");
    writeFileSync(p, "{ not json");
    expect(() => loadQwen2Config(p)).toThrow(`${p}: invalid JSON`);
    expect(() => parseQwen2Config([], "x.json")).toThrow("x.json: expected a JSON object");
  });
});

describe("dtype conversions", () => {
  const f16round = (Math as unknown as { f16round?: (x: number) => number }).f16round;

  test("every finite f16 value converts to f32 and back to the same bits", () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ToF16Bits(f16BitsToF32(all));
    for (let h = 0; h < 65536; h++) {
      const e = (h >>> 10) & 0x1f;
      if (e === 31 && h & 0x3ff) {
        if ((back[h] & 0x7c00) !== 0x7c00 || !(back[h] & 0x3ff)) throw new Error(`NaN ${h} did not stay NaN`);
      } else if (back[h] !== h) throw new Error(`f16 bits ${h} -> ${back[h]}`);
    }
  });

  test("f32 -> f16 rounds to nearest even (ties, subnormals, overflow) like Math.f16round", () => {
    // Halfway cases: 1 + 2^-11 lies between 1 and 1 + 2^-10: ties to even 1.
    const cases = [1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -25, 3 * 2 ** -25, 65520, 65519.99, -0, 2 ** -24, 1e-8, 70000, -70000];
    const want = [1, 1 + 2 * 2 ** -10, 0, 2 * 2 ** -24, Infinity, 65504, -0, 2 ** -24, 0, Infinity, -Infinity];
    const got = f16BitsToF32(f32ToF16Bits(new Float32Array(cases)));
    expectClose(got, want, 0, 0, "f16 rounding cases");
    expect(Object.is(got[6], -0)).toBe(true);
    if (f16round) {
      const x = randn(20000, 7, 70000);
      const y = randn(20000, 8, 1e-3);
      for (const v of [x, y]) expectClose(f16BitsToF32(f32ToF16Bits(v)), Array.from(v, (a) => f16round(a)), 0, 0, "vs Math.f16round");
    }
  });

  test("bf16: widening is exact; narrowing rounds to nearest even and keeps NaN", () => {
    expectClose(bf16BitsToF32(new Uint16Array([0x3f80, 0xc000, 0x0000, 0x7f80, 0x0001])), [1, -2, 0, Infinity, 2 ** -133], 0, 0, "bf16 widen");
    // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties to even (1); 1 + 3*2^-8 rounds up to 1 + 2^-6.
    const x = new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -3.0, NaN, 3.4e38]);
    const got = bf16BitsToF32(f32ToBf16Bits(x));
    expectClose(got.subarray(0, 4), [1, 1 + 2 ** -6, 1 + 2 ** -7, -3], 0, 0, "bf16 narrow");
    expect(Number.isNaN(got[4])).toBe(true);
    expect(got[5]).toBe(Infinity);
  });
});

describe("safetensors reader", () => {
  test("reads a hand-built file (two F32 tensors, a BF16 one, metadata)", () => {
    const data = new Uint8Array([...f32Bytes([1, 2, 3, 4, 5, 6]), ...f32Bytes([-1.5]), 0x80, 0x3f, 0x00, 0xc0]);
    const p = rawFile(
      {
        __metadata__: { format: "pt" },
        b: { dtype: "F32", shape: [], data_offsets: [24, 28] },
        a: { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] },
        c: { dtype: "BF16", shape: [2], data_offsets: [28, 32] },
      },
      data,
    );
    const r = openSafetensors(p);
    expect(r.names().sort()).toEqual(["a", "b", "c"]);
    expect(r.metadata).toEqual({ format: "pt" });
    const a = r.read("a");
    expect(a.dtype).toBe("F32");
    expect(a.shape).toEqual([2, 3]);
    expectClose(r.readF32("a"), [1, 2, 3, 4, 5, 6], 0, 0, "a");
    expectClose(r.readF32("b"), [-1.5], 0, 0, "b");
    expectClose(r.readF32("c"), [1, -2], 0, 0, "c (bf16)");
    expect(Array.from(r.readF16Bits("c"))).toEqual([0x3c00, 0xc000]);
    expect(() => r.read("nope")).toThrow(`${p}: missing tensor "nope"`);
    r.close();
    expect(() => r.read("a")).toThrow("closed");
  });

  test("reads lazily: each read goes to the file at that tensor's offset", () => {
    const p = rawFile({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [8, 16] } }, f32Bytes([1, 2, 3, 4]));
    const r = openSafetensors(p);
    const e = r.entry("b");
    const fd = openSync(p, "r+");
    writeSync(fd, f32Bytes([7, 8]), 0, 8, e.start); // change b on disk after opening
    closeSync(fd);
    expectClose(r.readF32("a"), [1, 2], 0, 0, "a untouched");
    expectClose(r.readF32("b"), [7, 8], 0, 0, "b re-read from disk");
    r.close();
  });

  const corrupt: [string, () => string, RegExp][] = [
    ["empty file", () => truncTo(rawFile({}, new Uint8Array()), 0), /truncated safetensors file: 0 bytes/],
    ["7-byte file", () => truncTo(rawFile({}, new Uint8Array()), 7), /truncated safetensors file: 7 bytes/],
    ["header length beyond the file", () => rawFile({}, new Uint8Array(), { headerLen: 1000n }), /header length 1000 bytes runs past the end of the file/],
    ["absurd header length", () => rawFile({}, new Uint8Array(), { headerLen: BigInt(MAX_HEADER_BYTES) + 1n }), /is absurd/],
    ["2^64-1 header length", () => rawFile({}, new Uint8Array(), { headerLen: 2n ** 64n - 1n }), /is absurd/],
    ["invalid JSON", () => rawFile(null, new Uint8Array(), { headerText: '{"a": {' }), /header is not valid JSON/],
    ["header not an object", () => rawFile([1, 2], new Uint8Array()), /header must be a JSON object/],
    ["unknown dtype", () => rawFile({ w: { dtype: "F128", shape: [1], data_offsets: [0, 16] } }, new Uint8Array(16)), /tensor "w": unknown dtype "F128"/],
    ["bad shape", () => rawFile({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)), /tensor "w": shape must be/],
    ["missing offsets", () => rawFile({ w: { dtype: "F32", shape: [1] } }, new Uint8Array(4)), /tensor "w": data_offsets must be/],
    ["end before begin", () => rawFile({ w: { dtype: "F32", shape: [0], data_offsets: [4, 0] } }, new Uint8Array(4)), /tensor "w": data_offsets \[4, 0\] end before/],
    ["size disagrees with shape x dtype", () => rawFile({ w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)), /tensor "w": data_offsets \[0, 8\] hold 8 bytes but shape \[3\] of F32 needs 12/],
    ["offsets out of range (truncated data)", () => rawFile({ w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, new Uint8Array(12)), /tensor "w": data_offsets \[0, 16\] run past the end of the data \(12 bytes\)/],
    [
      "overlapping tensors",
      () => rawFile({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12)),
      /tensors "a" \[0, 8\) and "b" \[4, 12\) overlap/,
    ],
    ["bad metadata", () => rawFile({ __metadata__: { n: 1 } }, new Uint8Array()), /"__metadata__" must be an object of strings/],
  ];
  function truncTo(p: string, len: number): string {
    writeFileSync(p, readFileSync(p).subarray(0, len));
    return p;
  }
  for (const [what, make, msg] of corrupt) {
    test(`corrupt file: ${what}`, () => {
      const p = make();
      let err: Error | null = null;
      try {
        openSafetensors(p).close();
      } catch (e) {
        err = e as Error;
      }
      expect(err).not.toBeNull();
      expect(err!.message).toMatch(msg);
      expect(err!.message.startsWith(p)).toBe(true); // names the file
    });
  }

  test("a file truncated in the data after its header was read fails on that tensor's read", () => {
    const p = rawFile({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [8, 16] } }, f32Bytes([1, 2, 3, 4]));
    const r = openSafetensors(p);
    truncTo(p, readFileSync(p).length - 4);
    expectClose(r.readF32("a"), [1, 2], 0, 0, "a still readable");
    expect(() => r.read("b")).toThrow(/tensor "b": file ends after/);
    r.close();
  });

  test("unconvertible dtype names file and tensor", () => {
    const p = rawFile({ ids: { dtype: "I32", shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8));
    const r = openSafetensors(p);
    expect(r.read("ids").data.length).toBe(8);
    expect(() => r.readF32("ids")).toThrow(`${p}: tensor "ids": dtype I32 cannot be converted to f32`);
    expect(() => r.readF16Bits("ids")).toThrow(`${p}: tensor "ids": dtype I32 cannot be converted to f16`);
    r.close();
  });
});

describe("safetensors writer", () => {
  test("F32/F16/BF16 round trip, offsets 8-byte aligned, metadata kept, no temp files left", () => {
    const dir = fresh("w");
    mkdirSync(dir);
    const p = join(dir, "model.safetensors");
    const a = randn(15, 3, 2);
    const b = randn(8, 4, 100);
    const c = randn(6, 5, 1);
    writeSafetensors(p, {
      a: { dtype: "F32", shape: [3, 5], data: a },
      b: { dtype: "F16", shape: [8], data: b },
      c: { dtype: "BF16", shape: [2, 3], data: c },
      raw: { dtype: "F16", shape: [2], data: new Uint16Array([0x3c00, 0x4000]) },
    }, { format: "pt" });
    expect(readdirSync(dir)).toEqual(["model.safetensors"]);
    const headerLen = Number(new DataView(readFileSync(p).buffer).getBigUint64(0, true));
    expect(headerLen % 8).toBe(0);
    const r = openSafetensors(p);
    expect(r.metadata).toEqual({ format: "pt" });
    expect(r.entry("c").shape).toEqual([2, 3]);
    expectClose(r.readF32("a"), a, 0, 0, "F32");
    expectClose(r.readF32("b"), f16BitsToF32(f32ToF16Bits(b)), 0, 0, "F16");
    expectClose(r.readF32("c"), bf16BitsToF32(f32ToBf16Bits(c)), 0, 0, "BF16");
    expectClose(r.readF32("raw"), [1, 2], 0, 0, "raw f16 bits");
    expectClose(f16BitsToF32(r.readF16Bits("a")), f16BitsToF32(f32ToF16Bits(a)), 0, 0, "F32 -> f16 bits");
    r.close();
    // Overwrite atomically: the new content replaces the old.
    writeSafetensors(p, { z: { dtype: "F32", shape: [1], data: new Float32Array([9]) } });
    const r2 = openSafetensors(p);
    expect(r2.names()).toEqual(["z"]);
    r2.close();
    expect(readdirSync(dir)).toEqual(["model.safetensors"]);
  });

  test("rejects data that does not fill the shape", () => {
    expect(() => writeSafetensors(fresh("x.safetensors"), { w: { dtype: "F32", shape: [2, 2], data: new Float32Array(3) } })).toThrow('tensor "w": 3 values for shape [2,2] (4)');
  });
});

describe("sharded checkpoints", () => {
  function sharded(): string {
    const dir = fresh("sharded");
    mkdirSync(dir);
    writeSafetensors(join(dir, "model-00001-of-00002.safetensors"), { x: { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) } });
    writeSafetensors(join(dir, "model-00002-of-00002.safetensors"), { y: { dtype: "BF16", shape: [1], data: new Float32Array([3]) } });
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 10 }, weight_map: { x: "model-00001-of-00002.safetensors", y: "model-00002-of-00002.safetensors" } }));
    return dir;
  }

  test("index.json routes each tensor to its shard", () => {
    const r = openCheckpoint(sharded());
    expect(r.names().sort()).toEqual(["x", "y"]);
    expect(r.files.length).toBe(2);
    expectClose(r.readF32("x"), [1, 2], 0, 0, "x");
    expectClose(r.readF32("y"), [3], 0, 0, "y");
    r.close();
  });

  const badIndex: [string, (m: Record<string, unknown>) => unknown, RegExp][] = [
    ["missing shard", (m) => ({ weight_map: { ...m, z: "model-00003-of-00003.safetensors" } }), /shard "model-00003-of-00003.safetensors" \(for tensor "z"\) does not exist/],
    ["tensor not in its shard", (m) => ({ weight_map: { ...m, y: "model-00001-of-00002.safetensors" } }), /puts tensor "y" in "model-00001-of-00002.safetensors", which does not contain it/],
    ["path escape", (m) => ({ weight_map: { ...m, x: "../model-00001-of-00002.safetensors" } }), /weight_map\["x"\] must be a file name/],
    ["no weight_map", () => ({ metadata: {} }), /field "weight_map" must be an object/],
  ];
  for (const [what, patch, msg] of badIndex) {
    test(`bad index: ${what}`, () => {
      const dir = sharded();
      const idx = join(dir, "model.safetensors.index.json");
      writeFileSync(idx, JSON.stringify(patch(JSON.parse(readFileSync(idx, "utf8")).weight_map)));
      expect(() => openCheckpoint(dir)).toThrow(msg);
    });
  }

  test("a directory without weights is a clear error", () => {
    const dir = fresh("empty");
    mkdirSync(dir);
    expect(() => openCheckpoint(dir)).toThrow(`${dir}: no model.safetensors or model.safetensors.index.json`);
  });
});

describe("Qwen2 weight check and the tiny model", () => {
  test("the tiny model's weights match its config; each mismatch is reported by name", () => {
    const dir = fresh("tiny");
    const { config } = makeTinyModel(dir, { preset: "tiny-untied", seed: 1 });
    const r = openCheckpoint(dir);
    const spec = checkQwen2Weights(config, r);
    expect(spec.length).toBe(1 + 12 * 2 + 1 + 1);
    expect(spec.map((s) => s.name)).toContain("lm_head.weight");
    r.close();

    const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    for (const [name, t] of tinyWeights(config, 1)) tensors[name] = { dtype: "F32", shape: t.shape, data: t.data };
    const broken = { ...tensors };
    delete broken["model.layers.1.mlp.up_proj.weight"];
    broken["model.layers.0.self_attn.k_proj.weight"] = { dtype: "F32", shape: [16, 64], data: new Float32Array(16 * 64) };
    const p = fresh("broken.safetensors");
    writeSafetensors(p, broken);
    const rb = openSafetensors(p);
    let msg = "";
    try {
      checkQwen2Weights(config, rb);
    } catch (e) {
      msg = (e as Error).message;
    }
    rb.close();
    expect(msg).toContain(`${p}: checkpoint does not match config.json`);
    expect(msg).toContain('missing tensor "model.layers.1.mlp.up_proj.weight" (expected shape [128,64])');
    expect(msg).toContain('tensor "model.layers.0.self_attn.k_proj.weight" in ' + p + " has shape [16,64], config.json implies [32,64]");

    // Untied config needs lm_head; a tied checkpoint lacks it.
    const tiedDir = fresh("tied");
    makeTinyModel(tiedDir, { preset: "tiny" });
    const rt = openCheckpoint(tiedDir);
    expect(() => checkQwen2Weights({ ...config, tieWordEmbeddings: false }, rt)).toThrow('missing tensor "lm_head.weight"');
    rt.close();
  });

  test("make-tiny-model: seeded, deterministic, HF-like init, f16/bf16 are the rounded f32 weights", () => {
    const d1 = fresh("t1");
    const d2 = fresh("t2");
    const d3 = fresh("t3");
    makeTinyModel(d1, { seed: 5 });
    makeTinyModel(d2, { seed: 5 });
    makeTinyModel(d3, { seed: 6 });
    const bytes = (d: string) => readFileSync(join(d, "model.safetensors"));
    expect(bytes(d1).equals(bytes(d2))).toBe(true);
    expect(bytes(d1).equals(bytes(d3))).toBe(false);

    const r = openCheckpoint(d1);
    const q = r.readF32("model.layers.0.self_attn.q_proj.weight");
    const mean = q.reduce((a, x) => a + x, 0) / q.length;
    const std = Math.sqrt(q.reduce((a, x) => a + (x - mean) ** 2, 0) / q.length);
    expect(Math.abs(mean)).toBeLessThan(0.002);
    expect(std).toBeGreaterThan(0.018);
    expect(std).toBeLessThan(0.022);
    for (const b of ["q_proj", "k_proj", "v_proj"]) {
      const bias = r.readF32(`model.layers.1.self_attn.${b}.bias`);
      expect(bias.every((x) => x !== 0)).toBe(true);
    }
    const norm = r.readF32("model.layers.0.input_layernorm.weight");
    expect(norm.every((x) => Math.abs(x - 1) < 0.3)).toBe(true);
    expect(norm.some((x) => x !== 1)).toBe(true);

    for (const [dtype, round] of [["f16", (x: Float32Array) => f16BitsToF32(f32ToF16Bits(x))], ["bf16", (x: Float32Array) => bf16BitsToF32(f32ToBf16Bits(x))]] as const) {
      const d = fresh(dtype);
      makeTinyModel(d, { seed: 5, dtype });
      const cfg = loadQwen2Config(d);
      expect(cfg.torchDtype).toBe(dtype === "f16" ? "float16" : "bfloat16");
      const rr = openCheckpoint(d);
      expect(rr.entry("model.embed_tokens.weight").dtype).toBe(dtype === "f16" ? "F16" : "BF16");
      for (const name of rr.names()) expectClose(rr.readF32(name), round(r.readF32(name)), 0, 0, `${dtype} ${name}`);
      rr.close();
    }
    r.close();
  });

  test("`siri make-tiny-model` writes a loadable checkpoint for every preset", () => {
    for (const preset of Object.keys(TINY_PRESETS)) {
      const dir = fresh(preset);
      const p = Bun.spawnSync([process.execPath, join(import.meta.dir, "../src/cli.ts"), "make-tiny-model", dir, "--preset", preset, "--dtype", "bf16", "--seed", "2"]);
      expect(p.exitCode).toBe(0);
      for (const f of ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"]) expect(existsSync(join(dir, f))).toBe(true);
      const c = loadQwen2Config(dir);
      const shape = TINY_PRESETS[preset as keyof typeof TINY_PRESETS];
      expect(c.numKvHeads).toBe(shape.numKvHeads);
      expect(c.tieWordEmbeddings).toBe(shape.tieWordEmbeddings);
      const r = openCheckpoint(dir);
      checkQwen2Weights(c, r);
      r.close();
    }
    const bad = Bun.spawnSync([process.execPath, join(import.meta.dir, "../src/cli.ts"), "make-tiny-model", fresh("bad"), "--preset", "huge"]);
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr.toString() + bad.stdout.toString()).toContain('--preset: expected one of tiny, tiny-gqa, tiny-mqa, tiny-untied, got "huge"');
  });
});
