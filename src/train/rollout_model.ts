/**
 * The inference engine's view of the weights being trained.
 *
 * f32: the engine reads the trainer's master weights directly (same
 * buffers), except q/k/v, which the engine keeps concatenated per layer (one
 * fused product) and which are copied after each update. f16: the engine has
 * its own f16 copies, refreshed after each update by one kernel per tensor
 * (adamw.copyToF16), so rollouts always come from the current policy.
 */
import type { Binding, Gpu } from "../gpu/index.ts";
import { loadAdamW } from "../kernels/adamw.ts";
import { Qwen2Gpu, qkvNames, type ChunkedMatrix, type DType, type LayerWeights, type Qwen2Weights } from "../engine/model.ts";
import type { Batch } from "../gpu/batch.ts";
import type { Param, TrainModel } from "./model.ts";

export interface RolloutModel {
  model: Qwen2Gpu;
  /** Bring the engine's weights up to date with the trainer's (after an update). */
  sync(): Promise<void>;
  /** The engine's weights as it holds them (f32 values or f16 bits), whole tensors: what a remote worker loads. */
  read(): Promise<{ name: string; shape: number[]; data: Float32Array | Uint16Array }[]>;
  destroy(): void;
}

/** Every parameter, its row parts concatenated, each part read by `part`. */
async function readParts<T extends Float32Array | Uint16Array>(train: TrainModel, part: (p: Param, k: number) => Promise<T>, make: (n: number) => T) {
  const out: { name: string; shape: number[]; data: Float32Array | Uint16Array }[] = [];
  for (const p of train.params) {
    const data = make(p.size);
    let at = 0;
    for (let k = 0; k < p.parts.length; k++) {
      data.set(await part(p, k), at);
      at += p.parts[k].size;
    }
    out.push({ name: p.name, shape: p.shape, data });
  }
  return out;
}

/** Where each q/k/v tensor lives in its layer's concatenated buffer. */
interface QkvPart {
  param: Param;
  dst: GPUBuffer;
  offset: number; // elements
}

/** One concatenated buffer per layer for the q/k/v weights and one for the biases, in the engine's dtype. */
function qkvBuffers(gpu: Gpu, train: TrainModel, dtype: DType): { cat: Map<string, GPUBuffer>; parts: QkvPart[] } {
  const e = dtype === "f16" ? 2 : 4;
  const cat = new Map<string, GPUBuffer>();
  const parts: QkvPart[] = [];
  for (let l = 0; l < train.config.numLayers; l++) {
    for (const kind of ["weight", "bias"] as const) {
      const params = qkvNames(l, kind).map((n) => train.byName.get(n)!);
      const total = params.reduce((a, p) => a + p.size, 0);
      const label = `model.layers.${l}.self_attn.qkv_proj.${kind}`;
      const dst = gpu.buffer(Math.ceil((total * e) / 4) * 4, `${dtype}.${label}`);
      cat.set(label, dst);
      let offset = 0;
      for (const param of params) {
        if (param.size % 2) throw new Error(`rollout model: ${param.name} has an odd element count ${param.size}; the q/k/v concatenation needs even sizes`);
        parts.push({ param, dst, offset });
        offset += param.size;
      }
    }
  }
  return { cat, parts };
}

/** `buf(name, k)`: the engine's buffer for part k of a parameter (one part for all but the embedding / LM head). */
function weightsFrom(train: TrainModel, buf: (name: string, part: number) => Binding): Qwen2Weights {
  const c = train.config;
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const p = (s: string) => buf(`model.layers.${i}.${s}`, 0);
    layers.push({
      ln1: p("input_layernorm.weight"),
      wqkv: p("self_attn.qkv_proj.weight"),
      bqkv: p("self_attn.qkv_proj.bias"),
      wo: p("self_attn.o_proj.weight"),
      ln2: p("post_attention_layernorm.weight"),
      wg: p("mlp.gate_proj.weight"),
      wu: p("mlp.up_proj.weight"),
      wd: p("mlp.down_proj.weight"),
    });
  }
  // The trainer's row parts are the engine's row chunks.
  const chunked = (name: string): ChunkedMatrix => ({
    rows: c.vocabSize,
    cols: c.hiddenSize,
    chunks: train.byName.get(name)!.parts.map((part, k) => ({ buffer: buf(name, k), row0: part.row0, rows: part.rows })),
  });
  const embed = chunked("model.embed_tokens.weight");
  const lmHead = c.tieWordEmbeddings ? embed : chunked("lm_head.weight");
  return { layers, embed, lmHead, norm: buf("model.norm.weight", 0) };
}

