"""Host (CPU) memory reuse for training steps on glibc's malloc.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and hands it back with ``munmap`` on free. A CPU training step at 1024x1024 allocates and frees
hundreds of 65-90 MB activations and gradients (stride-4 masks, deformable-attention samples),
so the kernel page-faults in and zeroes every one of them again on first touch: on this
project's 2-core CI machine that was ~20% of an fp32 step of the FC-CLIP ConvNeXt-L
architecture (``tools/benchmark.py --train``). :func:`reuse_freed_host_memory` makes malloc
serve them from its heap and keep what is freed, so the next allocation reuses pages that are
already mapped. Results are unchanged: only where tensors live moves.

The setting is process-wide and stays: the process keeps its high-water mark of memory (which a
training loop reaches every step anyway) instead of returning it to the system between
allocations. The heap also fragments: over the first steps of that model the resident size crept
from 9.6 to 11.8 GB. :func:`release_freed_host_memory` hands every freed page back
(``malloc_trim``); the Trainer calls it every :data:`RELEASE_PERIOD` steps, which bounds what a
long run can hold for the price of faulting the pages in once more (one slower step in 50).
``OVSEG_REUSE_HOST_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = [
    "ENV_VAR",
    "RELEASE_PERIOD",
    "release_freed_host_memory",
    "reuse_freed_host_memory",
    "reusing_freed_host_memory",
]

ENV_VAR = "OVSEG_REUSE_HOST_MEMORY"
# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
# Never hand the heap's free top back to the system ("-1 disables trimming completely", man
# mallopt): a step frees several GB at its end and would fault them all in again.
_TRIM_THRESHOLD = -1
# Grow the heap in steps of this much: fewer brk calls for a step's first allocations.
_TOP_PAD = 64 << 20

# Optimizer steps between two releases (:func:`release_freed_host_memory`) in the Trainer.
RELEASE_PERIOD = 50

_applied = False


def reusing_freed_host_memory() -> bool:
    """Whether :func:`reuse_freed_host_memory` is in effect in this process."""
    return _applied


def reuse_freed_host_memory() -> bool:
    """Serve large allocations from malloc's heap and keep freed memory for reuse (see the
    module docstring). Idempotent.

    Returns:
        True when the setting is in effect; False on a C library other than glibc (musl,
        macOS, Windows: their allocators are left as they are) or with
        ``OVSEG_REUSE_HOST_MEMORY=0``.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success. No mmap for large blocks: from the heap, kept when freed.
    ok = (
        mallopt(_M_MMAP_MAX, 0) == 1
        and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
        and mallopt(_M_TOP_PAD, _TOP_PAD) == 1
    )
    _applied = ok
    return ok


def release_freed_host_memory() -> bool:
    """Give the pages of all freed heap memory back to the system (glibc ``malloc_trim(0)``),
    where :func:`reuse_freed_host_memory` is in effect; the reuse setting itself stays.

    Returns:
        True when memory was trimmed; False where reuse is not in effect (nothing to do).
    """
    if not _applied:
        return False
    trim = ctypes.CDLL(None).malloc_trim
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
