"""The backbone contract: output shapes match outputs, registry selection, config_file."""

from __future__ import annotations

import json

import pytest
import torch

from ovseg.config.schema import ModelConfig
from ovseg.models.backbones import BACKBONES, select_backbone_class
from ovseg.models.backbones.clip import CLIP_CONFIG_DIR, create_clip
from ovseg.models.backbones.clip_convnext import CLIPConvNeXtBackbone
from ovseg.models.backbones.clip_resnet import CLIPResNetBackbone
from ovseg.models.builder import build_backbone
from ovseg.utils.registry import RegistryError

TINY = {"clip_convnext": "convnext_fcclip_tiny_a", "clip_resnet": "rn_fcclip_tiny_c"}


def _cfg(**backbone) -> ModelConfig:
    cfg = ModelConfig()
    cfg.backbone.pretrained = None
    for k, v in backbone.items():
        setattr(cfg.backbone, k, v)
    return cfg


@pytest.mark.parametrize("type_", sorted(TINY))
def test_output_shape_matches_outputs(type_: str) -> None:
    bb = build_backbone(_cfg(name=TINY[type_], type=type_))
    bb.train()
    assert not bb.clip_model.training
    assert not any(p.requires_grad for p in bb.clip_model.parameters())
    out = bb(torch.randn(1, 3, 64, 96))
    for key, spec in bb.output_shape().items():
        assert out[key].shape == (1, spec.channels, 64 // spec.stride, 96 // spec.stride)
    dense = out["clip_vis_dense"]
    masks = torch.randn(1, 5, *dense.shape[-2:])
    assert bb.pool_masks(dense, masks).shape == (1, 5, bb.embed_dim)


def test_auto_picks_by_tower_class() -> None:
    assert type(build_backbone(_cfg(name=TINY["clip_convnext"]))) is CLIPConvNeXtBackbone
    assert type(build_backbone(_cfg(name=TINY["clip_resnet"]))) is CLIPResNetBackbone


def test_mismatch_and_unknown_type() -> None:
    visual = create_clip(TINY["clip_resnet"], None).visual
    with pytest.raises(ValueError, match="does not match the CLIP image tower ModifiedResNet"):
        select_backbone_class("clip_convnext", visual)
    with pytest.raises(RegistryError, match="clip_resnet"):
        BACKBONES.get("clip_resnett")


def test_config_file(tmp_path, monkeypatch) -> None:
    src = json.loads((CLIP_CONFIG_DIR / "rn_fcclip_tiny_c.json").read_text())
    path = tmp_path / "my_tiny_rn_xyz.json"
    path.write_text(json.dumps(src))
    monkeypatch.chdir(tmp_path)
    bb = build_backbone(_cfg(name=None, config_file="my_tiny_rn_xyz.json"))
    assert bb.name == "my_tiny_rn_xyz" and isinstance(bb, CLIPResNetBackbone)
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        build_backbone(_cfg(name=None, config_file=str(bad)))
    with pytest.raises(ValueError, match="missing.json.*no such file"):
        build_backbone(_cfg(name=None, config_file="missing.json"))


def test_vit_pyramid_trains_tower_frozen() -> None:
    from ovseg.models.backbones.clip_vit import CLIPViTBackbone

    bb = build_backbone(_cfg(name="vit_fcclip_tiny_v", pyramid_channels=32))
    assert isinstance(bb, CLIPViTBackbone)
    bb.train()
    out = bb(torch.randn(2, 3, 64, 96))
    for key, spec in bb.output_shape().items():
        assert out[key].shape == (2, 32, 64 // spec.stride, 96 // spec.stride)
    sum(out[k].square().mean() for k in bb.output_shape()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bb.pyramid.parameters())
    assert all(p.grad is None for p in bb.clip_model.parameters())
    assert not bb.clip_model.training
    pooled = bb.pool_masks(out["clip_vis_dense"], torch.randn(2, 4, 4, 6))
    assert pooled.shape == (2, 4, bb.embed_dim) and torch.isfinite(pooled).all()


def test_vit_segmenter_all_tasks() -> None:
    import numpy as np

    from ovseg import Segmenter
    from ovseg.text.vocabulary import Vocabulary

    torch.manual_seed(0)
    seg = Segmenter.from_config("configs/tests/fcclip_tiny_vit.yaml")
    vocab = Vocabulary.parse("cat;dog;sky")
    img = np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8)
    pred = seg.predict(img, vocab, task="all")
    assert pred.sem_seg.shape == (3, 90, 130) and torch.isfinite(pred.sem_seg).all()
    assert pred.panoptic_seg.shape == (90, 130)
    assert set(pred.panoptic_seg.unique().tolist()) - {0} == {s["id"] for s in pred.segments_info}
    assert pred.instances.masks.shape[1:] == (90, 130)
