"""A tiny real training setup for the engine tests: conv net, synthetic data, resumable sampler.

Everything the real runs rely on is here in miniature: a frozen sub-module left out of
checkpoints (``trainable_state_dict``), dropout and a random crop that consume the global RNGs,
a shuffling infinite sampler whose position is its state, and a loss dict.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ovseg.data.samplers import TrainingSampler
from ovseg.engine import (
    ClipGradConfig,
    OptimConfig,
    ScheduleConfig,
    Trainer,
    build_lr_scheduler,
    build_optimizer,
    seed_everything,
)

NUM_CLASSES = 4


class ToyDataset(Dataset):
    """``n`` fixed images (3, size, size) float32 with labels in [0, NUM_CLASSES).

    Args:
        random_crop: crop ``crop`` x ``crop`` at a position drawn from the global torch RNG
            (like an augmentation), else a centre crop.
        nan_indices: samples whose image is all NaN (to provoke a non-finite loss).
    """

    def __init__(
        self,
        n: int = 32,
        size: int = 12,
        crop: int = 8,
        random_crop: bool = True,
        nan_indices: frozenset[int] = frozenset(),
    ) -> None:
        g = torch.Generator().manual_seed(1234)
        self.labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        base = torch.randn(n, 3, size, size, generator=g)
        # Make the task learnable: the label shifts the mean of one channel.
        self.images = base + self.labels.view(n, 1, 1, 1).float() * 0.5
        self.crop = crop
        self.random_crop = random_crop
        self.nan_indices = nan_indices

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        # ovseg.data.samplers.TrainingSampler yields (index, per-sample seed) keys.
        index, seed = key if isinstance(key, tuple) else (key, None)
        img = self.images[index]
        size = img.shape[-1]
        if self.random_crop:
            gen = None if seed is None else torch.Generator().manual_seed(seed)
            y, x = torch.randint(0, size - self.crop + 1, (2,), generator=gen).tolist()
        else:
            y = x = (size - self.crop) // 2
        img = img[:, y : y + self.crop, x : x + self.crop].clone()
        if index in self.nan_indices:
            img.fill_(float("nan"))
        return img, self.labels[index]


class ShuffleSampler(Sampler[int]):
    """Infinite stream of per-epoch permutations (seeded), split over ranks by stride.

    The state is ``{"position": samples this rank has drawn}``; the global stream position of
    rank r's k-th sample is ``k * world_size + r``.
    """

    def __init__(
        self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> None:
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.shuffle = shuffle
        self.position = 0

    def _perm(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        return torch.randperm(
            self.n, generator=torch.Generator().manual_seed(self.seed + epoch)
        ).tolist()

    def __iter__(self) -> Iterator[int]:
        cached_epoch, perm = -1, []
        while True:
            epoch, offset = divmod(self.position * self.world_size + self.rank, self.n)
            if epoch != cached_epoch:
                cached_epoch, perm = epoch, self._perm(epoch)
            self.position += 1
            yield perm[offset]

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


class ToyNet(nn.Module):
    """Conv -> GroupNorm -> ReLU -> Dropout -> pool -> linear, plus a frozen "clip" branch.

    ``forward(batch)`` in train mode returns ``{"loss_ce", "loss_reg"}``.

    Args:
        width: conv channels (changing it changes the architecture).
        dropout: dropout probability (consumes the global torch RNG).
        kill_at_call: SIGKILL this process at that forward call (1-based), to simulate a crash.
    """

    def __init__(self, width: int = 8, dropout: float = 0.2, kill_at_call: int | None = None):
        super().__init__()
        self.clip = nn.Conv2d(3, 3, 1)  # stands in for the frozen CLIP tower
        self.clip.requires_grad_(False)
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.GroupNorm(2, width)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, NUM_CLASSES)
        self.query = nn.Embedding(NUM_CLASSES, width)
        self.kill_at_call = kill_at_call
        self.calls = 0

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("clip.")}

    def train(self, mode: bool = True) -> ToyNet:
        super().train(mode)
        self.clip.eval()  # frozen part stays in eval mode
        return self

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.kill_at_call is not None and self.calls == self.kill_at_call:
            os.kill(os.getpid(), signal.SIGKILL)
        images, labels = batch
        with torch.no_grad():
            images = images + 0.1 * self.clip(images)
        x = self.drop(F.relu(self.norm(self.conv(images))))
        feats = x.mean(dim=(2, 3))
        logits = self.head(feats) + feats @ self.query.weight.t()
        return {
            "loss_ce": F.cross_entropy(logits.float(), labels),
            "loss_reg": 1e-3 * feats.float().pow(2).mean(),
        }


def make_trainer(
    work_dir: str | Path,
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 2,
    max_iter: int = 8,
    grad_accum_steps: int = 1,
    amp: str = "none",
    num_workers: int = 0,
    random_crop: bool = True,
    dropout: float = 0.2,
    width: int = 8,
    optim: str = "adamw",
    checkpoint_period: int = 2,
    keep_last: int = 2,
    log_period: int = 1,
    kill_at_call: int | None = None,
    nan_indices: frozenset[int] = frozenset(),
    shuffle: bool = True,
    eval_fn: Any = None,
    eval_period: int = 0,
    data_sampler: bool = False,
) -> Trainer:
    """Seed, then build model, data, optimizer, scheduler and Trainer, as a fresh process does."""
    seed_everything(seed, rank)
    model = ToyNet(width=width, dropout=dropout, kill_at_call=kill_at_call)
    dataset = ToyDataset(random_crop=random_crop, nan_indices=nan_indices)
    if data_sampler:
        sampler = TrainingSampler(
            len(dataset), seed=seed, rank=rank, world_size=world_size, shuffle=shuffle
        )
    else:
        sampler = ShuffleSampler(
            len(dataset), seed=seed, rank=rank, world_size=world_size, shuffle=shuffle
        )
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    optim_cfg = OptimConfig(
        name=optim, lr=1e-2, weight_decay=0.05, clip_grad=ClipGradConfig(enabled=True, value=1.0)
    )
    sched_cfg = ScheduleConfig(max_iter=max_iter, steps=[5, 7], warmup_iters=3, warmup_factor=0.1)
    optimizer = build_optimizer(model, optim_cfg)
    scheduler = build_lr_scheduler(optimizer, sched_cfg)
    return Trainer(
        model,
        optimizer,
        scheduler,
        loader,
        work_dir=work_dir,
        max_iter=max_iter,
        amp=amp,
        grad_accum_steps=grad_accum_steps,
        clip_grad=optim_cfg.clip_grad,
        checkpoint_period=checkpoint_period,
        keep_last=keep_last,
        log_period=log_period,
        eval_fn=eval_fn,
        eval_period=eval_period,
        config_yaml="model: toy\n",
        tensorboard=False,
        progress=False,
    )


def train_until_killed(work_dir: str, kwargs: dict[str, Any]) -> None:
    """Entry point of a spawned process: train until ``kill_at_call`` SIGKILLs it."""
    torch.set_num_threads(1)
    make_trainer(work_dir, **kwargs).train()
