"""ovseg's environment switches: every spelling of on/off, the default when unset or empty, and an
error naming the variable for anything else (where each switch is read)."""

from __future__ import annotations

import pytest

from ovseg.utils.env import EnvError, env_flag, env_int


@pytest.mark.parametrize("value", ["1", "true", "TRUE", " Yes ", "on"])
def test_on_words(monkeypatch, value):
    monkeypatch.setenv("OVSEG_TEST_SWITCH", value)
    assert env_flag("OVSEG_TEST_SWITCH", False) is True


@pytest.mark.parametrize("value", ["0", "false", "No", " off"])
def test_off_words(monkeypatch, value):
    monkeypatch.setenv("OVSEG_TEST_SWITCH", value)
    assert env_flag("OVSEG_TEST_SWITCH", True) is False


def test_unset_or_empty_is_the_default(monkeypatch):
    monkeypatch.delenv("OVSEG_TEST_SWITCH", raising=False)
    assert env_flag("OVSEG_TEST_SWITCH", True) is True
    monkeypatch.setenv("OVSEG_TEST_SWITCH", "  ")
    assert env_flag("OVSEG_TEST_SWITCH", False) is False


def test_a_bad_switch_names_the_variable(monkeypatch):
    monkeypatch.setenv("OVSEG_TEST_SWITCH", "ture")
    with pytest.raises(EnvError, match=r"OVSEG_TEST_SWITCH='ture' is not a switch: use one of 1"):
        env_flag("OVSEG_TEST_SWITCH", False)


def test_env_int(monkeypatch):
    monkeypatch.setenv("OVSEG_TEST_INT", " 3 ")
    assert env_int("OVSEG_TEST_INT", 1) == 3
    monkeypatch.setenv("OVSEG_TEST_INT", "")
    assert env_int("OVSEG_TEST_INT", 1) == 1
    monkeypatch.setenv("OVSEG_TEST_INT", "two")
    with pytest.raises(ValueError, match=r"OVSEG_TEST_INT='two' is not an integer"):
        env_int("OVSEG_TEST_INT", 1)


def test_each_switch_reads_through_the_parser(monkeypatch):
    from ovseg.cli.common import is_debug
    from ovseg.utils.host_memory import ENV_VAR, reuse_freed_host_memory
    from ovseg.zoo.downloader import is_offline
    from ovseg.zoo.hub import hub_offline

    monkeypatch.setenv("OVSEG_OFFLINE", "maybe")
    with pytest.raises(ValueError, match="OVSEG_OFFLINE='maybe'"):
        is_offline()
    with pytest.raises(ValueError, match="OVSEG_OFFLINE='maybe'"):
        hub_offline()
    monkeypatch.setenv("OVSEG_OFFLINE", "off")
    monkeypatch.setenv("HF_HUB_OFFLINE", "maybe")  # huggingface_hub's variable, its reading: off
    assert not hub_offline() and not is_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()

    monkeypatch.setenv("OVSEG_DEBUG", "0")  # was read as on: any non-empty value
    assert not is_debug()
    monkeypatch.setenv("OVSEG_DEBUG", "verbose")  # asked while reporting an error: show it all
    assert is_debug()

    monkeypatch.setenv(ENV_VAR, "nope")
    import ovseg.utils.host_memory as hm

    monkeypatch.setattr(hm, "_applied", False)
    with pytest.raises(ValueError, match=f"{ENV_VAR}='nope'"):
        reuse_freed_host_memory()


def test_a_bad_onednn_switch_fails_at_import_naming_it():
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", "import ovseg.models.ops.linear"],
        env={"OVSEG_ONEDNN_LINEAR": "fast", "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "OVSEG_ONEDNN_LINEAR='fast' is not a switch" in r.stderr
