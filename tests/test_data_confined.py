"""Data files name only files inside their dataset folder: `../` and absolute paths in Blender /
nerfstudio `file_path`, `depth_file_path` and COLMAP image names are refused with the file, frame
and path named, unless AWARE3D_ALLOW_OUTSIDE_PATHS=1."""
from __future__ import annotations

import json
import shutil

import pytest

from aware3d.data import DataError, load_scene


@pytest.fixture()
def blender(tmp_path):
    from aware3d.data.synth import synth_scene

    root = tmp_path / "scene"
    synth_scene(root, n_views=4, resolution=8, progress=False)
    # a secret next to the dataset, reachable with ../
    shutil.copy(next((root / "train").glob("*.png")), tmp_path / "secret.png")
    return root


def _rewrite(root, split, **frame0):
    f = root / f"transforms_{split}.json"
    doc = json.loads(f.read_text())
    doc["frames"][0].update(frame0)
    f.write_text(json.dumps(doc))


@pytest.mark.parametrize("key,value", [("file_path", "../secret"), ("file_path", "ABS"),
                                        ("depth_file_path", "../../etc/passwd")])
def test_blender_paths_outside_the_folder_are_refused(blender, key, value, monkeypatch):
    monkeypatch.delenv("AWARE3D_ALLOW_OUTSIDE_PATHS", raising=False)
    value = str(blender.parent / "secret") if value == "ABS" else value
    _rewrite(blender, "train", **{key: value})
    with pytest.raises(DataError, match=rf"transforms_train.json: frame 0.*{key} .* points outside the dataset"):
        load_scene(blender, "train")
    if key == "file_path":  # the explicit switch reads it
        monkeypatch.setenv("AWARE3D_ALLOW_OUTSIDE_PATHS", "1")
        assert len(load_scene(blender, "train")) > 0


def test_nerfstudio_paths_outside_the_folder_are_refused(tmp_path):
    import numpy as np
    from PIL import Image

    root = tmp_path / "ns"
    root.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "outside.png")
    frame = {"file_path": "../outside.png", "transform_matrix": np.eye(4).tolist()}
    (root / "transforms.json").write_text(json.dumps({"fl_x": 4, "fl_y": 4, "cx": 2, "cy": 2, "w": 4, "h": 4,
                                                      "frames": [frame] * 3}))
    with pytest.raises(DataError, match=r"transforms.json: frame 0 .*'\.\./outside\.png' points outside"):
        load_scene(root, "all")


def test_a_name_inside_the_folder_is_fine(blender):
    _rewrite(blender, "train", file_path="./train/../train/" + json.loads(
        (blender / "transforms_train.json").read_text())["frames"][1]["file_path"].split("/")[-1])
    assert len(load_scene(blender, "train")) > 0


@pytest.mark.parametrize("name", ["../outside.png", "ABS"])
def test_colmap_image_names_outside_the_folder_are_refused(tmp_path, name, monkeypatch):
    import numpy as np
    from PIL import Image

    from aware3d.data import colmap as cm

    monkeypatch.delenv("AWARE3D_ALLOW_OUTSIDE_PATHS", raising=False)
    root = tmp_path / "cap"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.full((6, 8, 3), 7, np.uint8)).save(root / "outside.png")
    for i in range(3):
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "images" / f"im{i}.png")
    name = str(root / "outside.png") if name == "ABS" else name
    cams = {1: cm.Camera(1, "PINHOLE", 8, 6, np.array([8.0, 8.0, 4.0, 3.0]))}
    q = np.array([1.0, 0.0, 0.0, 0.0])
    imgs = {1: cm.Image(1, q, np.array([0.0, 0.0, 4.0]), 1, name, np.zeros((0, 2)), np.zeros(0, np.int64))}
    for i in (1, 2):
        imgs[i + 1] = cm.Image(i + 1, q, np.array([0.5 * i, 0.0, 4.0]), 1, f"im{i}.png", np.zeros((0, 2)),
                               np.zeros(0, np.int64))
    cm.write_model(root / "sparse" / "0", cams, imgs, ext=".txt")
    with pytest.raises(DataError, match=r"images.txt: frame 0 .*points outside the dataset"):
        load_scene(root, "all", normalize=False)
    monkeypatch.setenv("AWARE3D_ALLOW_OUTSIDE_PATHS", "1")  # the explicit switch reads it
    ds = load_scene(root, "all", normalize=False)
    assert len(ds) == 3 and float(ds.images[0].max()) == pytest.approx(7 / 255)
