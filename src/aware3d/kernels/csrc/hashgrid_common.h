// Shared index arithmetic of the multiresolution hash encoding (Mueller et al. 2022, Sec. 3).
// Used by the C++ and the CUDA kernels so both index the table exactly like the PyTorch reference.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define A3D_HD __host__ __device__ __forceinline__
#else
#define A3D_HD inline
#endif

namespace aware3d {

// Spatial hash primes of the paper (pi_1 = 1 keeps x coherent in memory).
constexpr uint32_t kPrime1 = 2654435761u;
constexpr uint32_t kPrime2 = 805459861u;

struct LevelInfo {
  uint32_t res;      // N_l: vertices 0..N_l along each axis
  uint32_t stride1;  // dense levels: N_l + 1
  uint32_t stride2;  // dense levels: (N_l + 1)^2
  uint32_t dense;    // 1 when (N_l + 1)^3 <= T: one table row per vertex, no hashing
};

// Table row of the grid vertex (ix, iy, iz). uint32 arithmetic wraps exactly like the paper's code;
// `pow2_mask` is T - 1 when T is a power of two (then "mod T" is a mask), otherwise 0.
A3D_HD uint32_t corner_row(uint32_t ix, uint32_t iy, uint32_t iz, const LevelInfo& lv, uint32_t T,
                           uint32_t pow2_mask) {
  if (lv.dense) return ix + iy * lv.stride1 + iz * lv.stride2;
  uint32_t h = ix ^ (iy * kPrime1) ^ (iz * kPrime2);
  return pow2_mask ? (h & pow2_mask) : (h % T);
}

// Gradient rule of the clamp of x to [0, 1] (the reference's clamp_unit in hashgrid.py): the
// x-gradient passes where 0 <= x <= 1, the faces x = 0 and x = 1 included, and is 0 outside (and
// for NaN). Written out here so the CPU and CUDA kernels share it, and so it does not follow
// torch.clamp's gradient at the bounds, which changed between torch versions.
template <typename scalar_t>
A3D_HD bool unit_grad_passes(scalar_t v) {
  return v >= scalar_t(0) && v <= scalar_t(1);
}

}  // namespace aware3d
