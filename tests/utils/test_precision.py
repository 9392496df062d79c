"""Native reduced precision: the probes agree with the CPU's own flags, and an emulated precision
warns (by name) wherever it is asked for: inference, the trainer, the benchmark."""

from __future__ import annotations

import platform
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ovseg.utils import precision
from ovseg.utils.precision import EmulatedPrecisionWarning, fastest, native, warn_if_emulated

TINY = "tests/fcclip_tiny.yaml"  # a packaged config


def _cpu_flags() -> set[str]:
    """The kernel's CPU flags (an oracle independent of PyTorch's probes)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


x86_linux = pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() != "x86_64", reason="x86 Linux flags"
)


@x86_linux
def test_cpu_probes_agree_with_the_kernels_flags():
    flags = _cpu_flags()
    bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    fp16 = bool(flags & {"avx512_fp16", "amx_fp16"})
    assert native("cpu", torch.bfloat16) is bf16
    assert native("cpu", torch.float16) is fp16
    assert native("cpu", torch.float32) is True
    assert fastest("cpu") == ("bf16" if bf16 else "fp32")
    assert fastest("cpu", training=True) == fastest("cpu")


def _caught(fn, *args, **kwargs) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args, **kwargs)
    return [w for w in caught if issubclass(w.category, EmulatedPrecisionWarning)]


def test_emulated_precision_warns_naming_the_setting(monkeypatch):
    # Both branches on any machine: the probe says "emulated", then "native".
    monkeypatch.setattr(precision, "native", lambda device, dtype: False)
    (w,) = _caught(warn_if_emulated, "cpu", "bf16", "runtime.amp")
    text = str(w.message)
    assert text.startswith("runtime.amp=bf16 is emulated: this CPU has no bf16 instructions")
    assert "AVX512-BF16 or AMX" in text and "Use fp32." in text
    (w,) = _caught(warn_if_emulated, "cpu", "fp16", "model.test.precision", auto_hint=True)
    assert "AVX512-FP16 or AMX-FP16" in str(w.message) and "'auto'" in str(w.message)
    assert not _caught(warn_if_emulated, "cpu", "fp32", "model.test.precision")
    assert not _caught(warn_if_emulated, "cpu", "none", "runtime.amp")
    monkeypatch.setattr(precision, "native", lambda device, dtype: True)
    assert not _caught(warn_if_emulated, "cpu", "bf16", "runtime.amp")


def test_segmenter_resolves_auto_and_warns_once_for_an_emulated_precision():
    from ovseg import Segmenter
    from ovseg.text.vocabulary import Vocabulary

    vocab = Vocabulary(["cat", "dog"])
    img = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    auto = Segmenter.from_config(TINY, overrides=["model.test.precision=auto"])
    assert auto.precision == fastest("cpu")
    assert not _caught(auto.predict, img, vocab)  # auto never picks an emulated precision

    bf16 = Segmenter.from_config(TINY, overrides=["model.test.precision=bf16"])
    assert bf16.precision == "bf16"
    emulated = not native("cpu", torch.bfloat16)
    assert len(_caught(bf16.predict, img, vocab)) == int(emulated)
    assert not _caught(bf16.predict, img, vocab)  # once per segmenter, not per image


def test_trainer_warns_for_an_emulated_amp(tmp_path):
    from torch import nn

    from ovseg.engine.trainer import Trainer

    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    emulated = not native("cpu", torch.bfloat16)
    got = _caught(Trainer, model, opt, sched, [], work_dir=tmp_path, max_iter=1, amp="bf16")
    assert len(got) == int(emulated)
    if emulated:
        assert str(got[0].message).startswith("runtime.amp=bf16 is emulated")
    assert not _caught(Trainer, model, opt, sched, [], work_dir=tmp_path, max_iter=1, amp="none")


def test_the_warning_names_the_users_line_not_ovsegs(monkeypatch):
    """Raised deep inside ``Segmenter.predict`` (through a context manager), the warning points
    at the caller's line in this file."""
    from ovseg import Segmenter
    from ovseg.text.vocabulary import Vocabulary

    monkeypatch.setattr(precision, "native", lambda device, dtype: False)
    seg = Segmenter.from_config(TINY, overrides=["model.test.precision=bf16"])
    img = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    (w,) = _caught(seg.predict, img, Vocabulary(["cat"]))
    # _caught calls seg.predict from this file: that is the first frame outside ovseg.
    assert w.filename == __file__
    assert w.lineno == _caught.__code__.co_firstlineno + 3
