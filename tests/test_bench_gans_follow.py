"""The GAN table's FID bookkeeping (benchmarks/bench_gans.py): points measured beside a training
run (``--follow``) are claimed once, kept per protocol, and reused by ``--refid`` instead of being
measured again. Pure file logic: no network is trained or evaluated here."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bg():
    spec = importlib.util.spec_from_file_location("bench_gans", ROOT / "benchmarks" / "bench_gans.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _point_file(folder: Path, name: str, step: int, fid: float, fid_n=5000, fid_real="all"):
    d = folder / "follow_fid"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}_step_{step:08d}.json").write_text(json.dumps(dict(
        protocol=dict(fid_n=fid_n, fid_real=fid_real), name=name, steps=step,
        point=dict(fid=fid, kid=0.1, metric="fid5k", n_real=10, fid_wall_s=1.0))))


def test_claim_is_exclusive_and_a_dead_holder_is_replaced(bg, tmp_path):
    c = tmp_path / "p.claim"
    assert bg._claim(c)
    assert c.read_text() == str(os.getpid())
    assert not bg._claim(c)  # held by a live process (this one)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    c.write_text(str(dead.pid))  # its holder has exited
    assert bg._claim(c)
    assert c.read_text() == str(os.getpid())


def test_followed_points_keep_their_protocol(bg, tmp_path):
    _point_file(tmp_path, "pigan", 1016, 250.0)
    _point_file(tmp_path, "pigan", 1340, 200.0, fid_n=500)  # another protocol: not this table's
    assert bg._followed_points(tmp_path, 5000, 0) == {("pigan", 1016): dict(
        fid=250.0, kid=0.1, metric="fid5k", n_real=10, fid_wall_s=1.0)}
    assert set(bg._followed_points(tmp_path, 500, None)) == {("pigan", 1340)}
    assert bg._followed_points(tmp_path / "none", 5000, 0) == {}


def test_refid_reuses_followed_points_and_measures_only_the_rest(bg, tmp_path, monkeypatch):
    curve = [{"minutes": 15.0, "steps": 10}, {"minutes": 30.0, "steps": 20}]
    (tmp_path / "results.json").write_text(json.dumps(
        {"meta": {"data": "unused"}, "results": {"pigan": {"preset": "p", "curve": curve}}}))
    _point_file(tmp_path, "pigan", 10, 123.0)
    measured = []

    def fake_add_fid(name, mod, run, data, n_gen, n_real, point):
        measured.append(point["steps"])
        point.update(fid=99.0, kid=0.05, metric="fid5k", n_real=10, fid_wall_s=2.0)
        return point

    monkeypatch.setattr(bg, "add_fid", fake_add_fid)
    monkeypatch.setattr(bg, "load_module", lambda name: None)
    monkeypatch.setattr(bg, "write_outputs", lambda *a, **k: None)
    assert bg.refid(tmp_path, tmp_path, 5000, 0) == 0
    assert measured == [20]  # step 10 came from the follower
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [p["fid"] for p in saved["results"]["pigan"]["curve"]] == [123.0, 99.0]
    assert saved["meta"]["refid"] == {"source": str(tmp_path), "fid_n": 5000, "fid_real": "all"}


def test_grids_render_each_point_from_its_own_checkpoint(bg, tmp_path, monkeypatch):
    curve = [{"minutes": 15.0, "steps": 10}, {"minutes": 60.0, "steps": 40}]
    (tmp_path / "results.json").write_text(json.dumps({"results": {"hologan": {"curve": curve}}}))
    loaded, saved = [], []
    monkeypatch.setattr(bg, "load_module", lambda name: name)
    monkeypatch.setattr(bg, "load_trained", lambda name, mod, run, step: loaded.append(
        (name, run, step)) or ("cfg", "method", f"G{step}"))
    monkeypatch.setattr(bg, "save_grid", lambda method, G, path: saved.append((G, path)))
    assert bg.grids(tmp_path, str(tmp_path / "out" / "hologan")) == 0
    run = tmp_path / "runs" / "hologan"
    assert loaded == [("hologan", run, 10), ("hologan", run, 40)]
    assert saved == [("G10", tmp_path / "out" / "hologan_15min.png"),
                     ("G40", tmp_path / "out" / "hologan_60min.png")]
