"""Every `aware3d ...` command the README shows exists as shown: each line of the "Command line"
block names a subcommand whose --help answers (exit 0) and lists every flag the line uses, and the
METHOD list matches the registry. (The Quick start commands themselves are what CI runs.)"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from aware3d import registry
from aware3d.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _command_lines() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Command line"):]
    block = re.search(r"```\n(.*?)```", section, flags=re.S).group(1)
    lines, current = [], None
    for line in block.splitlines():
        if line.startswith("aware3d "):
            current = line
            lines.append(current)
        elif current is not None and line.strip():  # continuation lines (options, comments)
            lines[-1] += " " + line.strip()
    return lines


def _subcommand(line: str) -> list[str]:
    words = []
    for w in line.split()[1:]:
        if w.startswith(("[", "#", "-")) or w.isupper() or not re.fullmatch(r"[a-z]+", w):
            break
        words.append(w)
    return words


LINES = _command_lines()


def test_the_readme_shows_commands():
    assert len(LINES) >= 8 and any(_subcommand(x) == ["train"] for x in LINES)


@pytest.mark.parametrize("line", LINES, ids=[" ".join(_subcommand(x)) for x in LINES])
def test_readme_command_exists_with_its_flags(line, capsys):
    sub = _subcommand(line)
    with pytest.raises(SystemExit) as e:
        main(sub + ["--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    for flag in sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line))):
        assert flag in help_text, f"README shows {flag} for `aware3d {' '.join(sub)}`, its --help lacks it"


def test_readme_method_list_is_the_registry():
    train = next(x for x in LINES if _subcommand(x) == ["train"])
    listed = re.search(r"METHOD: ([a-z0-9 ]+)", train).group(1).split()
    assert listed == list(registry.METHODS)


def test_render_program_path_file_as_the_readme_writes_it(tmp_path, capsys):
    """`aware3d render RUN --program path FILE.json` (argparse once refused the file after the
    option); the file's frames are rendered, one per transform."""
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "legacy_runs" / "ngp", run)
    path = tmp_path / "path.json"
    frames = [{"transform_matrix": [[1, 0, 0, 0], [0, 0.8, -0.6, -2.4], [0, 0.6, 0.8, 3.2], [0, 0, 0, 1]]}] * 3
    path.write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
    assert main(["render", str(run), "--program", "path", str(path), "--resolution", "12"]) == 0
    out = run / "render" / "path"
    from PIL import Image

    assert Image.open(out / "rgb.gif").n_frames == 1  # three identical frames merge in a GIF
    assert (out / "rgb.mp4").stat().st_size > 0
    assert main(["render", str(run), "--program", "path", "a.json", "b.json"]) == 2


def test_fit_image_resolution(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((100, 160, 3)) * 255).astype("uint8")).save(tmp_path / "a.png")
    assert main(["fit", "image", str(tmp_path / "a.png"), "--steps", "2", "--resolution", "40",
                 "--out", str(tmp_path / "fit")]) == 0
    assert Image.open(tmp_path / "fit" / "reconstruction.png").size == (40, 25)  # longer side 40
