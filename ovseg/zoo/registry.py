"""Named models: the zoo files, their schema and look-up by name.

A zoo file is YAML: a mapping from model name to its fields (see :class:`ZooEntry`). The built-in
``ovseg/zoo/manifest.yaml`` is always read; user files come from ``zoo_file`` arguments
(``--zoo-file F`` on the command line) and from ``$OVSEG_ZOO`` (an ``os.pathsep``-separated
list). Later files override earlier entries of the same name: built-in < ``$OVSEG_ZOO`` <
``zoo_file``.

Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Union
from urllib.parse import urlsplit

MANIFEST = Path(__file__).with_name("manifest.yaml")
"""The built-in zoo file shipped with ovseg."""

ENV_ZOO = "OVSEG_ZOO"

FORMATS = ("ovseg", "fcclip")
"""``ovseg``: ovseg's own checkpoint (config + trainable weights); ``fcclip``: official file."""

_FIELDS = (
    "config",
    "url",
    "urls",
    "sha256",
    "size",
    "format",
    "clip",
    "contents",
    "task",
    "dataset",
    "license",
    "source",
    "metrics",
    "filename",
    "description",
)
_CLIP_FIELDS = ("model", "pretrained")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_WEIGHT_SUFFIXES = (".pth", ".pt", ".pkl", ".bin", ".ckpt", ".safetensors")

ZooFiles = Union[str, Path, Sequence[Union[str, Path]], None]  # noqa: UP007 - runtime alias, py3.9


class ZooFileError(ValueError):
    """A zoo file cannot be read or one of its entries is malformed."""


class UnknownModelError(KeyError):
    """No zoo entry of that name; the message lists the close names."""

    def __str__(self) -> str:  # KeyError's str() would quote the whole message
        return str(self.args[0]) if self.args else ""


