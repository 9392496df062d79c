"""Every shipped config loads against the strict schema; bad keys and values fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from ovseg_testing import REPO

from ovseg.config import ConfigError, load_config, to_yaml
from ovseg.config.loader import load_yaml_with_bases

CONFIGS = sorted(p for p in (REPO / "ovseg" / "configs").rglob("*.yaml"))


@pytest.mark.parametrize(
    "path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "ovseg" / "configs"))
)
def test_every_config_loads(path: Path):
    cfg = load_config(path)
    assert cfg.model.decoder.num_queries > 0
    assert "model:" in to_yaml(cfg)


def test_base_inheritance_and_overrides():
    cfg = load_config(REPO / "ovseg/configs/fcclip/fcclip_rn50_eval_cityscapes.yaml")
    assert cfg.model.backbone.name == "RN50" and cfg.model.backbone.force_quick_gelu
    assert cfg.model.test.ensemble_on_valid_mask is True
    assert (cfg.model.test.min_size, cfg.model.test.max_size) == (1024, 2560)
    assert cfg.model.test.vocabulary == "cityscapes"
    cfg = load_config(
        REPO / "ovseg/configs/tests/fcclip_tiny.yaml",
        ["model.decoder.num_queries=10", "model.backbone.pretrained=null"],
    )
    assert cfg.model.decoder.num_queries == 10 and cfg.model.backbone.pretrained is None
    assert cfg.model.decoder.hidden_dim == 32  # from the file, base value 256 overridden


def test_unknown_key_names_it_and_suggests(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  decoder:\n    num_querys: 100\n")
    with pytest.raises(
        ConfigError, match=r"model\.decoder\.num_querys.*did you mean 'model\.decoder\.num_queries'"
    ):
        load_config(bad)
    with pytest.raises(
        ConfigError, match=r"model\.pixel_decodr.*did you mean 'model\.pixel_decoder'"
    ):
        load_config(None, ["model.pixel_decodr.conv_dim=3"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"model\.decoder\.num_queries"):
        load_config(None, ["model.decoder.num_queries=many"])


def test_missing_file_and_cycle(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("_base_: b.yaml\n")
    b.write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_yaml_with_bases(a)


def test_malformed_override():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["model.decoder.num_queries"])
