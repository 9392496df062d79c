"""Differences between two resolved configs, as dotted keys (what a resume checks)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ovseg.config.loader import ConfigError, parse_yaml


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    if not isinstance(data, Mapping):
        return {prefix: data} if prefix else {"": data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def config_differences(old_yaml: str, new_yaml: str) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, old value, new value)]`` of the keys whose values differ, sorted by key.

    A key present on one side only has ``None`` on the other. A side that is not valid YAML
    (or holds aliases) counts as one difference at key ``"<config>"``.
    """
    try:
        old = flatten(parse_yaml(old_yaml, "the stored config") or {})
        new = flatten(parse_yaml(new_yaml, "the new config") or {})
    except ConfigError as e:
        return [("<config>", "unreadable", str(e))]
    keys = sorted(set(old) | set(new))
    return [(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def matches_any(key: str, prefixes: Iterable[str]) -> bool:
    """Whether ``key`` is one of ``prefixes`` or lies under one (``data.test`` covers
    ``data.test.root``)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def format_differences(diffs: Iterable[tuple[str, Any, Any]]) -> str:
    """``"optim.lr: 0.0001 -> 0.01, schedule.max_iter: 3 -> 6"``."""
    return ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs)
