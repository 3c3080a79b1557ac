// What the CUDA sources (hashgrid_cuda.cu, marching_cuda.cu) need from the CUDA runtime, in two
// versions:
//
// - built by nvcc (__CUDACC__): the real thing. A3D_LAUNCH(kernel, grid, block, stream)(args)
//   is kernel<<<grid, block, 0, stream>>>(args), A3D_DEVICE_GUARD sets the current GPU,
//   A3D_STREAM() is the current CUDA stream and A3D_LAUNCH_CHECK() reports launch errors.
// - built as plain C++ with AWARE3D_CUDA_EMULATE defined (the tests do this on machines without a
//   GPU, see tests/test_kernels_cuda_on_cpu.py): __global__ / __device__ disappear, threadIdx,
//   blockIdx, blockDim and gridDim are per-thread globals, and A3D_LAUNCH runs every (block,
//   thread) of the grid one after the other on the calling thread. The kernels here use no shared
//   memory and no __syncthreads, so a serial launch computes what the GPU computes (atomicAdd
//   becomes a plain add). Intrinsics with an explicit rounding mode (__fadd_rn, ...) are the
//   plain IEEE operations; build with -ffp-contract=off so nothing is fused, as with -fmad=false.
//
// The device checks (check_cuda_input, check_same_device, check_host_input) are shared by both:
// in an emulated build "the device" is the CPU.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#if defined(__CUDACC__)

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#define A3D_LAUNCH(kernel, grid, block, stream) kernel<<<(grid), (block), 0, (stream)>>>
#define A3D_DEVICE_GUARD(device) const c10::cuda::CUDAGuard a3d_device_guard_(device)
#define A3D_STREAM() c10::cuda::getCurrentCUDAStream()
#define A3D_LAUNCH_CHECK() C10_CUDA_KERNEL_LAUNCH_CHECK()
#define A3D_IS_KERNEL_DEVICE(t) ((t).is_cuda())
#define A3D_KERNEL_DEVICE_NAME "a GPU (CUDA tensor)"

#elif defined(AWARE3D_CUDA_EMULATE)

#include <algorithm>
#include <cmath>
#include <cstdint>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace aware3d {
namespace emu {
struct Index {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local Index threadIdx, blockIdx, blockDim, gridDim;

// Runs kernel(args...) for every block and thread of the grid, serially.
struct Launcher {
  dim3 grid, block;
  template <typename Kernel>
  struct Bound {
    dim3 grid, block;
    Kernel kernel;
    template <typename... Args>
    void operator()(Args&&... args) const {
      gridDim = {grid.x, grid.y, grid.z};
      blockDim = {block.x, block.y, block.z};
      for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
          for (unsigned bx = 0; bx < grid.x; ++bx)
            for (unsigned tz = 0; tz < block.z; ++tz)
              for (unsigned ty = 0; ty < block.y; ++ty)
                for (unsigned tx = 0; tx < block.x; ++tx) {
                  blockIdx = {bx, by, bz};
                  threadIdx = {tx, ty, tz};
                  kernel(args...);
                }
    }
  };
  template <typename Kernel>
  Bound<Kernel> operator%(Kernel kernel) const {
    return Bound<Kernel>{grid, block, kernel};
  }
};
}  // namespace emu

using emu::blockDim;
using emu::blockIdx;
using emu::gridDim;
using emu::threadIdx;

// The float intrinsics with round-to-nearest and no contraction: the IEEE operations.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
// Serial launch: no other thread writes at the same time.
template <typename T>
inline T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
// CUDA's math functions are overloaded on float/double in the global namespace.
using std::exp;
using std::expm1;
using std::fabs;
using std::floor;
using std::fmax;
using std::fmin;
using ::fabsf;
using ::floorf;
using ::fmaxf;
using ::fminf;
}  // namespace aware3d

#define A3D_LAUNCH(kernel, grid, block, stream) \
  (static_cast<void>(stream), ::aware3d::emu::Launcher{dim3(grid), dim3(block)} % (kernel))
#define A3D_DEVICE_GUARD(device) static_cast<void>(device)
#define A3D_STREAM() 0
#define A3D_LAUNCH_CHECK() static_cast<void>(0)
#define A3D_IS_KERNEL_DEVICE(t) ((t).device().is_cpu())
#define A3D_KERNEL_DEVICE_NAME "the CPU (emulated CUDA build)"

#else
#error "cuda_compat.h: build with nvcc, or define AWARE3D_CUDA_EMULATE for the serial C++ build"
#endif

namespace aware3d {

// `t` is where the kernels can read it (a CUDA tensor; the CPU in an emulated build).
inline void check_cuda_input(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(A3D_IS_KERNEL_DEVICE(t), op, ": ", name, " must be on ", A3D_KERNEL_DEVICE_NAME,
              ", got a tensor on ", t.device());
}

// `t` is on `device` (the GPU of the call's first input, same index): a kernel launched there
// must not be handed a pointer to host memory or to another GPU's memory.
inline void check_same_device(const char* op, const char* name, const at::Tensor& t,
                              const at::Device& device) {
  TORCH_CHECK(t.device() == device, op, ": ", name, " is on ", t.device(), " but the other inputs "
              "are on ", device, "; move every input of one call to the same device");
}

// `t` holds a few parameters read on the host (no device-to-host copy per call).
inline void check_host_input(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor (a few values read on "
              "the host when the kernel is launched), got a tensor on ", t.device());
}

}  // namespace aware3d
