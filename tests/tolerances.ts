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
  f16_matmul_f32out: { atol: 1e-4, rtol: 1e-3, why: "f16 inputs (exact in the reference) with f32 accumulation and f32 output (LM-head logits): same as f32_matmul" },
  f16_matmul: { atol: 1e-2, rtol: 2e-2, why: "f16 inputs/outputs with f32 accumulation; output rounding dominates" },
  attention_f32: { atol: 2e-6, rtol: 1e-4, why: "attention: hd-long f32 dot products, online-softmax rescaling and sums over up to ~4k keys in tile order vs an f64 two-pass reference (measured max abs 1.5e-7)" },
  attention_f32_16k: { atol: 4e-6, rtol: 2e-4, why: "attention_f32 at 16K keys (gpu-check only): 4x the keys of attention_f32's measured range, so its bounds doubled (error ~sqrt(keys)); not yet measured on hardware" },
  attention_f16: { atol: 5e-4, rtol: 2e-3, why: "attention with f16 q/k/v (exact in the reference), f32 accumulation, output rounded once to f16: half an ulp of |out| <= 1 is 2.4e-4 (measured 2.4e-4)" },
  attention_f32_large_scores: { atol: 1e-4, rtol: 1e-3, why: "attention with scores ~1e3: an f32 score's rounding (~|s|·eps·sqrt(hd) ~ 1e-4) shifts softmax weights by that relative amount (measured 2.3e-5)" },
  attention_f16_large_scores: { atol: 5e-4, rtol: 4e-3, why: "as attention_f32_large_scores plus the f16 output rounding (measured 2.4e-4)" },
  // Small Qwen2 forward kernels (tests/kernels_basic.test.ts).
  rmsnorm_f32: { atol: 1e-6, rtol: 1e-5, why: "f32 sum of up to 8960 squares (tree order vs f64), one rsqrt, two products: a few f32 ulp relative" },
  rmsnorm_f16: { atol: 1e-3, rtol: 1e-3, why: "f32 math on f16 inputs (exact in the reference), one rounding of the output to f16 (rel 4.9e-4)" },
  rope_f32: { atol: 2e-6, rtol: 1e-5, why: "angle bit-identical to HF's f32 angle; Cody-Waite reduction to [-pi, pi] adds ~1.2e-7 rad, sin/cos a few ulp, times |x| <= 1" },
  rope_attention_f32: { atol: 1e-5, rtol: 1e-4, why: "RoPE (rope_f32: q and k off by ~1e-6 of |x| <= ~3) then attention (attention_f32) over the rotated q and k: scores of hd-long dots shift by ~1e-6·sqrt(hd)·scale, output by that times |v| <= ~3" },
  rope_attention_f16: { atol: 4e-3, rtol: 4e-3, why: "as rope_attention_f32, but q and the token's own k are rounded to f16 after the rotation (rel 4.9e-4 each, a rounding may land on the other side of the reference's), then the output is rounded to f16 (attention_f16)" },
  rope_f16: { atol: 1e-3, rtol: 1e-3, why: "as rope_f32, plus rounding the rotated value to f16 (rel 4.9e-4, |x| <= 1)" },
  elementwise_f32: { atol: 1e-6, rtol: 1e-5, why: "one exp and a divide (silu) or one add, f32; GPU exp differs by a few ulp" },
  elementwise_f16: { atol: 1e-4, rtol: 1e-3, why: "f32 math on f16 inputs (exact in the reference), one rounding of the output to f16 (rel 4.9e-4)" },
  logprob: { atol: 2e-4, rtol: 1e-5, why: "f32 log-sum-exp over up to 50000 terms (online rescaling, tree merge) vs f64; log S ~ 11 has ulp 1e-6, summation error ~1e-5 relative" },
  sample_logp: { atol: 1e-5, rtol: 1e-5, why: "sampler logp = (l - max)·(1/T) - log Z: f32 sum of up to 151936 exps (tree order vs f64), 1/T rounded to f32, |logp| <= ~40 so a few ulp ~ 1e-5" },
  // Optimiser and loss kernels (tests/kernels_train.test.ts).
  adamw_f32: { atol: 1e-7, rtol: 1e-5, why: "one AdamW step from the same state: f32 moments (two products and a sum each), sqrt and divide; a few ulp of each value, 1e-7 absolute for moments that nearly cancel" },
  adamw_closed_form: { atol: 1e-6, rtol: 2e-6, why: "up to 5 f32 steps vs the f64 closed form: each step rounds |p| <= ~4 to f32 (half-ulp 2.4e-7) and the f32 decay factor 1 - lr·wd is off by <= 3e-8" },
  adamw_multi: { atol: 1e-7, rtol: 2e-5, why: "adamw_f32 with the clip factor min(1, max/(norm + 1e-6)) taken on the GPU from the f32 sum of squares: off by up to half of grad_norm_sq's relative error, which scales g and m by that and v by twice that" },
  grad_norm_sq: { atol: 0, rtol: 1e-5, why: "sum of ~2e4 f32 squares (fixed 4096-element tree slices, then compensated partial sums) vs f64: ~log2(4096)·eps relative" },
  loss_policy_grad: { atol: 1e-8, rtol: 5e-6, why: "dlogp = -A·r/denom: the f32 log-ratio new - old is off by half an ulp of |logp| <= 9 (5e-7), so r by 5e-7 relative, plus exp's few ulp" },
  loss_policy_fd: { atol: 1e-7, rtol: 1e-5, why: "as loss_policy_grad vs central differences (h = 1e-4, no kink crossed): f64 rounding of the difference ~1e-16·|loss|/h" },
  policy_ref_vs_verl: { atol: 1e-15, rtol: 1e-7, why: "policyLoss (f64, gradient stored as f32: rel 6e-8) vs verl's formula op by op in f64 on the same f32 inputs: the same arithmetic, only the f32 storage of the gradient differs" },
  loss_stats: { atol: 1e-5, rtol: 1e-5, why: "f32 sums of ~700 terms of size <= ~4 in tree order vs f64 (~log2(700)·eps·Σ|term|); the loss may cancel to near 0, hence atol" },
  loss_lsm_backward: { atol: 1e-6, rtol: 1e-5, why: "p = exp(z - lse) in f32: lse off by a few ulp of |lse| (<= ~100 for logits scaled by 60) shifts p by ~1e-6 relative; outputs |dlogp|/τ·|δ - p| <= ~2 (measured max abs 2.1e-7; tiny p may underflow to 0, hence atol)" },
  loss_lsm_backward_fd: { atol: 2e-6, rtol: 1e-5, why: "as loss_lsm_backward, plus central-difference truncation h²/6·|third derivative| ~ 3e-7 (h = 1e-3, τ = 0.7)" },
};

