"""Shared paths for the evaluation tests: the reference fixtures live beside the clone."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "metrics"


@pytest.fixture
def metrics_dir() -> Path:
    """``../shared/fixtures/metrics`` (CI checks it out beside the repository)."""
    if not (FIXTURES / "README.md").is_file():
        pytest.skip(
            f"reference metric fixtures not found at {FIXTURES} "
            "(expected ../shared beside the clone)"
        )
    return FIXTURES
