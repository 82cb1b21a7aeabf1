// The decode-advance kernel (kernels/decode.wgsl) against its CPU reference:
// a window of K steps over rows that stop at a stop id, at their budget, or
// were already done; every buffer compared exactly after every step. Then
// the sampler with the advance fused in (kernels/sample.wgsl, what the
// engine records) against the composition it replaces: sample, then advance.
import { describe, expect, test } from "bun:test";
import { advanceRef, DECODE_STATE, loadDecode, MAX_STOP, rowState } from "../src/kernels/decode.ts";
import type { Dtype } from "../src/kernels/common.ts";
import { loadEmbedding } from "../src/kernels/embedding.ts";
import { f32ToF16Bits } from "../src/kernels/f16.ts";
import { loadSampler, sampleRef, type SampleOptions } from "../src/kernels/sample.ts";
import { expectClose, gpuOrSkip, hasF16, hasGpu } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
const F16 = GPU && hasF16(await gpuOrSkip());

/** A small deterministic generator of u32s. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
}

/**
 * A window's starting buffers for R rows over ids < V: 0-3 tokens generated,
 * budgets 1-6 tokens away, 0..MAX_STOP stop ids, every 17th row already done;
 * the output window starts `gap` u32s after the row states. `rand` goes on
 * drawing from the same stream.
 */
function window(R: number, K: number, V: number, seed: number, gap = 0) {
  const rand = lcg(seed);
  const outBase = R * DECODE_STATE + gap;
  const dec = new Uint32Array(outBase + R * K * 2).fill(0xdeadbeef);
  const tokens = new Uint32Array(R);
  const pos = new Uint32Array(R);
  const streams = new Uint32Array(2 * R);
  for (let i = 0; i < R; i++) {
    const n = rand() % 4;
    const stop = Array.from({ length: i % (MAX_STOP + 1) }, () => rand() % V);
    const st = rowState(n, n + 1 + (rand() % 6), stop);
    if (i % 17 === 5) st[1] = 1; // already done: must not change
    dec.set(st, i * DECODE_STATE);
    tokens[i] = rand() % V;
    pos[i] = 10 + (rand() % 50);
    streams.set([rand(), n], 2 * i);
  }
  return { K, outBase, dec, tokens, pos, streams, rand };
}

