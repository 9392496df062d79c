"""Load YAML configs with ``_base_`` inheritance and ``key.sub=value`` overrides, strictly.

The merged mapping is checked against the typed dataclass schema *before* OmegaConf sees it, so
an unknown or misspelt key fails with the closest valid name ("did you mean") and a wrong type
fails naming the key and the expected type. mmengine silently accepts typos; we don't.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
"""The configs shipped inside the package (``ovseg/configs``), present after a plain install."""


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and what to do."""


def list_configs() -> list[str]:
    """Names of the shipped configs, relative to ``ovseg/configs`` (``tests/fcclip_tiny.yaml``)."""
    if not CONFIG_DIR.is_dir():
        return []
    return sorted(
        p.relative_to(CONFIG_DIR).as_posix()
        for p in CONFIG_DIR.rglob("*.yaml")
        if "_base_" not in p.relative_to(CONFIG_DIR).parts
    )


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML that refuses aliases (``*name``): a config never needs them, and a chain of
    aliases (a "billion laughs" bomb) would expand without bound once OmegaConf copies it."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"YAML alias *{event.anchor} at line {event.start_mark.line + 1}: aliases are not "
                "allowed in configs (write the value out)"
            )
        return super().compose_node(parent, index)


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` without aliases; errors are one :class:`ConfigError` naming ``source``."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML ({e})") from None


def find_config(path: str | Path) -> Path:
    """Resolve a config: an existing file as given, else a shipped config by name.

    ``tests/fcclip_tiny.yaml`` and the old repository spelling ``configs/tests/fcclip_tiny.yaml``
    both name ``ovseg/configs/tests/fcclip_tiny.yaml``, from any working directory; so does a
    missing absolute path into a checkout's old ``configs/`` folder (``REPO/configs/...``).
    """
    p = Path(path)
    if p.is_file():
        return p
    name = p.as_posix()
    candidates = [] if p.is_absolute() else [name]
    if "configs" in p.parts:  # the repository's old configs/ folder, relative or absolute
        last = len(p.parts) - 1 - p.parts[::-1].index("configs")
        candidates.append("/".join(p.parts[last + 1 :]))
    for cand in candidates:
        alt = CONFIG_DIR / cand
        if cand and alt.is_file():
            return alt
    close = difflib.get_close_matches(
        candidates[-1] if candidates else p.name, list_configs(), n=3, cutoff=0.6
    )
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"config file not found: {path} (looked in the current folder and in {CONFIG_DIR}){hint}"
    )


def load_yaml_with_bases(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """Read a YAML file and merge it onto its ``_base_`` file(s) (paths relative to the file)."""
    path = find_config(path).resolve()
    if path in _chain:
        raise ConfigError(f"_base_ cycle: {' -> '.join(str(p) for p in (*_chain, path))}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) YAML file") from None
    data = parse_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else list(bases)
    merged: dict = {}
    for base in bases:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: _base_ entries must be file names, got {base!r}")
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.is_file() and not Path(base).is_absolute():
            base_path = Path(base)  # a shipped config name (tests/fcclip_tiny.yaml) or cwd-relative
        merged = merge_dicts(merged, load_yaml_with_bases(base_path, (*_chain, path)))
    return merge_dicts(merged, data)


def merge_dicts(base: dict, update: dict) -> dict:
    """Recursive merge; ``update`` wins. A mapping with ``_delete_: true`` replaces instead."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and v.get("_delete_"):
            out[k] = {kk: vv for kk, vv in v.items() if kk != "_delete_"}
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_dicts(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML: ``null``, ``[1, 2]``, ``1e-4``)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.load(raw, Loader=_NoAliasLoader) if raw.strip() else ""  # noqa: S506
        except ConfigError as e:
            raise ConfigError(f"override {item!r}: {e}") from None
        except yaml.YAMLError as e:
            if raw.lstrip().startswith(("[", "{")):  # meant as a list / mapping: never a string
                problem = getattr(e, "problem", None) or "invalid YAML"
                raise ConfigError(
                    f"override {item!r}: {problem} (quote strings that hold {{}}, ':' or ',')"
                ) from None
            value = raw
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return data


def _strip_optional(tp: Any) -> Any:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else tp
    return tp


def _nested_key(schema: type, key: str, depth: int = 2) -> str | None:
    """``"schedule.max_iter"`` when ``key`` is a field of a sub-section of ``schema`` (a key
    written one level too high), searching ``depth`` levels; None if there is none."""
    level = [("", schema)]
    for _ in range(depth):
        nxt = []
        for path, sch in level:
            sub_hints = typing.get_type_hints(sch)
            for f in dataclasses.fields(sch):
                tp = _strip_optional(sub_hints[f.name])
                if dataclasses.is_dataclass(tp):
                    name = f"{path}{f.name}"
                    if key in {g.name for g in dataclasses.fields(tp)}:
                        return f"{name}.{key}"
                    nxt.append((f"{name}.", tp))
        level = nxt
    return None


def check_keys(data: Any, schema: type, prefix: str = "") -> None:
    """Raise ConfigError for the first key in ``data`` that ``schema`` (a dataclass) lacks."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{prefix or 'config'}: expected a mapping for {schema.__name__}, got {data!r}"
        )
    hints = typing.get_type_hints(schema)
    fields = {f.name for f in dataclasses.fields(schema)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), sorted(fields), n=1, cutoff=0.5)
            nested = _nested_key(schema, str(key))
            hint = (
                f"; did you mean '{prefix}{nested}'?"
                if nested
                else f"; did you mean '{prefix}{close[0]}'?"
                if close
                else ""
            )
            raise ConfigError(
                f"unknown config key '{full}'{hint} (valid keys here: {', '.join(sorted(fields))})"
            )
        tp = _strip_optional(hints[key])
        if dataclasses.is_dataclass(tp) and value is not None:
            check_keys(value, tp, prefix=f"{full}.")


def build_config(schema: type, data: dict) -> Any:
    """Validate ``data`` against ``schema`` and return a dataclass instance."""
    check_keys(data, schema)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(data))
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        msg = str(e).split("\n")[0]
        raise ConfigError(f"bad value for '{key}': {msg}") from None
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # a schema's __post_init__ check (e.g. max_iter >= 1)
        raise ConfigError(str(e).splitlines()[0] if str(e) else repr(e)) from None


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (written to work dirs and stored in checkpoints)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