// Whole model (engine tests).
TOL.model_logits_f32 = {
  atol: 1e-4,
  rtol: 1e-3,
  why: "two-layer tiny Qwen2 in f32 vs the f64-accumulating CPU reference: errors of matmul, attention and norms compound over layers; the issue's bar is 1e-3 relative",
};
TOL.model_logits_f16 = {
  atol: 3e-2,
  rtol: 5e-2,
  why: "f16 weights and activations (11-bit mantissa) rounded at every op across two layers, f32 accumulation",
};
TOL.train_model_fd = {
  atol: 2e-3, // times the tensor's largest |gradient|
  rtol: 5e-2,
  why: "whole-model gradient (GPU, f32) vs central differences (h = 1e-2) of the f64-accumulating CPU reference: truncation O(h²·f''') ~1e-4 relative plus f32 logit rounding / h; 5% relative with an absolute floor of 0.2% of the tensor's largest gradient for near-zero entries",
};

// Matmul backward (tests/kernels_matmul_grad.test.ts).
TOL.matmul_grad_f32 = {
  atol: 1e-5,
  rtol: 1e-4,
  why: "matmul backward, f32: sums of up to 70 products (|terms| <= 1) in tile order with fma vs f64, plus one add onto an accumulated value |v| <= ~6: a few ulp of 6 (measured max abs 3.8e-6)",
};
TOL.matmul_grad_fd = {
  atol: 1e-5,
  rtol: 1e-4,
  why: "kernel gradients vs central differences (h = 1/16) of L = Σ r·y through the f32 CPU forward: L is linear in each element, so no truncation error; only the f32 rounding of the 12 outputs y (~6e-8·|y| each, |y| <= ~3) over 2h = 1/8 remains, ~1e-6 (measured max abs 9.5e-7)",
};

// Training attention (kernels/attention.wgsl train_*, tests/kernels_attention_train.test.ts).
TOL.attention_train_f32 = { atol: 2e-6, rtol: 1e-4, why: "as attention_f32: hd-long f32 dots, online softmax over up to 70 keys in tile order vs f64 (measured max abs 1.4e-6 with scores ~30, 1.8e-7 otherwise)" };
TOL.attention_train_lse = { atol: 2e-6, rtol: 1e-6, why: "f32 running max + log of an f32 sum of up to 70 exps: a few ulp of |lse| <= ~32 (measured 3.8e-6 at lse 32, 4.8e-7 at lse 4)" };
TOL.attention_train_f16 = { atol: 2e-5, rtol: 1e-3, why: "f16 inputs (exact in the reference), f32 math, output rounded once to f16: half-ulp rel 4.9e-4 (measured 4.9e-4)" };
TOL.attention_train_bwd_f32 = { atol: 1e-5, rtol: 1e-4, why: "backward: P recomputed as exp(s - lse) in f32, sums of up to 70 keys (dq) or 70·G rows (dk, dv) of products of O(1) terms, with cancellation around D (measured max abs 3.3e-6 at |grad| ~5, 2.2e-6 at scores ~30)" };
TOL.attention_train_bwd_f16 = { atol: 5e-5, rtol: 1e-3, why: "f16 inputs (exact in the reference), f32 math, each gradient rounded once to f16: half-ulp rel 4.9e-4, plus the f32 error of attention_train_bwd_f32 (measured ~1e-5 on near-zero dq with scores ~30)" };
TOL.attention_train_fd = { atol: 3e-5, rtol: 1e-3, why: "backward vs central differences (step h = 1e-2) of the f32 forward, L = sum(w·out) summed in f64: truncation h^2/6·|L'''| ~ 2e-5·|L'''| (relative, hence rtol) and f32 rounding of out ~1e-7 over ~70 terms / (2h) ~ 1e-5 absolute (measured max abs 7.9e-6 GPU, 3.8e-6 f64 reference)" };

