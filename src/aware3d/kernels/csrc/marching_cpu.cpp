// Ray marching through an occupancy grid and packed volume-rendering weights (C++/OpenMP).
//
// march: the PyTorch reference (aware3d/kernels/marching.py) defines the samples; this kernel emits
// the same ones bit for bit (same float32 operations in the same order; built with
// -ffp-contract=off) but jumps over empty cells instead of testing every step in them.
// Contracted grids (mode 1, 2): the grid lives in mip-NeRF 360's contracted space of
// u = (x - c) * inv_half; every step is tested (no jumps) and t accumulates step by step.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

namespace aware3d {
namespace {

struct Sample {
  int64_t ray;
  float t0, t1;
};

struct Grid {
  const uint8_t* occ;
  int64_t res;
  float lo[3], inv[3];  // cell = floor((x - lo) * inv), inv = res / (hi - lo)
};

struct Contraction {
  int64_t mode;          // 0: world grid; 1: contracted grid, cone steps; 2: + steps ~ ||u||^2
  float c[3], ih[3];     // u = (x - c) * ih
};

// u of o + t d and its L-inf norm (same float32 operations as marching.py's reference).
inline float unit_point(const float* o, const float* d, float t, const Contraction& cs, float* u) {
  float n = 0.f;
  for (int a = 0; a < 3; ++a) {
    const float x = o[a] + t * d[a];
    u[a] = (x - cs.c[a]) * cs.ih[a];
    n = std::max(n, std::fabs(u[a]));
  }
  return n;
}

inline int64_t cell_coord(float x, float lo, float inv, int64_t res) {
  float c = std::floor((x - lo) * inv);
  int64_t i = static_cast<int64_t>(c);
  return std::min<int64_t>(std::max<int64_t>(i, 0), res - 1);
}

// Parameter t where the ray leaves the cell (ci) (double: only used to jump, never emitted).
inline double cell_exit(const float* o, const float* d, const int64_t* ci, const Grid& g) {
  double te = std::numeric_limits<double>::infinity();
  for (int a = 0; a < 3; ++a) {
    if (d[a] == 0.f) continue;
    const double face = double(g.lo[a]) + double(ci[a] + (d[a] > 0.f ? 1 : 0)) / double(g.inv[a]);
    te = std::min(te, (face - double(o[a])) / double(d[a]));
  }
  return te;
}

void march_one(int64_t r, const float* o, const float* d, float tmin, float tmax, const Grid& g,
               const Contraction& cs, float dt, float cone, float dt_max, int64_t max_samples,
               std::vector<Sample>& out) {
  if (!(tmin < tmax)) return;
  int64_t emitted = 0;
  if (cs.mode != 0) {
    // Contracted grid: step = clamp(max(cone * t0, [mode 2] dt * max(|u(t0)|, 1)^2), dt, dt_max)
    // (mode 2 is uniform in contracted space along the radius); the midpoint's cell is looked up
    // at contract(u) = (2 - 1/|u|) u / |u| where |u| = ||u||_inf > 1.
    float t0 = tmin;
    while (emitted < max_samples && t0 < tmax) {
      float u[3];
      float step = t0 * cone;
      if (cs.mode == 2) {
        const float m = std::max(unit_point(o, d, t0, cs, u), 1.f);
        step = std::max(step, dt * (m * m));
      }
      step = std::min(std::max(step, dt), dt_max);
      const float t1 = std::min(t0 + step, tmax);
      const float tm = (t0 + t1) * 0.5f;
      const float n = unit_point(o, d, tm, cs, u);
      if (n > 1.f) {
        const float s = 2.f - 1.f / n;
        for (int a = 0; a < 3; ++a) u[a] = (s * u[a]) / n;
      }
      int64_t ci[3];
      for (int a = 0; a < 3; ++a) ci[a] = cell_coord(u[a], g.lo[a], g.inv[a], g.res);
      if (g.occ[(ci[0] * g.res + ci[1]) * g.res + ci[2]]) {
        out.push_back({r, t0, t1});
        ++emitted;
      }
      const float next = t0 + step;
      if (!(next > t0)) break;  // t too large for the step in float32
      t0 = next;
    }
  } else if (cone <= 0.f) {
    // Constant step: t_k = t_min + k * dt (not accumulated, so k can jump).
    int64_t k = 0;
    while (emitted < max_samples) {
      const float t0 = tmin + static_cast<float>(k) * dt;
      if (!(t0 < tmax)) break;
      const float t1 = std::min(t0 + dt, tmax);
      const float tm = (t0 + t1) * 0.5f;
      int64_t ci[3];
      for (int a = 0; a < 3; ++a) ci[a] = cell_coord(o[a] + tm * d[a], g.lo[a], g.inv[a], g.res);
      if (g.occ[(ci[0] * g.res + ci[1]) * g.res + ci[2]]) {
        out.push_back({r, t0, t1});
        ++emitted;
        ++k;
      } else {
        // Skip to one step before the last step whose midpoint is still inside this empty cell;
        // the steps in between are in the cell (it is convex), the margin absorbs rounding.
        const double te = cell_exit(o, d, ci, g);
        const double kk = std::floor((te - double(tmin)) / double(dt) - 0.5) - 1.0;
        int64_t next = k + 1;
        if (kk > double(next)) next = kk > 9.0e15 ? std::numeric_limits<int64_t>::max() / 2 : int64_t(kk);
        k = next;
      }
    }
  } else {
    // Exponential stepping: dt grows with t (cone_angle * t), clamped to [dt, dt_max].
    float t0 = tmin;
    while (emitted < max_samples && t0 < tmax) {
      const float step = std::min(std::max(t0 * cone, dt), dt_max);
      const float t1 = std::min(t0 + step, tmax);
      const float tm = (t0 + t1) * 0.5f;
      int64_t ci[3];
      for (int a = 0; a < 3; ++a) ci[a] = cell_coord(o[a] + tm * d[a], g.lo[a], g.inv[a], g.res);
      if (g.occ[(ci[0] * g.res + ci[1]) * g.res + ci[2]]) {
        out.push_back({r, t0, t1});
        ++emitted;
      }
      t0 = t0 + step;
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> march_rays_cpu(const at::Tensor& rays_o_, const at::Tensor& rays_d_,
                                       const at::Tensor& t_min_, const at::Tensor& t_max_,
                                       const at::Tensor& occ_, const at::Tensor& lo_,
                                       const at::Tensor& inv_, const at::Tensor& center_,
                                       const at::Tensor& inv_half_, int64_t contract, double step,
                                       double cone_angle, double max_step, int64_t max_samples) {
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
  TORCH_CHECK(center.numel() == 3 && inv_half.numel() == 3,
              "march_rays: center and inv_half must have 3 values");
  const int64_t R = rays_o.size(0);
  TORCH_CHECK(occ.dim() == 3 && occ.size(0) == occ.size(1) && occ.size(1) == occ.size(2),
              "march_rays: occupancy must be (res, res, res)");
  Grid g;
  g.occ = occ.data_ptr<uint8_t>();
  g.res = occ.size(0);
  for (int a = 0; a < 3; ++a) {
    g.lo[a] = lo.data_ptr<float>()[a];
    g.inv[a] = inv.data_ptr<float>()[a];
  }
  Contraction cs;
  cs.mode = contract;
  for (int a = 0; a < 3; ++a) {
    cs.c[a] = center.data_ptr<float>()[a];
    cs.ih[a] = inv_half.data_ptr<float>()[a];
  }
  const float dt = static_cast<float>(step), cone = static_cast<float>(cone_angle);
  const float dtm = static_cast<float>(max_step);
  const float* o = rays_o.data_ptr<float>();
  const float* d = rays_d.data_ptr<float>();
  const float* tn = t_min.data_ptr<float>();
  const float* tf = t_max.data_ptr<float>();

  // Chunks of rays fill their own buffers (any thread), then are concatenated in ray order.
  constexpr int64_t kChunk = 64;
  const int64_t nc = (R + kChunk - 1) / kChunk;
  std::vector<std::vector<Sample>> bufs(nc);
  at::parallel_for(0, nc, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      auto& b = bufs[c];
      for (int64_t r = c * kChunk; r < std::min(R, (c + 1) * kChunk); ++r)
        march_one(r, o + 3 * r, d + 3 * r, tn[r], tf[r], g, cs, dt, cone, dtm, max_samples, b);
    }
  });
  std::vector<int64_t> start(nc + 1, 0);
  for (int64_t c = 0; c < nc; ++c) start[c + 1] = start[c] + int64_t(bufs[c].size());
  const int64_t S = start[nc];
  auto ray_idx = at::empty({S}, rays_o.options().dtype(at::kLong));
  auto t0s = at::empty({S}, rays_o.options());
  auto t1s = at::empty({S}, rays_o.options());
  int64_t* ri = ray_idx.data_ptr<int64_t>();
  float* a0 = t0s.data_ptr<float>();
  float* a1 = t1s.data_ptr<float>();
  at::parallel_for(0, nc, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t j = start[c];
      for (const Sample& s : bufs[c]) {
        ri[j] = s.ray;
        a0[j] = s.t0;
        a1[j] = s.t1;
        ++j;
      }
    }
  });
  return {ray_idx, t0s, t1s};
}

// Packed weights, per ray (samples of a ray are contiguous, offsets (R+1,)):
//   T_i = exp(-sum_{j<i} sigma_j delta_j), alpha_i = 1 - exp(-sigma_i delta_i), w_i = T_i alpha_i.
std::tuple<at::Tensor, at::Tensor> render_weights_packed_forward_cpu(const at::Tensor& sigmas_,
                                                          const at::Tensor& deltas_,
                                                          const at::Tensor& offsets_) {
  auto sigmas = sigmas_.contiguous();
  auto deltas = deltas_.to(sigmas.scalar_type()).contiguous();
  auto offsets = offsets_.to(at::kLong).contiguous();
  const int64_t R = offsets.size(0) - 1;
  auto w = at::empty_like(sigmas);
  auto T = at::empty_like(sigmas);
  const int64_t* off = offsets.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(sigmas.scalar_type(), "render_weights_packed_forward_cpu", [&] {
    const scalar_t* s = sigmas.data_ptr<scalar_t>();
    const scalar_t* dl = deltas.data_ptr<scalar_t>();
    scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* tp = T.data_ptr<scalar_t>();
    at::parallel_for(0, R, 256, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        double depth = 0.0;  // optical depth before sample i (double, like torch.cumsum on CPU)
        for (int64_t i = off[r]; i < off[r + 1]; ++i) {
          const scalar_t sd = s[i] * dl[i];
          const scalar_t Ti = static_cast<scalar_t>(std::exp(-static_cast<scalar_t>(depth)));
          const scalar_t alpha = -std::expm1(-sd);
          tp[i] = Ti;
          wp[i] = Ti * alpha;
          depth += sd;
        }
      }
    });
  });
  return {w, T};
}

