"""A deterministic colour per class index.

Colours depend only on the class index, never on the vocabulary's size or contents, so a class keeps
its colour across images, runs and vocabularies of different lengths (``palette(n)[:k] ==
palette(k)``). The order comes from greedy farthest-point sampling over a lattice of saturated,
not-too-dark RGB colours ("redmean" perceptual distance): each next colour is the candidate
farthest from all earlier ones, so any prefix is as spread out as the greedy rule allows (the first
20 are >= 100 RGB units apart, the first 150 >= 38). Past the lattice's 3228 colours, hues step by
the golden ratio and exact repeats are nudged away, so every index still gets its own colour.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_FIRST = (230, 25, 75)  # the first class gets the lattice colour nearest this crimson
_GOLDEN = 0.6180339887498949


def palette(n: int) -> np.ndarray:
    """Colours of class indices ``0 .. n-1``.

    Args:
        n: number of classes (>= 0).

    Returns:
        (n, 3) uint8 RGB; rows are pairwise different.
    """
    if n < 0:
        raise ValueError(f"palette size must be >= 0, got {n}")
    return _table(n)[:n].copy()


def class_color(index: int) -> tuple[int, int, int]:
    """RGB colour of one class index (the same as ``palette(index + 1)[index]``)."""
    if index < 0:
        raise ValueError(f"class index must be >= 0, got {index}")
    r, g, b = _table(index + 1)[index]
    return int(r), int(g), int(b)


def _table(n: int) -> np.ndarray:
    base = _lattice_order()
    if n <= len(base):
        return base
    return _extended(-(-n // 1024) * 1024)


def _redmean2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared "redmean" colour distance, a cheap perceptual approximation (float arrays)."""
    rm = (a[..., 0] + b[..., 0]) / 2.0
    d = a - b
    return (
        (2 + rm / 256) * d[..., 0] ** 2
        + 4 * d[..., 1] ** 2
        + (2 + (255 - rm) / 256) * d[..., 2] ** 2
    )


@lru_cache(maxsize=1)
def _lattice_order() -> np.ndarray:
    levels = np.arange(0, 256, 17, dtype=np.float64)
    cand = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    hi, lo = cand.max(1), cand.min(1)
    # Drop greys and dark colours: they vanish against photographs and black outlines.
    cand = cand[(hi >= 119) & ((hi - lo) / np.maximum(hi, 1) >= 0.4)]
    order = [int(np.argmin(_redmean2(cand, np.array(_FIRST, dtype=np.float64))))]
    nearest = _redmean2(cand, cand[order[0]])
    for _ in range(len(cand) - 1):
        j = int(np.argmax(nearest))
        order.append(j)
        nearest = np.minimum(nearest, _redmean2(cand, cand[j]))
    out = cand[order].astype(np.uint8)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=4)
def _extended(n: int) -> np.ndarray:
    base = _lattice_order()
    i = np.arange(len(base), n)
    extra = _hsv_to_rgb(
        (0.02 + i * _GOLDEN) % 1.0, 0.45 + 0.5 * ((i * 7) % 11) / 10, 0.7 + 0.3 * ((i * 3) % 5) / 4
    )
    seen = {tuple(int(x) for x in c) for c in base}
    for k in range(len(extra)):
        c = tuple(int(x) for x in extra[k])
        step = 0
        while c in seen:
            step += 1
            c = (c[0], c[1], (c[2] + 7 * step) % 256)
        seen.add(c)
        extra[k] = c
    out = np.concatenate([base, extra])
    out.setflags(write=False)
    return out


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (each in [0, 1]) -> (N, 3) uint8 RGB (the formula of ``colorsys``)."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    choices = [
        np.stack([v, t, p], -1),
        np.stack([q, v, p], -1),
        np.stack([p, v, t], -1),
        np.stack([p, q, v], -1),
        np.stack([t, p, v], -1),
        np.stack([v, p, q], -1),
    ]
    return np.round(np.choose(i[:, None], choices) * 255.0).astype(np.uint8)