@dataclass
class ZooEntry:
    """One named model.

    Attributes:
        name: the model's name, e.g. ``"fcclip-convnext-large-coco"``.
        urls: download URLs tried in order (the first is the primary, the rest are mirrors);
            ``hf://OWNER/REPO[@REVISION]/FILE.safetensors`` or a plain ``hf://OWNER/REPO[@REV]``
            (ovseg's Hub layout) fetch through huggingface_hub and its cache.
        config: shipped config name (relative to ``ovseg/configs/``, see :func:`ovseg.config.find_config`), or None when
            the checkpoint carries its own resolved config (format ``"ovseg"``).
        sha256: full lowercase hex sha256 of the file, or None when not known (unverified).
        size: file size in bytes, or None when not known.
        format: ``"ovseg"`` (ovseg's own checkpoint dict) or ``"fcclip"`` (official FC-CLIP
            detectron2 checkpoint).
        clip: the frozen CLIP tower as ``{"model": open_clip name, "pretrained": tag}``, or None.
        contents: what the file holds, e.g. ``"trainable weights only; frozen CLIP from
            open_clip"``.
        task: what the model predicts, e.g. ``"panoptic, instance, semantic"``.
        dataset: what it was trained on.
        license: licence of the weights.
        source: where the weights come from (a URL or a description).
        metrics: ``{dataset: {metric: value}}`` as published, e.g.
            ``{"ade20k": {"PQ": 26.8, "mIoU": 34.1}}``.
        filename: the file name in the cache; defaults to ``name`` plus the URL's suffix.
        description: free text.
        zoo_file: the zoo file that defined this entry (``None`` when built in code).
    """

    name: str
    urls: list[str]
    config: str | None = None
    sha256: str | None = None
    size: int | None = None
    format: str = "ovseg"
    clip: dict[str, str] | None = None
    contents: str = ""
    task: str = ""
    dataset: str = ""
    license: str = ""
    source: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    filename: str | None = None
    description: str = ""
    zoo_file: str | None = field(default=None, compare=False)

    @property
    def verified(self) -> bool:
        """True when the entry names a sha256 that downloads are checked against."""
        return self.sha256 is not None

    @property
    def cache_filename(self) -> str:
        """The file name used in the cache directory."""
        if self.filename:
            return self.filename
        suffix = PurePosixPath(urlsplit(self.urls[0]).path).suffix.lower() if self.urls else ""
        return self.name + (suffix if suffix in _WEIGHT_SUFFIXES else ".pth")

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any], zoo_file: str | None = None) -> ZooEntry:
        """Validate one zoo-file entry and build it.

        Raises:
            ZooFileError: naming the file, the entry and the field at fault.
        """
        where = f"{zoo_file or '<dict>'}: entry {name!r}"
        if not is_plain_name(name):
            raise ZooFileError(
                f"{where}: a model name must be a plain name (letters, digits, '.', '_', '-', "
                "'+', '@'; no folder, '..' or absolute path): it names the cached file"
            )
        if not isinstance(data, dict):
            raise ZooFileError(
                f"{where} must be a mapping of fields (config, urls, sha256, ...), "
                f"got {type(data).__name__}"
            )
        for key in data:
            if key not in _FIELDS:
                raise ZooFileError(f"{where}: unknown field {key!r}{_did_you_mean(key, _FIELDS)}")
        if "url" in data and "urls" in data:
            raise ZooFileError(f"{where}: give either 'url' or 'urls', not both")
        urls = data.get("urls", data.get("url"))
        if urls is None:
            raise ZooFileError(
                f"{where}: missing required field 'urls' (or 'url' for a single one); "
                "add the download URL(s) of the weights"
            )
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise ZooFileError(f"{where}: field 'urls' must be a non-empty list of URL strings")
        for u in urls:
            if u.startswith("hf://"):
                _check_hub_url(u, where)
            elif urlsplit(u).scheme not in ("http", "https", "file"):
                raise ZooFileError(
                    f"{where}: URL {u!r} must start with http://, https://, file:// or hf://"
                )
        sha256 = data.get("sha256")
        if sha256 is not None:
            if not isinstance(sha256, str) or not _SHA256_RE.match(sha256.strip().lower()):
                raise ZooFileError(
                    f"{where}: field 'sha256' must be 64 hex digits or null (not known), "
                    f"got {sha256!r}"
                )
            sha256 = sha256.strip().lower()
        size = data.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise ZooFileError(f"{where}: field 'size' must be a byte count or null, got {size!r}")
        fmt = data.get("format", "ovseg")
        if fmt not in FORMATS:
            raise ZooFileError(
                f"{where}: field 'format' must be one of {', '.join(FORMATS)}, got {fmt!r}"
                f"{_did_you_mean(str(fmt), FORMATS)}"
            )
        clip = data.get("clip")
        if clip is not None:
            if not isinstance(clip, dict):
                raise ZooFileError(f"{where}: field 'clip' must be {{model: ..., pretrained: ...}}")
            for key in clip:
                if key not in _CLIP_FIELDS:
                    raise ZooFileError(
                        f"{where}: unknown field 'clip.{key}'{_did_you_mean(key, _CLIP_FIELDS)}"
                    )
            if not isinstance(clip.get("model"), str):
                raise ZooFileError(
                    f"{where}: field 'clip.model' (an open_clip model name) is missing"
                )
            pretrained = clip.get("pretrained")
            if pretrained is not None and not isinstance(pretrained, str):
                raise ZooFileError(f"{where}: field 'clip.pretrained' must be a string or null")
            clip = {"model": clip["model"], "pretrained": pretrained}
        metrics = data.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise ZooFileError(
                f"{where}: field 'metrics' must be a mapping {{dataset: {{metric: value}}}}"
            )
        config = data.get("config")
        if config is not None and not isinstance(config, str):
            raise ZooFileError(f"{where}: field 'config' must be a path string or null")
        texts = {}
        for key in ("contents", "task", "dataset", "license", "source", "description"):
            value = data.get(key) or ""
            if not isinstance(value, str):
                raise ZooFileError(f"{where}: field {key!r} must be a string")
            texts[key] = value
        filename = data.get("filename")
        if filename is not None and not is_plain_name(filename):
            raise ZooFileError(
                f"{where}: field 'filename' must be a plain file name (no folder, '..' or "
                f"absolute path), got {filename!r}"
            )
        return cls(
            name=name,
            urls=list(urls),
            config=config,
            sha256=sha256,
            size=size,
            format=fmt,
            clip=clip,
            metrics=metrics,
            filename=filename,
            zoo_file=zoo_file,
            **texts,
        )


