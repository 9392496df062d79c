"""Where ovseg keeps things: one rule for the cache home and one for the data root.

``ovseg_home()``: ``$OVSEG_HOME`` if set and non-empty, else ``~/.cache/ovseg``. Text embeddings
(``text_embeddings/``) and zoo downloads (``checkpoints/``) live under it.
``data_root()``: ``$OVSEG_DATA`` if set and non-empty, else ``./data``.
An empty variable means "unset" for both (a shell's ``OVSEG_HOME= cmd`` must not put caches in
the working directory).
"""

from __future__ import annotations

import os
from pathlib import Path


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def ovseg_home() -> Path:
    """The cache root: ``$OVSEG_HOME`` or ``~/.cache/ovseg``."""
    return _env_path("OVSEG_HOME") or Path.home() / ".cache" / "ovseg"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The dataset root: ``root`` if given, else ``$OVSEG_DATA``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    return _env_path("OVSEG_DATA") or Path("data")
