"""Compiled fast paths (C++/OpenMP, CUDA twin) and their pure-PyTorch references.

- :mod:`aware3d.kernels.hashgrid`: multiresolution hash encoding (Instant-NGP) and ``HashGrid``.
- :mod:`aware3d.kernels.marching`: occupancy grid, ray marching to packed samples, and packed
  volume-rendering weights.

The compiled kernels are built on first use, never at import (see :mod:`aware3d.kernels._build`).
:func:`ensure_built` builds or loads them now (training loops call it before their clock starts)
and returns their status; :func:`kernel_status` reports it without building.
"""
from aware3d.kernels._build import CompiledBackendUnavailable, ensure_built, kernel_status
from aware3d.kernels.hashgrid import HashGrid, grid_resolutions, hash_encode, hash_encode_reference

__all__ = ["CompiledBackendUnavailable", "HashGrid", "ensure_built", "grid_resolutions",
           "hash_encode", "hash_encode_reference", "kernel_status"]
