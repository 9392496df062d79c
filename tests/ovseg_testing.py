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


def assert_instances_match_fixture(pred, fixture: Path, score_tol: float = 1e-5) -> None:
    """``pred.instances`` equal the official ``instances.npz``: the same (query, class) set,
    scores within ``score_tol`` and at most 5 differing mask pixels per instance."""
    import numpy as np

    ref = np.load(fixture / "instances.npz")
    inst = pred.instances
    mine = {
        (int(q), int(c)): (float(s), m)
        for q, c, s, m in zip(
            pred.extras["instance_query_index"], inst.labels, inst.scores, inst.masks.numpy()
        )
    }
    expected = {
        (int(q), int(c)): (float(s), m)
        for q, c, s, m in zip(
            ref["query_index"], ref["pred_classes"], ref["scores"], ref["pred_masks"]
        )
    }
    assert set(mine) == set(expected)
    for k, (s, m) in expected.items():
        assert abs(mine[k][0] - s) < score_tol
        assert (mine[k][1] != m).sum() <= 5
