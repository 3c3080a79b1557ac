"""Camera programs of radiance-field runs (src/aware3d/programs/field.py): orbit, training-path,
spiral, interpolate, path files (aware3d and nerfstudio formats) and the PNG frame sequence.

Geometry is checked on a stand-in run whose ``render`` records the camera, intrinsics and size it
is asked for (so the numbers are exact, not read back off pictures); the programs are then played
on a real tiny run: the legacy ngp fixture (its dataset is gone, which is what ``turntable`` and
``path`` must cope with) and an ngp run trained for two steps here on a tiny synthetic scene (the
programs that need the training cameras)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import aware3d
from aware3d import registry
from aware3d.programs import field
from aware3d.render import cameras as C

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_runs" / "ngp"
CENTRE = torch.tensor([0.7, -0.3, 0.4])  # off the origin on purpose: the turntable circles the origin


class RecordingRun:
    """A stand-in FieldRun: the scene facts programs read, training cameras ``c2w``, and a
    ``render`` that records each call and returns a flat image of the asked size."""

    def __init__(self, c2w: torch.Tensor, width: int = 16, height: int = 12, focal: float = 20.0):
        self.c2w = c2w.float()
        self.scene = {"aabb": [-1, -1, -1, 1, 1, 1], "near": 1.0, "far": 6.0, "width": width,
                      "height": height, "K": [[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]],
                      "orbit_radius": 3.0, "orbit_elevation_deg": 30.0, "n_images": len(c2w)}
        self.saved = {"data": "<in memory>"}
        self.calls = []

    def intrinsics(self, width=None):
        return C.scale_intrinsics(torch.tensor(self.scene["K"]), (width or self.scene["width"]) / self.scene["width"])

    def load_data(self, split="train"):
        return SimpleNamespace(c2w=self.c2w)

    def render(self, c2w, K=None, width=None, height=None):
        self.calls.append({"c2w": torch.as_tensor(c2w).clone(), "K": torch.as_tensor(K).clone(),
                           "width": width, "height": height})
        return {"color": torch.full((height, width, 3), 0.5), "depth": torch.full((height, width), 3.0),
                "opacity": torch.ones(height, width)}

    def poses(self):
        return torch.stack([c["c2w"] for c in self.calls])


def ring(n=16, radius=2.5, elevation=25.0, centre=CENTRE):
    """``n`` cameras evenly round a full circle about ``centre`` (axis +z), looking at it."""
    az = torch.arange(n) * (360.0 / n)
    eye = centre + C.spherical_to_cartesian(radius, torch.full((n,), elevation), az)
    return C.look_at(eye, centre.expand_as(eye))


def axis_distance(c2w, point):
    """Distance of ``point`` from each camera's optical axis, and whether it is in front."""
    o, d = c2w[:, :3, 3].double(), -c2w[:, :3, 2].double()
    v = point.double() - o
    along = (v * d).sum(-1)
    return (v - along[:, None] * d).norm(dim=-1), along > 0


# --------------------------------------------------------------------------------------------------
# orbit


def test_focus_point_is_where_the_cameras_look():
    # Cameras on a circle round a known point off the origin, and cameras at random distances and
    # elevations all looking at it: the least-squares point of their axes is that point (to 1e-4;
    # float32 poses give ~1e-7).
    assert (C.focus_point(ring()) - CENTRE).norm() < 1e-4
    g = torch.Generator().manual_seed(3)
    eye = CENTRE + C.spherical_to_cartesian(2 + 2 * torch.rand(9, generator=g), 60 * torch.rand(9, generator=g),
                                            360 * torch.rand(9, generator=g))
    assert (C.focus_point(C.look_at(eye, CENTRE.expand_as(eye))) - CENTRE).norm() < 1e-4


