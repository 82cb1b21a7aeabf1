// Matrix product on the GPU's matrix units (tensor cores) through Dawn's
// chromium_experimental_subgroup_matrix: C[m, n] = sum_k A[m,k]·W[n,k].
// Legend: M rows (tokens), N output features, K input features.
//   A [M, K]  row-major f16
//   W [N, K]  row-major f16 (HF Linear weight [out, in])
//   C         f32, row m's outputs at C[m*ldc + n]
// f16 x f16 products accumulated in f32 by the matrix units.
//
// Experimental and out of the default path: compiled only when the adapter
// reports an f16 -> f32 subgroup-matrix configuration (SM x SK left, SK x SN
// right), which needs Dawn's allow_unsafe_apis toggle (SIRI_EXPERIMENTAL=1).
// scripts/gpu-check.sh verifies it against the reference and times it
// beside the register-tiled kernel (kernels/matmul.wgsl `tiled`).
//
// A workgroup holds WGM x WGN subgroups and computes a BM x BN tile of C
// (BM = WGM·TM·SM, BN = WGN·TN·SN); each subgroup owns TM x TN result
// fragments. Per K stage of BK = KF·SK, the workgroup stages A's and W's
// slices in shared memory (zero-padded past M, N, K), then every subgroup
// loads its left fragments (A rows, row-major) and right fragments (W rows
// read as K x N column-major: element [k][n] at n·BK + k) and multiplies.
// The results go through shared memory so the edges of C are written with
// bounds checks (a fragment store into C itself could not be clipped).
//
// Compile-time constants: SM, SN, SK (the configuration), SG (the adapter's
// largest subgroup: the workgroup's x size must be a multiple of it), WGM,
// WGN, TM, TN, KF.

enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// Fragment offsets depend on subgroup_id, which the analysis cannot prove
// subgroup-uniform; it is (one value per subgroup), so the check is off.
diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);

struct Params {
  M: u32,
  N: u32,
  K: u32,
  ldc: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> A: array<f16>;
@group(0) @binding(2) var<storage, read> W: array<f16>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

const SM = {{SM}}u;
const SN = {{SN}}u;
const SK = {{SK}}u;
const SG = {{SG}}u;
const WGM = {{WGM}}u;
const WGN = {{WGN}}u;
const TM = {{TM}}u;
const TN = {{TN}}u;
const KF = {{KF}}u;
const BM = WGM * TM * SM;
const BN = WGN * TN * SN;
const BK = KF * SK;
const NT = SG * WGM * WGN;

alias Left = subgroup_matrix_left<f16, SK, SM>;
alias Right = subgroup_matrix_right<f16, SN, SK>;
alias Acc = subgroup_matrix_result<f32, SN, SM>;

var<workgroup> As: array<f16, BM * BK>; // [BM][BK]
var<workgroup> Ws: array<f16, BN * BK>; // [BN][BK]
var<workgroup> Cs: array<f32, BM * BN>; // [BM][BN]

@compute @workgroup_size(NT)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
  @builtin(subgroup_id) sg: u32,
) {
  let m0 = wg.y * BM;
  let n0 = wg.x * BN;
  let fm = (sg / WGN) * TM * SM; // this subgroup's first row in the tile
  let fn_ = (sg % WGN) * TN * SN; // and first column
  var acc: array<Acc, TM * TN>;
  for (var i = 0u; i < TM * TN; i++) {
    acc[i] = Acc();
  }
  for (var k0 = 0u; k0 < P.K; k0 += BK) {
    for (var i = li; i < BM * BK; i += NT) {
      let m = m0 + i / BK;
      let k = k0 + i % BK;
      var v = 0.0h;
      if (m < P.M && k < P.K) {
        v = A[m * P.K + k];
      }
      As[i] = v;
    }
    for (var i = li; i < BN * BK; i += NT) {
      let n = n0 + i / BK;
      let k = k0 + i % BK;
      var v = 0.0h;
      if (n < P.N && k < P.K) {
        v = W[n * P.K + k];
      }
      Ws[i] = v;
    }
    workgroupBarrier();
    for (var kf = 0u; kf < KF; kf++) {
      var left: array<Left, TM>;
      for (var tm = 0u; tm < TM; tm++) {
        left[tm] = subgroupMatrixLoad<Left>(&As, (fm + tm * SM) * BK + kf * SK, false, BK);
      }
      for (var tn = 0u; tn < TN; tn++) {
        let right = subgroupMatrixLoad<Right>(&Ws, (fn_ + tn * SN) * BK + kf * SK, true, BK);
        for (var tm = 0u; tm < TM; tm++) {
          acc[tm * TN + tn] = subgroupMatrixMultiplyAccumulate(left[tm], right, acc[tm * TN + tn]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var tm = 0u; tm < TM; tm++) {
    for (var tn = 0u; tn < TN; tn++) {
      subgroupMatrixStore(&Cs, (fm + tm * SM) * BN + fn_ + tn * SN, acc[tm * TN + tn], false, BN);
    }
  }
  workgroupBarrier();
  for (var i = li; i < BM * BN; i += NT) {
    let m = m0 + i / BN;
    let n = n0 + i % BN;
    if (m < P.M && n < P.N) {
      C[m * P.ldc + n] = Cs[i];
    }
  }
}
