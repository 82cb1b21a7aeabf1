// Bad weights and bad settings are refused, not run: non-finite weights named
// by tensor and element as they are read (and f16 overflow), the tensor set
// matching config.json exactly, gaps and trailing bytes in a safetensors file,
// inf/1e999/nan in a config file refused (by `--plan` too, writing nothing),
// and messages that name what is wrong.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadProblems } from "../src/data/load.ts";
import { loadModel } from "../src/engine/load.ts";
import { loadQwen2Config, qwen2ConfigJson } from "../src/model/config.ts";
import { loadReferenceModel } from "../src/model/reference.ts";
import { checkQwen2Weights, openCheckpoint, openSafetensors, writeSafetensors, type WriteTensor } from "../src/model/safetensors.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { loadTokenizer } from "../src/model/tokenizer.ts";
import { readConfigFile, resolveConfig } from "../src/train/config.ts";
import { gpuOrSkip, hasGpu } from "./helpers.ts";
import { BUN, REPO } from "./processes.ts";

const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-loadchecks-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string) => join(ROOT, `${n++}-${name}`);

/** A tiny model folder whose tensor `name` gets `value` at element `at` (written back in F32). */
function tinyWith(name: string, at: number, value: number): string {
  const dir = fresh("model");
  makeTinyModel(dir);
  const r = openCheckpoint(dir);
  const tensors: Record<string, WriteTensor> = {};
  for (const t of r.names()) {
    const e = r.entry(t);
    const data = new Float32Array(r.read(t).data.slice().buffer);
    if (t === name) data[at] = value;
    tensors[t] = { dtype: "F32", shape: e.shape, data };
  }
  r.close();
  writeSafetensors(join(dir, "model.safetensors"), tensors);
  return dir;
}

describe("weights", () => {
  test("a NaN or Inf weight is refused as it is read, naming file, tensor and element", () => {
    const dir = tinyWith("model.layers.1.mlp.up_proj.weight", 7, NaN);
    expect(() => loadReferenceModel(dir)).toThrow(`${join(dir, "model.safetensors")}: tensor "model.layers.1.mlp.up_proj.weight": element 7 of`);
    expect(() => loadReferenceModel(dir)).toThrow(/is NaN; a checkpoint with non-finite weights cannot be run/);
    const r = openCheckpoint(tinyWith("model.norm.weight", 3, -Infinity));
    expect(() => r.readF16Bits("model.norm.weight")).toThrow(/tensor "model\.norm\.weight": element 3 of \d+ is -Infinity/);
    r.close();
  });

  test("an f32 weight beyond f16's range is refused when loading in f16, saying to use f32", () => {
    const r = openCheckpoint(tinyWith("model.norm.weight", 2, 1e6));
    expect(() => r.readF16Bits("model.norm.weight")).toThrow(/tensor "model\.norm\.weight": element 2 of \d+ is beyond f16's range \(max 65504\); load this model in f32/);
    expect(r.readF32("model.norm.weight")[2]).toBe(1e6);
    r.close();
  });

  test.skipIf(!GPU)("the engine refuses them before anything runs (f32 and f16)", async () => {
    const gpu = await gpuOrSkip();
    const dir = tinyWith("model.embed_tokens.weight", 11, Infinity);
    for (const dtype of ["f32", "f16"] as const) await expect(loadModel(gpu, dir, dtype)).rejects.toThrow(/tensor "model\.embed_tokens\.weight": element 11 of \d+ is Infinity/);
  });

  test("the tensor set must match config.json exactly: unexpected tensors (more layers than configured) and missing ones are named", () => {
    const dir = fresh("layers");
    makeTinyModel(dir);
    const cfg = loadQwen2Config(dir);
    // config.json says one layer fewer than the checkpoint holds.
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...qwen2ConfigJson({ ...cfg, numLayers: cfg.numLayers - 1 }) }));
    const last = cfg.numLayers - 1;
    expect(() => loadReferenceModel(dir)).toThrow(`unexpected tensor "model.layers.${last}.input_layernorm.weight" in ${join(dir, "model.safetensors")} (layer ${last}; config.json has num_hidden_layers = ${last})`);
    // And one more: the missing ones are named too.
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...qwen2ConfigJson({ ...cfg, numLayers: cfg.numLayers + 1 }) }));
    expect(() => loadReferenceModel(dir)).toThrow(`missing tensor "model.layers.${cfg.numLayers}.input_layernorm.weight"`);
    // Known non-parameters are not errors: rotary inv_freq buffers, a stored copy of tied embeddings.
    const extra = fresh("extra.safetensors");
    const r0 = openCheckpoint(dir);
    const t: Record<string, WriteTensor> = {};
    for (const name of r0.names()) t[name] = { dtype: "F32", shape: r0.entry(name).shape, data: r0.readF32(name) };
    r0.close();
    t["model.layers.0.self_attn.rotary_emb.inv_freq"] = { dtype: "F32", shape: [2], data: new Float32Array([1, 0.5]) };
    writeSafetensors(extra, t);
    const r = openSafetensors(extra);
    expect(() => checkQwen2Weights(cfg, r)).not.toThrow();
    r.close();
  });
});