def test_focus_point_of_parallel_cameras_is_in_front_at_the_fallback_depth():
    # Forward-facing cameras with parallel axes have no closest point; the centre of interest is
    # then the fallback depth (3.0) ahead of the mean centre (0, -4, 0) along the mean view (+y).
    eye = torch.tensor([[0.0, -4, 0], [0.3, -4, 0.1], [-0.3, -4, -0.1]])
    c2w = C.look_at(eye, eye + torch.tensor([0.0, 1, 0]))
    torch.testing.assert_close(C.focus_point(c2w, fallback_depth=3.0), torch.tensor([0.0, -1.0, 0.0]),
                               atol=1e-5, rtol=0)


def test_orbit_circles_the_centre_of_interest_at_the_cameras_distance_and_elevation(tmp_path):
    run = RecordingRun(ring(radius=2.5, elevation=25.0))
    files = field.orbit(run, tmp_path, frames=10, progress=False)
    poses = run.poses()
    assert poses.shape == (10, 4, 4) and len(list(Path(files["frames"]).glob("*.png"))) == 10
    dist, ahead = axis_distance(poses, CENTRE)
    assert float(dist.max()) < 1e-4 and bool(ahead.all())  # every frame looks at the centre
    rel = poses[:, :3, 3] - CENTRE
    torch.testing.assert_close(rel.norm(dim=-1), torch.full((10,), 2.5), atol=1e-4, rtol=0)
    elev = torch.rad2deg(torch.asin(rel[:, 2] / rel.norm(dim=-1)))
    torch.testing.assert_close(elev, torch.full((10,), 25.0), atol=1e-3, rtol=0)  # mean up is +z here
    torch.testing.assert_close(poses[0, :3, 3], run.c2w[0, :3, 3], atol=1e-4, rtol=0)  # starts at camera 0


def test_orbit_uses_the_cameras_mean_up():
    # The same ring tilted by 90 degrees about x (a capture whose "up" is world -y): the orbit's
    # axis and its cameras' up follow the cameras, not world z.
    R = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    c2w = R @ ring(centre=torch.zeros(3))
    o = C.camera_orbit(c2w)
    torch.testing.assert_close(o["up"], torch.tensor([0.0, -1.0, 0.0]), atol=1e-5, rtol=0)
    assert abs(o["elevation_deg"] - 25.0) < 1e-3 and abs(o["radius"] - 2.5) < 1e-4
    poses = field.orbit_poses(c2w, 8)
    assert float((poses[:, :3, 1] @ torch.tensor([0.0, -1.0, 0.0])).min()) > 0.85  # cos 25 = 0.906


# --------------------------------------------------------------------------------------------------
# training-path