describe.skipIf(!GPU)("decode.advance", () => {
  test("a window of 5 steps over 70 rows matches the reference buffer for buffer", async () => {
    const gpu = await gpuOrSkip();
    const k = await loadDecode(gpu);
    const R = 70;
    const K = 5;
    const V = 12; // few ids, so stop ids are drawn often
    const { outBase, dec, tokens, pos, streams, rand } = window(R, K, V, 9, 8); // a gap after the states is allowed
    const buf = (x: Uint32Array | Float32Array, name: string) => gpu.buffer(x, name);
    const g = { tokens: buf(tokens, "tokens"), pos: buf(pos, "pos"), streams: buf(streams, "streams"), dec: buf(dec, "dec") };
    const sampledB = gpu.buffer(R * 4, "sampled");
    const lpB = gpu.buffer(R * 4, "sampled-lp");
    let stopped = 0;
    try {
      for (let s = 0; s < K; s++) {
        const sampled = Uint32Array.from({ length: R }, () => rand() % V);
        const lp = Float32Array.from({ length: R }, () => -(rand() % 1000) / 100);
        gpu.write(sampledB, sampled);
        gpu.write(lpB, lp);
        const b = gpu.batch();
        k.advance(b, sampledB, lpB, g.tokens, g.pos, g.streams, g.dec, R, K, s, outBase);
        b.submit();
        advanceRef(sampled, lp, tokens, pos, streams, dec, R, K, s, outBase);
        expectClose(await gpu.readU32(g.dec), dec, TOL.exact.atol, TOL.exact.rtol, `dec after step ${s}`);
        expectClose(await gpu.readU32(g.tokens), tokens, TOL.exact.atol, TOL.exact.rtol, `tokens after step ${s}`);
        expectClose(await gpu.readU32(g.pos), pos, TOL.exact.atol, TOL.exact.rtol, `pos after step ${s}`);
        expectClose(await gpu.readU32(g.streams), streams, TOL.exact.atol, TOL.exact.rtol, `streams after step ${s}`);
      }
      for (let i = 0; i < R; i++) if (dec[i * DECODE_STATE + 1]) stopped++;
    } finally {
      for (const x of [...Object.values(g), sampledB, lpB]) x.destroy();
    }
    // The window exercised both outcomes.
    expect(stopped).toBeGreaterThan(R / 4);
    expect(stopped).toBeLessThan(R);
  });

  test("the reference: a stop id ends the row (appended, not fed); the budget ends it; done rows stay frozen", () => {
    const R = 3;
    const K = 2;
    const outBase = R * DECODE_STATE;
    const dec = new Uint32Array(outBase + R * K * 2);
    dec.set(rowState(0, 5, [7]), 0);
    dec.set(rowState(2, 3, []), DECODE_STATE);
    dec.set(rowState(1, 9, []), 2 * DECODE_STATE);
    dec[2 * DECODE_STATE + 1] = 1;
    const tokens = Uint32Array.of(1, 2, 3);
    const pos = Uint32Array.of(10, 20, 30);
    const streams = Uint32Array.of(100, 0, 200, 2, 300, 1);
    advanceRef(Uint32Array.of(7, 4, 5), Float32Array.of(-1, -2, -3), tokens, pos, streams, dec, R, K, 0, outBase);
    expect([...tokens]).toEqual([1, 2, 3]); // row 0 stopped on 7; row 1 hit its budget 3; row 2 was done
    expect([...pos]).toEqual([10, 20, 30]);
    expect([dec[0], dec[1], dec[DECODE_STATE], dec[DECODE_STATE + 1], dec[2 * DECODE_STATE]]).toEqual([1, 1, 3, 1, 1]);
    expect([dec[outBase], dec[outBase + 2 * K]]).toEqual([7, 4]);
    expect(new Float32Array(dec.buffer, (outBase + 1) * 4, 1)[0]).toBe(-1);
    const fresh = new Uint32Array(outBase + R * K * 2);
    fresh.set(rowState(0, 5, [7]), 0);
    advanceRef(Uint32Array.of(6, 0, 0), Float32Array.of(-1, 0, 0), tokens, pos, streams, fresh, 1, K, 1, outBase);
    expect([tokens[0], pos[0], streams[1], fresh[0], fresh[1], fresh[outBase + 2]]).toEqual([6, 11, 1, 1, 0, 6]);
  });

  test("bad shapes and too many stop ids are errors naming the field", async () => {
    expect(() => rowState(0, 4, Array.from({ length: MAX_STOP + 1 }, (_, i) => i))).toThrow(/stop ids/);
    const gpu = await gpuOrSkip();
    const k = await loadDecode(gpu);
    const small = gpu.buffer(16);
    const dec = gpu.buffer(4 * (DECODE_STATE + 4));
    try {
      const b = gpu.batch();
      expect(() => k.advance(b, small, small, small, small, small, dec, 1, 2, 2, DECODE_STATE)).toThrow(/step 2 outside/);
      expect(() => k.advance(b, small, small, small, small, small, dec, 1, 2, 0, 1)).toThrow(/outBase 1 overlaps/);
      expect(() => k.advance(b, small, small, small, small, small, dec, 1, 4, 0, DECODE_STATE)).toThrow(/dec binds/);
      expect(() => k.advance(b, small, small, small, small, small, dec, 5, 1, 0, 5 * DECODE_STATE)).toThrow(/binds/);
      b.submit();
    } finally {
      small.destroy();
      dec.destroy();
    }
  });

  const modes: [string, SampleOptions][] = [
    ["greedy", { temperature: 0, topK: 0, topP: 1, seed: 3 }],
    ["top-k + top-p", { temperature: 0.8, topK: 6, topP: 0.9, seed: 3 }],
    ["temperature", { temperature: 1.3, topK: 0, topP: 1, seed: 4 }],
  ];
  // [V, rows per dispatch (a split), the dtype of the next-embedding gather (null: none)]
  const configs: [number, number | undefined, Dtype | null][] = [
    [12, 64, "f32"],
    [2100, undefined, null],
  ];
  const cases: [string, SampleOptions, number, number | undefined, Dtype | null][] = modes.flatMap(([name, opts]) => configs.map(([V, split, g]) => [name, opts, V, split, g] as [string, SampleOptions, number, number | undefined, Dtype | null]));
  cases.push(["greedy", modes[0][1], 300, undefined, "f16"]);
  for (const [name, opts, V, rowsPerDispatch, gather] of cases) {
    const what = `${name}, V ${V}${rowsPerDispatch ? ", split in dispatches of 64 rows" : ""}${gather ? `, next embeddings (${gather})` : ""}`;
    test.skipIf(gather === "f16" && !F16)(`sample with the advance fused = sample then advance${gather ? " then gather" : ""}, bit for bit (${what})`, async () => {
      const gpu = await gpuOrSkip();
      const fused = await loadSampler(gpu, gather ? { gather, rowsPerDispatch } : { decode: true, rowsPerDispatch });
      const plain = await loadSampler(gpu, { rowsPerDispatch });
      const adv = await loadDecode(gpu);
      const emb = gather ? await loadEmbedding(gpu, gather) : null;
      const R = 70;
      const H = 40;
      const w = window(R, 3, Math.min(V, 12), 21 + V);
      const rand = lcg(5 + V);
      // Few distinct values, so ties and stop ids come up; a row of -inf-free logits.
      const logits = Float32Array.from({ length: R * V }, () => ((rand() % 9) - 4) * 0.75 + (V > 12 ? (rand() % 1000) / 500 : 0));
      const logitsB = gpu.buffer(logits, "logits");
      const table = Float32Array.from({ length: V * H }, () => (rand() % 2001) / 1000 - 1);
      const tableB = gpu.buffer(gather === "f16" ? f32ToF16Bits(table) : table, "embedding");
      const xBytes = R * H * (gather === "f16" ? 2 : 4);
      const sides = [0, 1].map((j) => ({
        tokOut: gpu.buffer(R * 4, `tok${j}`),
        lpOut: gpu.buffer(R * 4, `lp${j}`),
        tokens: gpu.buffer(w.tokens, `tokens${j}`),
        pos: gpu.buffer(w.pos, `pos${j}`),
        streams: gpu.buffer(w.streams, `streams${j}`),
        dec: gpu.buffer(w.dec, `dec${j}`),
        x: gpu.buffer(xBytes, `x${j}`),
      }));
      // The CPU reference, step by step: sampleRef, then advanceRef.
      const ref = { tokens: w.tokens.slice(), pos: w.pos.slice(), streams: w.streams.slice(), dec: w.dec.slice() };
      try {
        for (let s = 0; s < w.K; s++) {
          const [f, p] = sides;
          const b = gpu.batch();
          const embed = gather ? { table: tableB, x: f.x, H } : undefined;
          fused.sample(b, logitsB, f.tokOut, f.lpOut, R, V, opts, f.streams, { tokens: f.tokens, pos: f.pos, dec: f.dec, K: w.K, s, outBase: w.outBase, embed });
          plain.sample(b, logitsB, p.tokOut, p.lpOut, R, V, opts, p.streams);
          adv.advance(b, p.tokOut, p.lpOut, p.tokens, p.pos, p.streams, p.dec, R, w.K, s, w.outBase);
          emb?.gather(b, p.tokens, tableB, p.x, R, H, 0, V);
          b.submit();
          for (const key of ["tokens", "pos", "streams", "dec", ...(gather ? ["x" as const] : [])] as const) {
            const [got, want] = await Promise.all([gpu.readU32(f[key]), gpu.readU32(p[key])]);
            expectClose(got, want, TOL.exact.atol, TOL.exact.rtol, `${key} after step ${s}`);
          }
          const r = sampleRef(logits, R, V, opts, ref.streams);
          advanceRef(r.tokens, r.logp, ref.tokens, ref.pos, ref.streams, ref.dec, R, w.K, s, w.outBase);
          expectClose(await gpu.readF32(p.lpOut), r.logp, TOL.sample_logp.atol, TOL.sample_logp.rtol, `logp vs reference after step ${s}`);
          if (opts.temperature === 0) {
            // Greedy draws nothing: the reference agrees exactly on every integer (the log-prob bits in dec aside).
            const dec = await gpu.readU32(f.dec);
            for (let i = 0; i < R * w.K; i++) dec[w.outBase + 2 * i + 1] = ref.dec[w.outBase + 2 * i + 1];
            expectClose(dec, ref.dec, TOL.exact.atol, TOL.exact.rtol, `dec vs reference after step ${s}`);
            expectClose(await gpu.readU32(f.tokens), ref.tokens, TOL.exact.atol, TOL.exact.rtol, `tokens vs reference after step ${s}`);
          }
        }
        // Both outcomes came up: some rows stopped, some still run.
        const dec = await gpu.readU32(sides[0].dec);
        const done = Array.from({ length: R }, (_, i) => dec[i * DECODE_STATE + 1]).filter(Boolean).length;
        expect(done).toBeGreaterThan(0);
        expect(done).toBeLessThan(R);
      } finally {
        logitsB.destroy();
        tableB.destroy();
        for (const side of sides) for (const x of Object.values(side)) x.destroy();
      }
    });
  }

  test("a fused advance needs a sampler loaded for decode, and checks its window", async () => {
    const gpu = await gpuOrSkip();
    const small = gpu.buffer(64);
    const dec = gpu.buffer(4 * (DECODE_STATE + 4));
    try {
      const plain = await loadSampler(gpu);
      const fused = await loadSampler(gpu, { decode: true });
      const greedy = { temperature: 0, topK: 0, topP: 1, seed: 0 };
      const t = (s: number, outBase: number) => ({ tokens: small, pos: small, dec, K: 2, s, outBase });
      const b = gpu.batch();
      expect(() => plain.sample(b, small, small, small, 1, 4, greedy, small, t(0, DECODE_STATE))).toThrow(/decode: true/);
      expect(() => fused.sample(b, small, small, small, 1, 4, greedy, small, { ...t(0, DECODE_STATE), embed: { table: small, x: small, H: 2 } })).toThrow(/gather: dtype/);
      expect(() => fused.sample(b, small, small, small, 1, 4, greedy, small, t(2, DECODE_STATE))).toThrow(/step 2 outside/);
      expect(() => fused.sample(b, small, small, small, 1, 4, greedy, small, t(0, 1))).toThrow(/outBase 1 overlaps/);
      b.submit();
    } finally {
      small.destroy();
      dec.destroy();
    }
  });
});
