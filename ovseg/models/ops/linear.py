"""Fully connected layers through oneDNN for CPU inference.

PyTorch runs an fp32 ``F.linear`` on CPU through MKL. oneDNN's matmul (``mkldnn._linear_pointwise``,
the kernel ``torch.compile``'s CPU backend emits) computes the same product 1.3-1.6x faster on
the AMD EPYC CPUs this project is measured on, with other float rounding (about 1e-6 relative).
The frozen text tower's prompt encoding uses it (its embeddings are tested against the plain
computation to 1e-6). It is not used in the pixel decoder: there that rounding moved the
razor-thin official fixture's default-path sem_seg by 3.5e-4 (bound 1e-4).

Only where nothing needs a gradient; autocast, other devices and dtypes, tracing and export take
``F.linear``. ``OVSEG_ONEDNN_LINEAR=0`` (or :func:`onednn_linear`) turns it off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ovseg.models.layers import capturing_graph
from ovseg.utils.env import env_flag

_enabled = env_flag("OVSEG_ONEDNN_LINEAR", True)


def _onednn_op_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(
            torch.ops.mkldnn, "_linear_pointwise"
        )
    except (AttributeError, RuntimeError):
        return False


_AVAILABLE = _onednn_op_available()


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`linear` would take oneDNN for these operands here and now."""
    return (
        _enabled
        and _AVAILABLE
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.is_autocast_enabled("cpu")
        and not capturing_graph()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: x (..., K), weight (N, K), bias (N,) -> (..., N), on
    oneDNN where :func:`uses_onednn` allows."""
    if uses_onednn(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


@contextlib.contextmanager
def onednn_linear(enabled: bool) -> Iterator[None]:
    """Turn the oneDNN path of :func:`linear` on or off inside the block (tests, benchmarks)."""
    global _enabled
    before, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = before
