"""Optimizer, learning-rate schedule and gradient clipping, as Mask2Former / FC-CLIP build them."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from ovseg.config.engine import ClipGradConfig, OptimConfig, ScheduleConfig

__all__ = [
    "NORM_TYPES",
    "WarmupLRScheduler",
    "build_lr_scheduler",
    "build_optimizer",
    "build_param_groups",
    "clip_gradients",
    "effective_lr",
]

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
# Parameter names that are positional tables, without decay in Mask2Former's build_optimizer.
_NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def effective_lr(lr: float, total_batch: int, schedule: ScheduleConfig) -> float:
    """The learning rate to use for ``total_batch`` images per optimizer step.

    Linear scaling rule (see :mod:`ovseg.config.engine`): ``lr * total_batch /
    schedule.reference_batch_size`` when ``schedule.scale_lr``, else ``lr`` unchanged.

    Args:
        lr: ``optim.lr``.
        total_batch: per-process batch x world size x grad_accum_steps.
        schedule: supplies ``scale_lr`` and ``reference_batch_size``.
    """
    if total_batch < 1:
        raise ValueError(f"total_batch must be >= 1; got {total_batch}")
    if not schedule.scale_lr:
        return lr
    return lr * total_batch / schedule.reference_batch_size


def build_param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    backbone_multiplier: float = 1.0,
) -> list[dict[str, Any]]:
    """Group the trainable parameters by (lr, weight decay), in module order.

    Parameters with ``requires_grad=False`` (the frozen CLIP) are left out. As Mask2Former:
    normalisation layers get ``weight_decay_norm``, ``nn.Embedding`` weights
    ``weight_decay_embed``, position tables no decay, and modules whose path contains
    ``"backbone"`` ``lr * backbone_multiplier``. A parameter shared by two modules is counted once.

    Returns:
        ``[{"params": [...], "lr": float, "weight_decay": float}, ...]``, deterministic order.
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            p_lr = lr * backbone_multiplier if "backbone" in module_name else lr
            wd = weight_decay
            if any(n in name for n in _NO_DECAY_NAMES):
                wd = 0.0
            if isinstance(module, NORM_TYPES):
                wd = weight_decay_norm
            if isinstance(module, nn.Embedding):
                wd = weight_decay_embed
            groups.setdefault((p_lr, wd), []).append(param)
    if not groups:
        raise ValueError("the model has no parameter with requires_grad=True; nothing to optimize")
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, lr: float | None = None
) -> torch.optim.Optimizer:
    """Build the optimizer over the trainable parameters of ``model``.

    Args:
        model: the (unwrapped) model; frozen parameters never enter the optimizer.
        cfg: the ``optim`` config section.
        lr: overrides ``cfg.lr``, e.g. with :func:`effective_lr`.

    Returns:
        ``torch.optim.AdamW`` (or SGD) with the groups of :func:`build_param_groups`.
    """
    base_lr = cfg.lr if lr is None else lr
    groups = build_param_groups(
        model,
        lr=base_lr,
        weight_decay=cfg.weight_decay,
        weight_decay_norm=cfg.weight_decay_norm,
        weight_decay_embed=cfg.weight_decay_embed,
        backbone_multiplier=cfg.backbone_multiplier,
    )
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=base_lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=base_lr, momentum=cfg.momentum)
    raise ValueError(f"optim.name must be 'adamw' or 'sgd'; got {cfg.name!r}")


