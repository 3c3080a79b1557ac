"""Image decoding: 16-bit grey PNGs keep their values (divided by 65535); converting them to RGB
first clipped every value above 255 to white."""
from __future__ import annotations

import numpy as np
from PIL import Image

from aware3d.data._common import decode_image


def test_16_bit_grey_png_scales_by_65535(tmp_path):
    a = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)      # 0 .. 60000
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    x = decode_image(tmp_path / "g16.png", "f", 0)
    assert x.shape == (4, 4, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 1], a / 65535.0, atol=1e-7)   # 60000 -> 0.9155, not 1.0
    y = decode_image(tmp_path / "g16.png", "f", 0, downscale=2)       # area average of 2 x 2 blocks
    np.testing.assert_allclose(y[0, 0, 0], (0 + 4000 + 16000 + 20000) / 4 / 65535, atol=1e-6)


def test_8_bit_rgb_is_unchanged(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "c.png")
    np.testing.assert_allclose(decode_image(tmp_path / "c.png", "f", 0), a / 255.0, atol=1e-7)


def _scene(**kw):
    import torch

    from aware3d.data import SceneDataset

    K = torch.tensor([[[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]])
    base = dict(images=torch.zeros(1, 8, 8, 3), c2w=torch.eye(4)[None], K=K, width=8, height=8, near=1.0,
                far=5.0, aabb=torch.tensor([-1.0, -1, -1, 1, 1, 1]), names=["a.png"], source="t.json")
    base.update(kw)
    return SceneDataset(**base)


def test_unusable_geometry_is_refused_for_every_format():
    import pytest
    import torch

    from aware3d.data import DataError

    _scene()  # fine
    with pytest.raises(DataError, match=r"t.json: ray bounds near=5, far=1: expected 0 < near < far"):
        _scene(near=5.0, far=1.0)
    with pytest.raises(DataError, match="near=0"):
        _scene(near=0.0)
    c2w = torch.eye(4)[None].clone()
    c2w[0, 0, 3] = float("nan")
    with pytest.raises(DataError, match=r"t.json: frame 0 \('a.png'\): camera-to-world has NaN"):
        _scene(c2w=c2w)
    K = torch.tensor([[[10.0, 0, 400], [0, 10.0, 4], [0, 0, 1]]])
    with pytest.raises(DataError, match=r"principal point \(400, 4\) lies far outside the 8x8 image"):
        _scene(K=K)
    with pytest.raises(DataError, match="positive focal lengths"):
        _scene(K=torch.tensor([[[0.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]]))


def test_one_rgb_frame_among_rgba_frames_keeps_everyone_s_alpha(tmp_path):
    """A frame without alpha counts as opaque; the others keep theirs (one RGB file used to drop
    the alpha of every frame)."""
    import json

    import numpy as np
    from PIL import Image

    from aware3d.data import load_scene
    from aware3d.data.synth import synth_scene

    root = tmp_path / "scene"
    synth_scene(root, n_views=10, resolution=8, progress=False)
    frames = json.loads((root / "transforms_train.json").read_text())["frames"]
    assert len(frames) >= 2
    rgba = load_scene(root, "train")
    assert rgba.alphas is not None and float(rgba.alphas.min()) < 1   # the background is transparent
    first = root / (frames[0]["file_path"].lstrip("./") + ".png")
    Image.open(first).convert("RGB").save(first)                      # one frame without alpha
    mixed = load_scene(root, "train")
    assert mixed.alphas is not None
    assert float(mixed.alphas[0].min()) == 1.0                          # opaque
    np.testing.assert_array_equal(mixed.alphas[1:].numpy(), rgba.alphas[1:].numpy())