// dL/d(sd_k) = gw_k T_k (1 - alpha_k) - sum_{i>k} (gw_i w_i + gT_i T_i), then chain to sigma/delta.
std::tuple<at::Tensor, at::Tensor> render_weights_packed_backward_cpu(
    const at::Tensor& grad_w_, const at::Tensor& grad_T_, const at::Tensor& sigmas_,
    const at::Tensor& deltas_, const at::Tensor& weights_, const at::Tensor& trans_,
    const at::Tensor& offsets_) {
  auto gw = grad_w_.contiguous();
  auto gT = grad_T_.contiguous();
  auto sigmas = sigmas_.contiguous();
  auto deltas = deltas_.to(sigmas.scalar_type()).contiguous();
  auto w = weights_.contiguous();
  auto T = trans_.contiguous();
  auto offsets = offsets_.to(at::kLong).contiguous();
  const int64_t R = offsets.size(0) - 1;
  auto gs = at::empty_like(sigmas);
  auto gd = at::empty_like(sigmas);
  const int64_t* off = offsets.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(sigmas.scalar_type(), "render_weights_packed_backward_cpu", [&] {
    const scalar_t* s = sigmas.data_ptr<scalar_t>();
    const scalar_t* dl = deltas.data_ptr<scalar_t>();
    const scalar_t* gwp = gw.data_ptr<scalar_t>();
    const scalar_t* gtp = gT.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const scalar_t* tp = T.data_ptr<scalar_t>();
    scalar_t* gsp = gs.data_ptr<scalar_t>();
    scalar_t* gdp = gd.data_ptr<scalar_t>();
    at::parallel_for(0, R, 256, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        double later = 0.0;  // sum over i > k of (gw_i w_i + gT_i T_i)
        for (int64_t i = off[r + 1] - 1; i >= off[r]; --i) {
          const scalar_t sd = s[i] * dl[i];
          const scalar_t Tnext = tp[i] * std::exp(-sd);  // T_i (1 - alpha_i)
          const scalar_t g = gwp[i] * Tnext - static_cast<scalar_t>(later);
          gsp[i] = g * dl[i];
          gdp[i] = g * s[i];
          later += double(gwp[i]) * double(wp[i]) + double(gtp[i]) * double(tp[i]);
        }
      }
    });
  });
  return {gs, gd};
}

}  // namespace aware3d
