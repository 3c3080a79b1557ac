"""Tests for aware3d.train.io: atomic writes, checkpoints, RNG state, run folders, logging, media."""
from __future__ import annotations

import csv
import json
import os
import random
import signal

import numpy as np
import pytest
import torch

from aware3d.train import io as tio


# ---------------------------------------------------------------------------------------------- atomic

def test_atomic_save_failure_keeps_old_file(tmp_path, monkeypatch):
    # A torch.save that writes half a file and then dies (disk full, kill) must leave the previous
    # checkpoint byte-identical and no temporary file behind: expected old value 1.0 survives.
    path = tmp_path / "model.pt"
    tio.atomic_save({"w": torch.tensor([1.0])}, path)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial garbage")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        tio.atomic_save({"w": torch.tensor([2.0])}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.load(path)["w"].item() == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_atomic_write_text_and_bytes(tmp_path):
    # The content read back is exactly what was written; parents are created.
    p = tio.atomic_write_text(tmp_path / "a" / "b.txt", "héllo\nworld\n")
    assert p.read_text(encoding="utf-8") == "héllo\nworld\n"
    q = tio.atomic_write_bytes(tmp_path / "c.bin", b"\x00\x01\x02")
    assert q.read_bytes() == b"\x00\x01\x02"


# ---------------------------------------------------------------------------------------- checkpoints

def test_checkpoint_keep_prune_and_latest(tmp_path):
    # Saving steps 100..500 with keep=3 leaves exactly steps 300, 400, 500; "latest" names 500 and
    # load_checkpoint(run_dir) returns step 500 with its tensor (value 5.0).
    for k in range(1, 6):
        tio.save_checkpoint(tmp_path, k * 100, {"x": torch.tensor(float(k))}, keep=3)
    names = [p.name for p in tio.list_checkpoints(tmp_path)]
    assert names == ["step_00000300.pt", "step_00000400.pt", "step_00000500.pt"]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000500.pt"
    ck = tio.load_checkpoint(tmp_path)
    assert ck["step"] == 500 and ck["x"].item() == 5.0
    # an explicit file loads that file (step 300 -> 3.0)
    assert tio.load_checkpoint(tmp_path / "checkpoints" / "step_00000300.pt")["x"].item() == 3.0
    # without the pointer, the highest step is used
    (tmp_path / "checkpoints" / "latest").unlink()
    assert tio.load_checkpoint(tmp_path)["step"] == 500


def test_load_checkpoint_errors_name_the_file(tmp_path):
    # Missing run -> CheckpointNotFoundError naming the checkpoints folder; a corrupt file ->
    # CheckpointError naming that file.
    with pytest.raises(tio.CheckpointNotFoundError, match="checkpoints"):
        tio.load_checkpoint(tmp_path)
    bad = tmp_path / "checkpoints" / "step_00000007.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(tio.CheckpointError, match="step_00000007.pt"):
        tio.load_checkpoint(tmp_path)


def test_rng_state_round_trip_through_checkpoint(tmp_path):
    # Draws after restoring the saved state equal the draws made right after saving it, for python
    # random, numpy and torch (including numpy's cached Gaussian), also after a weights_only load.
    random.seed(1); np.random.seed(2); torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    tio.save_checkpoint(tmp_path, 1, {"rng": tio.get_rng_state()})

    def draw():
        return (random.random(), np.random.standard_normal(3).tolist(), np.random.rand(2).tolist(),
                torch.rand(4).tolist(), torch.randn(2).tolist())

    first = draw()
    random.seed(99); np.random.seed(99); torch.manual_seed(99)
    assert draw() != first
    tio.set_rng_state(tio.load_checkpoint(tmp_path)["rng"])
    assert draw() == first


# ------------------------------------------------------------------------------------------ run folder

