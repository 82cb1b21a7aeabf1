/**
 * f16 operands in f32 kernels: mixed-precision training keeps activations,
 * gradients and accumulators in f32 and rounds every operand of a matrix
 * product (matmul, its backward, training attention) to f16 as it is loaded,
 * as a kernel with f16 inputs and f32 accumulation would see them. An
 * operand beyond f16's range becomes ±Inf, as an f16 store overflows, so a
 * loss scale that is too large shows up as a non-finite gradient (the
 * loss scaler's skip) instead of being clamped away.
 *
 * The WGSL helper is shared text: `rnd` (f32), `rnd4` (vec4<f32>). With
 * f16 operands off, RND/RNDU are "" and `{{RND}}(x)` is just `(x)`.
 */

/** Template constants: ENABLE (f16 needed by the helper), RND_FN (the helper's text), RND, RNDU (the unit's function). */
export function operandConstants(f16Operands: boolean, vec4 = false): { RND_FN: string; RND: string; RNDU: string } {
  if (!f16Operands) return { RND_FN: "", RND: "", RNDU: "" };
  return { RND_FN, RND: "rnd", RNDU: vec4 ? "rnd4" : "rnd" };
}

// Rounded with integer operations on the f32 bits, not f32(f16(x)): a shader
// compiler may fold that pair of conversions away (Mesa's lavapipe does).
// Normal range: round the mantissa to 10 bits, ties to even; below 2^-14 (f16
// subnormals): to a multiple of 2^-24 (WGSL's round() is ties to even);
// |x| >= 65520 (rounds past 65504): the product with 3e38 overflows to ±Inf at
// run time, and NaN stays NaN.
const RND_FN = `// An f16 operand: x rounded to the nearest f16 (ties to even), ±Inf past f16's range.
fn rnd(x: f32) -> f32 {
  let ax = abs(x);
  if (!(ax < 65520.0)) { return x * 3.0e38; }
  if (ax < 6.103515625e-5) { return sign(x) * round(ax * 16777216.0) / 16777216.0; }
  let b = bitcast<u32>(x);
  return bitcast<f32>((b + 0xfffu + ((b >> 13u) & 1u)) & 0xffffe000u);
}
fn rnd4(x: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(rnd(x.x), rnd(x.y), rnd(x.z), rnd(x.w));
}`;