def _check_hub_url(url: str, where: str) -> None:
    """An entry's ``hf://`` URL: well formed, and weights in safetensors (nothing unpickled)."""
    from ovseg.zoo.hub import HUB_WEIGHT_SUFFIXES, parse_hub_url

    try:
        ref = parse_hub_url(url)
    except ValueError as e:
        raise ZooFileError(f"{where}: {e}") from None
    if ref.filename is not None and not ref.filename.endswith(HUB_WEIGHT_SUFFIXES):
        raise ZooFileError(
            f"{where}: Hub weights must be {' or '.join(HUB_WEIGHT_SUFFIXES)} (nothing from the "
            f"Hub is unpickled), got {ref.filename!r}"
        )


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_+@-][A-Za-z0-9._+@-]*")


def is_plain_name(value: object) -> bool:
    """True for a name that is safe as one file name in the cache: no separator, not ``.``/``..``,
    not hidden, no control characters."""
    return isinstance(value, str) and len(value) <= 200 and bool(_PLAIN_NAME.fullmatch(value))


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def load_zoo_file(path: str | Path) -> dict[str, ZooEntry]:
    """Read and validate one zoo file.

    Args:
        path: a YAML file mapping model names to their fields.

    Returns:
        ``{name: entry}`` in file order.

    Raises:
        ZooFileError: the file is missing, is not YAML, or an entry is malformed (the message
            names the file, the entry and the field).
    """
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise ZooFileError(f"zoo file {path} does not exist (from --zoo-file or ${ENV_ZOO})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ZooFileError(f"zoo file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ZooFileError(
            f"zoo file {path} must be a mapping from model name to its fields, "
            f"got {type(data).__name__}"
        )
    entries = {}
    for name, fields in data.items():
        if not isinstance(name, str) or not name.strip():
            raise ZooFileError(
                f"zoo file {path}: model names must be non-empty strings, got {name!r}"
            )
        entries[name] = ZooEntry.from_dict(name, fields, zoo_file=str(path))
    return entries


def zoo_files(zoo_file: ZooFiles = None) -> list[Path]:
    """The zoo files read, in override order: built-in, ``$OVSEG_ZOO``, then ``zoo_file``."""
    files = [MANIFEST]
    env = os.environ.get(ENV_ZOO, "")
    files += [Path(p) for p in env.split(os.pathsep) if p.strip()]
    if zoo_file is not None:
        if isinstance(zoo_file, (str, Path)):
            files.append(Path(zoo_file))
        else:
            files += [Path(p) for p in zoo_file]
    return files


def load_zoo(zoo_file: ZooFiles = None) -> dict[str, ZooEntry]:
    """All entries of the built-in manifest merged with the user's zoo files.

    Args:
        zoo_file: one or more extra zoo files (in addition to ``$OVSEG_ZOO``).

    Returns:
        ``{name: entry}``; entries of later files replace earlier ones of the same name.
    """
    merged: dict[str, ZooEntry] = {}
    for path in zoo_files(zoo_file):
        merged.update(load_zoo_file(path))
    return merged


def list_entries(zoo_file: ZooFiles = None) -> list[ZooEntry]:
    """All known entries, in file order."""
    return list(load_zoo(zoo_file).values())


def get_entry(name: str, zoo_file: ZooFiles = None) -> ZooEntry:
    """Look a model up by name.

    Args:
        name: model name, e.g. ``"fcclip-convnext-large-coco"``.
        zoo_file: extra zoo file(s) to read besides the built-in one and ``$OVSEG_ZOO``.

    Raises:
        UnknownModelError: (a KeyError) naming the close names and all known ones.
        ZooFileError: a zoo file is malformed.
    """
    zoo = load_zoo(zoo_file)
    if name in zoo:
        return zoo[name]
    names = list(zoo)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}{hint} Known models: {', '.join(names)}. "
        f"Add your own with --zoo-file F or ${ENV_ZOO}; list them with `python -m ovseg.zoo list`."
    )


