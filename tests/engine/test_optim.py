"""Optimizer groups, learning-rate schedules, lr scaling and gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ovseg.config.engine import ClipGradConfig, OptimConfig, ScheduleConfig
from ovseg.engine.optim import (
    WarmupLRScheduler,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
    effective_lr,
)

from .toy import ToyNet


def _lrs(scheduler: WarmupLRScheduler, optimizer: torch.optim.Optimizer, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _sgd(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_optimizer_holds_only_trainable_params_with_mask2former_decay():
    model = ToyNet()
    model.backbone = nn.Linear(2, 2)  # trainable module under "backbone": lr multiplier applies
    opt = build_optimizer(model, OptimConfig(lr=1e-4, weight_decay=0.05, backbone_multiplier=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    in_opt = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert id(model.clip.weight) not in in_opt and id(model.clip.bias) not in in_opt
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(in_opt) == len(trainable)
    assert in_opt[id(model.conv.weight)]["weight_decay"] == 0.05
    assert in_opt[id(model.head.bias)]["weight_decay"] == 0.05
    assert in_opt[id(model.norm.weight)]["weight_decay"] == 0.0
    assert in_opt[id(model.norm.bias)]["weight_decay"] == 0.0
    assert in_opt[id(model.query.weight)]["weight_decay"] == 0.0
    assert in_opt[id(model.conv.weight)]["lr"] == pytest.approx(1e-4)
    assert in_opt[id(model.backbone.weight)]["lr"] == pytest.approx(1e-5)
    assert tuple(opt.param_groups[0]["betas"]) == (0.9, 0.999)


def test_optimizer_refuses_fully_frozen_model():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad=True"):
        build_optimizer(model, OptimConfig())


def test_warmup_multistep_values():
    opt = _sgd()
    cfg = ScheduleConfig(
        max_iter=10,
        policy="multistep",
        steps=[6, 8],
        gamma=0.1,
        warmup_iters=4,
        warmup_factor=0.1,
        warmup_method="linear",
    )
    got = _lrs(build_lr_scheduler(opt, cfg), opt, 10)
    want = [0.1, 0.325, 0.55, 0.775, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    assert got == pytest.approx(want, rel=1e-12)


def test_constant_warmup_poly_values():
    opt = _sgd(2.0)
    cfg = ScheduleConfig(
        max_iter=10,
        policy="poly",
        power=0.9,
        warmup_iters=2,
        warmup_factor=0.5,
        warmup_method="constant",
    )
    got = _lrs(build_lr_scheduler(opt, cfg), opt, 11)
    want = [2.0 * (0.5 if i < 2 else 1.0) * (1 - i / 10) ** 0.9 for i in range(11)]
    assert got == pytest.approx(want, rel=1e-12)
    assert got[2] == pytest.approx(2.0 * 0.8**0.9)
    assert got[10] == 0.0


def test_scheduler_state_round_trip():
    cfg = ScheduleConfig(max_iter=20, steps=[5], warmup_iters=3, warmup_factor=0.01)
    opt_a = _sgd()
    sched_a = build_lr_scheduler(opt_a, cfg)
    _lrs(sched_a, opt_a, 4)
    state = sched_a.state_dict()
    assert all(isinstance(v, (int, float, str, bool, list, type(None))) for v in state.values())
    opt_b = _sgd()
    sched_b = build_lr_scheduler(opt_b, cfg)
    sched_b.load_state_dict(state)
    opt_b.param_groups[0]["lr"] = sched_b.get_last_lr()[0]
    assert _lrs(sched_b, opt_b, 5) == pytest.approx(_lrs(sched_a, opt_a, 5))


def test_linear_lr_scaling_rule():
    on = ScheduleConfig(scale_lr=True, reference_batch_size=16)
    assert effective_lr(1e-4, 32, on) == pytest.approx(2e-4)
    assert effective_lr(1e-4, 4, on) == pytest.approx(2.5e-5)
    assert effective_lr(1e-4, 32, ScheduleConfig(scale_lr=False)) == 1e-4


def test_full_model_clipping_bounds_global_norm():
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4))
    a.grad = torch.tensor([3.0, 0.0, 0.0])
    b.grad = torch.tensor([0.0, 4.0, 0.0, 0.0])
    norm = clip_gradients([a, b], ClipGradConfig(type="full_model", value=0.01))
    assert float(norm) == pytest.approx(5.0)
    total = math.sqrt(float(a.grad.pow(2).sum() + b.grad.pow(2).sum()))
    assert total == pytest.approx(0.01, rel=1e-5)
    assert float(a.grad[0] / b.grad[1]) == pytest.approx(0.75)  # direction kept
    clip_gradients([a, b], ClipGradConfig(type="value", value=0.001))
    assert float(b.grad.abs().max()) == pytest.approx(0.001)
    assert clip_gradients([a, b], ClipGradConfig(enabled=False)) is None


def test_resumed_scheduler_follows_the_new_max_iter():
    """Issue 18, case 5: the stored max_iter must not override a longer run's schedule."""

    def sched(max_iter):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        return WarmupLRScheduler(opt, max_iter=max_iter, policy="poly", power=1.0)

    short, long = sched(4), sched(8)
    for _ in range(2):
        short.optimizer.step()
        short.step()
        long.optimizer.step()
        long.step()
    resumed = sched(8)
    resumed.load_state_dict(short.state_dict())
    assert resumed.max_iter == 8 and resumed.last_epoch == 2
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1 - 2 / 8)
    assert resumed.get_last_lr() == long.get_last_lr()
    # The same schedule round-trips exactly (exact resume).
    same = sched(4)
    same.load_state_dict(short.state_dict())
    assert same.get_last_lr() == short.get_last_lr() == [1 - 2 / 4]
