// The decode-advance kernel (kernels/decode.wgsl) against its CPU reference:
// a window of K steps over rows that stop at a stop id, at their budget, or
// were already done; every buffer compared exactly after every step.
import { describe, expect, test } from "bun:test";
import { advanceRef, DECODE_STATE, loadDecode, MAX_STOP, rowState } from "../src/kernels/decode.ts";
import { expectClose, gpuOrSkip, hasGpu } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();

/** A small deterministic generator of u32s. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
}

describe.skipIf(!GPU)("decode.advance", () => {
  test("a window of 5 steps over 70 rows matches the reference buffer for buffer", async () => {
    const gpu = await gpuOrSkip();
    const k = await loadDecode(gpu);
    const R = 70;
    const K = 5;
    const rand = lcg(9);
    const V = 12; // few ids, so stop ids are drawn often
    const outBase = R * DECODE_STATE + 8; // a gap after the states is allowed
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
});
