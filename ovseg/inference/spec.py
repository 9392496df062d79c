"""How to build a :class:`~ovseg.inference.segmenter.Segmenter`, as plain data.

A ``ModelSpec`` is what a tool's model flags say (``--config [--weights] | --model``,
``--opts``, ``--device``); it pickles, so a driver can send it to worker processes and Ray
actors, each of which builds the same model once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ovseg.inference.segmenter import Segmenter


@dataclass(frozen=True)
class ModelSpec:
    """``config`` (+ optional ``weights``) or ``model`` (an ovseg checkpoint, export folder or
    zoo name); ``overrides`` are config dotlist overrides; ``device`` None: cuda if available."""

    config: str | None = None
    model: str | None = None
    weights: str | None = None
    overrides: tuple[str, ...] = field(default_factory=tuple)
    device: str | None = None

    def __post_init__(self) -> None:
        if (self.config is None) == (self.model is None):
            raise ValueError("ModelSpec needs exactly one of config= and model=")
        if self.weights is not None and self.config is None:
            raise ValueError("weights= goes with config=; a model= checkpoint is the model")

    def resolved_device(self) -> str:
        if self.device:
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def build(self, device: str | None = None) -> Segmenter:
        """The Segmenter; whatever the weights do not overwrite (everything, for a config
        without weights) is initialised the same way in every process (seed 0)."""
        import torch

        from ovseg.inference.segmenter import Segmenter

        dev = device or self.resolved_device()
        torch.manual_seed(0)
        if self.config is not None:
            return Segmenter.from_config(
                self.config, weights=self.weights, overrides=list(self.overrides), device=dev
            )
        return Segmenter.from_pretrained(self.model, overrides=list(self.overrides), device=dev)

    def weights_identity(self) -> dict[str, Any] | None:
        """What identifies the weights for a resumed run: a file's resolved path, size and
        mtime; a zoo name as is; None for a randomly initialised config."""
        src = self.weights if self.config is not None else self.model
        if src is None:
            return None
        path = Path(src)
        if path.is_file():
            st = path.stat()
            return {"path": str(path.resolve()), "size": st.st_size, "mtime": int(st.st_mtime)}
        if path.is_dir():  # an export folder: its files
            files = sorted(p for p in path.rglob("*") if p.is_file())
            return {
                "path": str(path.resolve()),
                "files": {
                    str(p.relative_to(path)): [p.stat().st_size, int(p.stat().st_mtime)]
                    for p in files
                },
            }
        return {"name": os.fspath(src)}
