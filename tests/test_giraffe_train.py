"""GIRAFFE end to end: a 20-step run through the Python entry point, render programs, mesh export."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import aware3d
from PIL import Image

from aware3d.methods import giraffe as gm


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 12-step tiny16 run made with the engine directly (no image folder needed)."""
    from aware3d.train import gan

    class Blobs:
        def sample(self, n, generator=None):
            return torch.rand(n, 3, 16, 16, generator=generator) * 2 - 1

    out = tmp_path_factory.mktemp("giraffe_run")
    cfg = gm.make_config("tiny16", seed=0)
    m = gm.build(cfg)
    gan.train_gan(m, Blobs(), out, m.gan_config(max_steps=12, progress=False),
                  config={**__import__("dataclasses").asdict(cfg)})
    # 12 steps do not grow visible objects: raise the object density so the controls have
    # something to move (the checkpoint stays a valid run)
    from aware3d.train.io import load_checkpoint, save_checkpoint
    state = load_checkpoint(out)
    for key in ("G", "G_ema"):
        state[key]["object_field.sigma_out.bias"] += 20.0
    save_checkpoint(out, state["step"], state)
    return out


def test_add_objects_frames_each_change_the_image(tiny_run):
    from aware3d.programs.giraffe import _add_objects

    run = aware3d.load(tiny_run, device="cpu")
    base = run.sample(1)
    frames = _add_objects(gm.GiraffeMethod(run.config), base, base, 4, torch.Generator().manual_seed(1))
    assert len(frames) == run.config.n_objects + 4 + 1
    prev = None
    for x, kw in frames:
        with torch.no_grad():
            img = run.G(x, objects=kw["objects"])
        if prev is not None:
            assert float((img - prev).abs().max()) > 1e-3
        prev = img


def _write_images(folder, n=12, res=24):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.full((res, res, 3), 200, np.uint8)
        c = rng.integers(4, res - 4, 2)
        img[c[0] - 3:c[0] + 3, c[1] - 3:c[1] + 3] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(folder / f"{i:03d}.png")


def test_train_entry_point_20_steps(tmp_path):
    pytest.importorskip("aware3d.data.imagefolder", reason="ImageFolderDataset (data/imagefolder.py) not available")
    data = tmp_path / "images"
    _write_images(data)
    run = gm.METHOD.train(str(data), str(tmp_path / "run"), preset="tiny16", max_steps=20, seed=0)
    ckpt = torch.load(run / "checkpoints" / "step_00000020.pt", weights_only=True)
    assert ckpt["step"] == 20
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == "giraffe" and cfg["preset"] == "tiny16" and cfg["gan"]["max_steps"] == 20
    rows = list(csv.DictReader(open(run / "scalars.csv")))
    steps = sorted({int(r["step"]) for r in rows if r["tag"] == "loss_G"})
    assert steps == [1, 5, 10, 15, 20]                    # log_every = 5 (plus step 1)
    assert all(np.isfinite(float(r["value"])) for r in rows)
    assert {"loss_D", "R1", "images_per_s"} <= {r["tag"] for r in rows}
    # sample grids at 0, 10, 20 (sample_every = 10)
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "step_00000000.png", "step_00000010.png", "step_00000020.png"]
    # EMA (beta 0.999) lags the trained weights: 20 updates move it ~2% of the way
    g, e = ckpt["G"], ckpt["G_ema"]
    assert any(not torch.equal(g[k], e[k]) for k in g)
    # resume continues the stored run to 25 steps
    gm.METHOD.train(str(data), str(tmp_path / "run"), max_steps=25, resume=True)
    assert torch.load(run / "checkpoints" / "step_00000025.pt", weights_only=True)["step"] == 25


def test_render_every_program(tiny_run, tmp_path):
    run = aware3d.load(tiny_run, device="cpu")
    assert list(run.programs) == list(gm.METHOD.programs) and len(run.programs) == 12
    for name in run.programs:
        files = run.render_program(name, out=tmp_path / name, seed=1, frames=4, samples=2)
        assert set(files) == {"gif", "mp4", "png"}
        files = {k: Path(v) for k, v in files.items()}
        gif = Image.open(files["gif"])
        # add_objects: 0, 1, ..., 2 + 4 objects = 7 frames; background_only: the object rotation
        # does not touch the background, identical frames are merged by the GIF encoder -> 1
        n_expected = {"add-objects": gm.make_config("tiny16").n_objects + 4 + 1, "background-only": 1}.get(name, 4)
        if name == "add-objects":
            # the GIF palette may merge two frames whose images differ by a few levels; that each
            # added object changes the image is checked on the float frames below
            assert n_expected - 1 <= gif.n_frames <= n_expected, name
        else:
            assert gif.n_frames == n_expected, name
        png = Image.open(files["png"])
        assert png.mode == ("RGBA" if name.endswith("-only") else "RGB"), name
        assert files["mp4"].stat().st_size > 0


def test_program_controls_change_only_their_factor(tiny_run):
    from aware3d.programs import giraffe as prog
    run = aware3d.load(tiny_run, device="cpu")
    f = prog.render_frames(run.gan, run.G, "object-rotation", seed=0, n_frames=4, n_samples=2)
    assert f.shape == (4, 2, 16, 16, 3)
    assert not torch.allclose(f[0], f[1])                # the object turned 90 degrees
    bg = prog.render_frames(run.gan, run.G, "background_only", seed=0, n_frames=4, n_samples=2)  # alias
    # background only: the object rotation has no effect (frames identical)
    assert torch.allclose(bg[0], bg[3])
    assert bg.shape[-1] == 4


