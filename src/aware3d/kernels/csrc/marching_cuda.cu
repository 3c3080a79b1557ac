// Ray marching and packed weights on the GPU (CUDA twin of marching_cpu.cpp; same float32
// operations, built with -fmad=false, so it emits the reference's samples).
// Marching runs twice per ray: count the samples, exclusive-scan the counts, then write them.
// Launches go through cuda_compat.h, so this file also compiles as C++ with a serial launcher
// (AWARE3D_CUDA_EMULATE; the tests run the kernels that way on machines without a GPU).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>

#include <tuple>

#include "cuda_compat.h"

namespace aware3d {
namespace {

constexpr int kThreads = 256;

struct GridD {
  const uint8_t* occ;
  int64_t res;
  float lo[3], inv[3];
};

struct ContractionD {
  int64_t mode;  // 0: world grid; 1: contracted grid, cone steps; 2: + steps ~ ||u||^2
  float c[3], ih[3];
};

__device__ __forceinline__ float unit_point_d(const float* o, const float* d, float t,
                                              const ContractionD& cs, float* u) {
  float n = 0.f;
  for (int a = 0; a < 3; ++a) {
    const float x = __fadd_rn(o[a], __fmul_rn(t, d[a]));
    u[a] = __fmul_rn(__fsub_rn(x, cs.c[a]), cs.ih[a]);
    n = fmaxf(n, fabsf(u[a]));
  }
  return n;
}

__device__ __forceinline__ int64_t cell_coord_d(float x, float lo, float inv, int64_t res) {
  const float c = floorf((x - lo) * inv);
  int64_t i = static_cast<int64_t>(c);
  return i < 0 ? 0 : (i > res - 1 ? res - 1 : i);
}

__device__ __forceinline__ double cell_exit_d(const float* o, const float* d, const int64_t* ci,
                                              const GridD& g) {
  double te = 1.0e300;
  for (int a = 0; a < 3; ++a) {
    if (d[a] == 0.f) continue;
    const double face = double(g.lo[a]) + double(ci[a] + (d[a] > 0.f ? 1 : 0)) / double(g.inv[a]);
    te = fmin(te, (face - double(o[a])) / double(d[a]));
  }
  return te;
}

// Marches one ray; with out_* null it only counts. Mirrors march_one() of marching_cpu.cpp.
__device__ int64_t march_ray_d(int64_t r, const float* o, const float* d, float tmin, float tmax,
                               const GridD& g, const ContractionD& cs, float dt, float cone,
                               float dt_max, int64_t max_samples, int64_t* out_ray, float* out_t0,
                               float* out_t1) {
  if (!(tmin < tmax)) return 0;
  int64_t emitted = 0;
  if (cs.mode != 0) {
    float t0 = tmin;
    while (emitted < max_samples && t0 < tmax) {
      float u[3];
      float step = __fmul_rn(t0, cone);
      if (cs.mode == 2) {
        const float m = fmaxf(unit_point_d(o, d, t0, cs, u), 1.f);
        step = fmaxf(step, __fmul_rn(dt, __fmul_rn(m, m)));
      }
      step = fminf(fmaxf(step, dt), dt_max);
      const float t1 = fminf(__fadd_rn(t0, step), tmax);
      const float tm = __fmul_rn(__fadd_rn(t0, t1), 0.5f);
      const float n = unit_point_d(o, d, tm, cs, u);
      if (n > 1.f) {
        const float s = __fsub_rn(2.f, __fdiv_rn(1.f, n));
        for (int a = 0; a < 3; ++a) u[a] = __fdiv_rn(__fmul_rn(s, u[a]), n);
      }
      int64_t ci[3];
      for (int a = 0; a < 3; ++a) ci[a] = cell_coord_d(u[a], g.lo[a], g.inv[a], g.res);
      if (g.occ[(ci[0] * g.res + ci[1]) * g.res + ci[2]]) {
        if (out_ray) {
          out_ray[emitted] = r;
          out_t0[emitted] = t0;
          out_t1[emitted] = t1;
        }
        ++emitted;
      }
      const float next = __fadd_rn(t0, step);
      if (!(next > t0)) break;
      t0 = next;
    }
  } else if (cone <= 0.f) {
    int64_t k = 0;
    while (emitted < max_samples) {
      const float t0 = __fadd_rn(tmin, __fmul_rn(static_cast<float>(k), dt));
      if (!(t0 < tmax)) break;
      const float t1 = fminf(__fadd_rn(t0, dt), tmax);
      const float tm = __fmul_rn(__fadd_rn(t0, t1), 0.5f);
      int64_t ci[3];
      for (int a = 0; a < 3; ++a)
        ci[a] = cell_coord_d(__fadd_rn(o[a], __fmul_rn(tm, d[a])), g.lo[a], g.inv[a], g.res);
      if (g.occ[(ci[0] * g.res + ci[1]) * g.res + ci[2]]) {
        if (out_ray) {
          out_ray[emitted] = r;
          out_t0[emitted] = t0;
          out_t1[emitted] = t1;
        }
        ++emitted;
        ++k;
      } else {
        const double te = cell_exit_d(o, d, ci, g);
        const double kk = floor((te - double(tmin)) / double(dt) - 0.5) - 1.0;
        int64_t next = k + 1;
        if (kk > double(next)) next = kk > 9.0e15 ? (int64_t(1) << 62) : int64_t(kk);
        k = next;
      }
    }
  } else {
    float t0 = tmin;
    while (emitted < max_samples && t0 < tmax) {
      const float step = fminf(fmaxf(__fmul_rn(t0, cone), dt), dt_max);
      const float t1 = fminf(__fadd_rn(t0, step), tmax);
      const float tm = __fmul_rn(__fadd_rn(t0, t1), 0.5f);
      int64_t ci[3];
      for (int a = 0; a < 3; ++a)
        ci[a] = cell_coord_d(__fadd_rn(o[a], __fmul_rn(tm, d[a])), g.lo[a], g.inv[a], g.res);
      if (g.occ[(ci[0] * g.res + ci[1]) * g.res + ci[2]]) {
        if (out_ray) {
          out_ray[emitted] = r;
          out_t0[emitted] = t0;
          out_t1[emitted] = t1;
        }
        ++emitted;
      }
      t0 = __fadd_rn(t0, step);
    }
  }
  return emitted;
}

__global__ void march_kernel(const float* __restrict__ o, const float* __restrict__ d,
                             const float* __restrict__ tn, const float* __restrict__ tf, GridD g,
                             ContractionD cs, float dt, float cone, float dt_max, int64_t max_samples, int64_t R,
                             int64_t* __restrict__ counts, const int64_t* __restrict__ starts,
                             int64_t* __restrict__ out_ray, float* __restrict__ out_t0,
                             float* __restrict__ out_t1) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= R) return;
  if (starts == nullptr) {
    counts[r] = march_ray_d(r, o + 3 * r, d + 3 * r, tn[r], tf[r], g, cs, dt, cone, dt_max,
                            max_samples, nullptr, nullptr, nullptr);
  } else {
    const int64_t s = starts[r];
    march_ray_d(r, o + 3 * r, d + 3 * r, tn[r], tf[r], g, cs, dt, cone, dt_max, max_samples,
                out_ray + s, out_t0 + s, out_t1 + s);
  }
}

