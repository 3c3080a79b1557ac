// Multiresolution hash encoding on the GPU (CUDA twin of hashgrid_cpu.cpp, same index arithmetic
// from hashgrid_common.h). One thread per (point, level); the table gradient uses atomicAdd.
// Launches go through cuda_compat.h, so this file also compiles as C++ with a serial launcher
// (AWARE3D_CUDA_EMULATE; the tests run the kernels that way on machines without a GPU).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include <tuple>

#include "cuda_compat.h"
#include "hashgrid_common.h"

namespace aware3d {
namespace {

constexpr int kMaxLevels = 32;
constexpr int kThreads = 256;

struct Levels {
  LevelInfo lv[kMaxLevels];  // passed by value (kernel parameter space), no device copy needed
};

struct SetupCuda {
  Levels levels;
  uint32_t T = 0, mask = 0;
  int64_t L = 0, F = 0, N = 0;
};

// x and table on one GPU; resolutions on the host (L values read when launching: no
// device-to-host copy per call).
SetupCuda make_setup_cuda(const at::Tensor& x, const at::Tensor& table,
                          const at::Tensor& resolutions) {
  check_cuda_input("hash_encode (cuda)", "x", x);
  check_same_device("hash_encode (cuda)", "table", table, x.device());
  check_host_input("hash_encode (cuda)", "resolutions", resolutions);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3, "hash_encode: x must be (N, 3), got ", x.sizes());
  TORCH_CHECK(table.dim() == 3, "hash_encode: table must be (L, T, F), got ", table.sizes());
  TORCH_CHECK(x.scalar_type() == table.scalar_type(), "hash_encode: x and table dtypes differ");
  TORCH_CHECK(table.size(0) <= kMaxLevels, "hash_encode (cuda): at most ", kMaxLevels, " levels");
  TORCH_CHECK(resolutions.numel() == table.size(0), "hash_encode: one resolution per level");
  TORCH_CHECK(table.size(1) <= (int64_t(1) << 32), "hash_encode: T must fit in 32 bits");
  SetupCuda s;
  s.N = x.size(0);
  s.L = table.size(0);
  s.T = static_cast<uint32_t>(table.size(1));
  s.F = table.size(2);
  s.mask = (s.T & (s.T - 1)) == 0 ? s.T - 1 : 0;
  auto res = resolutions.to(at::kLong).contiguous();  // already on the host
  const int64_t* r = res.data_ptr<int64_t>();
  for (int64_t l = 0; l < s.L; ++l) {
    TORCH_CHECK(r[l] >= 1 && r[l] < (int64_t(1) << 24), "hash_encode: bad resolution ", r[l]);
    const uint64_t side = uint64_t(r[l]) + 1;
    LevelInfo lv;
    lv.res = static_cast<uint32_t>(r[l]);
    lv.stride1 = static_cast<uint32_t>(side);
    lv.stride2 = static_cast<uint32_t>(side * side);
    lv.dense = side * side * side <= uint64_t(s.T) ? 1u : 0u;
    s.levels.lv[l] = lv;
  }
  return s;
}

template <typename scalar_t>
__device__ __forceinline__ void locate_d(const scalar_t* p, uint32_t res, uint32_t* i,
                                         scalar_t* f) {
#pragma unroll
  for (int d = 0; d < 3; ++d) {
    scalar_t xd = p[d];
    xd = xd < scalar_t(0) ? scalar_t(0) : (xd > scalar_t(1) ? scalar_t(1) : xd);
    const scalar_t pos = xd * static_cast<scalar_t>(res);
    scalar_t fl = floor(pos);
    uint32_t id = static_cast<uint32_t>(fl);
    if (id > res - 1) {
      id = res - 1;
      fl = static_cast<scalar_t>(id);
    }
    i[d] = id;
    f[d] = pos - fl;
  }
}

template <typename scalar_t>
__device__ __forceinline__ void corners_d(const uint32_t* i, const scalar_t* f,
                                          const LevelInfo& lv, uint32_t T, uint32_t mask,
                                          uint32_t* row, scalar_t* w) {
  const scalar_t wx[2] = {scalar_t(1) - f[0], f[0]};
  const scalar_t wy[2] = {scalar_t(1) - f[1], f[1]};
  const scalar_t wz[2] = {scalar_t(1) - f[2], f[2]};
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    const int bx = c & 1, by = (c >> 1) & 1, bz = (c >> 2) & 1;
    row[c] = corner_row(i[0] + bx, i[1] + by, i[2] + bz, lv, T, mask);
    w[c] = wx[bx] * wy[by] * wz[bz];
  }
}

