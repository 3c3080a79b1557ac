"""The one method surface and the public API (aware3d.load / registry / programs).

- Backward compatibility: runs written by the code before the method surface existed
  (tests/fixtures/legacy_runs, made at commit 8e8c1da; see its README) load through
  ``aware3d.load`` and render the same pixels as that code did.
- The registry is the one list: the CLI's choices, ``aware3d.list_methods()`` and the method modules agree;
  every method gives the surface (presets with descriptions, programs with descriptions, train,
  load).
- Program names: one spelling (hyphens), underscores accepted.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import aware3d
from aware3d import registry

FIXTURES = Path(__file__).parent / "fixtures" / "legacy_runs"


# the methods that existed when the fixtures were made (later methods have no legacy runs)
LEGACY = ("nerf", "ngp", "nerfw", "giraffe", "graf", "pigan", "hologan", "cips3d")


def test_every_legacy_fixture_is_tested():
    assert sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.pt").is_file()) == sorted(LEGACY)


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_run_renders_the_same_pixels(name):
    run = aware3d.load(FIXTURES / name, device="cpu")
    exp = torch.load(FIXTURES / name / "expected.pt", weights_only=True)
    assert run.method.name == name and run.step == 2
    if run.method.kind == "field":
        out = run.render(exp["c2w"], K=exp["K"], width=16, height=16)
        for k in ("color", "depth", "opacity"):
            torch.testing.assert_close(out[k], exp[k], atol=1e-5, rtol=0)
        assert out["color"].std() > 0  # the reference is not a constant image
    else:
        out = run.render(exp["inputs"])
        lo, hi = run.gan.image_range
        want = ((exp["images"] - lo) / (hi - lo)).clamp(0, 1).permute(0, 2, 3, 1)
        # hologan's 3D convs differ by ~1e-6 between thread counts; 1e-5 is far below one
        # 8-bit level (3.9e-3)
        torch.testing.assert_close(out["color"], want, atol=1e-5, rtol=0)
        assert want.std() > 0


def test_registry_is_the_one_list():
    from aware3d.cli import build_parser

    p = build_parser()
    train = next(a for a in p._subparsers._group_actions[0].choices["train"]._actions if a.dest == "method")
    assert list(train.choices) == list(registry.METHODS)
    assert list(aware3d.list_methods()) == list(registry.METHODS)
    assert registry.names("field")[:3] == ("nerf", "ngp", "nerfw")
    assert {"dnerf", "tnerf"} <= set(registry.names("field"))
    assert registry.names("gan")[:5] == ("giraffe", "graf", "pigan", "hologan", "cips3d")
    with pytest.raises(ValueError, match="expected one of"):
        registry.get("nope")


@pytest.mark.parametrize("name", list(registry.METHODS))
def test_every_method_gives_the_surface(name):
    m = registry.get(name)
    assert m.name == name and m.kind == registry.METHODS[name].kind
    assert m.default_preset in m.presets and "tiny" in m.presets
    assert all(isinstance(d, str) and d and "\n" not in d for d in m.presets.values())
    assert m.programs and all(d and "\n" not in d for d in m.programs.values())
    assert all(n == n.lower() and "_" not in n for n in m.programs)  # one spelling: hyphens
    for call in ("make_config", "build", "train", "load"):
        assert callable(getattr(m, call))
    cfg = m.make_config("tiny")
    assert (cfg["preset"] if isinstance(cfg, dict) else cfg.preset) == "tiny"


def test_programs_accept_underscores_and_list_known_names():
    from aware3d.programs import canonical, find_program

    table = registry.get("giraffe").program_table
    assert find_program(table, "camera_elevation").name == "camera-elevation"
    assert canonical("Object_Translation_Circle") == "object-translation-circle"
    with pytest.raises(ValueError, match="camera-elevation"):
        find_program(table, "camera_height")


def test_options_a_method_does_not_take_are_refused_by_name():
    from aware3d.methods.base import call_with_options

    def fn(run, out_dir, frames=None, seed=0):
        return frames, seed

    assert call_with_options(fn, {"frames": 3}, "x", None, None) == (3, 0)
    with pytest.raises(ValueError, match=r"--path: does not apply to x \(it takes --frames, --seed\)"):
        call_with_options(fn, {"path": "a.json"}, "x", None, None)


def test_legacy_field_run_through_the_surface(tmp_path):
    """A field run renders a program, meshes and refuses a GAN-only option, all without its data."""
    run = aware3d.load(FIXTURES / "ngp", device="cpu")
    files = run.render_program("turntable", out=tmp_path / "tt", frames=2, resolution=12)
    assert Path(files["rgb_mp4"]).exists() and Path(files["first_frame"]).exists()
    with pytest.raises(ValueError, match="--seed: does not apply to render program turntable of ngp"):
        run.render_program("turntable", seed=3)
    info = run.export_mesh(out=tmp_path / "m.ply", resolution=16)  # the level comes from the field
    assert Path(info["path"]).exists() and info["vertices"] > 0
    with pytest.raises(ValueError, match="--n-gen: does not apply to ngp runs"):
        run.evaluate(n_gen=10)


def test_legacy_gan_run_through_the_surface(tmp_path):
    run = aware3d.load(FIXTURES / "giraffe", device="cpu")
    x = run.sample(seed=3, n=2)
    a = run.render(x)["color"]
    assert a.shape == (2, 16, 16, 3) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, run.render(run.sample(seed=3, n=2))["color"])  # seeds are reproducible
    obj = run.render(x, objects=[0], background=False, return_alpha=True)
    assert obj["alpha"].shape == (2, 16, 16)
    files = run.render_program("object_rotation", out=tmp_path / "rot", frames=2, samples=1)
    assert Path(files["png"]).exists() and "object-rotation" in Path(files["png"]).name
    # the option reaches GIRAFFE's exporter; after 2 steps object 1 has no density anywhere yet, which
    # is a clear error (an empty PLY before)
    with pytest.raises(ValueError, match="0 everywhere in the scene box: nothing to mesh"):
        run.export_mesh(out=tmp_path / "o.ply", resolution=12, object_index=1)
    assert not (tmp_path / "o.ply").exists()
    with pytest.raises(ValueError, match="--object-index: does not apply to graf mesh export"):
        aware3d.load(FIXTURES / "graf", device="cpu").export_mesh(out=tmp_path / "g.ply", object_index=1)
    with pytest.raises(ValueError, match="hologan has no density to mesh"):
        aware3d.load(FIXTURES / "hologan", device="cpu").export_mesh(out=tmp_path / "h.ply")


def _readme_python_blocks() -> list[str]:
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Library"):text.index("## Benchmarks")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_library_snippet_runs(tmp_path, monkeypatch):
    """The README's "Library" snippets, verbatim, on a field run and a GAN run (the legacy
    fixtures copied to the folder names the README uses)."""
    import shutil

    blocks = _readme_python_blocks()
    assert len(blocks) == 2 and 'aware3d.load("runs/ngp-scene")' in blocks[0]
    shutil.copytree(FIXTURES / "ngp", tmp_path / "runs" / "ngp-scene")
    shutil.copytree(FIXTURES / "giraffe", tmp_path / "runs" / "giraffe-objects")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    assert tuple(scope["out"]["color"].shape) == (128, 128, 3)
    assert scope["images"].shape[0] == 4 and float(scope["images"].max()) <= 1
    assert (tmp_path / "runs" / "ngp-scene" / "render" / "turntable" / "rgb.mp4").is_file()
    assert Path(scope["mesh"]["path"]).is_file()
    assert (tmp_path / "runs" / "giraffe-objects" / "render" / "object-rotation" /
            "object-rotation_seed3.gif").is_file()
    core: dict = {}
    exec(compile(blocks[1], "README.md", "exec"), core)
    assert tuple(core["rays_o"].shape) == (64, 64, 3)


@pytest.mark.parametrize("name", list(registry.METHODS))
def test_every_setting_has_type_default_and_meaning(name):
    """`aware3d train METHOD --help` lists every --set key from the config dataclass."""
    import dataclasses

    m = registry.get(name)
    rows = m.settings()
    fields = {f.name for f in dataclasses.fields(m.config_cls)} - {"preset", "data"}
    assert {r[0] for r in rows} == fields
    assert [r[0] for r in rows if not r[3]] == []          # a meaning for each
    assert all(r[1] for r in rows)                          # and a type
    text = m.describe()
    assert all(p in text for p in m.presets) and all(r[0] in text for r in rows)


@pytest.mark.parametrize("name,key,value,match", [
    ("ngp", "lr", "abc", r"--set lr=abc: lr of ngp is float \(default 0.01\); got 'abc'"),
    ("ngp", "bf16", "maybe", r"bf16 of ngp is bool or 'auto'"),
    ("nerf", "n_fine", "1.5", r"n_fine of nerf is int"),
    ("giraffe", "batch_size", "abc", r"batch_size of GIRAFFE is int \(default 16\)"),
    ("graf", "flip", "maybe", r"flip of Config is bool"),
    ("pigan", "betas", "0.5", r"betas of Config is tuple"),
])
def test_set_values_are_checked_against_the_type(name, key, value, match):
    with pytest.raises(ValueError, match=match):
        registry.get(name).make_config(overrides=[(key, value)])


def test_set_values_are_parsed_and_converted():
    cfg = registry.get("ngp").make_config("tiny", [("lr", "2e-3"), ("bf16", "auto"), ("log2_table", "12.0")])
    assert cfg["lr"] == 0.002 and cfg["bf16"] == "auto" and cfg["log2_table"] == 12
    g = registry.get("giraffe").make_config("tiny", [("depth_range", "[1, 5]"), ("lr_g", "1")])
    assert g.depth_range == (1, 5) and g.lr_g == 1.0 and isinstance(g.lr_g, float)


def test_train_method_help_lists_presets_and_settings(capsys):
    from aware3d.cli import main

    assert main(["train", "pigan", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--max-minutes" in out and "presets (--preset" in out and "celeba64" in out
    assert re.search(r"\n  ray_start\s+float\s+0\.5\s+\S", out)


def test_default_program_follows_the_kind_of_scene():
    run = aware3d.load(FIXTURES / "ngp", device="cpu")
    assert run.default_program == "turntable"          # written before runs kept their format
    run._scene = {**run._scene, "format": "nerfstudio"}
    assert run.default_program == "training-path"      # a capture: a path through its cameras
    assert aware3d.load(FIXTURES / "giraffe", device="cpu").default_program is None  # GANs list theirs


def test_a_run_of_an_unknown_method_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"method": "zipnerf"}')
    with pytest.raises(ValueError, match=r"config names method 'zipnerf'; this aware3d knows nerf, ngp"):
        aware3d.load(tmp_path)


def test_methods_listing_keeps_every_name_apart(capsys):
    from aware3d.cli import main

    assert main(["methods"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "[" in ln]
    assert len(lines) == len(registry.METHODS)
    for name, line in zip(registry.METHODS, lines):
        assert line.split()[0] == name  # the longest name too is followed by a space