template <typename scalar_t>
__global__ void weights_forward_kernel(const scalar_t* __restrict__ s,
                                       const scalar_t* __restrict__ dl,
                                       const int64_t* __restrict__ off, int64_t R,
                                       scalar_t* __restrict__ w, scalar_t* __restrict__ T) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= R) return;
  double depth = 0.0;
  for (int64_t i = off[r]; i < off[r + 1]; ++i) {
    const scalar_t sd = s[i] * dl[i];
    const scalar_t Ti = static_cast<scalar_t>(exp(-static_cast<scalar_t>(depth)));
    T[i] = Ti;
    w[i] = Ti * static_cast<scalar_t>(-expm1(-sd));
    depth += double(sd);
  }
}

template <typename scalar_t>
__global__ void weights_backward_kernel(const scalar_t* __restrict__ gw,
                                        const scalar_t* __restrict__ gT,
                                        const scalar_t* __restrict__ s,
                                        const scalar_t* __restrict__ dl,
                                        const scalar_t* __restrict__ w,
                                        const scalar_t* __restrict__ T,
                                        const int64_t* __restrict__ off, int64_t R,
                                        scalar_t* __restrict__ gs, scalar_t* __restrict__ gd) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= R) return;
  double later = 0.0;
  for (int64_t i = off[r + 1] - 1; i >= off[r]; --i) {
    const scalar_t sd = s[i] * dl[i];
    const scalar_t Tnext = T[i] * static_cast<scalar_t>(exp(-sd));
    const scalar_t g = gw[i] * Tnext - static_cast<scalar_t>(later);
    gs[i] = g * dl[i];
    gd[i] = g * s[i];
    later += double(gw[i]) * double(w[i]) + double(gT[i]) * double(T[i]);
  }
}

