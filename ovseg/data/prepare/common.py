"""What every converter shares: the error type, locating raw folders, copying or linking files,
writing label maps atomically and a progress wrapper."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ovseg.utils.image import read_label as read_array  # noqa: F401 (one home: utils)
from ovseg.utils.image import save_array

T = TypeVar("T")


class PrepareError(FileNotFoundError):
    """The raw download is missing something or is malformed; the message names the dataset, the
    path expected and where the official file comes from."""


def find_dir(
    src: Path,
    candidates: Sequence[str],
    dataset: str,
    what: str,
    hint: str,
    marker: str | None = None,
) -> Path:
    """The first ``src / c`` that is a folder (holding ``marker``, when given).

    Raises:
        PrepareError: none exists (every candidate is named, with ``hint`` on where to get it).
    """
    for c in candidates:
        p = src / c if c else src
        if p.is_dir() and (marker is None or (p / marker).exists()):
            return p
    tried = ", ".join(str(src / c) if c else str(src) for c in candidates)
    raise PrepareError(f"{dataset}: {what} not found (looked for {tried}); {hint}")


def require_file(path: Path, dataset: str, hint: str) -> Path:
    if not path.is_file():
        raise PrepareError(f"{dataset}: {path} not found; {hint}")
    return path


def inside(root: Path, name: str, dataset: str, where: str) -> Path:
    """``root / name`` for a ``name`` read from dataset metadata, checked to stay inside ``root``.

    Raises:
        PrepareError: ``name`` is empty, absolute or climbs out of ``root`` with ``..``; the
            message names the entry and where it was listed.
    """
    text = str(name)
    if not text or "\x00" in text or Path(text).is_absolute() or Path(text).drive:
        raise PrepareError(f"{dataset}: entry {text!r} in {where} is not a relative file name")
    rel = os.path.normpath(text)
    if rel in (".", "..") or rel.startswith(".." + os.sep):
        raise PrepareError(f"{dataset}: entry {text!r} in {where} points outside {root}")
    return root / rel


def place(src: Path, dst: Path, link: bool = False, root: Path | None = None) -> None:
    """Copy ``src`` to ``dst`` (or symlink it, absolute, with ``link``); parents are created and an
    existing ``dst`` is replaced. With ``root``, ``dst`` must lie inside it (nothing outside is
    written or removed).

    Raises:
        PrepareError: ``dst`` resolves outside ``root``.
    """
    if root is not None:
        # the parent is resolved, not dst itself: a symlink at dst is replaced, never followed
        target = dst.parent.resolve() / dst.name
        if dst.name in ("", ".", "..") or not target.is_relative_to(root.resolve()):
            raise PrepareError(f"refusing to write {dst}: outside the destination {root}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if link:
        os.symlink(src.resolve(), dst)
    else:
        shutil.copy2(src, dst)


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    """tqdm over ``items`` (silent when not a terminal)."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit="img", disable=None, leave=False)


def bbox_of(mask: np.ndarray) -> list[int]:
    """COCO ``[x, y, width, height]`` of a boolean mask (zeros for an empty mask)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0, 0, 0, 0]
    return [
        int(xs.min()),
        int(ys.min()),
        int(xs.max() - xs.min() + 1),
        int(ys.max() - ys.min() + 1),
    ]


def read_json(path: Path, dataset: str, keys: Sequence[str] = (), mapping: bool = True) -> Any:
    """A release's JSON file (a mapping holding ``keys`` unless ``mapping`` is False); anything
    else is one :class:`PrepareError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PrepareError(f"{dataset}: {path} is not valid JSON ({e})") from None
    if mapping and not isinstance(data, dict):
        raise PrepareError(f"{dataset}: {path} holds a {type(data).__name__}, not a mapping")
    missing = [k for k in keys if k not in data]
    if missing:
        raise PrepareError(f"{dataset}: {path} has no {missing[0]!r}")
    return data


def read_list(path: Path) -> list[str]:
    """Non-empty stripped lines of a split file (``ImageSets/.../val.txt``)."""
    return [ln.strip().split()[0] for ln in path.read_text().splitlines() if ln.strip()]


def save_label(array: np.ndarray, path: Path) -> None:
    """Write a (H, W) label map (or an image) atomically; the format follows the suffix
    (uint8 / uint16 PNG, 16-bit TIFF for ``.tif``, ``.jpg`` with Pillow's defaults)."""
    save_array(path, array)