class WarmupLRScheduler(LRScheduler):
    """Iteration-based warm-up followed by a multi-step or poly decay.

    At optimizer step ``i`` (0-based; ``scheduler.step()`` after every optimizer step) each
    group's lr is ``base_lr * warmup(i) * decay(i)`` (Mask2Former's ``WarmupPolyLR`` and
    detectron2's ``WarmupMultiStepLR``), where

    - ``warmup(i)`` = ``f + (1 - f) * i / warmup_iters`` (linear) or ``f`` (constant) for
      ``i < warmup_iters``, else 1, with ``f = warmup_factor``;
    - ``decay(i)`` = ``gamma ** (number of steps <= i)`` (multistep) or
      ``max(0, 1 - i / max_iter) ** power`` (poly).

    The state is plain numbers (``state_dict()`` is checkpoint-safe).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        max_iter: int,
        policy: str = "multistep",
        steps: Iterable[int] = (),
        gamma: float = 0.1,
        power: float = 0.9,
        warmup_iters: int = 0,
        warmup_factor: float = 1.0,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        if policy not in ("multistep", "poly"):
            raise ValueError(f"policy must be 'multistep' or 'poly'; got {policy!r}")
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"warmup_method must be 'linear' or 'constant'; got {warmup_method!r}")
        self.max_iter = int(max_iter)
        self.policy = policy
        self.steps = [int(s) for s in steps]
        if self.steps != sorted(self.steps):
            raise ValueError(f"steps must be ascending; got {self.steps}")
        self.gamma = float(gamma)
        self.power = float(power)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def multiplier(self, it: int) -> float:
        """lr / base_lr at optimizer step ``it`` (0-based)."""
        warm = 1.0
        if it < self.warmup_iters:
            if self.warmup_method == "constant":
                warm = self.warmup_factor
            else:
                alpha = it / self.warmup_iters
                warm = self.warmup_factor * (1.0 - alpha) + alpha
        if self.policy == "multistep":
            decay = self.gamma ** bisect_right(self.steps, it)
        else:
            decay = math.pow(max(0.0, 1.0 - it / self.max_iter), self.power)
        return warm * decay

    def get_lr(self) -> list[float]:
        m = self.multiplier(self.last_epoch)
        return [base * m for base in self.base_lrs]

    _SCHEDULE_FIELDS = (
        "max_iter",
        "policy",
        "steps",
        "gamma",
        "power",
        "warmup_iters",
        "warmup_factor",
        "warmup_method",
    )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the progress (step count, base lrs) but keep this scheduler's own schedule.

        A resumed run whose ``schedule.max_iter`` was raised must decay over the new length,
        not the one saved with the checkpoint; the trainer refuses a resume whose other schedule
        keys changed. The optimizer's current lrs are set from the (possibly new) schedule so
        the first step after resume uses them too (for an unchanged schedule: the same values).
        """
        own = {k: getattr(self, k) for k in self._SCHEDULE_FIELDS}
        super().load_state_dict(state_dict)
        for key, value in own.items():
            setattr(self, key, value)
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig) -> WarmupLRScheduler:
    """The scheduler of the ``schedule`` config section for ``optimizer``."""
    return WarmupLRScheduler(
        optimizer,
        max_iter=cfg.max_iter,
        policy=cfg.policy,
        steps=cfg.steps,
        gamma=cfg.gamma,
        power=cfg.power,
        warmup_iters=cfg.warmup_iters,
        warmup_factor=cfg.warmup_factor,
        warmup_method=cfg.warmup_method,
    )


def clip_gradients(
    params: Iterable[torch.Tensor], cfg: ClipGradConfig | None
) -> torch.Tensor | None:
    """Clip the gradients of ``params`` in place as ``cfg`` says.

    ``"full_model"``: one global ``norm_type``-norm over all gradients, scaled down to at most
    ``value`` (Mask2Former's FullModelGradientClippingOptimizer); ``"norm"``: the same per
    parameter; ``"value"``: clamp each element to [-value, value].

    Returns:
        The total gradient norm before clipping for ``"full_model"`` (0-dim float tensor),
        else None.
    """
    if cfg is None or not cfg.enabled:
        return None
    params = [p for p in params if p.grad is not None]
    if not params:
        return None
    if cfg.type == "full_model":
        return torch.nn.utils.clip_grad_norm_(params, cfg.value, norm_type=cfg.norm_type)
    if cfg.type == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], cfg.value, norm_type=cfg.norm_type)
        return None
    if cfg.type == "value":
        torch.nn.utils.clip_grad_value_(params, cfg.value)
        return None
    raise ValueError(f"clip_grad.type must be 'full_model', 'norm' or 'value'; got {cfg.type!r}")
