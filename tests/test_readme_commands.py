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
