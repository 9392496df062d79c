"""Shipped configs resolve by name from any folder; the old ``configs/`` spelling still works."""

from __future__ import annotations

import pytest

from ovseg.config import ConfigError, find_config, list_configs, load_config
from ovseg.config.loader import CONFIG_DIR


@pytest.mark.parametrize("name", ["tests/fcclip_tiny.yaml", "configs/tests/fcclip_tiny.yaml"])
def test_shipped_name_resolves_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config(name) == CONFIG_DIR / "tests" / "fcclip_tiny.yaml"
    assert load_config(name).model.backbone.name == "convnext_fcclip_tiny_a"


def test_existing_file_wins(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("_base_: " + str(CONFIG_DIR / "tests" / "fcclip_tiny.yaml") + "\n")
    assert find_config(f) == f


def test_miss_names_path_and_suggests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError, match=r"tests/fcclip_tiyn.yaml.*did you mean tests/fcclip_tiny"
    ):
        find_config("tests/fcclip_tiyn.yaml")


def test_list_configs_has_shipped_names_without_bases():
    names = list_configs()
    assert "tests/fcclip_tiny.yaml" in names
    assert "fcclip/fcclip_convnext_large_eval_ade20k.yaml" in names
    assert not any(n.startswith("_base_/") for n in names)


def test_an_absolute_path_into_the_old_configs_folder_resolves_to_the_shipped_one(tmp_path):
    from ovseg.config.loader import CONFIG_DIR, find_config

    old = tmp_path / "checkout" / "configs" / "tests" / "fcclip_tiny.yaml"  # does not exist
    assert find_config(old) == CONFIG_DIR / "tests" / "fcclip_tiny.yaml"
    with pytest.raises(Exception, match="config file not found: /nope/x.yaml"):
        find_config("/nope/x.yaml")
