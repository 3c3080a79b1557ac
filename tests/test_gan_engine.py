"""GAN engine: losses, R1, EMA, resume equivalence and 2-process data parallelism (gloo)."""
import math
import os
import socket

import pytest
import torch
import torch.nn as nn

from aware3d.methods import giraffe as gm
from aware3d.train import gan


class RandomImages:
    """In-memory stand-in for ImageFolderDataset: ``sample(n, generator)`` -> [-1, 1] images."""

    def __init__(self, res, n=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, res, res, generator=g) * 2 - 1

    def sample(self, n, generator=None):
        idx = torch.randint(0, self.images.shape[0], (n,), generator=generator)
        return self.images[idx]


def test_nonsaturating_losses_hand_values():
    # D = 0 everywhere: softplus(0) = log 2 for each term
    z = torch.zeros(4, 1)
    assert gan.generator_loss(z).item() == pytest.approx(math.log(2))
    lr, lf = gan.discriminator_loss(z, z)
    assert lr.item() == pytest.approx(math.log(2)) and lf.item() == pytest.approx(math.log(2))
    # D(fake) = 2: G loss = softplus(-2) = log(1 + e^-2) = 0.126928
    assert gan.generator_loss(torch.full((3, 1), 2.0)).item() == pytest.approx(0.126928, abs=1e-6)


def test_r1_penalty_analytic():
    # D(x) = sum_j w_j x_j^2 -> grad = 2 w x; with w = 1, x = per-sample constant c over 12 values:
    # ||grad||^2 = 12 * 4 c^2; c = (1, 2) -> (48, 192) -> mean 120.
    x = torch.stack([torch.full((3, 2, 2), 1.0), torch.full((3, 2, 2), 2.0)]).requires_grad_(True)
    d = (x ** 2).flatten(1).sum(1, keepdim=True)
    assert gan.r1_penalty(d, x).item() == pytest.approx(120.0)


def test_r1_penalty_matches_per_sample_reference_and_is_differentiable():
    torch.manual_seed(0)
    D = gm.DCDiscriminator(n_feat=32, img_size=16)
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    pen = gan.r1_penalty(D(x), x)
    # reference: each sample on its own (batch of 1), squared norm by an explicit dot product
    norms = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].detach().clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(D(xi).sum(), xi)
        norms.append(torch.dot(gi.flatten(), gi.flatten()))
    ref = torch.stack(norms).mean()
    assert ref > 0
    assert pen.item() == pytest.approx(ref.item(), rel=1e-5)
    pen.backward()                                          # double backward reaches D's weights
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())


def test_ema_update_hand_values():
    a, b = nn.Linear(2, 1), nn.Linear(2, 1)
    a.register_buffer("count", torch.tensor(0.0))
    b.register_buffer("count", torch.tensor(7.0))
    with torch.no_grad():
        a.weight.fill_(1.0); a.bias.fill_(-2.0)
        b.weight.fill_(3.0); b.bias.fill_(4.0)
    gan.ema_update(a, b, beta=0.9)
    # 0.9 * 1 + 0.1 * 3 = 1.2 ; 0.9 * -2 + 0.1 * 4 = -1.4 ; buffers copied: 7
    assert torch.allclose(a.weight, torch.full((1, 2), 1.2))
    assert torch.allclose(a.bias, torch.tensor([-1.4]))
    assert a.count.item() == 7.0
    gan.ema_update(a, b, beta=0.9)                          # 0.9 * 1.2 + 0.3 = 1.38
    assert torch.allclose(a.weight, torch.full((1, 2), 1.38))


def test_lazy_r1_phase_schedule():
    m = gm.build(gm.make_config("tiny16"))
    e = gan.GanEngine(m, gan.GanConfig(batch_size=4, r1_interval=4))
    assert [e.phases(s) for s in range(5)] == [["G", "D", "R1"], ["G", "D"], ["G", "D"], ["G", "D"],
                                               ["G", "D", "R1"]]
    e1 = gan.GanEngine(m, gan.GanConfig(batch_size=4, r1_interval=1))
    assert e1.phases(0) == ["G", "D"]                      # R1 folded into the D phase


def _run(tmp, steps, resume=False, seed=3, **kw):
    cfg = gm.make_config("tiny16", seed=seed, bf16=False)
    method = gm.build(cfg)
    gcfg = method.gan_config(max_steps=steps, progress=False, sample_every=0, checkpoint_every=0, **kw)
    gan.train_gan(method, RandomImages(16), tmp, gcfg, resume=resume, config={"preset": "tiny16"})
    from aware3d.train.io import load_checkpoint
    return load_checkpoint(tmp)


def test_resume_equals_uninterrupted(tmp_path):
    # run A: 3 steps straight; run B: 2 steps, stop, resume for the 3rd. Same seed, full RNG state in
    # the checkpoint -> identical weights (G, D, EMA) and optimiser state, to float round-off (0 here).
    a = _run(tmp_path / "a", 3)
    _run(tmp_path / "b", 2)
    b = _run(tmp_path / "b", 3, resume=True)
    assert a["step"] == b["step"] == 3
    for key in ("G", "D", "G_ema"):
        for name, v in a[key].items():
            assert torch.equal(v, b[key][name]), f"{key}.{name} differs after resume"
    assert torch.equal(a["rng"], b["rng"])
    # and the run actually trained: weights moved from their initial values
    init = gm.build(gm.make_config("tiny16", seed=3)).generator.state_dict()
    assert any(not torch.equal(init[n], a["G"][n]) for n in init)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out_dir, steps):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        cfg = gm.make_config("tiny16", seed=5, bf16=False, batch_size=4)
        method = gm.build(cfg)
        gcfg = method.gan_config(max_steps=steps, progress=False, sample_every=0, checkpoint_every=0,
                                 device="cpu", log_every=1)
        gan.train_gan(method, RandomImages(16), out_dir, gcfg, config={"preset": "tiny16"})
    finally:
        dist.destroy_process_group()


