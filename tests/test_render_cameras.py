"""Cameras, rays, projection, converters, pose samplers and paths."""
import math

import pytest
import torch

from aware3d.render import ShapeError
from aware3d.render import cameras as C


def _random_c2w(n, seed=0):
    return C.sample_poses_sphere(n, (3.0, 5.0), (-80, 80), generator=torch.Generator().manual_seed(seed))


def test_principal_point_ray_is_minus_z_axis():
    K = C.intrinsics(100.0, 100.0, 32.0, 24.0)
    c2w = _random_c2w(4)
    o, d = C.rays_from_pixels(K, c2w, torch.tensor([32.0, 24.0]).expand(4, 2))
    torch.testing.assert_close(d, -c2w[:, :3, 2])
    torch.testing.assert_close(o, c2w[:, :3, 3])


def test_identity_camera_pixel_directions():
    # Camera at origin looking down -z; pixel to the right of centre -> +x, below -> -y.
    K = C.intrinsics(10.0, 10.0, 5.0, 5.0)
    eye = torch.eye(4)
    _, d = C.rays_from_pixels(K, eye, torch.tensor([[15.0, 5.0], [5.0, 15.0]]))
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(d, torch.tensor([[s, 0.0, -s], [0.0, -s, -s]]))


def test_point_projects_to_its_pixel_and_back():
    K = C.intrinsics_from_fov(50.0, 64, 48)
    c2w = _random_c2w(5, seed=1)
    uv = torch.tensor([[10.5, 7.5], [40.25, 33.0], [63.5, 0.5], [0.5, 47.5], [32.0, 24.0]])
    o, d = C.rays_from_pixels(K, c2w, uv)
    pts = o + 2.75 * d
    uv2, depth = C.project(pts, K, c2w)
    torch.testing.assert_close(uv2, uv, atol=1e-4, rtol=0)
    torch.testing.assert_close(depth, torch.full((5,), 2.75), atol=1e-5, rtol=0)


def test_image_rays_shape_and_fov():
    K = C.intrinsics_from_fov(90.0, 8, 8)
    o, d = C.image_rays(K, torch.eye(4), 8, 8)
    assert o.shape == d.shape == (8, 8, 3)
    # 90 deg horizontal fov: the left edge of the image (u=0) is at 45 degrees; pixel centre u=0.5
    # is at atan((0.5 - 4) / 4).
    ang = math.degrees(math.atan2(d[4, 0, 0].item(), -d[4, 0, 2].item()))
    assert ang == pytest.approx(math.degrees(math.atan(-3.5 / 4)), abs=1e-4)
    assert torch.allclose(d.norm(dim=-1), torch.ones(8, 8))


def test_patch_rays_equal_full_frame_rays_at_pixels():
    K = C.intrinsics_from_fov(40.0, 16, 16)
    c2w = _random_c2w(2, seed=2)
    o_full, d_full = C.image_rays(K, c2w, 16, 16)
    o, d, uv = C.patch_rays(K, c2w, 16, 16, 16, torch.zeros(2, 2), torch.ones(2))
    torch.testing.assert_close(d, d_full)
    # a half-scale patch at centre (0.5, -0.5): every 2nd pixel of the top-right quadrant region
    o, d, uv = C.patch_rays(K, c2w, 16, 16, 4, torch.tensor([[0.5, -0.5]] * 2), torch.full((2,), 0.5))
    torch.testing.assert_close(uv[0, 0, 0], torch.tensor([9.0, 1.0]))
    _, d_ref = C.rays_from_pixels(K, c2w, uv)
    torch.testing.assert_close(d, d_ref)


def test_converters_round_trip():
    c2w = _random_c2w(6, seed=3)
    torch.testing.assert_close(C.opengl_to_opencv(C.opencv_to_opengl(c2w)), c2w)
    q, t = C.c2w_to_colmap(c2w)
    torch.testing.assert_close(C.colmap_to_c2w(q, t), c2w, atol=1e-5, rtol=0)
    torch.testing.assert_close(C.llff_to_opengl(C.opengl_to_llff(c2w)), c2w)
    R = c2w[:, :3, :3]
    torch.testing.assert_close(C.quaternion_to_matrix(C.matrix_to_quaternion(R)), R, atol=1e-5, rtol=0)


