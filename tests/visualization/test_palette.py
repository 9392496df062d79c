"""The class palette: deterministic, prefix-stable, distinct."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.visualization import class_color, palette


def test_shape_dtype_and_determinism():
    p = palette(150)
    assert p.shape == (150, 3) and p.dtype == np.uint8
    np.testing.assert_array_equal(p, palette(150))
    # The first colours are pinned: changing them would recolour every saved visualisation.
    assert [tuple(int(v) for v in c) for c in palette(4)] == [
        (238, 17, 68),
        (0, 255, 255),
        (187, 255, 0),
        (0, 0, 255),
    ]


def test_prefix_stable_across_vocabulary_sizes():
    big = palette(5000)  # past the 3228-colour lattice, into the extension
    for n in (1, 14, 150, 847, 4000):
        np.testing.assert_array_equal(palette(n), big[:n])
    assert class_color(12) == tuple(int(v) for v in big[12])
    assert class_color(4321) == tuple(int(v) for v in big[4321])


def test_colours_are_distinct():
    big = palette(5000).astype(np.int64)
    assert len({tuple(c) for c in big}) == 5000
    for n, min_dist in ((20, 100.0), (150, 38.0)):
        p = big[:n].astype(np.float64)
        d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))
        d[np.eye(n, dtype=bool)] = np.inf
        assert d.min() >= min_dist, (n, d.min())


def test_palette_returns_a_copy_and_rejects_negative():
    p = palette(3)
    p[0] = 0
    assert tuple(palette(1)[0]) != (0, 0, 0)
    with pytest.raises(ValueError):
        palette(-1)
    with pytest.raises(ValueError):
        class_color(-2)