inline unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>((n + kThreads - 1) / kThreads);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> march_rays_cuda(
    const at::Tensor& rays_o_, const at::Tensor& rays_d_, const at::Tensor& t_min_,
    const at::Tensor& t_max_, const at::Tensor& occ_, const at::Tensor& lo_,
    const at::Tensor& inv_, const at::Tensor& center_, const at::Tensor& inv_half_,
    int64_t contract, double step, double cone_angle, double max_step, int64_t max_samples) {
  // Rays, their intervals and the occupancy bits are read by the kernel: on rays_o's GPU. The
  // grid box and contraction (3 values each) are read on the host when launching: CPU tensors
  // (the caller keeps host copies; no device-to-host copy per call).
  const char* op = "march_rays (cuda)";
  check_cuda_input(op, "rays_o", rays_o_);
  const at::Device dev = rays_o_.device();
  check_same_device(op, "rays_d", rays_d_, dev);
  check_same_device(op, "t_min", t_min_, dev);
  check_same_device(op, "t_max", t_max_, dev);
  check_same_device(op, "occ", occ_, dev);
  check_host_input(op, "lo", lo_);
  check_host_input(op, "inv", inv_);
  check_host_input(op, "center", center_);
  check_host_input(op, "inv_half", inv_half_);
  A3D_DEVICE_GUARD(dev);
  auto rays_o = rays_o_.to(at::kFloat).contiguous();
  auto rays_d = rays_d_.to(at::kFloat).contiguous();
  auto t_min = t_min_.to(at::kFloat).contiguous();
  auto t_max = t_max_.to(at::kFloat).contiguous();
  auto occ = occ_.to(at::kByte).contiguous();
  auto lo = lo_.to(at::kFloat).contiguous();
  auto inv = inv_.to(at::kFloat).contiguous();
  auto center = center_.to(at::kFloat).contiguous();
  auto inv_half = inv_half_.to(at::kFloat).contiguous();
  TORCH_CHECK(contract >= 0 && contract <= 2, "march_rays: contract must be 0, 1 or 2");
  TORCH_CHECK(lo.numel() == 3 && inv.numel() == 3, "march_rays: lo and inv must have 3 values");
  TORCH_CHECK(center.numel() == 3 && inv_half.numel() == 3,
              "march_rays: center and inv_half must have 3 values");
  TORCH_CHECK(occ.dim() == 3 && occ.size(0) == occ.size(1) && occ.size(1) == occ.size(2),
              "march_rays: occupancy must be (res, res, res)");
  const int64_t R = rays_o.size(0);
  TORCH_CHECK(rays_o.dim() == 2 && rays_o.size(1) == 3 && rays_d.sizes() == rays_o.sizes(),
              "march_rays: rays_o and rays_d must be (R, 3)");
  TORCH_CHECK(t_min.numel() == R && t_max.numel() == R, "march_rays: t_min and t_max must be (R,)");
  GridD g;
  g.occ = occ.data_ptr<uint8_t>();
  g.res = occ.size(0);
  for (int a = 0; a < 3; ++a) {
    g.lo[a] = lo.data_ptr<float>()[a];
    g.inv[a] = inv.data_ptr<float>()[a];
  }
  ContractionD cs;
  cs.mode = contract;
  for (int a = 0; a < 3; ++a) {
    cs.c[a] = center.data_ptr<float>()[a];
    cs.ih[a] = inv_half.data_ptr<float>()[a];
  }
  const float dt = static_cast<float>(step), cone = static_cast<float>(cone_angle);
  const float dtm = static_cast<float>(max_step);
  auto stream = A3D_STREAM();
  auto lopt = rays_o.options().dtype(at::kLong);
  auto counts = at::empty({R}, lopt);
  if (R > 0) {
    A3D_LAUNCH(march_kernel, blocks_for(R), kThreads, stream)(
        rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), t_min.data_ptr<float>(),
        t_max.data_ptr<float>(), g, cs, dt, cone, dtm, max_samples, R, counts.data_ptr<int64_t>(),
        nullptr, nullptr, nullptr, nullptr);
    A3D_LAUNCH_CHECK();
  }
  auto ends = at::cumsum(counts, 0);
  const int64_t S = R > 0 ? ends[R - 1].item<int64_t>() : 0;  // one sync: the output size
  auto starts = ends.sub(counts);
  auto ray_idx = at::empty({S}, lopt);
  auto t0s = at::empty({S}, rays_o.options());
  auto t1s = at::empty({S}, rays_o.options());
  if (S > 0) {
    A3D_LAUNCH(march_kernel, blocks_for(R), kThreads, stream)(
        rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), t_min.data_ptr<float>(),
        t_max.data_ptr<float>(), g, cs, dt, cone, dtm, max_samples, R, counts.data_ptr<int64_t>(),
        starts.data_ptr<int64_t>(), ray_idx.data_ptr<int64_t>(), t0s.data_ptr<float>(),
        t1s.data_ptr<float>());
    A3D_LAUNCH_CHECK();
  }
  return {ray_idx, t0s, t1s};
}

