"""The device a command runs on: the one asked for, or CUDA when available, else the CPU."""
from __future__ import annotations

import torch


def pick_device(device: "str | torch.device | None" = None) -> torch.device:
    """``device``, or CUDA when available, else the CPU (``"auto"`` means the same). Asking for CUDA
    where torch has none is a clear error."""
    if isinstance(device, torch.device):
        device = str(device)
    if device and str(device) != "auto":
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"--device: expected cpu, cuda or cuda:N, got {device!r}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            why = "a CPU-only build" if torch.version.cuda is None else "a CUDA build, but no GPU is visible"
            raise ValueError(f"--device {device}: this torch sees no CUDA device (it is {why}); use --device cpu")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
