/**
 * Decoding on the GPU (kernels/decode.wgsl): `advance` runs after the
 * sampler in every decode step and feeds the sampled token to the next step,
 * so the engine records several steps into one batch and reads back once
 * per window instead of once per token.
 *
 * Legend: R running rows, K steps per window. Buffers: sampled u32 [R] and
 * sampledLogp f32 [R] (the sampler's output); tokens u32 [R] and pos u32 [R]
 * (the forward's inputs); streams u32 [R, 2] (the sampler's (key, index));
 * dec u32: the row states [R, DECODE_STATE] then, at `outBase`, the output
 * window [R, K, 2] of (token, log-prob bits).
 */
import type { Batch } from "../gpu/batch.ts";
import type { Binding, Gpu } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import { checkBinding, checkCount } from "./common.ts";

/** Most stop ids a row may carry. */
export const MAX_STOP = 8;
/** u32s of one row's state: n generated, done, budget, stop count, stop ids. */
export const DECODE_STATE = 4 + MAX_STOP;
const WG = 64;

/** One row's initial state: `n` tokens already generated, `budget` the most in all. */
export function rowState(n: number, budget: number, stop: readonly number[]): number[] {
  if (stop.length > MAX_STOP) throw new KernelError(`decode: ${stop.length} stop ids, at most ${MAX_STOP} supported`);
  const s = new Array(DECODE_STATE).fill(0);
  s[0] = n;
  s[2] = budget;
  s[3] = stop.length;
  stop.forEach((t, j) => (s[4 + j] = t));
  return s;
}

/** CPU reference of one `advance` (step `s` of a K-step window), in place on the same arrays. */
export function advanceRef(
  sampled: Uint32Array,
  sampledLogp: Float32Array,
  tokens: Uint32Array,
  pos: Uint32Array,
  streams: Uint32Array,
  dec: Uint32Array,
  R: number,
  K: number,
  s: number,
  outBase: number,
): void {
  const lpBits = new Uint32Array(sampledLogp.buffer, sampledLogp.byteOffset, sampledLogp.length);
  for (let i = 0; i < R; i++) {
    const st = i * DECODE_STATE;
    if (dec[st + 1]) continue;
    const tok = sampled[i];
    const o = outBase + (i * K + s) * 2;
    dec[o] = tok;
    dec[o + 1] = lpBits[i];
    const n = dec[st] + 1;
    dec[st] = n;
    let stop = n >= dec[st + 2];
    for (let j = 0; j < Math.min(dec[st + 3], MAX_STOP); j++) if (dec[st + 4 + j] === tok) stop = true;
    if (stop) {
      dec[st + 1] = 1;
      continue;
    }
    tokens[i] = tok;
    pos[i] = pos[i] + 1;
    streams[2 * i + 1] = n;
  }
}

/** Where a decode step's `advance` writes: the forward's inputs and the row states / output window (see the legend above). */
export interface AdvanceTarget {
  tokens: Binding;
  pos: Binding;
  dec: Binding;
  /** Steps in this window, this step's index in it, and where the output window starts in `dec`. */
  K: number;
  s: number;
  outBase: number;
}

/** Validate an advance of R rows (`streams` [R, 2]); `what` names the kernel in errors. */
export function checkAdvance(what: string, R: number, streams: Binding, t: AdvanceTarget): void {
  for (const [v, n] of [[R, "R"], [t.K, "K"], [t.s, "s"], [t.outBase, "outBase"]] as const) checkCount(v, n, what);
  if (t.s >= t.K) throw new KernelError(`kernel ${what}: step ${t.s} outside the window of ${t.K}`);
  if (t.outBase < R * DECODE_STATE) throw new KernelError(`kernel ${what}: outBase ${t.outBase} overlaps the ${R} row states`);
  checkBinding(t.tokens, R, 4, "tokens", what);
  checkBinding(t.pos, R, 4, "pos", what);
  checkBinding(streams, 2 * R, 4, "streams", what);
  checkBinding(t.dec, t.outBase + R * t.K * 2, 4, "dec", what);
}

export interface DecodeKernels {
  advance(b: Batch, sampled: Binding, sampledLogp: Binding, tokens: Binding, pos: Binding, streams: Binding, dec: Binding, R: number, K: number, s: number, outBase: number): void;
}

export async function loadDecode(gpu: Gpu): Promise<DecodeKernels> {
  const k = await gpu.kernel("decode", "advance", { WG, MAX_STOP });
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  return {
    advance(b, sampled, sampledLogp, tokens, pos, streams, dec, R, K, s, outBase) {
      const what = "decode.advance";
      checkAdvance(what, R, streams, { tokens, pos, dec, K, s, outBase });
      checkBinding(sampled, R, 4, "sampled", what);
      checkBinding(sampledLogp, R, 4, "sampledLogp", what);
      if (R === 0) return;
      const groups = Math.ceil(R / WG);
      if (groups > max) throw new KernelError(`kernel ${what}: ${R} rows need ${groups} workgroups, over ${max}`);
      b.dispatch(k, { params: params().u32(R).u32(K).u32(s).u32(outBase), buffers: [sampled, sampledLogp, tokens, pos, streams, dec], groups: [groups], label: what });
    },
  };
}