describe("safetensors layout", () => {
  const raw = (header: unknown, data: Uint8Array): string => {
    const hb = new TextEncoder().encode(JSON.stringify(header));
    const out = new Uint8Array(8 + hb.length + data.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
    out.set(hb, 8);
    out.set(data, 8 + hb.length);
    const p = fresh("raw.safetensors");
    writeFileSync(p, out);
    return p;
  };
  const f32 = (k: number) => ({ dtype: "F32", shape: [k] });

  test("bytes between tensors, before the first, or after the last are errors naming the file", () => {
    const gap = raw({ a: { ...f32(1), data_offsets: [0, 4] }, b: { ...f32(1), data_offsets: [8, 12] } }, new Uint8Array(12));
    expect(() => openSafetensors(gap)).toThrow(`${gap}: data bytes [4, 8) between tensors "a" and "b" belong to no tensor; the file is corrupt`);
    const lead = raw({ a: { ...f32(1), data_offsets: [4, 8] } }, new Uint8Array(8));
    expect(() => openSafetensors(lead)).toThrow(`${lead}: data bytes [0, 4) before tensor "a" belong to no tensor`);
    const trail = raw({ a: { ...f32(1), data_offsets: [0, 4] } }, new Uint8Array(7));
    expect(() => openSafetensors(trail)).toThrow(`${trail}: 3 trailing byte(s) after the last tensor (the tensors end at data byte 4, the file at 7)`);
    const none = raw({}, new Uint8Array(2));
    expect(() => openSafetensors(none)).toThrow(`${none}: 2 trailing byte(s) after the last tensor`);
    // A written file is exact, and stays readable.
    const ok = fresh("ok.safetensors");
    writeSafetensors(ok, { a: { dtype: "F32", shape: [3], data: new Float32Array([1, 2, 3]) }, b: { dtype: "F16", shape: [1], data: new Float32Array([4]) } });
    const r = openSafetensors(ok);
    expect([...r.readF32("a"), ...r.readF32("b")]).toEqual([1, 2, 3, 4]);
    r.close();
  });

  test("rows of a tensor read alone equal the same rows of the whole tensor, in every stored dtype and both read dtypes", () => {
    // The engine uploads the embedding and LM head a row part at a time with
    // readRows, so the host never holds the whole 151936-row matrix.
    const rows = 7;
    const cols = 5;
    const values = Float32Array.from({ length: rows * cols }, (_, i) => (i - 17) * 0.37 + (i % 3) * 1e-3);
    const file = fresh("rows.safetensors");
    writeSafetensors(file, {
      f32: { dtype: "F32", shape: [rows, cols], data: values },
      f16: { dtype: "F16", shape: [rows, cols], data: values },
      bf16: { dtype: "BF16", shape: [rows, cols], data: values },
    });
    const r = openSafetensors(file);
    for (const name of ["f32", "f16", "bf16"]) {
      const whole32 = r.readF32(name);
      const whole16 = r.readF16Bits(name);
      for (const [row0, n] of [[0, 7], [0, 3], [3, 3], [6, 1], [2, 5]]) {
        // Bit-exact: the same bytes through the same conversion.
        expect([...r.readRows(name, "f32", row0, n)]).toEqual([...whole32.subarray(row0 * cols, (row0 + n) * cols)]);
        expect([...r.readRows(name, "f16", row0, n)]).toEqual([...whole16.subarray(row0 * cols, (row0 + n) * cols)]);
      }
    }
    for (const [row0, n] of [[-1, 2], [6, 2], [0, 0], [1.5, 1]]) {
      expect(() => r.readRows("f32", "f32", row0, n)).toThrow(`${file}: tensor "f32": rows [${row0}, ${row0 + n}) are outside its 7 rows`);
    }
    r.close();
    // A non-finite value in the part read is refused like a whole read's.
    const bad = fresh("rows-nan.safetensors");
    const withNan = values.slice();
    withNan[4 * cols + 2] = Number.NaN;
    writeSafetensors(bad, { w: { dtype: "F32", shape: [rows, cols], data: withNan } });
    const rb = openSafetensors(bad);
    expect([...rb.readRows("w", "f32", 0, 4)]).toEqual([...values.subarray(0, 4 * cols)]);
    expect(() => rb.readRows("w", "f32", 3, 2)).toThrow(`${bad}: tensor "w": element ${cols + 2} of ${2 * cols} is NaN`);
    expect(() => rb.readRows("w", "f32", 3, 2)).toThrow("(counted within rows [3, 5) of 7)");
    rb.close();
  });
});

describe("settings", () => {
  test("inf, 1e999 and nan in a TOML or JSON config are refused naming the field; ranges checked", () => {
    const cases: [string, string, RegExp][] = [
      ["a.toml", "[optim]\nlr = inf\n", /config: optim\.lr must be a finite number, got Infinity/],
      ["b.toml", "[rollout]\ntemperature = nan\n", /config: rollout\.temperature must be a finite number, got NaN/],
      ["c.json", '{"optim": {"eps": 1e999}}', /config: optim\.eps must be a finite number, got Infinity/],
      ["d.json", '{"policy": {"epsHigh": -1e999}}', /config: policy\.epsHigh must be a finite number, got -Infinity/],
      ["e.json", '{"schedule": {"kind": "constant", "cap": 1e999}}', /config: schedule\.cap must be a finite number, got Infinity/],
      ["f.json", '{"optim": {"lr": 5}}', /config: optim\.lr must be in \(0, 1\], got 5/],
      ["g.json", '{"optim": {"beta2": 1}}', /config: optim\.beta2 must be in \[0, 1\), got 1/],
    ];
    for (const [name, text, msg] of cases) {
      const p = fresh(name);
      writeFileSync(p, text);
      expect(() => resolveConfig("demo", [{ source: `config file ${p}`, values: readConfigFile(p) }])).toThrow(msg);
    }
  });

  test("`siri train --plan` refuses them before writing anything", () => {
    const p = fresh("inf.toml");
    writeFileSync(p, "[optim]\nlr = inf\n");
    const out = fresh("never");
    const r = Bun.spawnSync([BUN, "src/cli.ts", "train", "--plan", "--config", p, "--out", out], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr.toString()).toContain("optim.lr must be a finite number, got Infinity");
    expect(existsSync(out)).toBe(false);
  });
});

describe("messages that name what is wrong", () => {
  test("config.json that is an array", () => {
    const p = fresh("config.json");
    writeFileSync(p, "[]");
    expect(() => loadQwen2Config(p)).toThrow(`${p}: expected a JSON object of model settings, got an array ([])`);
  });

  test("tokenizer.json without model.vocab, and a chat template that does not render, name their file and field", () => {
    const dir = fresh("tok");
    makeTinyModel(dir);
    const tjPath = join(dir, "tokenizer.json");
    const tj = JSON.parse(readFileSync(tjPath, "utf8"));
    delete tj.model.vocab;
    writeFileSync(tjPath, JSON.stringify(tj));
    expect(() => loadTokenizer(dir)).toThrow(`${dir}/tokenizer.json: field "model.vocab" is missing`);

    const dir2 = fresh("tpl");
    makeTinyModel(dir2);
    const tcPath = join(dir2, "tokenizer_config.json");
    const tc = JSON.parse(readFileSync(tcPath, "utf8"));
    tc.chat_template = "{% for m in messages %}{{ raise_exception('only system turns') }}{% endfor %}";
    writeFileSync(tcPath, JSON.stringify(tc));
    expect(() => loadTokenizer(dir2)).toThrow(`${dir2}/tokenizer_config.json: field "chat_template": `);
    expect(() => loadTokenizer(dir2)).toThrow(/only system turns/);
    tc.chat_template = "{% for m in messages %}";
    writeFileSync(tcPath, JSON.stringify(tc));
    expect(() => loadTokenizer(dir2)).toThrow(`${dir2}/tokenizer_config.json: field "chat_template": chat_template: cannot parse`);
  });

  test("`answer: null` is reported as null, not as missing", async () => {
    const p = fresh("nulls.jsonl");
    writeFileSync(p, '{"problem": "1+1", "answer": "2"}\n{"problem": "2+2", "answer": null}\n');
    await expect(loadProblems(p)).rejects.toThrow(`${p} line 2: field "answer" (from "answer") is null; expected a string or number`);
  });
});