# -- tables ---------------------------------------------------------------------------------------

DATASET_LABELS = {
    "ade20k": "ADE20K",
    "ade20k_full": "A-847",
    "cityscapes": "Cityscapes",
    "mapillary_vistas": "Mapillary",
    "pascal_context_59": "PC-59",
    "pascal_context_459": "PC-459",
    "pascal_voc_21": "PAS-21",
    "pascal_voc_20": "PAS-20",
    "coco": "COCO",
}
"""Short column labels for the metrics' dataset keys; other keys are shown as written."""


def format_size(size: int | None) -> str:
    """``1234567`` -> ``"1.2 MiB"``; None -> ``"?"``."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_metrics(metrics: dict[str, Any], datasets: Sequence[str] | None = None) -> str:
    """``{"ade20k": {"PQ": 26.8}}`` -> ``"ADE20K PQ 26.8"``, datasets separated by ``"; "``."""
    parts = []
    for ds, values in metrics.items():
        if datasets is not None and ds not in datasets:
            continue
        label = DATASET_LABELS.get(ds, ds)
        if isinstance(values, dict):
            parts.append(label + " " + " ".join(f"{k} {v}" for k, v in values.items()))
        else:
            parts.append(f"{label} {values}")
    return "; ".join(parts)


def _metric_columns(entries: Sequence[ZooEntry]) -> list[tuple[str, list[str]]]:
    columns: dict[str, list[str]] = {}
    for e in entries:
        for ds, values in e.metrics.items():
            names = columns.setdefault(ds, [])
            for m in values if isinstance(values, dict) else [""]:
                if m not in names:
                    names.append(m)
    return list(columns.items())


def markdown_table(zoo_file: ZooFiles = None, names: Sequence[str] | None = None) -> str:
    """The zoo as a Markdown table for the README.

    Columns: model name, CLIP (open_clip model / tag), training data, one column per evaluation
    dataset with its metrics as ``PQ / mAP / mIoU``, file size, and whether a sha256 is known.

    Args:
        zoo_file: extra zoo file(s).
        names: only these models, in this order (default: all).
    """
    zoo = load_zoo(zoo_file)
    entries = (
        [zoo[n] if n in zoo else get_entry(n, zoo_file) for n in names]
        if names
        else list(zoo.values())
    )
    columns = _metric_columns(entries)
    header = ["Model", "CLIP (open_clip)", "Trained on"]
    header += [
        f"{DATASET_LABELS.get(ds, ds)} {' / '.join(m for m in ms if m)}".strip()
        for ds, ms in columns
    ]
    header += ["Size", "sha256"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for e in entries:
        clip = f"{e.clip['model']} / {e.clip['pretrained']}" if e.clip else ""
        row = [f"`{e.name}`", clip, e.dataset]
        for ds, ms in columns:
            values = e.metrics.get(ds)
            if isinstance(values, dict):
                row.append(" / ".join(str(values.get(m, "-")) for m in ms))
            else:
                row.append("-" if values is None else str(values))
        row += [format_size(e.size), f"`{e.sha256[:8]}`" if e.sha256 else "unverified"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
