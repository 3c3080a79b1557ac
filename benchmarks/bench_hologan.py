"""HoloGAN: generation and training-step time of the paper presets, optionally in pairs against the
official TensorFlow code (thunguyenphuoc/HoloGAN) on the same core.

    .venv/bin/python benchmarks/bench_hologan.py [--preset celeba64] [--threads 1] [--pairs 5]
        [--official CHECKOUT --tf-python /path/to/python-with-tensorflow]

aware3d: the preset's EMA-free generator in eval mode without gradients at batch 1 and 16, and one
engine training step at the preset's batch (D step, then two G steps: ``d_first``, ``g_steps`` 2,
plus the EMA update). With ``--official`` a worker process (``--tf-python``: a Python with
TensorFlow 2; the official code is TensorFlow 1 and runs through ``tf.compat.v1`` in graph mode,
with ``tf.contrib.slim.flatten`` supplied and the image-saving modules it imports but does not call
stood in for) builds the official graph (``generator_AdaIN`` / ``discriminator_IN`` at 64^2, the
``_res128`` pair at 128^2; the released config names a generator_AdaIN8 that does not exist) and
times the same cases: ``sess.run(G)``, and one iteration of its training loop (the D optimiser once,
the G optimiser twice; the loss evaluations it logs after them are not counted). Each round runs
the official case, then aware3d's; both clocks are the CPU time of their own process
(``time.process_time``), one thread each (TF: intra- and inter-op threads 1). Pin the command to one
core (``taskset -c N``) so that both processes share it. Nothing of the official code is in this
repository: the worker imports it from ``CHECKOUT``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

import torch

from aware3d.methods import hologan as hm
from aware3d.train.gan import GanEngine, tune_cpu_allocator

# The worker: builds the official graph under TF 2's compat.v1 and answers timing requests on stdin.
WORKER = textwrap.dedent(r'''
    import json, sys, time, types
    checkout, res, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    import numpy as np
    import tensorflow.compat.v1 as tf
    tf.disable_v2_behavior()

    def _flatten(x):
        return tf.reshape(x, [-1, int(np.prod(x.get_shape().as_list()[1:]))])

    slim = types.ModuleType("tensorflow.contrib.slim"); slim.flatten = _flatten
    contrib = types.ModuleType("tensorflow.contrib"); contrib.slim = slim
    tf.contrib = contrib
    sys.modules.update({"tensorflow": tf, "tensorflow.contrib": contrib, "tensorflow.contrib.slim": slim})
    for name in ("scipy", "scipy.misc", "scipy.io", "PIL", "PIL.Image"):   # imported, never called here
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name); mod.Image = None; sys.modules[name] = mod
    sys.path.insert(0, checkout)
    cfg_path = "/tmp/_hologan_bench_config.json"
    cfg = json.load(open(checkout + "/config_HoloGAN.json"))
    gen, dis, style = (("generator_AdaIN", "discriminator_IN", "false") if res == 64
                       else ("generator_AdaIN_res128", "discriminator_IN_style_res128", "true"))
    cfg.update(generator=gen, discriminator=dis, style_disc=style, batch_size=batch)
    json.dump(cfg, open(cfg_path, "w"))
    sys.argv = [sys.argv[0], cfg_path]
    import model_HoloGAN as M
    sess = tf.Session(config=tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1))
    m = M.HoloGAN(sess, output_height=res, output_width=res)
    m.build_HoloGAN()
    d_optim = tf.train.AdamOptimizer(cfg["d_eta"], beta1=cfg["beta1"], beta2=cfg["beta2"]).minimize(m.d_loss, var_list=m.d_vars)
    g_optim = tf.train.AdamOptimizer(cfg["g_eta"], beta1=cfg["beta1"], beta2=cfg["beta2"]).minimize(m.g_loss, var_list=m.g_vars)
    sess.run(tf.global_variables_initializer())
    rng = np.random.default_rng(0)
    n_g = sum(int(np.prod(v.shape.as_list())) for v in m.g_vars)
    n_d = sum(int(np.prod(v.shape.as_list())) for v in m.d_vars)

    def view(n):
        v = np.zeros((n, 6), np.float32)
        v[:, 0] = np.deg2rad(rng.integers(cfg["azi_low"], cfg["azi_high"], n))
        v[:, 1] = np.deg2rad(90 - rng.integers(cfg["ele_low"], cfg["ele_high"], n))
        v[:, 2] = 1
        return v

    def run(case, n):
        z = rng.uniform(-1, 1, (n, cfg["z_dim"])).astype(np.float32)
        feed = {m.z: z, m.view_in: view(n)}
        if case == "gen":
            t = time.process_time(); sess.run(m.G, feed); return time.process_time() - t
        feed[m.inputs] = rng.uniform(-1, 1, (n, res, res, 3)).astype(np.float32)
        t = time.process_time()
        sess.run(d_optim, feed); sess.run(g_optim, feed); sess.run(g_optim, feed)
        return time.process_time() - t

    print(json.dumps({"ready": True, "g_params": n_g, "d_params": n_d, "tf": tf.__version__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        print(json.dumps({"seconds": run(req["case"], req["n"])}), flush=True)
''')


class Official:
    """The worker process: ``time(case, n)`` -> CPU seconds of one official call."""

    def __init__(self, python: str, checkout: str, res: int, batch: int):
        env = dict(os.environ, OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
                   TF_CPP_MIN_LOG_LEVEL="3")
        self.p = subprocess.Popen([python, "-c", WORKER, checkout, str(res), str(batch)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict:
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("the official worker exited (run it by hand to see why)")
            if line.startswith("{"):
                return json.loads(line)

    def time(self, case: str, n: int) -> float:
        self.p.stdin.write(json.dumps({"case": case, "n": n}) + "\n")
        self.p.stdin.flush()
        return self._read()["seconds"]

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=60)


class RandomReal:
    def __init__(self, res: int):
        self.res = res

    def sample(self, n, generator=None):
        return torch.rand(n, 3, self.res, self.res, generator=generator) * 2 - 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="celeba64", choices=("celeba64", "celeba128"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=5, help="timed rounds per case (after one warm-up)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--official", default=None, help="a checkout of thunguyenphuoc/HoloGAN (outside the repo)")
    ap.add_argument("--tf-python", default=None, help="a Python with TensorFlow 2 for the official worker")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    cfg = hm.make_config(args.preset)
    method = hm.build(cfg)
    G = method.generator.eval().requires_grad_(False)
    n_g = sum(p.numel() for p in method.generator.parameters())
    n_d = sum(p.numel() for p in method.discriminator.parameters())
    off = None
    if args.official:
        if not args.tf_python:
            raise SystemExit("--official needs --tf-python (a Python with TensorFlow)")
        off = Official(args.tf_python, args.official, cfg.resolution, cfg.batch_size)
    cases = []
    for B in args.batches:
        x = method.sample_inputs(B, torch.Generator().manual_seed(0), train=False)

        def a3d(x=x):
            with torch.no_grad():
                G(x)
        cases.append((f"generate {cfg.resolution}^2 batch {B}", "gen", B, a3d))
    if not args.no_train:
        tm = hm.build(cfg)
        eng = GanEngine(tm, tm.gan_config(), device="cpu")
        data = RandomReal(cfg.resolution)
        cases.append((f"train step batch {cfg.batch_size} (D, G, G)", "train", cfg.batch_size,
                      lambda: eng.train_step(data)))
    print(f"# HoloGAN {args.preset}: aware3d G / D {n_g:,} / {n_d:,} parameters"
          + (f"; official (TF {off.info['tf']}) {off.info['g_params']:,} / {off.info['d_params']:,}" if off else "")
          + f"; torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU-time clocks; "
          f"load average {os.getloadavg()[0]:.1f}")
    if off:
        print("| case | official ms/image (best / median) | aware3d ms/image (best / median) | speed-up (best / median) |")
        print("|---|---|---|---|")
    else:
        print("| case | aware3d ms/image (best / median) |")
        print("|---|---|")
    for name, kind, B, fn in cases:
        t_off, t_a3d = [], []
        if off:
            off.time(kind, B)
        fn()
        for _ in range(args.pairs):
            if off:
                t_off.append(off.time(kind, B))
            t = time.process_time()
            fn()
            t_a3d.append(time.process_time() - t)
        ba, ma = min(t_a3d), statistics.median(t_a3d)
        if off:
            bo, mo = min(t_off), statistics.median(t_off)
            print(f"| {name} | {1e3 * bo / B:.1f} / {1e3 * mo / B:.1f} | {1e3 * ba / B:.1f} / {1e3 * ma / B:.1f} | "
                  f"{bo / ba:.2f}x / {mo / ma:.2f}x |", flush=True)
        else:
            print(f"| {name} | {1e3 * ba / B:.1f} / {1e3 * ma / B:.1f} |", flush=True)
    if off:
        off.close()
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
