/**
 * Every kernel's test tolerance, in one place, with the reason.
 * A check passes when |gpu - ref| <= atol + rtol * |ref| for every element
 * (NaN always fails). Add one entry per kernel (and dtype) here.
 */
export interface Tolerance {
  atol: number;
  rtol: number;
  why: string;
}

export const TOL: Record<string, Tolerance> = {
  exact: { atol: 0, rtol: 0, why: "integer or copy ops: bit-exact" },
  f32_elementwise: { atol: 1e-6, rtol: 1e-5, why: "one or two f32 roundings per element; GPU transcendental functions differ by a few ulp" },
  f32_reduction: { atol: 1e-5, rtol: 1e-4, why: "sums of up to a few thousand f32 terms in a different order than the CPU" },
  f32_matmul: { atol: 1e-4, rtol: 1e-3, why: "K-length dot products (K <= 4096) in tiled order; error grows ~sqrt(K)·eps·|a||b|" },
  f16_elementwise: { atol: 2e-3, rtol: 1e-2, why: "f16 storage rounds each value to 11 significant bits (rel 4.9e-4), plus the op" },
  f16_matmul: { atol: 1e-2, rtol: 2e-2, why: "f16 inputs/outputs with f32 accumulation; output rounding dominates" },
};
