"""Config schema and loading: ``load_config(path, overrides)`` returns a typed :class:`Config`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ovseg.config.loader import (
    ConfigError,
    apply_overrides,
    build_config,
    find_config,
    list_configs,
    load_yaml_with_bases,
    parse_yaml,
    to_yaml,
)
from ovseg.config.schema import Config, ModelConfig


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (with ``_base_``), apply ``key=value`` overrides, validate strictly."""
    data = load_yaml_with_bases(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    return build_config(Config, data)


def config_from_yaml_string(text: str, overrides: Sequence[str] = ()) -> Config:
    """Rebuild a config stored in a checkpoint (YAML aliases refused, as in config files)."""
    data = apply_overrides(parse_yaml(text, "the checkpoint's embedded config") or {}, overrides)
    return build_config(Config, data)


__all__ = [
    "Config",
    "ConfigError",
    "ModelConfig",
    "config_from_yaml_string",
    "find_config",
    "list_configs",
    "load_config",
    "to_yaml",
]