def test_run_dir_refuses_overwrite_without_resume(tmp_path):
    # A fresh folder gets config.yaml + config.json with the same plain data (method first, tuple
    # -> list, Path -> str). Once it holds a checkpoint, preparing it again without resume raises
    # RunDirError mentioning --resume; with resume=True it is accepted.
    import yaml

    out = tmp_path / "run"
    cfg = {"lr": 5e-4, "res": (64, 64), "data": tmp_path / "lego"}
    run = tio.prepare_run_dir(out, "nerf", cfg, resume=False)
    want = {"method": "nerf", "lr": 5e-4, "res": [64, 64], "data": str(tmp_path / "lego")}
    assert json.loads((run / "config.json").read_text()) == want
    assert yaml.safe_load((run / "config.yaml").read_text()) == want
    assert tio.load_run_config(run) == want
    # no checkpoint yet: reusing the folder is fine
    tio.prepare_run_dir(out, "nerf", cfg, resume=False)
    tio.save_checkpoint(run, 10, {"a": torch.zeros(1)})
    with pytest.raises(tio.RunDirError, match="--resume"):
        tio.prepare_run_dir(out, "nerf", cfg, resume=False)
    assert tio.prepare_run_dir(out, "nerf", cfg, resume=True) == out
    with pytest.raises(tio.RunDirError, match="ngp"):
        tio.prepare_run_dir(out, "ngp", cfg, resume=True)


# ------------------------------------------------------------------------------------------- logging

