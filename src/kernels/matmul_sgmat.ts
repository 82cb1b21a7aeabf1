/**
 * Matrix product on the matrix units (kernels/matmul_sgmat.wgsl):
 * C [M, N] f32 = A [M, K] f16 · W [N, K]ᵀ f16, accumulated in f32.
 *
 * Experimental, out of the default path: it needs Dawn's
 * `chromium-experimental-subgroup-matrix` feature (Vulkan's cooperative
 * matrices on NVIDIA; Dawn exposes it only with SIRI_EXPERIMENTAL=1, the
 * allow_unsafe_apis toggle) and an f16 -> f32 configuration on the adapter.
 * The software adapter has none, so only scripts/gpu-check.sh on a GPU
 * verifies it (against `matmulRef` on f16-rounded inputs) and times it
 * beside the register-tiled kernel. Reference: `matmulRef` in ./matmul.ts.
 */
import type { Batch, Binding, Gpu, Kernel } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import type { SubgroupMatrixConfig } from "../gpu/device.ts";

/** Tiling around one configuration: subgroups per workgroup (WGM x WGN), fragments per subgroup (TM x TN), K fragments per stage. */
export interface SgmatTiling {
  WGM: number;
  WGN: number;
  TM: number;
  TN: number;
  KF: number;
}

export const DEFAULT_SGMAT_TILING: SgmatTiling = { WGM: 2, WGN: 2, TM: 2, TN: 2, KF: 2 };

/**
 * The configuration the kernel uses: f16 inputs, f32 results; of those, the
 * largest M·N·K (fewest fragment operations per tile), the first listed on a tie.
 */
export function pickSgmatConfig(configs: readonly SubgroupMatrixConfig[]): SubgroupMatrixConfig | null {
  let best: SubgroupMatrixConfig | null = null;
  for (const c of configs) {
    if (c.componentType !== "f16" || c.resultComponentType !== "f32") continue;
    if (!best || c.M * c.N * c.K > best.M * best.N * best.K) best = c;
  }
  return best;
}

/** Workgroup tile and shared memory of a configuration with a tiling. */
export function sgmatTile(c: SubgroupMatrixConfig, t: SgmatTiling, subgroupMax: number) {
  const BM = t.WGM * t.TM * c.M;
  const BN = t.WGN * t.TN * c.N;
  const BK = t.KF * c.K;
  return { BM, BN, BK, threads: subgroupMax * t.WGM * t.WGN, sharedBytes: 2 * (BM + BN) * BK + 4 * BM * BN };
}

/** Why the subgroup-matrix matmul cannot run on this adapter, or null when it can. */
export function sgmatUnavailable(gpu: Gpu): string | null {
  if (!gpu.features.f16) return "no shader-f16";
  if (!gpu.features.subgroupMatrix) {
    return "no chromium-experimental-subgroup-matrix (the adapter lacks it, or SIRI_EXPERIMENTAL=1 was not set)";
  }
  if (!pickSgmatConfig(gpu.adapter.subgroupMatrixConfigs)) {
    return `no f16 -> f32 subgroup-matrix configuration among ${JSON.stringify(gpu.adapter.subgroupMatrixConfigs)}`;
  }
  return null;
}

export interface MatmulSgmat {
  /** C [M, ldc] f32 (columns 0..N-1 written) = A [M, K] f16 · W [N, K]ᵀ f16. */
  matmul(b: Batch, a: Binding, w: Binding, c: Binding, M: number, N: number, K: number, ldc?: number): void;
  readonly config: SubgroupMatrixConfig;
  readonly tile: ReturnType<typeof sgmatTile>;
}

export async function loadMatmulSgmat(gpu: Gpu, tiling: SgmatTiling = DEFAULT_SGMAT_TILING): Promise<MatmulSgmat> {
  const why = sgmatUnavailable(gpu);
  if (why) throw new KernelError(`matmul_sgmat: not available on "${gpu.adapter.description}": ${why}`);
  const config = pickSgmatConfig(gpu.adapter.subgroupMatrixConfigs)!;
  const SG = gpu.adapter.subgroupMaxSize;
  const tile = sgmatTile(config, tiling, SG);
  if (tile.sharedBytes > gpu.limits.maxComputeWorkgroupStorageSize) {
    throw new KernelError(`matmul_sgmat: tile ${tile.BM}x${tile.BN}x${tile.BK} needs ${tile.sharedBytes} bytes of shared memory, over the adapter's ${gpu.limits.maxComputeWorkgroupStorageSize}`);
  }
  if (tile.threads > gpu.limits.maxComputeInvocationsPerWorkgroup) {
    throw new KernelError(`matmul_sgmat: ${tile.threads} threads per workgroup, over the adapter's ${gpu.limits.maxComputeInvocationsPerWorkgroup}`);
  }
  const kernel: Kernel = await gpu.kernel("matmul_sgmat", "main", { SM: config.M, SN: config.N, SK: config.K, SG, ...tiling });
  return {
    config,
    tile,
    matmul(b, a, w, c, M, N, K, ldc = N) {
      if (!(M > 0 && N > 0 && K > 0) || ldc < N) throw new KernelError(`matmul_sgmat: bad shape M ${M} N ${N} K ${K} ldc ${ldc}`);
      b.dispatch(kernel, {
        params: params().u32(M).u32(N).u32(K).u32(ldc),
        buffers: [a, w, c],
        groups: [Math.ceil(N / tile.BN), Math.ceil(M / tile.BM)],
        label: "matmul_sgmat",
      });
    },
  };
}