export async function rolloutModel(gpu: Gpu, train: TrainModel, dtype: DType): Promise<RolloutModel> {
  const { cat, parts } = qkvBuffers(gpu, train, dtype);
  const isQkv = new Set(parts.map((p) => p.param.name));
  if (dtype === "f32") {
    const model = await Qwen2Gpu.withWeights(gpu, train.config, "f32", () =>
      weightsFrom(train, (n, k) => cat.get(n) ?? train.byName.get(n)!.parts[k].value),
    );
    const sync = async () => {
      const b = gpu.batch();
      for (const p of parts) b.copy(p.param.value.buffer, p.param.value.offset, p.dst, p.offset * 4, p.param.size * 4);
      b.submit();
    };
    await sync();
    // The q/k/v copies hold the master values: read those.
    const read = () => readParts(train, (p, k) => gpu.readF32(p.parts[k].value.buffer, p.parts[k].size, p.parts[k].value.offset), (n) => new Float32Array(n));
    // The other buffers are the trainer's: destroying the engine's view frees only the q/k/v copies.
    return { model, sync, read, destroy: () => cat.forEach((b) => b.destroy()) };
  }
  const adam = await loadAdamW(gpu);
  const f16Bytes = (n: number) => 2 * Math.ceil(n / 2) * 2;
  const others = train.params.filter((p) => !isQkv.has(p.name));
  const copies = new Map(others.map((p) => [p.name, p.parts.map((part, k) => gpu.buffer(f16Bytes(part.size), `f16.${p.name}#${k}`))]));
  // A q/k/v part whose byte offset is not a storage-binding offset (256) goes through a scratch copy.
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const scratch = new Map(parts.filter((p) => (p.offset * 2) % align !== 0).map((p) => [p, gpu.buffer(f16Bytes(p.param.size), `f16.${p.param.name}`)]));
  const model = await Qwen2Gpu.withWeights(gpu, train.config, "f16", () => weightsFrom(train, (n, k) => cat.get(n) ?? copies.get(n)![k]));
  const sync = async () => {
    const b: Batch = gpu.batch();
    for (const p of others) p.parts.forEach((part, k) => adam.copyToF16(b, part.value, copies.get(p.name)![k], part.size));
    for (const p of parts) {
      const s = scratch.get(p);
      if (!s) {
        adam.copyToF16(b, p.param.value, { buffer: p.dst, offset: p.offset * 2, size: f16Bytes(p.param.size) }, p.param.size);
        continue;
      }
      adam.copyToF16(b, p.param.value, s, p.param.size);
      b.copy(s, 0, p.dst, p.offset * 2, f16Bytes(p.param.size));
    }
    b.submit();
  };
  await sync();
  const all = [...[...copies.values()].flat(), ...scratch.values(), ...cat.values()];
  const qkvAt = new Map(parts.map((p) => [p.param.name, p]));
  const read = () =>
    readParts(
      train,
      async (p, k) => {
        const q = qkvAt.get(p.name);
        const n = p.parts[k].size;
        // (q/k/v sizes are even, so their f16 offsets are 4-byte aligned for the readback)
        const bytes = q ? await gpu.read(q.dst, 2 * n, 2 * q.offset) : await gpu.read(copies.get(p.name)![k], f16Bytes(n));
        return new Uint16Array(bytes).subarray(0, n);
      },
      (n) => new Uint16Array(n),
    );
  return { model, sync, read, destroy: () => all.forEach((b) => b.destroy()) };
}
