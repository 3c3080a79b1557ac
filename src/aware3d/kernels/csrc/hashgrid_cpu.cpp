// Multiresolution hash encoding on the CPU (C++/OpenMP): forward, and backward to the table and x.
//
// Layout: x (N, 3), table (L, T, F) row-major, out (N, L*F) with level-major features per point.
// Both passes walk level by level (see forward_impl for why). The table
// gradient is accumulated with one thread per level: no two threads write the same row, so it needs
// no atomics and the sum order is fixed (bitwise deterministic for a given thread count).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "hashgrid_common.h"

namespace aware3d {
namespace {

constexpr int64_t kBlock = 4096;  // points per parallel task

struct Setup {
  std::vector<LevelInfo> levels;
  uint32_t T = 0, mask = 0;
  int64_t L = 0, F = 0, N = 0;
};

Setup make_setup(const at::Tensor& x, const at::Tensor& table, const at::Tensor& resolutions) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3, "hash_encode: x must be (N, 3), got ", x.sizes());
  TORCH_CHECK(table.dim() == 3, "hash_encode: table must be (L, T, F), got ", table.sizes());
  TORCH_CHECK(x.scalar_type() == table.scalar_type(), "hash_encode: x and table dtypes differ");
  TORCH_CHECK(x.is_contiguous() && table.is_contiguous(), "hash_encode: inputs must be contiguous");
  TORCH_CHECK(resolutions.numel() == table.size(0), "hash_encode: one resolution per level");
  TORCH_CHECK(table.size(1) <= (int64_t(1) << 32), "hash_encode: T must fit in 32 bits");
  Setup s;
  s.N = x.size(0);
  s.L = table.size(0);
  s.T = static_cast<uint32_t>(table.size(1));
  s.F = table.size(2);
  s.mask = (s.T & (s.T - 1)) == 0 ? s.T - 1 : 0;
  auto res = resolutions.to(at::kCPU, at::kLong).contiguous();
  const int64_t* r = res.data_ptr<int64_t>();
  for (int64_t l = 0; l < s.L; ++l) {
    TORCH_CHECK(r[l] >= 1 && r[l] < (int64_t(1) << 24), "hash_encode: bad resolution ", r[l]);
    LevelInfo lv;
    lv.res = static_cast<uint32_t>(r[l]);
    uint64_t side = uint64_t(r[l]) + 1;
    lv.stride1 = static_cast<uint32_t>(side);
    lv.stride2 = static_cast<uint32_t>(side * side);
    lv.dense = side * side * side <= uint64_t(s.T) ? 1u : 0u;
    s.levels.push_back(lv);
  }
  return s;
}

// Cell of point p on level lv: base vertex and fractional position (clamped to [0, 1]^3 first,
// x = 1 lands in the last cell with weight 1 on its upper corner).
template <typename scalar_t>
inline void locate(const scalar_t* p, uint32_t res, uint32_t* i, scalar_t* f) {
  for (int d = 0; d < 3; ++d) {
    scalar_t xd = std::min(std::max(p[d], scalar_t(0)), scalar_t(1));
    scalar_t pos = xd * static_cast<scalar_t>(res);
    scalar_t fl = std::floor(pos);
    uint32_t id = static_cast<uint32_t>(fl);
    if (id > res - 1) { id = res - 1; fl = static_cast<scalar_t>(id); }
    i[d] = id;
    f[d] = pos - fl;
  }
}

template <typename scalar_t>
inline void corners(const uint32_t* i, const scalar_t* f, const LevelInfo& lv, uint32_t T,
                    uint32_t mask, uint32_t* row, scalar_t* w) {
  const scalar_t wx[2] = {scalar_t(1) - f[0], f[0]};
  const scalar_t wy[2] = {scalar_t(1) - f[1], f[1]};
  const scalar_t wz[2] = {scalar_t(1) - f[2], f[2]};
#pragma GCC unroll 8
  for (int c = 0; c < 8; ++c) {
    const int bx = c & 1, by = (c >> 1) & 1, bz = (c >> 2) & 1;
    row[c] = corner_row(i[0] + bx, i[1] + by, i[2] + bz, lv, T, mask);
    w[c] = wx[bx] * wy[by] * wz[bz];
  }
}