std::tuple<at::Tensor, at::Tensor> render_weights_packed_forward_cuda(const at::Tensor& sigmas_,
                                                                      const at::Tensor& deltas_,
                                                                      const at::Tensor& offsets_) {
  const char* op = "render_weights_packed (cuda)";
  check_cuda_input(op, "sigmas", sigmas_);
  check_same_device(op, "deltas", deltas_, sigmas_.device());
  check_same_device(op, "offsets", offsets_, sigmas_.device());
  A3D_DEVICE_GUARD(sigmas_.device());
  auto sigmas = sigmas_.contiguous();
  auto deltas = deltas_.to(sigmas.scalar_type()).contiguous();
  auto offsets = offsets_.to(at::kLong).contiguous();
  TORCH_CHECK(deltas.numel() == sigmas.numel(),
              "render_weights_packed: deltas must be like sigmas");
  TORCH_CHECK(offsets.dim() == 1 && offsets.numel() >= 1,
              "render_weights_packed: offsets must be (R + 1,)");
  const int64_t R = offsets.size(0) - 1;
  auto w = at::empty_like(sigmas);
  auto T = at::empty_like(sigmas);
  if (R <= 0 || sigmas.numel() == 0) return {w, T};
  auto stream = A3D_STREAM();
  AT_DISPATCH_FLOATING_TYPES(sigmas.scalar_type(), "render_weights_packed_forward_cuda", [&] {
    A3D_LAUNCH(weights_forward_kernel<scalar_t>, blocks_for(R), kThreads, stream)(
        sigmas.data_ptr<scalar_t>(), deltas.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), R,
        w.data_ptr<scalar_t>(), T.data_ptr<scalar_t>());
  });
  A3D_LAUNCH_CHECK();
  return {w, T};
}

std::tuple<at::Tensor, at::Tensor> render_weights_packed_backward_cuda(
    const at::Tensor& grad_w_, const at::Tensor& grad_T_, const at::Tensor& sigmas_,
    const at::Tensor& deltas_, const at::Tensor& weights_, const at::Tensor& trans_,
    const at::Tensor& offsets_) {
  const char* op = "render_weights_packed backward (cuda)";
  check_cuda_input(op, "sigmas", sigmas_);
  const at::Device dev = sigmas_.device();
  check_same_device(op, "grad_w", grad_w_, dev);
  check_same_device(op, "grad_T", grad_T_, dev);
  check_same_device(op, "deltas", deltas_, dev);
  check_same_device(op, "weights", weights_, dev);
  check_same_device(op, "trans", trans_, dev);
  check_same_device(op, "offsets", offsets_, dev);
  A3D_DEVICE_GUARD(dev);
  auto gw = grad_w_.contiguous();
  auto gT = grad_T_.contiguous();
  auto sigmas = sigmas_.contiguous();
  auto deltas = deltas_.to(sigmas.scalar_type()).contiguous();
  auto w = weights_.contiguous();
  auto T = trans_.contiguous();
  auto offsets = offsets_.to(at::kLong).contiguous();
  const int64_t S = sigmas.numel();
  TORCH_CHECK(gw.numel() == S && gT.numel() == S && deltas.numel() == S && w.numel() == S &&
                  T.numel() == S,
              "render_weights_packed backward: grad_w, grad_T, deltas, weights and trans must be "
              "like sigmas");
  TORCH_CHECK(offsets.dim() == 1 && offsets.numel() >= 1,
              "render_weights_packed: offsets must be (R + 1,)");
  const int64_t R = offsets.size(0) - 1;
  auto gs = at::empty_like(sigmas);
  auto gd = at::empty_like(sigmas);
  if (R <= 0 || sigmas.numel() == 0) return {gs, gd};
  auto stream = A3D_STREAM();
  AT_DISPATCH_FLOATING_TYPES(sigmas.scalar_type(), "render_weights_packed_backward_cuda", [&] {
    A3D_LAUNCH(weights_backward_kernel<scalar_t>, blocks_for(R), kThreads, stream)(
        gw.data_ptr<scalar_t>(), gT.data_ptr<scalar_t>(), sigmas.data_ptr<scalar_t>(),
        deltas.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), T.data_ptr<scalar_t>(),
        offsets.data_ptr<int64_t>(), R, gs.data_ptr<scalar_t>(), gd.data_ptr<scalar_t>());
  });
  A3D_LAUNCH_CHECK();
  return {gs, gd};
}

}  // namespace aware3d
