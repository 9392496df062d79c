"""The contract a backbone declares for each output: channels and stride."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShapeSpec:
    channels: int
    stride: int