// One level, points [n0, n1): features into the level-major scratch out[l] (N, F).
template <typename scalar_t, int FF>
void forward_level(const scalar_t* x, const scalar_t* table, scalar_t* out_l, const Setup& s,
                   int64_t l, int64_t n0, int64_t n1) {
  const int64_t F = FF > 0 ? FF : s.F;
  const LevelInfo lv = s.levels[l];
  const scalar_t* tl = table + l * int64_t(s.T) * F;
  for (int64_t n = n0; n < n1; ++n) {
    uint32_t i[3], row[8];
    scalar_t f[3], w[8];
    locate(x + 3 * n, lv.res, i, f);
    corners(i, f, lv, s.T, s.mask, row, w);
    scalar_t* o = out_l + n * F;
    if constexpr (FF > 0) {
      scalar_t acc[FF];
#pragma GCC unroll 8
      for (int k = 0; k < FF; ++k) acc[k] = 0;
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) {
        const scalar_t* e = tl + int64_t(row[c]) * FF;
#pragma GCC unroll 8
        for (int k = 0; k < FF; ++k) acc[k] += w[c] * e[k];
      }
#pragma GCC unroll 8
      for (int k = 0; k < FF; ++k) o[k] = acc[k];
    } else {
      for (int64_t k = 0; k < F; ++k) o[k] = 0;
      for (int c = 0; c < 8; ++c) {
        const scalar_t* e = tl + int64_t(row[c]) * F;
        for (int64_t k = 0; k < F; ++k) o[k] += w[c] * e[k];
      }
    }
  }
}

// Loop order. Level-outer: all points visit one level's table (T*F*4 bytes, 4 MiB at paper
// settings) before the next, so its rows are reused from cache (8 corners x N points per pass);
// point-outer order cycles through all L tables (64 MiB) and misses to DRAM on most corners
// (measured ~1.3-2x slower on a 2-core Xeon). Results go to a level-major scratch (L, N, F) that
// is transposed into out (N, L*F) at the end.
//
// Scheduling. One OpenMP region per phase with dynamic scheduling over small tasks, taken in
// level-major order: no barrier between levels, and a thread that the OS preempts (shared cores)
// delays only its current task. at::parallel_for's static halves made the 2-thread run several
// times slower than 1 thread whenever the other core was busy.
inline int num_threads_for(int64_t tasks) {
  if (at::in_parallel_region()) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tasks)));
}

template <typename scalar_t, int FF>
void forward_impl(const scalar_t* x, const scalar_t* table, scalar_t* out, scalar_t* scratch,
                  const Setup& s) {
  const int64_t F = FF > 0 ? FF : s.F;
  const int64_t LF = s.L * F;
  const int64_t nb = (s.N + kBlock - 1) / kBlock;
  const int64_t tasks = s.L * nb;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads_for(tasks))
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t l = t / nb, b = t % nb;
    forward_level<scalar_t, FF>(x, table, scratch + l * s.N * F, s, l, b * kBlock,
                                std::min(s.N, (b + 1) * kBlock));
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads_for(nb))
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t n = b * kBlock; n < std::min(s.N, (b + 1) * kBlock); ++n) {
      scalar_t* o = out + n * LF;
      for (int64_t l = 0; l < s.L; ++l) {
        const scalar_t* src = scratch + (l * s.N + n) * F;
#pragma GCC unroll 8
        for (int64_t k = 0; k < F; ++k) o[l * F + k] = src[k];
      }
    }
  }
}

// d table[l, row] += w * grad_out[n, l]. One task per level (taken dynamically, hashed levels
// first as they cost most): rows are never shared, so no atomics, and each level sums its points
// in order, so the result is bitwise the same whatever the thread count. grad_out is first
// transposed into a level-major scratch so each level pass streams it.
template <typename scalar_t, int FF>
void backward_table_impl(const scalar_t* x, const scalar_t* gout, scalar_t* gtable,
                         scalar_t* scratch, const Setup& s) {
  const int64_t F = FF > 0 ? FF : s.F;
  const int64_t LF = s.L * F;
  const int64_t nb = (s.N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads_for(nb))
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t n = b * kBlock; n < std::min(s.N, (b + 1) * kBlock); ++n) {
      const scalar_t* g = gout + n * LF;
      for (int64_t l = 0; l < s.L; ++l)
#pragma GCC unroll 8
        for (int64_t k = 0; k < F; ++k) scratch[(l * s.N + n) * F + k] = g[l * F + k];
    }
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads_for(s.L))
  for (int64_t t = 0; t < s.L; ++t) {
    const int64_t l = s.L - 1 - t;
    const LevelInfo lv = s.levels[l];
    scalar_t* gl = gtable + l * int64_t(s.T) * F;
    const scalar_t* gr = scratch + l * s.N * F;
    for (int64_t n = 0; n < s.N; ++n) {
      const scalar_t* g = gr + n * F;
      uint32_t i[3], row[8];
      scalar_t f[3], w[8];
      locate(x + 3 * n, lv.res, i, f);
      corners(i, f, lv, s.T, s.mask, row, w);
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) {
        scalar_t* e = gl + int64_t(row[c]) * F;
#pragma GCC unroll 8
        for (int64_t k = 0; k < F; ++k) e[k] += w[c] * g[k];
      }
    }
  }
}