def test_opencv_camera_looks_down_plus_z():
    # An OpenCV camera whose axes equal the world's looks along +z; in OpenGL its -z axis is +z.
    gl = C.opencv_to_opengl(torch.eye(4))
    torch.testing.assert_close(-gl[:3, 2], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(gl[:3, 1], torch.tensor([0.0, -1.0, 0.0]))
    # LLFF (down, right, back): a camera with columns (down=-y, right=x, back=z) is the identity.
    llff = torch.tensor([[0.0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 0]])
    torch.testing.assert_close(C.llff_to_opengl(llff), torch.eye(4))


def test_look_at_and_sphere_sampler():
    c2w, el, az, r = C.sample_poses_sphere(200, 4.0, (10, 60), (0, 90), return_angles=True,
                                           generator=torch.Generator().manual_seed(4))
    centres = c2w[:, :3, 3]
    torch.testing.assert_close(centres.norm(dim=-1), torch.full((200,), 4.0))
    elev = torch.rad2deg(torch.asin(centres[:, 2] / 4.0))
    assert elev.min() >= 10 - 1e-3 and elev.max() <= 60 + 1e-3
    assert (centres[:, 0] >= -1e-4).all() and (centres[:, 1] >= -1e-4).all()  # azimuth 0..90
    # each camera looks at the origin: -z axis points from centre to origin
    fwd = -c2w[:, :3, 2]
    torch.testing.assert_close(fwd, -centres / 4.0, atol=1e-5, rtol=0)
    # rotation part is orthonormal with det +1
    R = c2w[:, :3, :3]
    torch.testing.assert_close(R.transpose(1, 2) @ R, torch.eye(3).expand(200, 3, 3), atol=1e-5, rtol=0)
    assert torch.allclose(torch.linalg.det(R), torch.ones(200), atol=1e-5)
    # uniform over the band area: mean of sin(elevation) ~ midpoint of [sin 10, sin 60]
    mid = 0.5 * (math.sin(math.radians(10)) + math.sin(math.radians(60)))
    assert torch.sin(torch.deg2rad(el)).mean().item() == pytest.approx(mid, abs=0.05)


def test_camera_paths():
    tt = C.turntable_path(8, radius=3.0, elevation_deg=30)
    assert tt.shape == (8, 4, 4)
    torch.testing.assert_close(tt[:, 2, 3], torch.full((8,), 1.5), atol=1e-5, rtol=0)
    a, b = tt[0], tt[2]
    path = C.interpolate_poses(a, b, 5)
    torch.testing.assert_close(path[0], a, atol=1e-5, rtol=0)
    torch.testing.assert_close(path[-1], b, atol=1e-5, rtol=0)
    # slerp halfway between azimuth 0 and 90 looks from azimuth 45 (same radius for a circle arc
    # only up to the linear centre interpolation: check the rotation's viewing direction).
    fwd = -path[2, :3, 2]
    ref = -C.turntable_path(8, 3.0, 30, start_azimuth_deg=45)[0, :3, 2]
    torch.testing.assert_close(fwd, ref, atol=1e-5, rtol=0)
    sp = C.spiral_path(10)
    assert sp.shape == (10, 4, 4)


def test_gradcheck_rays_and_projection_float64():
    K = C.intrinsics(20.0, 22.0, 8.0, 7.0, dtype=torch.float64)
    c2w = _random_c2w(2, seed=5).double()
    uv = torch.rand(2, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: C.rays_from_pixels(K, c2w, x * 16)[1], (uv,))
    pts = (torch.randn(2, 3, 3, dtype=torch.float64) * 0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: C.project(p, K, c2w)[0], (pts,))


def test_bad_inputs_name_the_argument():
    with pytest.raises(ShapeError, match=r"c2w: expected shape \(\.\.\., 3, 4\) or \(\.\.\., 4, 4\), got \(3, 3\)"):
        C.image_rays(C.intrinsics(1, 1, 1, 1), torch.eye(3), 4, 4)
    with pytest.raises(ShapeError, match="uv"):
        C.rays_from_pixels(C.intrinsics(1, 1, 1, 1).expand(2, 3, 3), torch.eye(4).expand(2, 4, 4),
                           torch.zeros(3, 2))
    with pytest.raises(ShapeError, match="K and c2w"):
        C.image_rays(C.intrinsics(1, 1, 1, 1).expand(2, 3, 3), torch.eye(4).expand(3, 4, 4), 4, 4)
    with pytest.raises(ValueError, match="fov_deg"):
        C.intrinsics_from_fov(0.0, 8)
    with pytest.raises(ValueError, match="elevation_range"):
        C.sample_poses_sphere(2, 1.0, (50, 10))
