/**
 * f32 <-> IEEE half conversion on the CPU, for uploading f16 tensors and
 * reading them back. Round-to-nearest-even, subnormals, Inf and NaN kept.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** One f32 value to f16 bits (round to nearest, ties to even). */
export function f32ToF16Bit(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // Inf / NaN (quiet)
  const e = exp - 127 + 15; // rebias
  if (e >= 0x1f) return sign | 0x7c00; // overflow to Inf
  if (e <= 0) {
    // subnormal half (or zero): shift the full significand right, round to nearest even
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rem = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h; // a carry into the exponent field is the correct smallest normal
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // may carry into exponent, up to Inf: correct
  return sign | h;
}

/** f16 bits to an f32 value (exact). */
export function f16BitToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function f32ToF16Bits(a: Float32Array): Uint16Array {
  const out = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = f32ToF16Bit(a[i]);
  return out;
}

export function f16BitsToF32(a: Uint16Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = f16BitToF32(a[i]);
  return out;
}

/** Round every value to the nearest f16 (what an f16 buffer holds). */
export function roundToF16(a: Float32Array): Float32Array {
  return f16BitsToF32(f32ToF16Bits(a));
}
