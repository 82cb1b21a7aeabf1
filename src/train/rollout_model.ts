/**
 * The inference engine's view of the weights being trained.
 *
 * f32: the engine reads the trainer's master weights directly (same
 * buffers; nothing to copy after an update). f16: the engine has its own f16
 * copies, refreshed after each update by one kernel per tensor
 * (adamw.copyToF16), so rollouts always come from the current policy.
 */
import type { Gpu } from "../gpu/index.ts";
import { loadAdamW } from "../kernels/adamw.ts";
import { Qwen2Gpu, type ChunkedMatrix, type DType, type LayerWeights, type Qwen2Weights } from "../engine/model.ts";
import type { TrainModel } from "./model.ts";

export interface RolloutModel {
  model: Qwen2Gpu;
  /** Bring the engine's weights up to date with the trainer's (after an update). */
  sync(): Promise<void>;
  /** The engine's weights as it holds them (f32 values or f16 bits), whole tensors: what a remote worker loads. */
  read(): Promise<{ name: string; shape: number[]; data: Float32Array | Uint16Array }[]>;
  destroy(): void;
}

/** Concatenate a tensor's row parts as read by `part`. */
async function readParts<T extends Float32Array | Uint16Array>(train: TrainModel, part: (name: string, k: number, size: number) => Promise<T>, make: (n: number) => T) {
  return Promise.all(
    train.params.map(async (p) => {
      const data = make(p.shape.reduce((a, d) => a * d, 1));
      let at = 0;
      for (let k = 0; k < p.parts.length; k++) {
        data.set(await part(p.name, k, p.parts[k].size), at);
        at += p.parts[k].size;
      }
      return { name: p.name, shape: p.shape, data: data as Float32Array | Uint16Array };
    }),
  );
}

/** `buf(name, k)`: the engine's buffer for part k of a parameter (one part for all but the embedding / LM head). */
function weightsFrom(train: TrainModel, buf: (name: string, part: number) => GPUBuffer): Qwen2Weights {
  const c = train.config;
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const p = (s: string) => buf(`model.layers.${i}.${s}`, 0);
    layers.push({
      ln1: p("input_layernorm.weight"),
      wq: p("self_attn.q_proj.weight"),
      bq: p("self_attn.q_proj.bias"),
      wk: p("self_attn.k_proj.weight"),
      bk: p("self_attn.k_proj.bias"),
      wv: p("self_attn.v_proj.weight"),
      bv: p("self_attn.v_proj.bias"),
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
  if (dtype === "f32") {
    const model = await Qwen2Gpu.withWeights(gpu, train.config, "f32", () => weightsFrom(train, (n, k) => train.byName.get(n)!.parts[k].value));
    // Shared buffers: the trainer owns them, so destroying the engine's view frees nothing.
    const read = () => readParts(train, (n, k, size) => gpu.readF32(train.byName.get(n)!.parts[k].value, size), (n) => new Float32Array(n));
    return { model, sync: async () => {}, read, destroy: () => {} };
  }
  const adam = await loadAdamW(gpu);
  const copies = new Map(train.params.map((p) => [p.name, p.parts.map((part, k) => gpu.buffer(2 * Math.ceil(part.size / 2) * 2, `f16.${p.name}#${k}`))]));
  const model = await Qwen2Gpu.withWeights(gpu, train.config, "f16", () => weightsFrom(train, (n, k) => copies.get(n)![k]));
  const sync = async () => {
    const b = gpu.batch();
    for (const p of train.params) p.parts.forEach((part, k) => adam.copyToF16(b, part.value, copies.get(p.name)![k], part.size));
    b.submit();
  };
  await sync();
  const read = async () => readParts(train, async (n, k, size) => new Uint16Array(await gpu.read(copies.get(n)![k], 2 * Math.ceil(size / 2) * 2)).subarray(0, size), (n) => new Uint16Array(n));
  return { model, sync, read, destroy: () => copies.forEach((bs) => bs.forEach((b) => b.destroy())) };
}