@pytest.fixture
def _restore_threads():
    # the test below raises the intra-op thread count for its comparison: give the tests after it
    # the suite's setting (tests/conftest.py) back
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
@pytest.mark.usefixtures("_restore_threads")
def test_ddp_two_gloo_processes_equal_one_process(tmp_path):
    # 2 processes with 2 images each vs 1 process with the global batch of 4: every rank draws the
    # same global batch and keeps its half; gradients are averaged -> same update. Float sums differ
    # in order only, so the weights agree to ~1e-6 after 2 RMSprop steps (step size ~ 10 lr = 5e-3
    # per weight, so a wrong average - e.g. a missing all-reduce - shows up as differences ~1e-3).
    import torch.multiprocessing as mp
    steps = 2
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp"), steps), nprocs=2, join=True)
    torch.set_num_threads(1)
    cfg = gm.make_config("tiny16", seed=5, bf16=False, batch_size=4)
    method = gm.build(cfg)
    gcfg = method.gan_config(max_steps=steps, progress=False, sample_every=0, checkpoint_every=0, device="cpu",
                             log_every=1)
    gan.train_gan(method, RandomImages(16), tmp_path / "one", gcfg, config={"preset": "tiny16"})
    torch.set_num_threads(os.cpu_count() or 1)
    from aware3d.train.io import load_checkpoint
    a, b = load_checkpoint(tmp_path / "ddp"), load_checkpoint(tmp_path / "one")
    assert a["world_size"] == 2 and b["world_size"] == 1
    init = gm.build(gm.make_config("tiny16", seed=5)).generator.state_dict()
    worst, moved = 0.0, 0.0
    for key in ("G", "D"):
        for name, v in b[key].items():
            worst = max(worst, (a[key][name] - v).abs().max().item())
            if key == "G":
                moved = max(moved, (init[name] - v).abs().max().item())
    assert moved > 1e-3            # training changed the weights by far more than the tolerance
    assert worst < 1e-5, f"data-parallel weights differ from the single process by {worst}"
    # the logged losses are global-batch means too (averaged over the ranks)
    import csv
    def logged(run):
        return {(r["step"], r["tag"]): float(r["value"]) for r in csv.DictReader(open(run / "scalars.csv"))
                if r["tag"] in ("loss_G", "loss_D", "R1")}
    la, lb = logged(tmp_path / "ddp"), logged(tmp_path / "one")
    assert la.keys() == lb.keys() and len(la) == 6          # 3 tags at steps 1 and 2
    assert all(abs(la[k] - lb[k]) < 1e-5 for k in la)


def test_r1_with_bf16_discriminator_close_to_fp32():
    # bf16 keeps 8 mantissa bits: the penalty (a sum of ~12k squared gradients) agrees to a few %
    torch.manual_seed(0)
    D = gm.DCDiscriminator(n_feat=64, img_size=32)
    x = torch.rand(8, 3, 32, 32, requires_grad=True)
    ref = gan.r1_penalty(D(x), x).item()
    D.bf16 = True
    low = gan.r1_penalty(D(x), x).item()
    assert ref > 0 and abs(low - ref) / ref < 0.05


def test_collapse_watch_warns_once_after_constant_fakes():
    w = gan.CollapseWatch(steps=3, tol=1e-3)
    assert w.update(1, {"fake_std": 1e-4}) is None and w.update(2, {"fake_std": 1e-4}) is None
    assert w.update(3, {"fake_std": 0.2}) is None          # a varied batch resets the count
    assert [w.update(s, {"fake_std": 0.0}) is None for s in (4, 5)] == [True, True]
    msg = w.update(6, {"fake_std": 0.0})
    assert msg and "since step 4" in msg and "r1_weight" in msg
    assert w.update(7, {"fake_std": 0.0}) is None          # once
    assert gan.CollapseWatch(steps=0).update(1, {"fake_std": 0.0}) is None


def test_collapsed_generator_is_reported_during_training(tmp_path):
    # A generator whose output is pinned at 0 (black images, as a collapsed run's saturated sigmoid)
    # is reported after collapse_steps steps; a healthy tiny run is not.
    cfg = gm.make_config("tiny16", seed=0, bf16=False)
    method = gm.build(cfg)
    G = method.generator

    class Black(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = G

        def forward(self, x):
            return self.inner(x) * 0.0

    method.generator = Black()
    gcfg = method.gan_config(max_steps=4, progress=False, sample_every=0, checkpoint_every=0, collapse_steps=3)
    with pytest.warns(RuntimeWarning, match="constant .* since step 1"):
        gan.train_gan(method, RandomImages(16), tmp_path / "black", gcfg, config={})
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _run(tmp_path / "ok", 4, collapse_steps=3)


def test_max_minutes_counts_step_time_after_the_warm_up(tmp_path, monkeypatch):
    """Fake clock, 10 s per step: max_minutes=1 runs the warm-up step plus 6 counted steps."""
    import itertools

    from aware3d.methods import giraffe as gm

    ticks = itertools.count(0.0, 10.0)  # read before and after each step: 10 s a step
    monkeypatch.setattr(gan, "step_clock", lambda: next(ticks))
    data = tmp_path / "images"
    data.mkdir()
    from PIL import Image
    for i in range(4):
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(data / f"{i}.png")
    run = gm.METHOD.train(str(data), tmp_path / "run", preset="tiny", max_minutes=1.0, progress=False,
                          sample_every=0, checkpoint_every=0)
    from aware3d.train.io import load_checkpoint

    assert load_checkpoint(run)["step"] == 7