def test_scalar_logger_csv_and_tensorboard(tmp_path):
    # Two log calls with a tag appearing only in the second: the CSV (long format) holds exactly the
    # 3 logged rows with their values, and a TensorBoard event file exists under tb/.
    with tio.ScalarLogger(tmp_path) as log:
        log.log(1, {"loss": 0.5})
        log.log(2, {"loss": torch.tensor(0.25), "psnr": 21.0})
        log.log_image(2, "rgb", np.random.rand(8, 8, 3))
    with open(tmp_path / "scalars.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), r["tag"], float(r["value"])) for r in rows] == [
        (1, "loss", 0.5), (2, "loss", 0.25), (2, "psnr", 21.0)]
    assert all(float(r["wall_time"]) > 1e9 for r in rows)
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    # reopening appends without a second header: 4 rows after one more log
    with tio.ScalarLogger(tmp_path, tensorboard=False) as log:
        log.log(3, {"loss": 0.125})
    with open(tmp_path / "scalars.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4


# -------------------------------------------------------------------------------------- images/video

def test_save_png_round_trip(tmp_path):
    # float [0,1] -> uint8 by round(255 x): 0.5 -> 128; RGBA and grayscale keep their channels.
    from PIL import Image

    img = np.full((4, 5, 3), 0.5, np.float32)
    tio.save_png(tmp_path / "a.png", img)
    back = np.asarray(Image.open(tmp_path / "a.png"))
    assert back.shape == (4, 5, 3) and (back == 128).all()
    tio.save_png(tmp_path / "b.png", torch.ones(4, 5, 4))
    assert np.asarray(Image.open(tmp_path / "b.png")).shape == (4, 5, 4)
    tio.save_png(tmp_path / "c.png", np.zeros((4, 5), np.uint8))
    assert np.asarray(Image.open(tmp_path / "c.png")).shape == (4, 5)


def test_make_grid_layout():
    # 5 images 2x3, nrow=3, pad=1: 2 rows -> H = 2*(2+1)+1 = 7, W = 3*(3+1)+1 = 13; image k=4 sits at
    # row 1, col 1 -> top-left pixel (1 + 3, 1 + 4) = (4, 5).
    imgs = np.stack([np.full((2, 3, 3), k / 10, np.float32) for k in range(5)])
    g = tio.make_grid(imgs, nrow=3, pad=1, pad_value=1.0)
    assert g.shape == (7, 13, 3)
    assert np.allclose(g[4, 5], 0.4) and np.allclose(g[0, 0], 1.0) and np.allclose(g[6, 12], 1.0)
    gt = tio.make_grid(torch.from_numpy(imgs), nrow=3, pad=1)
    assert isinstance(gt, torch.Tensor) and np.allclose(gt.numpy(), g)


@pytest.mark.parametrize("ext", [".mp4", ".gif"])
def test_save_video_frame_count(tmp_path, ext):
    # 7 distinct frames of odd size 33x31 (mp4 pads to 34x32 for yuv420p) read back as 7 frames.
    import imageio.v3 as iio

    t = np.linspace(0, 1, 7, dtype=np.float32)[:, None, None, None]
    frames = np.broadcast_to(t, (7, 33, 31, 3)).copy()
    frames[:, :, :, 1] = 1 - frames[:, :, :, 1]
    path = tio.save_video(tmp_path / f"v{ext}", frames, fps=10)
    back = iio.imread(path, index=None)
    assert back.shape[0] == 7
    if ext == ".mp4":
        assert back.shape[1:] == (34, 32, 3)
        # brightness ramps with the frame index (red channel of frame 0 ~ 0, last ~ 255)
        assert back[0, ..., 0].mean() < 20 and back[-1, ..., 0].mean() > 235
    else:
        assert back.shape[1:3] == (33, 31)
    assert [p.name for p in tmp_path.iterdir()] == [f"v{ext}"]  # no temp file left


def test_colorize_depth():
    # Near -> warm end of the map (red > blue), far -> cool end (blue > red), NaN -> black; values
    # stay in [0, 1].
    d = np.array([[1.0, 2.0, np.nan]], np.float32)
    rgb = tio.colorize_depth(d, near=1.0, far=2.0)
    assert rgb.shape == (1, 3, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert rgb[0, 0, 0] > rgb[0, 0, 2] and rgb[0, 1, 2] > rgb[0, 1, 0]
    assert (rgb[0, 2] == 0).all()
    assert isinstance(tio.colorize_depth(torch.ones(2, 2) * 3), torch.Tensor)


# ---------------------------------------------------------------------------------------------- SIGINT

def test_sigint_calls_callback_then_reraises():
    # A real SIGINT inside the block: callback runs exactly once, then KeyboardInterrupt escapes;
    # the previous handler is restored afterwards.
    calls = []
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with tio.install_sigint_checkpoint(lambda: calls.append("saved")):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs at the next bytecode boundary
                pass
    assert calls == ["saved"]
    assert signal.getsignal(signal.SIGINT) is before


def test_sigint_deferred_waits_for_check():
    # Deferred mode: the signal only sets `requested`; the loop keeps running until check(), which
    # saves once and raises. Expected: 3 iterations completed after the signal, 1 callback.
    calls, after = [], 0
    with pytest.raises(KeyboardInterrupt):
        with tio.install_sigint_checkpoint(lambda: calls.append("saved"), defer=True) as guard:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(3):
                after += 1
            assert guard.requested
            guard.check()
    assert after == 3 and calls == ["saved"]


def test_scalar_logger_resume_drops_rows_after_the_checkpoint(tmp_path):
    # A run logged steps 1..5, was checkpointed at 3 and killed; the resumed run logs 4 and 5 again.
    # Every step must appear once (the interrupted run's 4 and 5 are gone), in order.
    with tio.ScalarLogger(tmp_path) as log:
        for s in range(1, 6):
            log.log(s, {"loss": float(s)})
    with tio.ScalarLogger(tmp_path, resume_step=3) as log:
        for s in (4, 5):
            log.log(s, {"loss": 10.0 * s})
    with open(tmp_path / "scalars.csv", newline="") as f:
        rows = [(int(r["step"]), float(r["value"])) for r in csv.DictReader(f)]
    assert rows == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0)]


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno

    from aware3d.utils import atomic

    path = tmp_path / "config.json"
    atomic.atomic_write_text(path, "old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match=r"config.json: the disk is full \(No space left on device; .* MiB free\) "
                                      r"while writing it; the previous config.json is unchanged"):
        atomic.atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left