template <typename scalar_t>
__global__ void hash_forward_kernel(const scalar_t* __restrict__ x,
                                    const scalar_t* __restrict__ table, scalar_t* __restrict__ out,
                                    Levels levels, int64_t N, int64_t L, int64_t F, uint32_t T,
                                    uint32_t mask) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t l = blockIdx.y;
  if (n >= N) return;
  const LevelInfo lv = levels.lv[l];
  uint32_t i[3], row[8];
  scalar_t f[3], w[8];
  locate_d(x + 3 * n, lv.res, i, f);
  corners_d(i, f, lv, T, mask, row, w);
  const scalar_t* tl = table + l * int64_t(T) * F;
  scalar_t* o = out + n * L * F + l * F;
  for (int64_t k = 0; k < F; ++k) {
    scalar_t acc = 0;
#pragma unroll
    for (int c = 0; c < 8; ++c) acc += w[c] * tl[int64_t(row[c]) * F + k];
    o[k] = acc;
  }
}

template <typename scalar_t>
__global__ void hash_backward_table_kernel(const scalar_t* __restrict__ x,
                                           const scalar_t* __restrict__ gout,
                                           scalar_t* __restrict__ gtable, Levels levels, int64_t N,
                                           int64_t L, int64_t F, uint32_t T, uint32_t mask) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t l = blockIdx.y;
  if (n >= N) return;
  const LevelInfo lv = levels.lv[l];
  uint32_t i[3], row[8];
  scalar_t f[3], w[8];
  locate_d(x + 3 * n, lv.res, i, f);
  corners_d(i, f, lv, T, mask, row, w);
  scalar_t* gl = gtable + l * int64_t(T) * F;
  const scalar_t* g = gout + n * L * F + l * F;
  for (int64_t k = 0; k < F; ++k) {
    const scalar_t gk = g[k];
#pragma unroll
    for (int c = 0; c < 8; ++c) atomicAdd(gl + int64_t(row[c]) * F + k, w[c] * gk);
  }
}

template <typename scalar_t>
__global__ void hash_backward_x_kernel(const scalar_t* __restrict__ x,
                                       const scalar_t* __restrict__ table,
                                       const scalar_t* __restrict__ gout, scalar_t* __restrict__ gx,
                                       Levels levels, int64_t N, int64_t L, int64_t F, uint32_t T,
                                       uint32_t mask) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const scalar_t* p = x + 3 * n;
  scalar_t acc[3] = {0, 0, 0};
  for (int64_t l = 0; l < L; ++l) {
    const LevelInfo lv = levels.lv[l];
    const scalar_t* tl = table + l * int64_t(T) * F;
    const scalar_t* g = gout + n * L * F + l * F;
    uint32_t i[3];
    scalar_t f[3];
    locate_d(p, lv.res, i, f);
    const scalar_t wv[3][2] = {{1 - f[0], f[0]}, {1 - f[1], f[1]}, {1 - f[2], f[2]}};
    scalar_t dl[3] = {0, 0, 0};
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const int bit[3] = {c & 1, (c >> 1) & 1, (c >> 2) & 1};
      const uint32_t row = corner_row(i[0] + bit[0], i[1] + bit[1], i[2] + bit[2], lv, T, mask);
      const scalar_t* e = tl + int64_t(row) * F;
      scalar_t ge = 0;
      for (int64_t k = 0; k < F; ++k) ge += g[k] * e[k];
      dl[0] += ge * (bit[0] ? 1 : -1) * wv[1][bit[1]] * wv[2][bit[2]];
      dl[1] += ge * (bit[1] ? 1 : -1) * wv[0][bit[0]] * wv[2][bit[2]];
      dl[2] += ge * (bit[2] ? 1 : -1) * wv[0][bit[0]] * wv[1][bit[1]];
    }
