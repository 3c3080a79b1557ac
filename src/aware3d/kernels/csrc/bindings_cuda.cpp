// Operator registration of the CUDA kernels: torch.ops.aware3d_cuda.<name>.
// TORCH_LIBRARY (not pybind11) keeps the build light: no torch/extension.h anywhere, so a cold
// build compiles in seconds rather than a minute.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <tuple>

namespace aware3d {
at::Tensor hash_encode_forward_cuda(const at::Tensor& x, const at::Tensor& table,
                                   const at::Tensor& resolutions);
std::tuple<at::Tensor, at::Tensor> hash_encode_backward_cuda(const at::Tensor& grad_out,
                                                            const at::Tensor& x,
                                                            const at::Tensor& table,
                                                            const at::Tensor& resolutions,
                                                            bool need_table, bool need_x);
std::tuple<at::Tensor, at::Tensor, at::Tensor> march_rays_cuda(
    const at::Tensor& rays_o, const at::Tensor& rays_d, const at::Tensor& t_min,
    const at::Tensor& t_max, const at::Tensor& occ, const at::Tensor& lo, const at::Tensor& inv,
    const at::Tensor& center, const at::Tensor& inv_half, int64_t contract, double step,
    double cone_angle, double max_step, int64_t max_samples);
std::tuple<at::Tensor, at::Tensor> render_weights_packed_forward_cuda(const at::Tensor& sigmas,
                                                                     const at::Tensor& deltas,
                                                                     const at::Tensor& offsets);
std::tuple<at::Tensor, at::Tensor> render_weights_packed_backward_cuda(
    const at::Tensor& grad_w, const at::Tensor& grad_T, const at::Tensor& sigmas,
    const at::Tensor& deltas, const at::Tensor& weights, const at::Tensor& trans,
    const at::Tensor& offsets);
}  // namespace aware3d

// The op namespace. The tests' serial C++ build of the CUDA sources (cuda_compat.h) registers the
// same ops under another name, so both libraries can be loaded into one process.
#ifndef AWARE3D_CUDA_OPS_NAMESPACE
#define AWARE3D_CUDA_OPS_NAMESPACE aware3d_cuda
#endif
// One level of indirection so the namespace macro is expanded before TORCH_LIBRARY pastes it.
#define A3D_TORCH_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)

A3D_TORCH_LIBRARY(AWARE3D_CUDA_OPS_NAMESPACE, m) {
  m.def("hash_encode_forward(Tensor x, Tensor table, Tensor resolutions) -> Tensor",
        &aware3d::hash_encode_forward_cuda);
  m.def("hash_encode_backward(Tensor grad_out, Tensor x, Tensor table, Tensor resolutions, "
        "bool need_table, bool need_x) -> (Tensor, Tensor)",
        &aware3d::hash_encode_backward_cuda);
  m.def("march_rays(Tensor rays_o, Tensor rays_d, Tensor t_min, Tensor t_max, Tensor occ, "
        "Tensor lo, Tensor inv, Tensor center, Tensor inv_half, int contract, float step, "
        "float cone_angle, float max_step, int max_samples) "
        "-> (Tensor, Tensor, Tensor)",
        &aware3d::march_rays_cuda);
  m.def("render_weights_packed_forward(Tensor sigmas, Tensor deltas, Tensor offsets) "
        "-> (Tensor, Tensor)",
        &aware3d::render_weights_packed_forward_cuda);
  m.def("render_weights_packed_backward(Tensor grad_w, Tensor grad_T, Tensor sigmas, "
        "Tensor deltas, Tensor weights, Tensor trans, Tensor offsets) -> (Tensor, Tensor)",
        &aware3d::render_weights_packed_backward_cuda);
}
