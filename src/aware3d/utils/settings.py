"""Settings of a method, read off its config dataclass: each field's type, default and meaning (the
comment on its line, or the comment block just above it), and checking of ``--set KEY=VALUE``
values against the field's type.

Command-line values arrive as strings and are parsed as YAML (``3``, ``1e-3``, ``true``,
``[0.5, 6.0]``), then checked: ``--set lr=abc`` is a clear error naming the key, the type expected
and the default, never a traceback later in training.
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
import types
import typing
from typing import Any

__all__ = ["SettingError", "field_types", "field_comments", "check_setting", "describe_type"]


class SettingError(ValueError):
    """A ``--set`` value that does not fit its setting."""


def field_types(cls) -> dict[str, Any]:
    """``{field name: type}`` of a dataclass, with string annotations resolved."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: fall back to the raw strings
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls)}


def field_comments(cls) -> dict[str, str]:
    """``{field name: meaning}`` from the source of ``cls`` and its dataclass bases: the comment on
    the field's line, else the comment lines just above it (a section comment). A class made without
    source (``dataclasses.make_dataclass``) may carry them as ``__field_docs__``."""
    docs = getattr(cls, "__field_docs__", None)
    if docs:
        return dict(docs)
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        lines = src.splitlines()
        names = {f.name for f in dataclasses.fields(klass)}
        comments: dict[int, str] = {}
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
        for i, line in enumerate(lines, 1):
            head = line.strip().split(":", 1)[0].strip()
            if head not in names or ":" not in line or line.strip().startswith("#"):
                continue
            text = comments.get(i)
            if not text:  # the comment block right above (a section heading)
                above, j = [], i - 1
                while j in comments and lines[j - 1].strip().startswith("#"):
                    above.insert(0, comments[j])
                    j -= 1
                text = " ".join(above)
            out[head] = text
    return out


def describe_type(hint) -> str:
    """A short name of a type hint: ``float``, ``int``, ``tuple``, ``str or None``..."""
    if hint is None or hint is type(None):
        return "None"
    if isinstance(hint, str):
        return hint
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(hint, "__name__", str(hint))


def _fit(value, hint):
    """``value`` converted to ``hint`` or raise TypeError."""
    if hint is Any or isinstance(hint, str):
        return value
    if hint is None or hint is type(None):
        if value is None:
            return None
        raise TypeError
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise TypeError
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _fit(value, arg)
            except TypeError:
                continue
        raise TypeError
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if hint is tuple or origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(tuple(v) if isinstance(v, list) else v for v in value)
        raise TypeError
    if hint is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise TypeError
    if hint is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise TypeError
    return value


def check_setting(key: str, value, hint, default=None, owner: str = "") -> Any:
    """``value`` (a YAML string from the command line, or a Python value) as the type ``hint`` of
    setting ``key``, or a :class:`SettingError` naming the key, the expected type and the default."""
    raw = value
    if isinstance(value, str) and not (hint is str or describe_type(hint) in ("str", "str or None")):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads "2e-3" as a string; Python reads it as a number
            try:
                value = float(value)
            except ValueError:
                pass
    try:
        return _fit(value, hint)
    except TypeError:
        where = f" of {owner}" if owner else ""
        raise SettingError(f"--set {key}={raw}: {key}{where} is {describe_type(hint)} (default {default!r}); "
                           f"got {value!r}") from None
