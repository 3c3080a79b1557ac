"""Compiled fast paths (C++/OpenMP, CUDA twin) and their pure-PyTorch references.

- :mod:`aware3d.kernels.hashgrid`: multiresolution hash encoding (Instant-NGP) and ``HashGrid``.
- :mod:`aware3d.kernels.marching`: occupancy grid, ray marching to packed samples, and packed
  volume-rendering weights.

The compiled kernels are built on first use, never at import (see :mod:`aware3d.kernels._build`).
"""
from aware3d.kernels._build import CompiledBackendUnavailable
from aware3d.kernels.hashgrid import HashGrid, grid_resolutions, hash_encode, hash_encode_reference

__all__ = ["CompiledBackendUnavailable", "HashGrid", "grid_resolutions", "hash_encode",
           "hash_encode_reference"]
