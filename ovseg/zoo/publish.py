"""Turn a training checkpoint into a published zoo file and the zoo entry that names it.

ovseg's checkpoint format (written by ``ovseg.checkpoint``, read by the loader) is a plain
dict that loads with ``torch.load(path, map_location="cpu", weights_only=True)``::

    {"format": "ovseg", "version": 1,
     "config": "<resolved YAML string>",
     "model": {name: tensor},   # trainable weights (+ frozen CLIP only without a named source)
     "meta": {...},             # primitives: versions, git hash, iteration, clip model/tag, ...
     # training checkpoints only:
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": ..., "iteration": int,
     "sampler": ...}

Publishing keeps ``format``, ``version``, ``config``, ``model`` and ``meta`` and writes
``NAME-<sha256[:8]>.pth`` atomically (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovseg.utils.io import atomic_write_bytes

CHECKPOINT_FORMAT = "ovseg"
CHECKPOINT_VERSION = 1
PUBLISHED_KEYS = ("format", "version", "config", "model", "meta")


@dataclass
class PublishedModel:
    """What :func:`publish_model` wrote.

    Attributes:
        path: the published file ``OUT/NAME-<sha256[:8]>.pth``.
        sha256: full hex sha256 of that file.
        size: its size in bytes.
        stripped: top-level keys of the input that were left out (optimizer state, ...).
        entry: the zoo entry as a dict (``{name: fields}``), ready for a zoo file.
        entry_yaml: the same as YAML text to paste.
    """

    path: Path
    sha256: str
    size: int
    stripped: list[str]
    entry: dict[str, Any]
    entry_yaml: str


def _clip_from(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The CLIP model/tag, if the checkpoint's meta records it (``meta["clip"]``)."""
    clip = ckpt.get("meta", {}).get("clip") if isinstance(ckpt.get("meta"), dict) else None
    if isinstance(clip, dict) and isinstance(clip.get("model"), str):
        return {"model": clip["model"], "pretrained": clip.get("pretrained")}
    return None


def publish_model(
    checkpoint: str | Path,
    name: str,
    out_dir: str | Path | None = None,
    url_prefix: str | None = None,
    clip: dict[str, Any] | None = None,
    config: str | None = None,
) -> PublishedModel:
    """Strip a checkpoint to a publishable model file and describe it as a zoo entry.

    Args:
        checkpoint: an ovseg checkpoint (training or model-only), see the module docstring.
        name: model name, e.g. ``"my-fcclip-tiny"``; also the file name's stem.
        out_dir: where to write the file (default: the checkpoint's directory).
        url_prefix: where the file will be hosted; the entry's URL is ``url_prefix/FILE``
            (default: a ``file://`` URL of the written file).
        clip: ``{"model", "pretrained"}`` of the frozen CLIP, if not in ``meta["clip"]``.
        config: the entry's ``config`` (relative to ``configs/``); the checkpoint holds its
            resolved config anyway.

    Returns:
        The written file, its hash and size, and the zoo entry.

    Raises:
        ValueError: the file is not an ovseg checkpoint (names what it found) or ``name`` is
            not usable as a file name.
    """
    import torch
    import yaml

    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ValueError(f"model name {name!r} must be a plain name without '/', '\\' or spaces")
    checkpoint = Path(checkpoint)
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{checkpoint} does not load with torch.load(weights_only=True): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = (
            f"format={ckpt.get('format')!r}, keys {sorted(map(str, ckpt))[:8]}"
            if isinstance(ckpt, dict)
            else type(ckpt).__name__
        )
        raise ValueError(
            f"{checkpoint} is not an ovseg checkpoint ({found}); expected a dict with "
            f"format='ovseg' as written by ovseg's trainer or Segmenter.save()"
        )
    missing = [k for k in ("version", "config", "model") if k not in ckpt]
    if missing:
        raise ValueError(f"{checkpoint}: ovseg checkpoint lacks {', '.join(missing)}")
    if not isinstance(ckpt["model"], dict) or not ckpt["model"]:
        raise ValueError(f"{checkpoint}: 'model' must be a non-empty state dict")
    published = {k: ckpt[k] for k in PUBLISHED_KEYS if k in ckpt}
    published.setdefault("meta", {})
    stripped = sorted(str(k) for k in ckpt if k not in PUBLISHED_KEYS)

    out = Path(out_dir) if out_dir is not None else checkpoint.parent
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(published, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    final = atomic_write_bytes(out / f"{name}-{digest[:8]}.pth", data)
    size = final.stat().st_size

    url = f"{url_prefix.rstrip('/')}/{final.name}" if url_prefix else final.resolve().as_uri()
    fields: dict[str, Any] = {"config": config, "urls": [url], "sha256": digest, "size": size}
    fields["format"] = CHECKPOINT_FORMAT
    clip = clip or _clip_from(ckpt)
    if clip:
        fields["clip"] = {"model": clip["model"], "pretrained": clip.get("pretrained")}
    fields["contents"] = "ovseg checkpoint: resolved config + trainable weights" + (
        "; frozen CLIP from open_clip" if clip and clip.get("pretrained") else ""
    )
    fields["filename"] = final.name
    fields["license"] = ""
    fields["source"] = ""
    fields["metrics"] = {}
    entry = {name: fields}
    entry_yaml = yaml.safe_dump(entry, sort_keys=False, default_flow_style=False)
    return PublishedModel(final, digest, size, stripped, entry, entry_yaml)