def test_export_object_mesh(tiny_run, tmp_path):
    from aware3d.utils.mesh import read_ply
    info = aware3d.load(tiny_run, device="cpu").export_mesh(out=tmp_path / "o.ply", seed=0, object_index=1,
                                                            resolution=24)
    assert info["n_faces"] > 0
    v, f = read_ply(info["path"])
    assert v.shape == (info["n_vertices"], 3) and f.shape == (info["n_faces"], 3)
    # vertices lie inside the object's box in the world: |R (v - t)| / s <= 1.1 (the official
    # world-to-object map; frame_rotation gives world_to_object the matrix that realises it) plus at most one
    # grid step (2.2 / 23) where the surface closes against the zero density outside the box
    cfg = gm.make_config("tiny16")
    x = gm.sample_inputs(cfg, 1, torch.Generator().manual_seed(0), train=False)
    local = gm.world_to_object(torch.from_numpy(v)[None], x["obj_scale"][:, 1], x["obj_translation"][:, 1],
                               gm.frame_rotation(cfg, x["obj_rotation"][:, 1]))
    assert local.abs().max() <= 1.1 + 2.2 / 23 + 1e-4
    assert local.abs().max() > 0.5                      # and the (dense) object fills its box


def test_evaluate_writes_fid_kid(tiny_run, tmp_path):
    pytest.importorskip("aware3d.data.imagefolder", reason="ImageFolderDataset (data/imagefolder.py) not available")
    _write_images(tmp_path / "real", n=12)

    def pooled_pixels(images):
        # a cheap stand-in for Inception: 4x4 average-pooled RGB (48 features)
        x = torch.as_tensor(images).float()
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1).numpy()

    m = aware3d.load(tiny_run).evaluate(n_gen=20, data=str(tmp_path / "real"), extractor=pooled_pixels)
    # metric names follow n_gen (fid5k for 5000, fid20 here); the real set is the 12 images
    assert {"fid20", "kid20"} <= set(m) and m["n_gen"] == 20 and m["n_real"] == 12
    assert np.isfinite(m["fid20"]) and m["fid20"] > 0
    saved = json.loads((tiny_run / "eval" / "metrics.json").read_text())
    assert saved["fid20"] == pytest.approx(m["fid20"])


def test_cli_device_reaches_the_gan_config(tmp_path):
    # `aware3d train giraffe --device cpu` once ignored --device (the config kept "auto").
    from aware3d.cli import main

    data = tmp_path / "images"
    _write_images(data)
    run = tmp_path / "run"
    assert main(["train", "giraffe", "--data", str(data), "--out", str(run), "--preset", "tiny16",
                 "--max-steps", "1", "--device", "cpu"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["device"] == "cpu", cfg.get("device")


def test_evaluate_a_chosen_checkpoint(tiny_run, tmp_path, capsys):
    # `aware3d eval RUN --checkpoint STEP` measures that checkpoint (a curve of FID against training
    # time needs the earlier ones), writes eval/metrics_step_XXXXXXXX.json and leaves metrics.json.
    from aware3d.cli import main
    from aware3d.train.io import CheckpointNotFoundError, checkpoint_file, list_checkpoints

    steps = [int(p.stem.split("_")[1]) for p in list_checkpoints(tiny_run)]
    assert steps[-1] == 12 and 10 in steps
    assert checkpoint_file(tiny_run, 10).name == "step_00000010.pt"
    assert checkpoint_file(tiny_run, "10") == checkpoint_file(tiny_run, str(checkpoint_file(tiny_run, 10)))
    G10 = aware3d.load(tiny_run, checkpoint=10).G
    G12 = aware3d.load(tiny_run).G
    b10, b12 = (G.state_dict()["object_field.sigma_out.bias"] for G in (G10, G12))
    assert (b12 - b10).min() > 15  # the latest carries the +20 the fixture added; step 10 does not

    _write_images(tmp_path / "real", n=12)

    def pooled_pixels(images):
        x = torch.as_tensor(images).float()
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1).numpy()

    m10 = aware3d.load(tiny_run, checkpoint=10).evaluate(n_gen=20, data=str(tmp_path / "real"),
                                                         extractor=pooled_pixels)
    m12 = aware3d.load(tiny_run).evaluate(n_gen=20, data=str(tmp_path / "real"), extractor=pooled_pixels)
    assert m10["step"] == 10 and m12["step"] == 12 and m10["fid20"] != pytest.approx(m12["fid20"])
    saved = json.loads((tiny_run / "eval" / "metrics_step_00000010.json").read_text())
    assert saved["fid20"] == pytest.approx(m10["fid20"]) and saved["step"] == 10
    assert json.loads((tiny_run / "eval" / "metrics.json").read_text())["step"] == 12

    with pytest.raises(CheckpointNotFoundError, match=r"step_00000007\.pt.*steps \[.*10, 12\]"):
        aware3d.load(tiny_run, checkpoint=7)
    # a folder whose config names a method but holds no run: one clear error, not a traceback
    run = tmp_path / "recon"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "ngp"}))
    assert main(["eval", str(run), "--checkpoint", "3"]) == 2
    assert "not a complete ngp run" in capsys.readouterr().err
