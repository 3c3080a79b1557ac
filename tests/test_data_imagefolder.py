"""ImageFolderDataset for the GANs: folders, nested dirs, zips, corrupt files, flips."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aware3d.data import DataError
from aware3d.data.imagefolder import ImageFolderDataset

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CELEBA = DATA / "celeba_10k"


def _bands(w=40, h=20):
    """Non-square image: left quarter red, middle half green, right quarter blue. The centre
    square crop (20x20 from x = 10) is all green."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 4] = (255, 0, 0)
    a[:, w // 4: 3 * w // 4] = (0, 255, 0)
    a[:, 3 * w // 4:] = (0, 0, 255)
    return Image.fromarray(a)


def _left_white(size=16):
    """Left half white, right half black: tells a flipped image from an unflipped one."""
    a = np.zeros((size, size, 3), np.uint8)
    a[:, : size // 2] = 255
    return Image.fromarray(a)


def make_folder(root: Path):
    (root / "a").mkdir(parents=True)
    (root / "b" / "c").mkdir(parents=True)
    _bands().save(root / "a" / "x.JPG", quality=98)
    _left_white().save(root / "b" / "c" / "y.png")
    _left_white(32).save(root / "z.jpeg", quality=98)
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "notes.txt").write_text("not an image")
    _left_white().save(root / ".hidden.png")


def test_folder_nested_corrupt_one_warning(tmp_path):
    make_folder(tmp_path)
    with pytest.warns(UserWarning) as rec:
        ds = ImageFolderDataset(tmp_path, 16)
    msgs = [str(w.message) for w in rec if "unreadable" in str(w.message)]
    assert len(msgs) == 1 and "skipped 1 unreadable" in msgs[0] and "broken.png" in msgs[0]
    # 3 good images (x.JPG, y.png, z.jpeg); broken.png, notes.txt and .hidden.png are not counted
    assert len(ds) == 3 and ds.names == ["a/x.JPG", "b/c/y.png", "z.jpeg"]
    assert ds.images.shape == (3, 3, 16, 16) and ds.images.dtype == torch.uint8
    # centre crop of the banded image is green
    g = ds.images[0].float().mean((1, 2))
    assert g[1] > 240 and g[0] < 15 and g[2] < 15
    x = ds[1]
    assert x.shape == (3, 16, 16) and x.min() == -1.0 and x.max() == 1.0


def test_sample_range_flip_and_determinism(tmp_path):
    make_folder(tmp_path)
    with pytest.warns(UserWarning):
        ds = ImageFolderDataset(tmp_path, 16)
        nf = ImageFolderDataset(tmp_path, 16, flip=False)
    b1 = ds.sample(64, torch.Generator().manual_seed(0))
    b2 = ds.sample(64, torch.Generator().manual_seed(0))
    assert b1.shape == (64, 3, 16, 16) and torch.equal(b1, b2)
    assert b1.min() >= -1 and b1.max() <= 1
    # y.png / z.jpeg are white on the left: flipped copies are white on the right. With 64 draws
    # and p = 1/2 both orientations occur (failure probability ~ 2 * 2^-40).
    left, right = b1[:, 0, 8, 1], b1[:, 0, 8, 14]  # a left- and a right-column pixel
    banded = (b1[:, 1].mean((1, 2)) > 0.9)  # the green image is symmetric: ignore it
    assert ((left > 0.9) & (right < -0.9) & ~banded).any()
    assert ((left < -0.9) & (right > 0.9) & ~banded).any()
    nb = nf.sample(64, torch.Generator().manual_seed(0))
    assert not ((nb[:, 0, 8, 1] < -0.9) & (nb[:, 0, 8, 14] > 0.9)).any()  # never flipped


def test_zip_matches_folder_and_cache_off(tmp_path):
    make_folder(tmp_path / "f")
    zpath = tmp_path / "imgs.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted((tmp_path / "f").rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(tmp_path / "f").as_posix())
        z.writestr("__MACOSX/a/._x.JPG", b"junk")
    with pytest.warns(UserWarning):
        a = ImageFolderDataset(tmp_path / "f", 16)
        b = ImageFolderDataset(zpath, 16)
    assert b.names == a.names and torch.equal(a.images, b.images)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        c = ImageFolderDataset(zpath, 16, cache=False)  # lazy: verify() drops broken.png
    assert c.images is None and c.names == a.names and torch.equal(c.uint8(0), a.images[0])
    assert c.sample(4, torch.Generator().manual_seed(1)).shape == (4, 3, 16, 16)


def test_empty_and_too_few_raise_before_training(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        ImageFolderDataset(tmp_path / "empty", 16)
    make_folder(tmp_path / "f")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="3 usable image.*at least 5"):
        ImageFolderDataset(tmp_path / "f", 16, min_images=5)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="0 usable"):
        ImageFolderDataset(tmp_path / "bad", 16)
    with pytest.raises(DataError, match="no such file"):
        ImageFolderDataset(tmp_path / "missing", 16)


@pytest.mark.skipif(not CELEBA.is_dir(), reason=f"real data not present: {CELEBA}")
def test_celeba_subset_smoke():
    # Only the first 200 of the 10,000 64x64 JPEGs (sorted: 000001.jpg ...), resized to 32.
    ds = ImageFolderDataset(CELEBA, 32, limit=200)
    assert len(ds) == 200 and ds.names[0] == "000001.jpg"
    assert ds.images.shape == (200, 3, 32, 32)
    x = ds.sample(8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 3, 32, 32) and -1 <= x.min() < 0 < x.max() <= 1
    assert ds.images.float().std() > 20  # real faces, not a blank tensor