#pragma unroll
    for (int d = 0; d < 3; ++d) acc[d] += dl[d] * static_cast<scalar_t>(lv.res);
  }
  // Faces x = 0 and x = 1 pass the gradient, outside gives 0 (unit_grad_passes, as on the CPU).
#pragma unroll
  for (int d = 0; d < 3; ++d) gx[3 * n + d] = unit_grad_passes(p[d]) ? acc[d] : scalar_t(0);
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

at::Tensor hash_encode_forward_cuda(const at::Tensor& x_, const at::Tensor& table_,
                                    const at::Tensor& resolutions) {
  check_cuda_input("hash_encode (cuda)", "x", x_);
  A3D_DEVICE_GUARD(x_.device());
  auto x = x_.contiguous();
  auto table = table_.contiguous();
  SetupCuda s = make_setup_cuda(x, table, resolutions);
  auto out = at::empty({s.N, s.L * s.F}, table.options());
  if (s.N == 0) return out;
  auto stream = A3D_STREAM();
  const dim3 grid(blocks_for(s.N), static_cast<unsigned>(s.L));
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "hash_encode_forward_cuda", [&] {
    A3D_LAUNCH(hash_forward_kernel<scalar_t>, grid, kThreads, stream)(
        x.data_ptr<scalar_t>(), table.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), s.levels,
        s.N, s.L, s.F, s.T, s.mask);
  });
  A3D_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor> hash_encode_backward_cuda(const at::Tensor& grad_out_,
                                                             const at::Tensor& x_,
                                                             const at::Tensor& table_,
                                                             const at::Tensor& resolutions,
                                                             bool need_table, bool need_x) {
  check_cuda_input("hash_encode (cuda)", "x", x_);
  check_same_device("hash_encode (cuda)", "grad_out", grad_out_, x_.device());
  A3D_DEVICE_GUARD(x_.device());
  auto x = x_.contiguous();
  auto table = table_.contiguous();
  auto gout = grad_out_.contiguous();
  SetupCuda s = make_setup_cuda(x, table, resolutions);
  TORCH_CHECK(gout.dim() == 2, "hash_encode: grad_out must be (N, L*F), got ", gout.sizes());
  TORCH_CHECK(gout.scalar_type() == table.scalar_type(), "hash_encode: grad_out dtype differs");
  TORCH_CHECK(gout.size(0) == s.N && gout.size(1) == s.L * s.F, "hash_encode: bad grad shape");
  at::Tensor gtable = need_table ? at::zeros_like(table) : at::empty({0}, table.options());
  at::Tensor gx = need_x ? at::empty_like(x) : at::empty({0}, x.options());
  if (s.N == 0) {
    if (need_x) gx.zero_();
    return {gtable, gx};
  }
  auto stream = A3D_STREAM();
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "hash_encode_backward_cuda", [&] {
    if (need_table) {
      const dim3 grid(blocks_for(s.N), static_cast<unsigned>(s.L));
      A3D_LAUNCH(hash_backward_table_kernel<scalar_t>, grid, kThreads, stream)(
          x.data_ptr<scalar_t>(), gout.data_ptr<scalar_t>(), gtable.data_ptr<scalar_t>(),
          s.levels, s.N, s.L, s.F, s.T, s.mask);
      A3D_LAUNCH_CHECK();
    }
    if (need_x) {
      A3D_LAUNCH(hash_backward_x_kernel<scalar_t>, blocks_for(s.N), kThreads, stream)(
          x.data_ptr<scalar_t>(), table.data_ptr<scalar_t>(), gout.data_ptr<scalar_t>(),
          gx.data_ptr<scalar_t>(), s.levels, s.N, s.L, s.F, s.T, s.mask);
      A3D_LAUNCH_CHECK();
    }
  });
  return {gtable, gx};
}

}  // namespace aware3d
