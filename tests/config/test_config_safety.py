"""Configs are data (issue 18, case 7): YAML aliases are refused in config files, overrides and a
checkpoint's embedded config, so an alias bomb fails at once in one line instead of hanging; a
binary file is a one-line error."""

from __future__ import annotations

import time

import pytest

from ovseg.config import ConfigError, config_from_yaml_string, load_config

BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
       f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
       f"*{chr(97 + i)}]" for i in range(8)]
    + ["model:", "  text:", "    templates: *i"]
)  # fmt: skip


def test_alias_bomb_in_a_config_file_fails_fast(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"bomb\.yaml: YAML alias \*a at line 2: aliases are not"):
        load_config(path)
    assert time.monotonic() - start < 5


def test_alias_bomb_in_a_checkpoint_config_or_override_fails_fast():
    with pytest.raises(ConfigError, match="embedded config: YAML alias"):
        config_from_yaml_string(BOMB)
    with pytest.raises(ConfigError, match=r"override 'model\.text\.templates=.*YAML alias"):
        load_config("configs/tests/fcclip_tiny.yaml", ["model.text.templates=[&a [x], *a]"])


def test_binary_config_file_is_one_line(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(b"\x80\x02\xff\xfe" * 10)
    with pytest.raises(ConfigError, match=r"weights\.yaml: not a text \(UTF-8\) YAML file"):
        load_config(path)


def test_a_plain_config_still_loads():
    cfg = load_config("configs/tests/fcclip_tiny.yaml")
    assert config_from_yaml_string(__import__("ovseg.config").config.to_yaml(cfg)) == cfg


def test_a_range_check_is_a_config_error():
    """Issue 18, case 12: ``schedule.max_iter=-5`` is a ConfigError naming the key."""
    import pytest as _pytest

    with _pytest.raises(ConfigError, match=r"schedule\.max_iter must be >= 1; got -5"):
        load_config("configs/tests/fcclip_tiny.yaml", ["schedule.max_iter=-5"])


def test_a_key_one_level_too_high_suggests_its_section():
    """Issue 18, case 12: `max_iter=5` means `schedule.max_iter=5`."""
    with pytest.raises(
        ConfigError, match=r"unknown config key 'max_iter'; did you mean 'schedule.max_iter'"
    ):
        load_config("tests/fcclip_tiny.yaml", ["max_iter=5"])
    with pytest.raises(ConfigError, match=r"did you mean 'model.test.min_size'"):
        load_config("tests/fcclip_tiny.yaml", ["model.min_size=5"])


def test_base_as_a_list_of_shipped_names(tmp_path):
    """`_base_: [tests/fcclip_tiny.yaml]` from a user's folder resolves the shipped config."""
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("_base_: [tests/fcclip_tiny.yaml]\nmodel:\n  test:\n    min_size: 123\n")
    loaded = load_config(cfg)
    assert loaded.model.test.min_size == 123
    assert loaded.model.backbone.name == load_config("tests/fcclip_tiny.yaml").model.backbone.name
    cfg.write_text("_base_: [{a: 1}]\n")
    with pytest.raises(ConfigError, match="_base_ entries must be file names"):
        load_config(cfg)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("[[a]]", r"model\.text\.templates must be a template set name or a list"),
        ("[photo]", r"each with a '\{\}' placeholder; got \['photo'\]"),
        ("[]", r"a list of 1 to 1000 strings"),
        ("{a: 1}", r"bad value for 'model\.text\.templates'"),
    ],
)
def test_templates_key_is_typed(value, match):
    """Issue 18, case 7: ``model.text.templates`` is ``str | list[str]`` (a set name or strings
    with a placeholder), not ``Any``: nested lists, mappings and placeholder-less strings fail
    at load, naming the key."""
    with pytest.raises(ConfigError, match=match):
        load_config("configs/tests/fcclip_tiny.yaml", [f"model.text.templates={value}"])
    cfg = load_config("configs/tests/fcclip_tiny.yaml", ['model.text.templates=["a {} b", "c {}"]'])
    assert cfg.model.text.templates == ["a {} b", "c {}"]
    # Unquoted, YAML cannot read the list: one line, never the whole text taken as a set name.
    with pytest.raises(
        ConfigError, match=r"override 'model\.text\.templates=\[a \{\} b\]': .*quote"
    ):
        load_config("configs/tests/fcclip_tiny.yaml", ["model.text.templates=[a {} b]"])
