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