// d out / d x: the trilinear weights' derivative times the level resolution. Gradient rule of the
// clamp to [0, 1] (the reference's clamp_unit, written out, not torch.clamp's): it passes where
// 0 <= x <= 1, the faces x = 0 and x = 1 included (one-sided derivative from inside the box), and
// is 0 outside and for NaN (unit_grad_passes in hashgrid_common.h).
template <typename scalar_t>
void backward_x_impl(const scalar_t* x, const scalar_t* table, const scalar_t* gout, scalar_t* gx,
                     const Setup& s) {
  const int64_t F = s.F, stride = s.L * F;
  const int64_t nb = (s.N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads_for(nb))
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t n = b * kBlock; n < std::min(s.N, (b + 1) * kBlock); ++n) {
      const scalar_t* p = x + 3 * n;
      scalar_t acc[3] = {0, 0, 0};
      for (int64_t l = 0; l < s.L; ++l) {
        const LevelInfo lv = s.levels[l];
        const scalar_t* tl = table + l * int64_t(s.T) * F;
        const scalar_t* g = gout + n * stride + l * F;
        uint32_t i[3];
        scalar_t f[3];
        locate(p, lv.res, i, f);
        const scalar_t wv[3][2] = {{1 - f[0], f[0]}, {1 - f[1], f[1]}, {1 - f[2], f[2]}};
        scalar_t dl[3] = {0, 0, 0};
        for (int c = 0; c < 8; ++c) {
          const int bit[3] = {c & 1, (c >> 1) & 1, (c >> 2) & 1};
          uint32_t row = corner_row(i[0] + bit[0], i[1] + bit[1], i[2] + bit[2], lv, s.T, s.mask);
          const scalar_t* e = tl + int64_t(row) * F;
          scalar_t ge = 0;  // <grad_out, feature of this corner>
          for (int64_t k = 0; k < F; ++k) ge += g[k] * e[k];
          dl[0] += ge * (bit[0] ? 1 : -1) * wv[1][bit[1]] * wv[2][bit[2]];
          dl[1] += ge * (bit[1] ? 1 : -1) * wv[0][bit[0]] * wv[2][bit[2]];
          dl[2] += ge * (bit[2] ? 1 : -1) * wv[0][bit[0]] * wv[1][bit[1]];
        }
        for (int d = 0; d < 3; ++d) acc[d] += dl[d] * static_cast<scalar_t>(lv.res);
      }
      for (int d = 0; d < 3; ++d) gx[3 * n + d] = unit_grad_passes(p[d]) ? acc[d] : scalar_t(0);
    }
  }
}

template <typename scalar_t, typename Fn>
void dispatch_f(int64_t F, Fn&& fn) {
  // F = 2 (the paper's) is specialised (unrolled); other F use the generic loops. Fewer
  // instantiations keep the JIT build short.
  if (F == 2) {
    fn(std::integral_constant<int, 2>{});
  } else {
    fn(std::integral_constant<int, -1>{});
  }
}

}  // namespace

at::Tensor hash_encode_forward_cpu(const at::Tensor& x_, const at::Tensor& table_,
                                   const at::Tensor& resolutions) {
  auto x = x_.contiguous();
  auto table = table_.contiguous();
  Setup s = make_setup(x, table, resolutions);
  auto out = at::empty({s.N, s.L * s.F}, table.options());
  if (s.N == 0) return out;
  auto scratch = at::empty({s.L, s.N, s.F}, table.options());
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "hash_encode_forward_cpu", [&] {
    dispatch_f<scalar_t>(s.F, [&](auto FF) {
      forward_impl<scalar_t, decltype(FF)::value>(
          x.data_ptr<scalar_t>(), table.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
          scratch.data_ptr<scalar_t>(), s);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> hash_encode_backward_cpu(const at::Tensor& grad_out_, const at::Tensor& x_,
                                                 const at::Tensor& table_,
                                                 const at::Tensor& resolutions, bool need_table,
                                                 bool need_x) {
  auto x = x_.contiguous();
  auto table = table_.contiguous();
  auto gout = grad_out_.contiguous();
  Setup s = make_setup(x, table, resolutions);
  TORCH_CHECK(gout.size(0) == s.N && gout.size(1) == s.L * s.F, "hash_encode: bad grad shape");
  // Gradients not asked for come back as empty tensors (the op schema has no optional outputs).
  at::Tensor gtable = need_table ? at::zeros_like(table) : at::empty({0}, table.options());
  at::Tensor gx = need_x ? at::empty_like(x) : at::empty({0}, x.options());
  if (s.N == 0) {
    if (need_x) gx.zero_();
    return {gtable, gx};
  }
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "hash_encode_backward_cpu", [&] {
    if (need_table) {
      dispatch_f<scalar_t>(s.F, [&](auto FF) {
        auto scratch = at::empty({s.L, s.N, s.F}, table.options());
        backward_table_impl<scalar_t, decltype(FF)::value>(
            x.data_ptr<scalar_t>(), gout.data_ptr<scalar_t>(), gtable.data_ptr<scalar_t>(),
            scratch.data_ptr<scalar_t>(), s);
      });
    }
    if (need_x) {
      backward_x_impl<scalar_t>(x.data_ptr<scalar_t>(), table.data_ptr<scalar_t>(),
                                gout.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), s);
    }
  });
  return {gtable, gx};
}

}  // namespace aware3d
