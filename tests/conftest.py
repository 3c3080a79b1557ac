"""Suite-wide settings.

The suite runs as `pytest -n 2` (two worker processes on a 2-core machine). Each worker, and every
subprocess it starts (CLI tests), uses one intra-op thread: two workers with two OpenMP threads each
oversubscribe the cores, and OpenMP's spin-waiting then makes small ops orders of magnitude slower.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
