"""Deterministic samplers: an infinite, resumable training stream and a sharded test order."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler


def sample_seed(seed: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` of the global training stream."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


class TrainingSampler(Sampler):
    """Infinite stream of ``(index, sample_seed)`` pairs, sharded across ranks.

    The global stream is a concatenation of permutations of ``range(size)``, epoch ``e`` drawn
    from ``default_rng([seed, e])``; rank ``r`` of ``world_size`` takes global positions
    ``r, r + world_size, r + 2 world_size, ...`` (detectron2's ``TrainingSampler``), so the
    ranks' shards are disjoint within an epoch and together equal a single process reading the
    same global batch. Each sample carries a seed derived from ``(seed, global position)``
    that the dataset uses for augmentation: the augmented data depend only on the position in
    the stream — not on the number of DataLoader workers, the rank count or a resume.

    Args:
        size: dataset length (> 0).
        seed: the stream's seed (the same on every rank).
        rank: this process's rank.
        world_size: number of processes.
        shuffle: permute each epoch; False streams ``0, 1, ..., size - 1`` repeatedly.
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if size <= 0:
            raise ValueError(f"the training dataset is empty (size {size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.size = int(size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = shuffle
        self.position = 0  # samples of this rank's shard already consumed

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of epoch ``epoch`` of the global stream: (size,) int64."""
        if not self.shuffle:
            return np.arange(self.size, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def global_position(self, position: int | None = None) -> int:
        """Global stream position of this rank's ``position``-th sample."""
        position = self.position if position is None else position
        return self.rank + position * self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # The start is read now, not at the first next(): a resumed position set before
        # iter() is what the new iterator streams from.
        return self._stream(self.global_position())

    def _stream(self, start: int) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(start, self.size)
        perm = self.permutation(epoch)
        g = start
        while True:
            yield int(perm[offset]), sample_seed(self.seed, g)
            g += self.world_size
            new_epoch, offset = divmod(g, self.size)
            if new_epoch != epoch:
                epoch = new_epoch
                perm = self.permutation(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Plain-int state: ``position`` is the number of samples this rank has consumed.

        This is the engine's sampler protocol: the Trainer overwrites ``position`` with the
        samples its loop consumed and rescales it when resuming on another number of processes.
        """
        return {
            "seed": self.seed,
            "size": self.size,
            "shuffle": self.shuffle,
            "world_size": self.world_size,
            "position": int(self.position),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`); takes effect at the next ``iter``.

        Raises:
            ValueError: the state belongs to another dataset size, seed or shuffle setting.
        """
        for key in ("seed", "size", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume the training sampler: checkpoint has {key}={state[key]!r}, "
                    f"this run has {getattr(self, key)!r} (same dataset and seed are needed for "
                    "an exact resume)"
                )
        position = int(state["position"])
        if position < 0:
            raise ValueError(f"sampler position must be >= 0, got {position}")
        self.position = position


class InferenceSampler(Sampler):
    """Each index exactly once across ranks: rank r takes a contiguous block (sizes differ by at
    most one; no padding or duplicates, so sharded evaluation counts every image once)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        shard, left = divmod(size, world_size)
        sizes = [shard + int(r < left) for r in range(world_size)]
        begin = sum(sizes[:rank])
        self.indices = range(begin, begin + sizes[rank])

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def take(iterator: Iterator, n: int) -> list:
    """The next ``n`` items of an iterator (a small helper for tests and debugging)."""
    return list(itertools.islice(iterator, n))
