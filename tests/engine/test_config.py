"""Engine config sections: defaults, OmegaConf merging, value checks naming the key."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from ovseg.config.engine import OptimConfig, RuntimeConfig, ScheduleConfig


def test_defaults_follow_fcclip():
    optim = OptimConfig()
    assert (optim.name, optim.lr, optim.weight_decay) == ("adamw", 1e-4, 0.05)
    assert optim.clip_grad.enabled and optim.clip_grad.type == "full_model"
    assert optim.clip_grad.value == 0.01 and optim.weight_decay_norm == 0.0
    assert ScheduleConfig().reference_batch_size == 16
    assert RuntimeConfig().amp == "none"


def test_structured_merge_and_to_object():
    base = OmegaConf.structured(ScheduleConfig)
    merged = OmegaConf.merge(
        base, OmegaConf.from_dotlist(["max_iter=100", "steps=[60,80]", "policy=poly"])
    )
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, ScheduleConfig)
    assert (cfg.max_iter, cfg.steps, cfg.policy) == (100, [60, 80], "poly")
    optim = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(OptimConfig), {"clip_grad": {"value": 1.0}})
    )
    assert optim.clip_grad.value == 1.0


@pytest.mark.parametrize(
    ("cls", "override", "message"),
    [
        (
            ScheduleConfig,
            {"policy": "cosine"},
            (
                r"schedule\.policy must be one of 'multistep', "
                r"'poly'; got 'cosine'"
            ),
        ),
        (ScheduleConfig, {"steps": [80, 60]}, r"schedule\.steps must be ascending"),
        (ScheduleConfig, {"grad_accum_steps": 0}, r"schedule\.grad_accum_steps must be >= 1"),
        (RuntimeConfig, {"amp": "fp8"}, r"runtime\.amp must be one of"),
        (OptimConfig, {"clip_grad": {"type": "layer"}}, r"optim\.clip_grad\.type must be"),
        (OptimConfig, {"name": "lamb"}, r"optim\.name must be one of 'adamw', 'sgd'"),
    ],
)
def test_bad_values_name_the_key(cls, override, message):
    merged = OmegaConf.merge(OmegaConf.structured(cls), override)
    with pytest.raises(ValueError, match=message):
        OmegaConf.to_object(merged)
