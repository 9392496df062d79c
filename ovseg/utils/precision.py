"""Reduced-precision floats: which ones this hardware computes natively, and the warning when not.

PyTorch runs bf16 autocast on any CPU, but without bf16 instructions (AVX512-BF16 or AMX on
x86, the BF16 extension on Arm) oneDNN emulates it: fp32 arithmetic plus a conversion on every
load and store, slower than plain fp32. On an Intel Xeon with AVX-512 but no AVX512-BF16 the
ConvNeXt-L image tower took 19.0 s in bf16 against 5.7 s in fp32 (README, *Performance*), and
one of its linear layers 0.26 s in bf16 and 0.82 s in fp16 against 0.07 s in fp32. So a
requested reduced precision that this device would only emulate gets a
:class:`EmulatedPrecisionWarning`, and ``"auto"`` picks a reduced precision only where it is native.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import warnings

import torch

#: The precision names of ``model.test.precision`` / ``runtime.amp`` and their autocast dtypes.
DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "none": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


class EmulatedPrecisionWarning(UserWarning):
    """A reduced precision was asked for on a device that only emulates it (slower than fp32)."""


def _cpu_has(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def _mkldnn_has(name: str) -> bool:
    probe = getattr(torch.ops.mkldnn, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except (AttributeError, RuntimeError):
        return False


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def native(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether ``device`` computes ``dtype`` (bf16 / fp16) in hardware.

    x86 CPUs: bf16 needs AVX512-BF16 or AMX (oneDNN's own ``_is_mkldnn_bf16_supported`` is also
    true on plain AVX-512, where it emulates); fp16 needs AVX512-FP16 or AMX-FP16. Other CPUs ask
    oneDNN. CUDA: fp16 always, bf16 where the GPU has it (Ampere and later) without emulation.
    """
    device = torch.device(device)
    if dtype not in (torch.bfloat16, torch.float16):
        return True
    if device.type == "cuda":
        if dtype == torch.float16:
            return True
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch < 2.3 has no including_emulation
            return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return True  # MPS, XPU, ...: not ours to second-guess
    if dtype == torch.float16:
        return _mkldnn_has("_is_mkldnn_fp16_supported")
    if _x86():
        return _cpu_has("_is_avx512_bf16_supported") or _cpu_has("_is_amx_tile_supported")
    return _mkldnn_has("_is_mkldnn_bf16_supported")


def fastest(device: torch.device | str, training: bool = False) -> str:
    """The reduced precision worth using on ``device``, else ``"fp32"``: on CUDA fp16 for
    training (FC-CLIP's mixed precision, with a gradient scaler), bf16 for inference where the
    GPU has it; on CPUs bf16 where native."""
    device = torch.device(device)
    if device.type == "cuda" and (training or not native(device, torch.bfloat16)):
        return "fp16"
    return "bf16" if native(device, torch.bfloat16) else "fp32"


def warn_if_emulated(
    device: torch.device | str, precision: str, setting: str, auto_hint: bool = False
) -> bool:
    """Warn (:class:`EmulatedPrecisionWarning`, naming ``setting``) when ``precision`` is a
    reduced precision that ``device`` would only emulate; returns whether it warned.
    ``auto_hint``: the setting also takes ``"auto"`` (say so)."""
    dtype = DTYPES.get(precision)
    device = torch.device(device)
    if dtype is None or native(device, dtype):
        return False
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    if device.type == "cuda":
        where = f"this GPU ({torch.cuda.get_device_name(device)}) has no {name} arithmetic"
        cost = "it may run slower than fp32"
    else:
        needs = "AVX512-BF16 or AMX" if dtype == torch.bfloat16 else "AVX512-FP16 or AMX-FP16"
        where = f"this CPU has no {name} instructions (x86: {needs})"
        cost = "it runs slower than fp32 " + (
            "(the ConvNeXt-L tower took 3.3x fp32's time on such a CPU)"
            if dtype == torch.bfloat16
            else "(one of the ConvNeXt-L tower's linear layers took 12x fp32's time on such a CPU)"
        )
    hint = " or 'auto' (a reduced precision only where it is native)" if auto_hint else ""
    warnings.warn(
        f"{setting}={precision} is emulated: {where}, so {cost}. Use fp32{hint}.",
        EmulatedPrecisionWarning,
        stacklevel=_callers_stacklevel(),
    )
    return True


#: Frames a warning skips to reach its user's line: ovseg's own, and the context-manager and
#: decorator wrappers (``contextlib``'s, torch's) that ovseg's calls pass through.
_LIBRARY_FILES = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
    os.path.abspath(contextlib.__file__),
    os.path.dirname(os.path.abspath(torch.__file__)) + os.sep,
)


def _callers_stacklevel() -> int:
    """``warnings.warn``'s ``stacklevel``, for the function calling this one, that names the first
    frame outside ovseg and those wrappers: the user's ``predict`` / ``Trainer`` / CLI call."""
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_LIBRARY_FILES):
        frame, level = frame.f_back, level + 1
    return level
