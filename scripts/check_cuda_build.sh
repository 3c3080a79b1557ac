#!/usr/bin/env bash
# Developer check: build and load aware3d's CUDA extension with warnings as errors, on a machine
# with or without a GPU (nothing is run on a GPU; the library is only loaded).
#
#   scripts/check_cuda_build.sh            # cold build in a temporary folder, then load it
#
# Environment (all optional):
#   AWARE3D_CUDA_VENV     virtual environment with a CUDA build of torch (default /tmp/cuda-venv;
#                         created when missing, with AWARE3D_CUDA_TORCH, numpy and ninja)
#   AWARE3D_CUDA_TORCH    torch requirement for a new venv (default torch==2.14.1)
#   CUDA_HOME             CUDA toolkit (default: the folder above the nvcc on PATH)
#   TORCH_CUDA_ARCH_LIST  GPU architectures to compile for (default 9.0)
#   MAX_JOBS              parallel compiler jobs (default: the number of cores)
#   AWARE3D_CHECK_KEEP    folder to build in and keep (default: a temporary folder, removed)
#
# Host code (the C++ bindings and the host part of the .cu files) is compiled with
# -Wall -Wextra -Werror; device code with nvcc's "-Werror all-warnings". Exit status 0 means the
# build had no warning, the library loaded and registered every op of bindings_cuda.cpp.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${AWARE3D_CUDA_VENV:-/tmp/cuda-venv}"
torch_req="${AWARE3D_CUDA_TORCH:-torch==2.14.1}"

if ! command -v nvcc >/dev/null 2>&1 && [ -z "${CUDA_HOME:-}" ]; then
  echo "check_cuda_build: no nvcc on PATH and CUDA_HOME unset: install the CUDA toolkit" >&2
  exit 2
fi
if [ -z "${CUDA_HOME:-}" ]; then
  # The toolkit nvcc runs from (nvcc on PATH may be a wrapper script or a symlink): its TOP.
  probe="$(mktemp -d -t aware3d-nvcc.XXXXXX)"
  : > "$probe/empty.cu"
  top="$(nvcc --dryrun -c "$probe/empty.cu" -o "$probe/empty.o" 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)"
  rm -rf "$probe"
  if [ -n "$top" ] && [ -d "$top" ]; then
    CUDA_HOME="$(cd "$top" && pwd -P)"
  else
    CUDA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
  fi
fi
export CUDA_HOME
export PATH="$CUDA_HOME/bin:$PATH"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}"

if [ ! -x "$venv/bin/python" ]; then
  echo "check_cuda_build: creating $venv with $torch_req" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "$torch_req" numpy ninja
fi
py="$venv/bin/python"
if ! "$py" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)'; then
  echo "check_cuda_build: $venv has a torch without CUDA ($("$py" -c 'import torch; print(torch.__version__)'))" >&2
  exit 2
fi
# torch's JIT builder runs ninja from the venv
export PATH="$venv/bin:$PATH"

build_dir="${AWARE3D_CHECK_KEEP:-}"
cleanup=""
if [ -z "$build_dir" ]; then
  build_dir="$(mktemp -d -t aware3d-cuda-check.XXXXXX)"
  cleanup="$build_dir"
fi
trap '[ -n "$cleanup" ] && rm -rf "$cleanup"' EXIT

echo "nvcc: $(nvcc --version | tail -n 2 | head -n 1)"
echo "CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"

PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" "$py" - "$build_dir" <<'PY'
import sys
import time
from pathlib import Path

import torch

from aware3d.kernels import _build

root = Path(sys.argv[1])
host_warn = ["-Wall", "-Wextra", "-Werror"]
spec = _build.build_spec(
    "cuda", root=root,
    cflags=_build.CUDA_CFLAGS + host_warn,
    cuda_cflags=_build.CUDA_NVCC_FLAGS + ["-Werror", "all-warnings",
                                          "-Xcompiler", ",".join(host_warn)])
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), GPU visible: "
      f"{torch.cuda.is_available()}")
print(f"building {spec.name} in {spec.folder}")
print(f"  host flags: {' '.join(spec.cflags)}")
print(f"  nvcc flags: {' '.join(spec.cuda_cflags)}")
start = time.perf_counter()
try:
    _build._run_build(spec)  # compiles, links and loads the op library
except Exception as exc:  # noqa: BLE001 - show the compiler output and fail
    print(f"FAILED after {time.perf_counter() - start:.1f} s:\n{exc}", file=sys.stderr)
    sys.exit(1)
seconds = time.perf_counter() - start
ops = sorted(str(s.name) + str(s.overload_name and "." + s.overload_name)
             for s in torch._C._jit_get_all_schemas() if s.name.startswith(spec.namespace + "::"))
want = {f"{spec.namespace}::{n}" for n in ("hash_encode_forward", "hash_encode_backward",
                                             "march_rays", "render_weights_packed_forward",
                                             "render_weights_packed_backward")}
print(f"built and loaded in {seconds:.1f} s; {len(ops)} ops registered:")
for name in ops:
    print(f"  torch.ops.{name.replace('::', '.')}")
missing = want - set(ops)
if missing:
    print(f"FAILED: ops missing from the library: {sorted(missing)}", file=sys.stderr)
    sys.exit(1)
print("OK: the CUDA extension builds with warnings as errors and loads")
PY
