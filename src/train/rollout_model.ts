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
  destroy(): void;
}

function weightsFrom(train: TrainModel, buf: (name: string) => GPUBuffer): Qwen2Weights {
  const c = train.config;
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const p = (s: string) => buf(`model.layers.${i}.${s}`);
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
  const one = (name: string): ChunkedMatrix => ({ rows: c.vocabSize, cols: c.hiddenSize, chunks: [{ buffer: buf(name), row0: 0, rows: c.vocabSize }] });
  const embed = one("model.embed_tokens.weight");
  const lmHead = c.tieWordEmbeddings ? embed : one("lm_head.weight");
  return { layers, embed, lmHead, norm: buf("model.norm.weight") };
}

export async function rolloutModel(gpu: Gpu, train: TrainModel, dtype: DType): Promise<RolloutModel> {
  if (dtype === "f32") {
    const model = await Qwen2Gpu.withWeights(gpu, train.config, "f32", () => weightsFrom(train, (n) => train.byName.get(n)!.value));
    // Shared buffers: the trainer owns them, so destroying the engine's view frees nothing.
    return { model, sync: async () => {}, destroy: () => {} };
  }
  const adam = await loadAdamW(gpu);
  const copies = new Map(train.params.map((p) => [p.name, gpu.buffer(2 * Math.ceil(p.size / 2) * 2, `f16.${p.name}`)]));
  const model = await Qwen2Gpu.withWeights(gpu, train.config, "f16", () => weightsFrom(train, (n) => copies.get(n)!));
  const sync = async () => {
    const b = gpu.batch();
    for (const p of train.params) adam.copyToF16(b, p.value, copies.get(p.name)!, p.size);
    b.submit();
  };
  await sync();
  return { model, sync, destroy: () => copies.forEach((b) => b.destroy()) };
}
