"""Host (CPU) memory reuse for training steps on glibc's malloc.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and hands it back with ``munmap`` on free. A CPU training step at 1024x1024 allocates and frees
hundreds of 65-90 MB activations and gradients (stride-4 masks, deformable-attention samples),
so the kernel page-faults in and zeroes every one of them again on first touch: on this
project's 2-core CI machine that was ~20% of an fp32 step of the FC-CLIP ConvNeXt-L
architecture (``tools/benchmark.py --train``). :func:`reuse_freed_host_memory` makes malloc
serve them from its heap and keep what is freed, so the next allocation reuses pages that are
already mapped. Results are unchanged: only where tensors live moves.

CPU inference is left as it is. There the trade is worse: the ConvNeXt-L pixel decoder at the
ADE size took 2.1-2.4 s with reuse against 2.5-3.0 s without (2 threads), a few percent of a
whole image, while the inference peak above the model's weights grew from 0.41-0.47 GB to
1.0-1.1 GB (freed blocks of one size do not serve the next, larger ones). A process with
memory to spare can call :func:`reuse_freed_host_memory` itself.

The setting is process-wide and stays: the process keeps its high-water mark of memory (which a
training loop reaches every step anyway) instead of returning it to the system between
allocations. The heap also fragments: over the first steps of that model the resident size crept
from 9.6 to 11.8 GB. :func:`release_freed_host_memory` hands every freed page back
(``malloc_trim``); the Trainer calls it every :data:`RELEASE_PERIOD` steps, which bounds what a
long run can hold for the price of faulting the pages in once more (one slower step in 50).
``OVSEG_REUSE_HOST_MEMORY=0`` turns it off.

A process started with another malloc preloaded (``LD_PRELOAD`` of tcmalloc or jemalloc) needs
none of this: those keep freed pages in their own caches. :func:`host_allocator` says which
malloc serves the process, and the reuse setting is only applied under glibc's. On this
project's CI machine gperftools' tcmalloc (Debian ``libtcmalloc-minimal4``) took 2.6 GB off
the fp32 step's peak at about glibc-with-reuse's time (README, Performance).
"""

from __future__ import annotations

import ctypes
import os
import platform

from ovseg.utils.env import env_flag

__all__ = [
    "ENV_VAR",
    "RELEASE_PERIOD",
    "host_allocator",
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

# Shared-object names of the mallocs that are preloaded in place of the C library's.
_PRELOADED_MALLOCS = {
    "libtcmalloc": "tcmalloc",
    "libjemalloc": "jemalloc",
    "libmimalloc": "mimalloc",
}


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def host_allocator() -> str:
    """The malloc that serves this process: "tcmalloc", "jemalloc" or "mimalloc" when one is
    preloaded, else the C library's ("glibc", "musl", ...; "unknown" where it cannot be told).

    Found by asking the dynamic linker (``dladdr``) which shared object defines the ``malloc``
    the process calls, so a library that is loaded but not interposed does not count.
    """
    try:
        process = ctypes.CDLL(None)
        info = _DlInfo()
        address = ctypes.cast(process.malloc, ctypes.c_void_p)
        if process.dladdr(address, ctypes.byref(info)) and info.dli_fname:
            name = os.path.basename(info.dli_fname.decode(errors="replace"))
            for prefix, allocator in _PRELOADED_MALLOCS.items():
                if name.startswith(prefix):
                    return allocator
    except (OSError, AttributeError, TypeError):  # TypeError: no CDLL(None) on Windows
        pass
    return platform.libc_ver()[0] or "unknown"


def reusing_freed_host_memory() -> bool:
    """Whether :func:`reuse_freed_host_memory` is in effect in this process."""
    return _applied


def reuse_freed_host_memory() -> bool:
    """Serve large allocations from malloc's heap and keep freed memory for reuse (see the
    module docstring). Idempotent.

    Returns:
        True when the setting is in effect; False on a C library other than glibc (musl,
        macOS, Windows: their allocators are left as they are), under a preloaded malloc
        (:func:`host_allocator`) or with ``OVSEG_REUSE_HOST_MEMORY=0``.
    """
    global _applied
    if _applied:
        return True
    if not env_flag(ENV_VAR, True):
        return False
    if platform.system() != "Linux" or host_allocator() != "glibc":
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