def _hemisphere_cameras(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    c2w = C.sample_poses_sphere(n, radius=(2.5, 3.5), elevation_range=(10, 70), generator=g)
    c2w[:, :3, 3] += CENTRE
    return c2w


def test_training_path_passes_through_every_camera_and_has_no_jumps(tmp_path):
    c2w = _hemisphere_cameras()  # random order: a path in dataset order would zig-zag
    run = RecordingRun(c2w)
    field.training_path(run, tmp_path, frames=120, progress=False)
    poses = run.poses()
    assert poses.shape == (120, 4, 4)
    torch.testing.assert_close(poses[0], c2w[0], atol=1e-5, rtol=0)  # the tour starts at camera 0
    # every training camera is a frame of the path (position and rotation), to 1e-4
    d = (c2w[:, None, :3, 3].double() - poses[None, :, :3, 3].double()).norm(dim=-1)  # (cameras, frames)
    nearest = d.argmin(1)
    assert float(d.min(1).values.max()) < 1e-4
    assert float((poses[nearest, :3, :3] - c2w[:, :3, :3]).abs().max()) < 1e-4
    assert len(set(nearest.tolist())) == len(c2w)
    # smooth: no step longer than 2x the mean step (frames go to segments by length: 1.48x here)
    steps = (poses[1:, :3, 3] - poses[:-1, :3, 3]).norm(dim=-1)
    assert float(steps.max()) < 2 * float(steps.mean()), (float(steps.max()), float(steps.mean()))
    # ordered: much shorter than visiting the cameras in their (random) dataset order
    dataset_len = float((c2w[1:, :3, 3] - c2w[:-1, :3, 3]).norm(dim=-1).sum())
    assert float(steps.sum()) < 0.6 * dataset_len
    # rotations change smoothly too: no frame-to-frame turn above 2x the mean turn (1.23x here)
    q = C.matrix_to_quaternion(poses[:, :3, :3].double())
    turn = 2 * torch.acos((q[1:] * q[:-1]).sum(-1).abs().clamp(max=1))
    assert float(turn.max()) < 2 * float(turn.mean())


def test_training_path_keeps_an_already_smooth_dataset_order():
    # A capture taken in order (a ring, as from a video): the path visits the cameras in that order.
    c2w = ring(n=12)
    poses, keyframes = C.smooth_path(c2w, 45)
    assert keyframes.tolist() == sorted(keyframes.tolist()) and keyframes[0] == 0 and keyframes[-1] == 44
    torch.testing.assert_close(poses[keyframes], c2w, atol=1e-5, rtol=0)
    # a spline, not a polyline: the heading turns gradually (330 degrees over 44 steps: 7.5 each;
    # 10.8 at most here), where straight segments would turn 30 degrees at each camera
    v = poses[1:, :3, 3] - poses[:-1, :3, 3]
    v = v / v.norm(dim=-1, keepdim=True)
    assert float(torch.rad2deg(torch.acos((v[1:] * v[:-1]).sum(-1).clamp(-1, 1))).max()) < 15.0
    # fewer frames than cameras: an even path that starts and ends at the ends of the tour
    poses, keyframes = C.smooth_path(c2w, 5)
    assert poses.shape == (5, 4, 4) and (keyframes == -1).all()
    torch.testing.assert_close(poses[0], c2w[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(poses[-1], c2w[-1], atol=1e-5, rtol=0)


def test_camera_tour_starts_at_the_first_camera_and_visits_each_once():
    pts = torch.tensor([[0.0, 0, 0], [3, 0, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]])
    assert C.camera_tour(pts).tolist() == [0, 2, 3, 1, 4]
    assert C.camera_tour(pts, order="dataset").tolist() == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------------------------------
# spiral, interpolate


def test_spiral_looks_at_the_centre_of_interest(tmp_path):
    # 360-degree capture: the spiral keeps the cameras' distance and looks at the centre.
    run = RecordingRun(ring(radius=2.5, elevation=25.0))
    field.spiral(run, tmp_path / "a", frames=12, progress=False)
    poses = run.poses()
    dist, ahead = axis_distance(poses, CENTRE)
    assert float(dist.max()) < 1e-4 and bool(ahead.all())
    torch.testing.assert_close((poses[:, :3, 3] - CENTRE).norm(dim=-1), torch.full((12,), 2.5), atol=1e-4, rtol=0)
    # forward-facing capture (cameras on a plane, axes meeting 4 ahead): LLFF's spiral round the
    # mean camera, every pose aimed at the point the cameras look at
    g = torch.Generator().manual_seed(1)
    eye = torch.cat([2 * torch.rand(10, 2, generator=g) - 1, torch.zeros(10, 1)], 1)[:, [0, 2, 1]]
    eye[:, 1] = -4.0  # on the plane y = -4, within 1 of the y axis
    target = torch.tensor([0.2, 0.0, 0.1])
    run = RecordingRun(C.look_at(eye, target.expand_as(eye)))
    field.spiral(run, tmp_path / "b", frames=12, progress=False)
    poses = run.poses()
    dist, ahead = axis_distance(poses, target)
    assert float(dist.max()) < 1e-4 and bool(ahead.all())
    assert float((poses[:, :3, 3] - eye.mean(0)).norm(dim=-1).max()) < 1.5  # among the cameras


def test_interpolate_starts_and_ends_at_the_two_cameras(tmp_path):
    c2w = _hemisphere_cameras(8)
    run = RecordingRun(c2w)
    field.interpolate(run, tmp_path / "ab", frames=7, progress=False)
    poses = run.poses()
    assert poses.shape == (7, 4, 4)
    torch.testing.assert_close(poses[0], c2w[0], atol=1e-5, rtol=0)   # default a: the first
    torch.testing.assert_close(poses[-1], c2w[-1], atol=1e-5, rtol=0)  # default b: the last
    run.calls.clear()
    field.interpolate(run, tmp_path / "35", a=3, b=5, frames=5, progress=False)
    poses = run.poses()
    torch.testing.assert_close(poses[0], c2w[3], atol=1e-5, rtol=0)
    torch.testing.assert_close(poses[-1], c2w[5], atol=1e-5, rtol=0)
    torch.testing.assert_close(poses[2, :3, 3], (c2w[3, :3, 3] + c2w[5, :3, 3]) / 2, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"--b: expected a training camera index in \[-8, 7\], got 8"):
        field.interpolate(run, tmp_path / "x", b=8, progress=False)


# --------------------------------------------------------------------------------------------------
# path files


def _ns_matrix(eye):
    """A nerfstudio camera_to_world: 16 floats, row-major (translation at indices 3, 7, 11)."""
    return C.look_at(torch.tensor(eye)).reshape(-1).tolist()


def test_nerfstudio_camera_path_renders_at_its_size_and_focal_length(tmp_path):
    eyes = [[3.0, -3.0, 2.0], [3.2, -2.8, 2.0], [3.4, -2.6, 2.1]]
    doc = {"camera_type": "perspective", "render_height": 12, "render_width": 20, "fps": 12, "seconds": 0.25,
           "camera_path": [{"camera_to_world": _ns_matrix(e), "fov": 50.0, "aspect": 20 / 12} for e in eyes],
           "keyframes": [], "smoothness_value": 0.5, "is_cycle": False, "crop": None}
    doc["camera_path"][2]["fov"] = 30.0  # the fov may change along the path
    path = tmp_path / "camera_path.json"
    path.write_text(json.dumps(doc))
    run = RecordingRun(ring())
    files = field.camera_path(run, tmp_path / "out", path=str(path), progress=False)
    assert [(c["width"], c["height"]) for c in run.calls] == [(20, 12)] * 3
    for call, e, fov in zip(run.calls, eyes, (50.0, 50.0, 30.0)):
        f = 6.0 / math.tan(math.radians(fov) / 2)  # vertical fov: (H / 2) / tan(fov / 2)
        torch.testing.assert_close(call["K"], torch.tensor([[f, 0, 10.0], [0, f, 6.0], [0, 0, 1]]))
        torch.testing.assert_close(call["c2w"], C.look_at(torch.tensor(e)))  # row-major, as written
    assert len(list(Path(files["frames"]).glob("*.png"))) == 3
    # --resolution: 10 wide keeps the aspect (10 x 6) and the vertical fov
    run.calls.clear()
    field.camera_path(run, tmp_path / "out10", path=str(path), resolution=10, progress=False)
    f = 3.0 / math.tan(math.radians(50.0) / 2)
    assert (run.calls[0]["width"], run.calls[0]["height"]) == (10, 6)
    torch.testing.assert_close(run.calls[0]["K"], torch.tensor([[f, 0, 5.0], [0, f, 3.0], [0, 0, 1]]))
    assert field.read_camera_path(path)["fps"] == 12
    del doc["fps"]
    path.write_text(json.dumps(doc))
    assert field.read_camera_path(path)["fps"] == pytest.approx(12.0)  # 3 frames / 0.25 s
    doc["camera_type"] = "equirectangular"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="only perspective"):
        field.read_camera_path(path)


def test_aware3d_path_honours_w_and_h_unless_resolution_is_given(tmp_path):
    frames = [{"transform_matrix": C.look_at(torch.tensor([3.0, -3.0, 2.0])).tolist()}] * 2
    path = tmp_path / "path.json"
    path.write_text(json.dumps({"camera_angle_x": 0.8, "w": 18, "h": 10, "fps": 10, "frames": frames}))
    run = RecordingRun(ring())  # trained at 16 x 12
    field.camera_path(run, tmp_path / "a", path=str(path), progress=False)
    f = 9.0 / math.tan(0.4)
    assert (run.calls[0]["width"], run.calls[0]["height"]) == (18, 10)
    torch.testing.assert_close(run.calls[0]["K"], torch.tensor([[f, 0, 9.0], [0, f, 5.0], [0, 0, 1]]))
    run.calls.clear()
    field.camera_path(run, tmp_path / "b", path=str(path), resolution=9, progress=False)
    f = 4.5 / math.tan(0.4)
    assert (run.calls[0]["width"], run.calls[0]["height"]) == (9, 5)
    torch.testing.assert_close(run.calls[0]["K"], torch.tensor([[f, 0, 4.5], [0, f, 2.5], [0, 0, 1]]))
    # no field of view: the training focal length (20 px at 16 wide), scaled to the width
    path.write_text(json.dumps({"w": 32, "h": 8, "frames": frames}))
    run.calls.clear()
    field.camera_path(run, tmp_path / "c", path=str(path), progress=False)
    assert (run.calls[0]["width"], run.calls[0]["height"]) == (32, 8)
    torch.testing.assert_close(run.calls[0]["K"], torch.tensor([[40.0, 0, 16.0], [0, 40.0, 4.0], [0, 0, 1]]))


# --------------------------------------------------------------------------------------------------
# On real runs: PNG frames, sizes, programs that need the dataset


def test_png_sequence_on_a_real_run(tmp_path):
    run_dir = tmp_path / "ngp"
    shutil.copytree(FIXTURE, run_dir)
    run = aware3d.load(run_dir, device="cpu")
    files = run.render_program("turntable", frames=3, resolution=12, progress=False)
    from PIL import Image

    pngs = sorted(Path(files["frames"]).iterdir())
    assert [p.name for p in pngs] == ["00000.png", "00001.png", "00002.png"]
    assert Path(files["frames"]) == run_dir / "render" / "turntable" / "frames"
    assert all(Image.open(p).mode == "RGB" and Image.open(p).size == (12, 12) for p in pngs)
    assert Path(files["depth_mp4"]).is_file() and Path(files["opacity_gif"]).is_file()
    # a shorter render into the same folder leaves exactly its own frames
    files = run.render_program("turntable", frames=2, resolution=12, progress=False)
    assert len(list(Path(files["frames"]).glob("*.png"))) == 2
    # a nerfstudio path at its own size on the real run
    doc = {"render_width": 14, "render_height": 10, "fps": 5, "seconds": 0.4,
           "camera_path": [{"camera_to_world": _ns_matrix([3.0, -3.0, 2.0]), "fov": 40.0, "aspect": 1.4}] * 2}
    (tmp_path / "camera_path.json").write_text(json.dumps(doc))
    files = run.render_program("path", path=str(tmp_path / "camera_path.json"), progress=False)
    import imageio.v3 as iio

    assert Image.open(Path(files["frames"]) / "00001.png").size == (14, 10)
    assert iio.imread(files["rgb_mp4"]).shape[1:3] == (10, 14)
    # the dataset is gone: the programs that need its cameras say so and name what works
    run.saved["data"] = str(tmp_path / "moved-away")
    with pytest.raises(ValueError, match="orbit needs the run's training cameras.*turntable"):
        run.render_program("orbit", frames=2, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from aware3d.data.synth import synth_scene

    root = tmp_path_factory.mktemp("programs")
    synth_scene(root / "scene", n_views=16, resolution=32, hemisphere=True, seed=0)
    return registry.get("ngp").train(str(root / "scene"), out=str(root / "run"), preset="tiny", max_steps=2,
                                     progress=False, val_every=0, device="cpu")


@pytest.mark.parametrize("name", ["orbit", "training-path", "spiral", "interpolate"])
def test_programs_on_a_trained_run(name, tiny_run, tmp_path):
    run = aware3d.load(tiny_run, device="cpu")
    assert name in run.programs and run.programs[name] and "\n" not in run.programs[name]
    files = run.render_program(name.replace("-", "_"), out=tmp_path / name, frames=4, resolution=8,
                               progress=False)
    assert len(list(Path(files["frames"]).glob("*.png"))) == 4
    import imageio.v3 as iio

    assert iio.imread(files["rgb_gif"]).shape[1:3] == (8, 8)
