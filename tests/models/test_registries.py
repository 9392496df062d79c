"""Every part a method changes is selected by ``type:`` and extended by registration."""

import pytest
import torch

from ovseg import Segmenter
from ovseg.config import load_config
from ovseg.models.builder import build_model
from ovseg.models.losses.criterion import build_criterion
from ovseg.models.registry import (
    BACKBONES,
    LOSSES,
    PIXEL_DECODERS,
    SEGMENTORS,
    TRANSFORMER_DECODERS,
)
from ovseg.text.registry import PROMPT_BUILDERS
from ovseg.utils.registry import RegistryError

TINY = "configs/tests/fcclip_tiny.yaml"


def test_the_defaults_are_registered():
    cfg = load_config(TINY).model
    assert cfg.type in SEGMENTORS and cfg.pixel_decoder.type in PIXEL_DECODERS
    assert cfg.decoder.type in TRANSFORMER_DECODERS and cfg.loss.type in LOSSES
    assert cfg.text.type in PROMPT_BUILDERS
    assert {"clip_convnext", "clip_resnet", "clip_vit"} <= set(BACKBONES.names())


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.pixel_decoder.type=msdefrom", "did you mean 'msdeform'"),
        ("model.decoder.type=masked_atention", "did you mean 'masked_attention'"),
        ("model.loss.type=mask2formr", "did you mean 'mask2former'"),
        ("model.text.type=template", "did you mean 'templates'"),
        ("model.type=fclip", "did you mean 'fcclip'"),
    ],
)
def test_a_misspelt_type_names_the_key_and_the_closest_entry(override, expected):
    with pytest.raises(RegistryError, match=expected) as info:
        Segmenter.from_config(TINY, overrides=[override])
    assert override.split("=")[0] in str(info.value)


def test_a_new_loss_is_one_registration(monkeypatch):
    name = "test_double_dice"

    def double_dice(cfg):
        crit = build_criterion(cfg)
        crit.weight_dict = {k: 2 * v if "dice" in k else v for k, v in crit.weight_dict.items()}
        return crit

    LOSSES.register(name, obj=double_dice)
    try:
        torch.manual_seed(0)
        plain = build_model(load_config(TINY).model).criterion.weight_dict
        model = build_model(load_config(TINY, [f"model.loss.type={name}"]).model)
        assert model.criterion.weight_dict["loss_dice"] == 2 * plain["loss_dice"]
        assert model.criterion.weight_dict["loss_ce"] == plain["loss_ce"]
    finally:
        LOSSES._entries.pop(name)