// Backward kernels of the small ops (tests/kernels_backward_basic.test.ts), f32.
TOL.rmsnorm_backward_f32 = {
  atol: 1e-5,
  rtol: 1e-4,
  why: "rmsnorm backward: f32 sums over dim (tree order) and over rows (32-row chunks, then chunks in order) vs f64; dx = inv·(g − x̂·mean(g·x̂)) cancels, so its error follows |inv·g| (up to ~130 on rows of RMS 1e-2), not |dx| (measured max abs 2.3e-5 at |dx| 126, 6e-6 at dim 1 where x̂² = 1 cancels fully)",
};
TOL.rope_backward_f32 = {
  atol: 2e-6,
  rtol: 1e-5,
  why: "as rope_f32: the same f32 angle and Cody-Waite reduction (1.2e-7 rad), sin/cos a few ulp, times |dy| <= ~1.4 (measured max abs 1.8e-7)",
};
TOL.swiglu_backward_f32 = {
  atol: 1e-6,
  rtol: 1e-5,
  why: "one exp, a divide and four products per element in f32; GPU exp differs by a few ulp (measured max abs 8.3e-7 at |dgate| ~2; relative 1e-4 only on values below 1e-6)",
};
TOL.embedding_backward_f32 = {
  atol: 1e-6,
  rtol: 5e-5,
  why: "per row an f32 sum of its tokens' dy in token order, then one add onto |dTable| <= ~5; sums of up to ~13000 terms (2-D grid test) drift ~sqrt(n)·eps relative to the sum (measured 6.5e-6 relative there, 9.5e-7 absolute elsewhere)",
};
// Finite-difference checks: central differences (L(x+h) − L(x−h)) / (f32(x+h) − f32(x−h)),
// h = 1e-2, of L = Σ r·y with y from the f32 forward (outputs rounded to f32), vs the GPU backward.
TOL.fd_rmsnorm_f32 = {
  atol: 2e-4,
  rtol: 2e-3,
  why: "truncation h²/6·|L'''| with |L'''| ~ |L'|/rms² for rows of RMS ~0.9..5: up to ~1e-3 relative (hence rtol); rounding: the row's dim <= 37 outputs |y| <= ~5 rounded to f32 (half-ulp 2.4e-7) twice over 2h = 2e-2: <= ~1e-4 absolute at worst, ~1e-5 typically (measured max abs 6.3e-5, max rel 4.9e-4)",
};
TOL.fd_linear_f32 = {
  atol: 3e-5,
  rtol: 1e-5,
  why: "RoPE and the embedding gather are linear: no truncation error, only the f32 rounding of the few outputs one input feeds (2 for RoPE, the <= 5 tokens sharing an id) of |y| <= ~2.5, half-ulp 1.2e-7, twice, over 2h = 2e-2: <= ~3e-5 (measured max abs 2e-6)",
};
TOL.fd_elementwise_f32 = {
  atol: 1e-4,
  rtol: 1e-3,
  why: "SwiGLU, one output per input: truncation h²/6·|silu'''(g)·up| <= ~2e-5 for |up| <= 2, plus the rounding of |y| <= ~8 (half-ulp 4.8e-7) twice over 2h = 2e-2: <= 5e-5 (measured max abs 1.05e-5)",
};
// Experiment statistics (tests/experiment_pareto.test.ts).
TOL.stats_f64 = {
  atol: 1e-12,
  rtol: 1e-12,
  why: "means, standard deviations and chords of a handful of f64 values against hand computations: a few f64 roundings (~1e-16 relative)",
};
TOL.optimizer_trajectory = {
  atol: 1e-5,
  rtol: 0,
  why: "a tiny model's weights after steps 2-4 of clipped AdamW (lr 1e-2), multi-tensor vs per-tensor: step 1 differs only by the clip factor's ulps (measured 6e-8), but each later step's gradients come from weights that differ by those ulps, and Adam's m/√v turns a relative change of a near-zero gradient into a change of up to lr per step (measured max abs 1.2e-6, 2.2e-6, 3.1e-6 after steps 2, 3, 4, i.e. <= 1e-3·lr)",
};

// Mixed-precision training (tests/train_mixed.test.ts): whole-model gradients in f16-mixed vs f32,
// per tensor: the norm-wise relative error ‖g16 − g32‖ / ‖g32‖ <= rel, and every element within
// atol·max|g32| + rtol·|g32|. f16 operands carry a relative rounding of 4.9e-4 each, a product two,
// and the error compounds through the layers' backward (measured on lavapipe: norm-wise 9e-4 on the
// tiny models, 1.7e-3 at 0.5B layer shapes; see the test's log line).
export const MIXED_GRADS = { rel: 1e-2, atol: 1e-2, rtol: 5e-2 };
