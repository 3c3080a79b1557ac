"""A field that starts dead (no density on any training ray, so no gradient) is drawn again from
the next seed, and says so; a live one is kept as it is."""
from __future__ import annotations

import pytest
import torch

from aware3d import registry
from aware3d.train.recon import _live_model, field_is_dead


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from aware3d.data import load_scene
    from aware3d.data.synth import synth_scene

    root = tmp_path_factory.mktemp("dead") / "scene"
    synth_scene(root, n_views=4, resolution=16, progress=False)
    return load_scene(root, "train")


def _nerf(scene, bias):
    m = registry.get("nerf")
    cfg = m.make_config("tiny")
    from aware3d.train.recon import scene_info

    model = m.build(cfg, scene_info(scene), "cpu")
    if bias is not None:
        with torch.no_grad():
            for net in (model.coarse, model.fine):
                net.sigma_head.bias.fill_(bias)
    return m, cfg, model


def test_a_dead_field_is_found_and_drawn_again(scene, capsys):
    from aware3d.train.recon import scene_info

    m, cfg, model = _nerf(scene, -100.0)  # density head far below 0: ReLU'd density 0 everywhere
    assert field_is_dead(model, scene, "cpu")
    built = []

    class Method:  # the real method, with a record of the rebuilds
        def build(self, cfg, sc, dev):
            built.append(torch.initial_seed())
            return m.build(cfg, sc, dev)

    live = _live_model(model, Method(), cfg, scene_info(scene), "cpu", scene, seed=7, progress=True)
    assert live is not model and not field_is_dead(live, scene, "cpu")
    assert built and built[0] == 8  # the next seed first
    assert "drawing it again from seed 8" in capsys.readouterr().err


def test_a_live_field_is_kept(scene, capsys):
    from aware3d.train.recon import scene_info

    m, cfg, model = _nerf(scene, 5.0)
    assert not field_is_dead(model, scene, "cpu")
    assert _live_model(model, m, cfg, scene_info(scene), "cpu", scene, seed=0, progress=True) is model
    assert capsys.readouterr().err == ""
