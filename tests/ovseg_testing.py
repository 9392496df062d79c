"""Shared test helpers: where the reference fixtures live (import as `from ovseg_testing import ...`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"

torch.set_num_threads(2)


def fixture_dir(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_dir():
        pytest.skip(
            f"reference fixtures not found at {path} (CI clones with ../shared beside the repo)"
        )
    return path
