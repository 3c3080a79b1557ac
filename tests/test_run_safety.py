"""Nothing lost: a rejected resume changes nothing on disk, one trainer per run folder (with the
stale-lock rule), orphan temporary checkpoints cleaned on the next start."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from aware3d import registry
from aware3d.train import io


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("imgs") / "images"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(folder / f"{i}.png")
    return folder


def _train_giraffe(images, out, **kw):
    return registry.get("giraffe").train(images, out, progress=False, sample_every=0, **kw)


def test_a_rejected_gan_resume_changes_nothing(images, tmp_path):
    run = _train_giraffe(images, tmp_path / "run", preset="tiny", max_steps=2)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    with pytest.raises(io.RunDirError, match=r"cannot resume: its checkpoint \(step 2\) does not fit.*Nothing was"):
        _train_giraffe(images, run, max_steps=4, resume=True, resolution=32)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before                                  # config.json / .yaml untouched
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ckpts
    assert not (run / io.LOCK_NAME).exists()                # the lock was released
    import aware3d

    assert aware3d.load(run, device="cpu").config.resolution == 16  # still renders


def test_a_second_trainer_is_refused_and_named(images, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / io.LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                     "since": "2026-12-05 10:00:00"}))
        with pytest.raises(io.RunDirError, match=rf"pid {sleeper.pid} on {socket.gethostname()}, since 2026-12-05"):
            _train_giraffe(images, run, preset="tiny", max_steps=1)
        assert not (run / "config.json").exists()           # nothing written
        from aware3d.data.synth import synth_scene

        synth_scene(tmp_path / "scene", n_views=4, resolution=16, progress=False)
        with pytest.raises(io.RunDirError, match="another process is training"):
            registry.get("nerf").train(str(tmp_path / "scene"), out=str(run), preset="tiny", max_steps=1,
                                       progress=False)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stale_lock_on_this_host_is_taken_over(images, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()                                              # its pid no longer runs
    (run / io.LOCK_NAME).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "since": "x"}))
    with pytest.warns(RuntimeWarning, match="no longer runs"):
        _train_giraffe(images, run, preset="tiny", max_steps=1)
    assert (run / "checkpoints" / "step_00000001.pt").exists() and not (run / io.LOCK_NAME).exists()
    # a lock from another host is never taken over
    (run / io.LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "y"}))
    with pytest.raises(io.RunDirError, match=r"on elsewhere.*delete"):
        _train_giraffe(images, run, max_steps=2, resume=True)


def test_orphan_temporary_checkpoints_are_cleaned_on_the_next_start(images, tmp_path):
    run = _train_giraffe(images, tmp_path / "run", preset="tiny", max_steps=2)
    ck = run / "checkpoints"
    orphans = [ck / ".step_00000003.abc123.tmp.pt", ck / ".step_00000004.x.tmp.pt"]
    for p in orphans:
        p.write_bytes(b"\0" * 1000)
    real = sorted(p.name for p in ck.glob("step_*.pt"))
    assert io.clean_orphan_temps(run) == (2, 2000)
    for p in orphans:
        p.write_bytes(b"\0" * 10)
    _train_giraffe(images, run, max_steps=3, resume=True)
    assert not any(p.exists() for p in orphans)
    assert set(real) <= {p.name for p in ck.glob("step_*.pt")}   # real checkpoints kept
    assert torch.load(ck / "step_00000003.pt", weights_only=True)["step"] == 3


def test_a_field_resume_refuses_changed_settings(tmp_path):
    from aware3d.data.synth import synth_scene

    synth_scene(tmp_path / "scene", n_views=4, resolution=16, progress=False)
    nerf = registry.get("nerf")
    run = nerf.train(str(tmp_path / "scene"), out=str(tmp_path / "run"), preset="tiny", max_steps=1, progress=False,
                     val_every=0)
    before = (run / "config.json").read_bytes()
    with pytest.raises(ValueError, match=r"--set lr=0.5 \(the run has 0.001\); --preset cpu \(the run has tiny\)"):
        nerf.train(str(tmp_path / "scene"), out=str(run), resume=True, max_steps=2, preset="cpu",
                   overrides=[("lr", "0.5")], progress=False)
    assert (run / "config.json").read_bytes() == before
    # the stored values themselves are fine (the demo resumes like this)
    nerf.train(str(tmp_path / "scene"), out=str(run), resume=True, max_steps=2, overrides=[("lr", "1e-3")],
               progress=False, val_every=0)


@pytest.mark.parametrize("argv,message", [
    (["train", "ngp", "--data", "x", "--max-steps", "0"], "--max-steps: expected a whole number >= 1"),
    (["train", "ngp", "--data", "x", "--max-minutes", "-1"], "--max-minutes: expected a finite number > 0"),
    (["train", "ngp", "--data", "x", "--batch-size", "0"], "--batch-size: expected a whole number >= 1"),
    (["render", "run", "--frames", "0"], "--frames: expected a whole number >= 1"),
    (["render", "run", "--resolution", "-5"], "--resolution: expected a whole number >= 1"),
])
def test_bad_counts_are_one_line_errors(argv, message, capsys):
    from aware3d.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cuda_on_a_machine_without_it_is_a_clear_error():
    from aware3d.utils.device import pick_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="--device cuda: this torch sees no CUDA device"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="--device: expected cpu, cuda or cuda:N, got 'gpu'"):
        pick_device("gpu")
    assert pick_device(None).type == "cpu" and pick_device("auto").type == "cpu"
