"""HoloGAN: AdaIN, the rigid rotation of the feature volume, projection, losses, shapes and
gradients, and a 20-step run through ``aware3d.methods.hologan.train`` with its render programs."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import aware3d

from aware3d.fields.hologan import adain, angles_from_c2w, project_volume, rotate_volume, rotation_matrix
from aware3d.methods import gan_common as gc
from aware3d.methods import hologan as hm


def test_adain_hand_case():
    # one channel [1, 2, 3, 4]: mean 2.5, biased variance 1.25; gamma 2, beta 1:
    # 2 * (x - 2.5) / sqrt(1.25) + 1 = 1 + (-3, -1, 1, 3) / 1.1180 = (-1.6833, 0.1056, 1.8944, 3.6833)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    y = adain(x, torch.tensor([[2.0]]), torch.tensor([[1.0]]))
    assert torch.allclose(y.flatten(), torch.tensor([-1.6833, 0.1056, 1.8944, 3.6833]), atol=1e-4)
    # 3D maps and several channels: each (sample, channel) gets mean beta and std |gamma|
    x3 = torch.randn(2, 3, 4, 4, 4) * 5 + 7
    g, b = torch.tensor([[1.0, 2.0, 0.5]] * 2), torch.tensor([[0.0, -1.0, 3.0]] * 2)
    y3 = adain(x3, g, b)
    assert torch.allclose(y3.mean((2, 3, 4)), b, atol=1e-5)
    assert torch.allclose(y3.std((2, 3, 4), unbiased=False), g, atol=1e-4)


def test_rotation_matrix_hand_values():
    # yaw 90 about the vertical y axis sends x = (1, 0, 0) to (0, 0, -1); pitch 90 about x
    # sends y = (0, 1, 0) to (0, 0, 1); both are orthonormal with det 1
    R = rotation_matrix(torch.tensor(90.0), torch.tensor(0.0))
    assert torch.allclose(R @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 0, -1]), atol=1e-6)
    P = rotation_matrix(torch.tensor(0.0), torch.tensor(90.0))
    assert torch.allclose(P @ torch.tensor([0.0, 1, 0]), torch.tensor([0.0, 0, 1]), atol=1e-6)
    M = rotation_matrix(torch.tensor([33.0]), torch.tensor([-12.0]))[0]
    assert torch.allclose(M @ M.T, torch.eye(3), atol=1e-6) and abs(torch.det(M) - 1) < 1e-6


@pytest.mark.parametrize("n", [4, 5])
def test_quarter_turn_of_volume_is_rot90(n):
    # With align_corners=False voxel centres are symmetric about 0, so a 90-degree turn maps
    # centres onto centres: trilinear resampling must equal an exact permutation of voxels.
    # Yaw +90 (x -> -z): out[d, h, w] = in[w, h, n-1-d] = torch.rot90(in, 1, dims=(D, W)).
    # Pitch +90 (y -> z): out[d, h, w] = in[n-1-h, d, w] = torch.rot90(in, 1, dims=(H, D)).
    v = torch.randn(2, 3, n, n, n)
    yaw = rotate_volume(v, rotation_matrix(torch.full((2,), 90.0), torch.zeros(2)))
    assert torch.allclose(yaw, torch.rot90(v, 1, dims=(2, 4)), atol=1e-5)
    pitch = rotate_volume(v, rotation_matrix(torch.zeros(2), torch.full((2,), 90.0)))
    assert torch.allclose(pitch, torch.rot90(v, 1, dims=(3, 2)), atol=1e-5)
    # and 0 degrees is the identity, not a half-voxel shift
    assert torch.allclose(rotate_volume(v, torch.eye(3).expand(2, 3, 3)), v, atol=1e-6)
    # 45 degrees is not a permutation (the test can fail): corners leave the cube
    r45 = rotate_volume(v, rotation_matrix(torch.full((2,), 45.0), torch.zeros(2)))
    assert not torch.allclose(r45, torch.rot90(v, 1, dims=(2, 4)), atol=1e-2)


def test_projection_folds_depth_into_channels():
    # (B, C, D, H, W) -> (B, C * D, H, W): channel c * D + d holds depth slice d of channel c
    v = torch.arange(2 * 3 * 4 * 2 * 2, dtype=torch.float32).reshape(2, 3, 4, 2, 2)
    p = project_volume(v)
    assert p.shape == (2, 12, 2, 2)
    assert torch.equal(p[1, 2 * 4 + 3], v[1, 2, 3])


def test_identity_and_style_losses_hand_values():
    # ||z^ - z||^2 averaged over batch and dims: ((1 - 0)^2 + 0 + (0.5)^2 + (-0.5)^2) / 4 = 0.375
    assert abs(float(hm.identity_loss(torch.tensor([[1.0, 0.0], [0.5, -0.5]]), torch.zeros(2, 2))) - 0.375) < 1e-7
    # style logits 0 at two layers: 2 * softplus(0) = 2 ln 2 for either label
    s = [torch.zeros(3, 1), torch.zeros(3, 1)]
    assert abs(float(hm.style_losses(s, real=True)) - 2 * math.log(2)) < 1e-6


def test_generator_discriminator_shapes_and_gradients():
    torch.manual_seed(0)
    cfg = hm.make_config("tiny")
    m = hm.build(cfg)
    G, D = m.generator, m.discriminator
    x = m.sample_inputs(3, torch.Generator().manual_seed(0))
    assert x["z_shape"].shape == (3, 8) and x["z_shape"].abs().max() <= 1   # z ~ U[-1, 1]
    assert torch.equal(x["z_shape"], x["z_app"])                            # one z in training
    yaw, pitch = angles_from_c2w(x["c2w"])                                  # the pose rides on c2w
    assert yaw.abs().max() <= 180 and pitch.abs().max() <= 20 + 1e-4
    img = G(x)
    assert img.shape == (3, 3, 32, 32) and img.abs().max() <= 1     # tanh
    out = D.forward_all(img)
    # 32^2: convs 32 -> 16 -> 8 -> 4, the last two normalised: two style heads; z head of size Z
    assert out["logit"].shape == (3, 1) and len(out["style_logits"]) == 2 and out["z_pred"].shape == (3, 8)
    loss, scalars = m.generator_objective(G, D, x)
    loss.backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []                                             # every G parameter learns
    G.zero_grad()
    loss_d, sd = m.discriminator_objective(G, D, torch.rand(3, 3, 32, 32) * 2 - 1, x, r1_weight=1.0)
    loss_d.backward()
    assert {"loss_D", "loss_D_style", "loss_identity_D", "R1"} <= set(sd)
    # the z head is trained by the identity term, the style heads by the style term
    assert D.latent[0].weight.grad.abs().sum() > 0 and D.style_heads[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in G.parameters())               # D step leaves G alone


def test_shape_code_drives_only_the_volume():
    # 3D AdaIN layers read z_shape, 2D ones z_app: changing z_app keeps the volume, changes the image
    torch.manual_seed(0)
    G = hm.build(hm.make_config("tiny")).generator.eval()
    a, b = torch.rand(2, 8) * 2 - 1, torch.rand(2, 8) * 2 - 1
    zero = torch.zeros(2)
    with torch.no_grad():
        w3a, w2a = G.styles(a, a)
        w3b, w2b = G.styles(a, b)
        assert torch.equal(G.volume(w3a), G.volume(w3b))
        i1 = G({"z_shape": a, "z_app": a, "yaw": zero, "pitch": zero})
        i2 = G({"z_shape": a, "z_app": b, "yaw": zero, "pitch": zero})
        assert (i1 - i2).abs().max() > 1e-4
        # one z for both equals the training path
        assert torch.allclose(i1, G({"z": a, "yaw": zero, "pitch": zero}))


def test_pose_round_trips_through_c2w():
    # camera_from_angles -> angles_from_c2w is the identity on (yaw, pitch) (degrees)
    yaw, pitch = torch.tensor([30.0, -100.0, 179.0]), torch.tensor([10.0, -5.0, 19.0])
    y2, p2 = angles_from_c2w(hm.camera_from_angles(yaw, pitch))
    assert torch.allclose(y2, yaw, atol=1e-4) and torch.allclose(p2, pitch, atol=1e-4)


def test_presets_build_and_paper_sizes():
    # paper 64^2 (official generator_AdaIN): 4^3 x 512 constant -> 16^3 x 64 volume; Adam lr 1e-4, beta1 0.5
    cfg = hm.make_config("celeba64")
    assert cfg.ch3d == (512, 128, 64) and cfg.lr_g == cfg.lr_d == 1e-4 and cfg.betas[0] == 0.5
    G = hm.build_generator(cfg)
    assert G.vol_res == 16 and G.const.shape == (1, 512, 4, 4, 4)
    with pytest.raises(ValueError, match="unknown"):
        hm.make_config("cpu", no_such_setting=1)


@pytest.fixture(scope="module")
def tiny_run(objects32, tmp_path_factory):
    pytest.importorskip("aware3d.data.imagefolder", reason="ImageFolderDataset not available")
    from aware3d.train import gan

    engine_before = gan.GanEngine
    run = hm.METHOD.train(str(objects32), str(tmp_path_factory.mktemp("holo") / "run"), preset="tiny",
                   max_steps=20, seed=0)
    assert gan.GanEngine is engine_before          # the engine-class swap is undone
    return run


def test_train_entry_point_20_steps(tiny_run):
    run = tiny_run
    ckpt = torch.load(run / "checkpoints" / "step_00000020.pt", weights_only=True)
    assert ckpt["step"] == 20
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == "hologan" and cfg["preset"] == "tiny" and cfg["gan"]["optimizer"] == "adam"
    rows = list(csv.DictReader(open(run / "scalars.csv")))
    tags = {r["tag"] for r in rows}
    # the objective engine ran HoloGAN's losses (the plain engine has no style / identity terms)
    assert {"loss_G", "loss_D", "loss_D_style", "loss_identity_D", "loss_identity_G"} <= tags
    assert all(np.isfinite(float(r["value"])) for r in rows)
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "step_00000000.png", "step_00000010.png", "step_00000020.png"]


def test_render_programs(tiny_run, tmp_path):
    assert hm.PROGRAMS == ("yaw-sweep", "pitch-sweep", "seed-grid", "interpolate-shape",
                           "interpolate-appearance", "interpolate-latent")
    files = aware3d.load(tiny_run, device="cpu").render_program("yaw-sweep", out=tmp_path, frames=4, samples=2)
    assert set(files) == {"gif", "mp4", "png"} and all(Path(p).exists() for p in files.values())
    assert Path(aware3d.load(tiny_run, device="cpu").render_program("seed-grid", out=tmp_path, frames=2, samples=4)["png"]).exists()
    r = aware3d.load(tiny_run, device="cpu")
    cfg, method, G = r.config, r.gan, r.G
    fr = gc.render_program_frames(method, G, "interpolate-appearance", n_frames=4, n_samples=2)
    assert fr.shape == (4, 2, 32, 32, 3)
    # frame 0 of both interpolations is the same base sample (weight 0); frame 2 differs
    f2 = gc.render_program_frames(method, G, "interpolate-shape", n_frames=4, n_samples=2)
    assert torch.allclose(fr[0], f2[0], atol=1e-6) and not torch.allclose(fr[2], f2[2], atol=1e-4)
    with pytest.raises(ValueError, match="program"):
        aware3d.load(tiny_run, device="cpu").render_program("nope", out=tmp_path)
