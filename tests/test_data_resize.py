"""Area resize and undistortion of the scene loaders (``aware3d.data._common``), without OpenCV.

Hand-computed cases run everywhere; the comparisons with OpenCV (which these functions replace)
run where ``cv2`` is importable (it comes with the ``gan`` extra) and are skipped otherwise.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from aware3d.data._common import (_distort_normalized, area_resize, remap_bilinear, undistort,
                                  undistort_map)


@pytest.fixture(scope="module")
def cv2():
    try:
        import cv2 as _cv2
    except ImportError:
        pytest.skip("OpenCV (cv2) is not installed: the comparison with cv2.resize / cv2.remap is "
                    "skipped (it comes with `pip install \"aware3d[gan]\"`); the hand-computed "
                    "cases still run")
    return _cv2


def _rng(seed=0):
    return np.random.default_rng(seed)


def _area_reference(x: np.ndarray, n_out: int) -> np.ndarray:
    """Area resampling of a 1-D float64 signal with exact rational pixel footprints."""
    n_in = x.shape[0]
    s = Fraction(n_in, n_out)
    out = np.zeros(n_out)
    for o in range(n_out):
        a, b = o * s, (o + 1) * s
        total, i = 0.0, math.floor(a)
        while i < b and i < n_in:
            total += float(min(b, i + 1) - max(a, i)) * x[i]
            i += 1
        out[o] = total / float(s)
    return out


# ---------------------------------------------------------------------------------- area resize

def test_area_resize_2x2_block_average():
    # 4x4 -> 2x2: each output pixel is the mean of its 2x2 block, exactly.
    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    out = area_resize(img, 2, 2)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    assert out.tolist() == [[2.5, 4.5], [10.5, 12.5]]  # (0+1+4+5)/4, (2+3+6+7)/4, ...
    # channels are resized independently, the channel axis is kept
    rgb = np.stack([img, 2 * img, img + 1], -1)
    assert area_resize(rgb, 2, 2).tolist() == np.stack([out, 2 * out, out + 1], -1).tolist()
    # same size: returned as is
    assert area_resize(rgb, 4, 4) is rgb


def test_area_resize_premultiplied_alpha():
    # a transparent pixel's colour does not bleed: RGBA block of one opaque red pixel and three
    # transparent green ones -> colour stays pure red, alpha is the mean 0.25.
    img = np.zeros((2, 2, 4), np.float32)
    img[..., 1] = 1.0           # green everywhere ...
    img[0, 0] = (1, 0, 0, 1)    # ... but only the red pixel is opaque
    out = area_resize(img, 1, 1, premultiply=True)
    assert np.allclose(out[0, 0], [1, 0, 0, 0.25], atol=1e-7)
    # fully transparent block -> colour 0, alpha 0 (no division by zero)
    img[0, 0, 3] = 0
    assert np.allclose(area_resize(img, 1, 1, premultiply=True)[0, 0], 0)


def test_area_resize_non_integer_factor_by_hand():
    # 3 pixels -> 2: each output covers 1.5 input pixels, the middle one is shared half/half:
    # [a, b, c] -> [(a + b / 2) / 1.5, (b / 2 + c) / 1.5]
    a, b, c = 0.2, 0.8, 0.5
    out = area_resize(np.array([[a, b, c]], np.float32), 2, 1)
    assert np.allclose(out, [[(a + b / 2) / 1.5, (b / 2 + c) / 1.5]], atol=1e-7)
    # upscaling 2 -> 3 pixels: output footprints [0, 2/3), [2/3, 4/3), [4/3, 2)
    out = area_resize(np.array([[a, b]], np.float32), 3, 1)
    assert np.allclose(out, [[a, (a + b) / 2, b]], atol=1e-7)
    # a constant image stays constant at any size (weights sum to one)
    const = np.full((13, 17, 3), 0.3, np.float32)
    for w, h in [(5, 4), (16, 12), (1, 1), (30, 20)]:
        assert np.allclose(area_resize(const, w, h), 0.3, atol=1e-6)


@pytest.mark.parametrize("n_in,n_out", [(17, 8), (100, 78), (4001, 2000), (29, 3), (7, 10)])
def test_area_resize_matches_exact_overlap_weights(n_in, n_out):
    # Against a float64 reference with rational footprints: only float32 round-off (values in
    # [0, 1], a handful of terms per output) separates them -> 1e-6.
    x = _rng(n_in).random(n_in)
    ours = area_resize(x[None].astype(np.float32), n_out, 1)[0]
    assert np.abs(ours - _area_reference(x, n_out)).max() < 1e-6


def test_area_resize_rejects_empty_target():
    with pytest.raises(ValueError, match="1x1"):
        area_resize(np.zeros((4, 4), np.float32), 0, 2)


@pytest.mark.parametrize("shape", [(17, 23), (64, 48), (100, 75), (31, 7, 1), (20, 30, 3), (9, 9, 4)])
def test_area_resize_matches_opencv_when_downscaling(cv2, shape):
    # cv2.INTER_AREA accumulates in float32: integer factors agree to 1e-5. For non-integer
    # factors OpenCV drops pixel overlaps thinner than 1e-3 px (computeResizeAreaTab), which moves
    # a weight by at most ~1e-3 / factor; on values in [0, 1] that is under 2e-3.
    img = _rng(1).random(shape).astype(np.float32)
    h, w = shape[:2]
    for nw, nh in [(w // 2, h // 2), (w // 3, h // 3), (max(1, 2 * w // 5), max(1, 3 * h // 7)),
                   (1, 1), (w, max(1, h // 2))]:
        ours = area_resize(img, nw, nh)
        ref = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA).reshape(ours.shape)
        integer = w % nw == 0 and h % nh == 0
        assert np.abs(ours - ref).max() < (1e-5 if integer else 2e-3), (shape, nw, nh)


def test_area_resize_matches_opencv_on_every_1d_downscale(cv2):
    # every n_in -> n_out <= n_in for n_in < 40, as a weight matrix (resizing the identity)
    for n in range(1, 40):
        eye = np.eye(n, dtype=np.float32)
        for m in range(1, n + 1):
            ref = cv2.resize(eye, (m, n), interpolation=cv2.INTER_AREA)
            assert np.abs(area_resize(eye, m, n) - ref).max() < 1e-5, (n, m)


@pytest.mark.parametrize("n_in,n_out", [(3, 4), (4, 10), (5, 7), (10, 11)])
def test_area_resize_matches_opencv_when_upscaling(cv2, n_in, n_out):
    # Upscaling blends the two input pixels an output pixel straddles, as INTER_AREA does (1e-5:
    # float32 weights). Sizes where an output edge falls exactly on an input edge (e.g. 75 -> 78)
    # are left out: OpenCV's floor(o * scale) rounds down there and takes the previous pixel.
    eye = np.eye(n_in, dtype=np.float32)
    ref = cv2.resize(eye, (n_out, n_in), interpolation=cv2.INTER_AREA)
    assert np.abs(area_resize(eye, n_out, n_in) - ref).max() < 1e-5


# --------------------------------------------------------------------------------- undistortion

def _smooth_image(h, w, channels=3):
    # |dI/dx| <= 0.1 and |dI/dy| <= 0.5 / 7 per pixel in every channel
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = [0.5 + 0.5 * np.sin(xx / 5) * np.cos(yy / 7), 0.2 + 0.6 * xx / w, 0.1 + 0.8 * yy / h]
    return np.stack(chans[:channels], -1).astype(np.float32)


def test_zero_distortion_is_the_identity():
    img = _smooth_image(12, 16)
    K = np.array([[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]])
    assert undistort(img, K, [0, 0, 0, 0]) is img
    assert undistort(img, K, [0, 0, 0, 0, 0]) is img
    # the map of zero distortion is the pixel grid itself, and sampling it returns the image (to
    # 1e-6: grid_sample takes float32 coordinates normalised to [-1, 1], ~1e-6 px of round-off)
    mx, my = undistort_map(K, [0, 0, 0, 0], 16, 12)
    assert np.allclose(mx, np.arange(16)[None].repeat(12, 0), atol=1e-12)
    assert np.allclose(my, np.arange(12)[:, None].repeat(16, 1), atol=1e-12)
    assert np.abs(remap_bilinear(img, mx, my) - img).max() < 1e-6


def test_undistort_map_of_a_known_point():
    # f = 50, principal point (32, 32), k1 = 0.3: the ideal pixel (52, 12) is the ray
    # (x, y) = (0.4, -0.4), r^2 = 0.32, so the lens put it at 32 + 50 * 0.4 * (1 + 0.3 * 0.32)
    # = 53.92 and 32 - 50 * 0.4 * 1.096 = 10.08.
    K = np.array([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]])
    mx, my = undistort_map(K, [0.3, 0, 0, 0], 64, 64)
    assert mx[12, 52] == pytest.approx(53.92, abs=1e-9) and my[12, 52] == pytest.approx(10.08, abs=1e-9)
    assert mx[32, 32] == pytest.approx(32) and my[32, 32] == pytest.approx(32)  # centre stays
    # tangential terms (OpenCV's model): x' = x + 2 p1 x y + p2 (r^2 + 2 x^2),
    # y' = y + p1 (r^2 + 2 y^2) + 2 p2 x y; at (x, y) = (0.4, -0.4) with p1 = 0.01, p2 = -0.02:
    # x' = 0.4 - 0.0032 - 0.0128 = 0.384, y' = -0.4 + 0.0064 + 0.0064 = -0.3872
    xd, yd = _distort_normalized(np.array(0.4), np.array(-0.4), np.array([0, 0, 0.01, -0.02]))
    assert float(xd) == pytest.approx(0.384, abs=1e-12) and float(yd) == pytest.approx(-0.3872, abs=1e-12)
    # k3 and the rational k4..k6: kr = (1 + k1 r2 + k2 r4 + k3 r6) / (1 + k4 r2 + k5 r4 + k6 r6)
    r2 = 0.32
    kr = (1 + 0.1 * r2 + 0.02 * r2 ** 2 + 0.003 * r2 ** 3) / (1 + 0.2 * r2 + 0.01 * r2 ** 2 + 0.001 * r2 ** 3)
    xd, yd = _distort_normalized(np.array(0.4), np.array(-0.4),
                                 np.array([0.1, 0.02, 0, 0, 0.003, 0.2, 0.01, 0.001]))
    assert float(xd) == pytest.approx(0.4 * kr, abs=1e-12) and float(yd) == pytest.approx(-0.4 * kr, abs=1e-12)
    with pytest.raises(ValueError, match="distortion coefficients"):
        undistort_map(K, [0.1, 0.2, 0.3], 4, 4)


def test_remap_bilinear_interpolates_and_replicates_the_border():
    img = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    mx = np.array([[0.5, 0.25, -3.0, 7.0, 1.0]])
    my = np.array([[0.5, 0.0, 0.0, 1.0, -2.0]])
    # (0.5, 0.5) -> mean 1.5; (0.25, 0) -> 0.25; left of the image -> column 0; right and below ->
    # the corner 3; above at x = 1 -> row 0 -> 1
    assert np.allclose(remap_bilinear(img, mx, my), [[1.5, 0.25, 0.0, 3.0, 1.0]], atol=1e-6)
    # a 1-pixel-wide image works too (no division by size - 1)
    col = np.array([[0.25], [0.75]], np.float32)
    assert np.allclose(remap_bilinear(col, np.array([[0.0, 3.0]]), np.array([[0.5, 0.5]])), [[0.5, 0.5]])


def test_undistort_moves_content_to_the_pinhole_position():
    # An image whose value is the x pixel coordinate (pixel centres at i + 0.5, K in that
    # convention): after undistorting, pixel (u, v) holds the x coordinate where the lens imaged
    # its ray (bilinear interpolation of a linear ramp is exact).
    h, w, f, cx, cy, k1 = 40, 60, 45.0, 30.0, 20.0, -0.15
    ramp = np.broadcast_to(np.arange(w, dtype=np.float32) + 0.5, (h, w)).copy()
    out = undistort(ramp, np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]]), [k1, 0, 0, 0])
    assert out.shape == (h, w) and out.dtype == np.float32
    u, v = 50.5, 30.5  # pixel (50, 30)'s centre
    x, y = (u - cx) / f, (v - cy) / f
    ud = cx + f * x * (1 + k1 * (x * x + y * y))
    assert out[30, 50] == pytest.approx(ud, abs=1e-4)


@pytest.mark.parametrize("dist", [[0.3, 0, 0, 0], [-0.2, 0.05, 0.01, -0.02],
                                  [0.1, -0.05, 0.002, 0.003, 0.02],
                                  [0.1, 0.01, 0.001, 0.002, 0.01, 0.05, 0.01, 0.002]])
def test_undistort_matches_opencv(cv2, dist):
    h, w = 48, 64
    K = np.array([[50.0, 0, 31.7], [0, 52.0, 24.2], [0, 0, 1]])
    Kc = K.copy()
    Kc[:2, 2] -= 0.5
    # the map: OpenCV computes it in double and stores float32 (ulp 4e-6 at 64 px) -> 1e-4 px
    m1, m2 = cv2.initUndistortRectifyMap(Kc, np.array(dist), None, Kc, (w, h), cv2.CV_32FC1)
    mx, my = undistort_map(Kc, dist, w, h)
    assert max(np.abs(mx - m1).max(), np.abs(my - m2).max()) < 1e-4
    # the image, RGB and a single channel: OpenCV 4's remap snaps source positions to 1/32 px, an
    # error of up to 1/64 px per axis; with |dI/dx| <= 0.1 and |dI/dy| <= 0.072 per pixel that is
    # at most (0.1 + 0.072) / 64 < 3e-3 (OpenCV 5 agrees to ~1e-6)
    img = _smooth_image(h, w)
    for im in (img, img[..., 0]):
        ref = cv2.remap(im, m1, m2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        ours = undistort(im, K, dist)
        assert ours.shape == im.shape and np.abs(ours - ref.reshape(im.shape)).max() < 3e-3
