"""bf16 autocast on the CPU or CUDA, or nothing."""
from __future__ import annotations

import torch


def bf16_autocast(enabled: bool, device: torch.device):
    """``torch.autocast`` to bfloat16 on ``device`` when ``enabled``, else a disabled one."""
    if enabled and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)
