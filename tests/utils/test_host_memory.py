"""ovseg/utils/host_memory.py: large tensors reuse freed pages instead of faulting in new ones."""

from __future__ import annotations

import glob
import json
import os
import platform
import subprocess
import sys

import pytest

from ovseg.utils import host_memory

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the setting is glibc malloc's",
)

# Allocate, fill and free a 64 MB tensor (above glibc's largest mmap threshold) again and again
# and count the minor page faults of the last rounds: without reuse every round faults its 16k
# pages in afresh, with reuse pages already mapped serve them.
_PROBE = """
import json, resource, sys
import torch
from ovseg.utils.host_memory import reuse_freed_host_memory, reusing_freed_host_memory
applied = reuse_freed_host_memory() if sys.argv[1] == "on" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def rounds(n):
    for _ in range(n):
        t = torch.empty(16 << 20)
        t.fill_(1.0)
        del t
rounds(10)  # malloc's free lists settle (its first few blocks are a little short for reuse)
before = faults()
rounds(4)
print(json.dumps({"applied": applied, "in_effect": reusing_freed_host_memory(),
                  "faults": faults() - before}))
"""


def _probe(mode: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_reuse_keeps_large_tensors_pages_mapped():
    off, on = _probe("off"), _probe("on")
    assert not off["applied"] and not off["in_effect"]
    assert on["applied"] and on["in_effect"]
    pages = 4 * (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    # Without reuse: (nearly) every page of every round is faulted in (THP could only lower
    # this, and it is off for malloc's mmaps unless the system forces it).
    assert off["faults"] > pages // 4
    assert on["faults"] < pages // 100


def test_env_switch_turns_it_off():
    probe = _probe("on", **{host_memory.ENV_VAR: "0"})
    assert not probe["applied"] and not probe["in_effect"]


_RELEASE_PROBE = """
import json
import torch
from ovseg.utils.host_memory import release_freed_host_memory, reuse_freed_host_memory
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
assert release_freed_host_memory() is False  # nothing to do before reuse is on
reuse_freed_host_memory()
base = rss_mb()
blocks = [torch.ones(16 << 20) for _ in range(6)]  # 6 x 64 MB, touched
del blocks
kept = rss_mb() - base
released = release_freed_host_memory()
print(json.dumps({"kept": kept, "after": rss_mb() - base, "released": released}))
"""


def test_release_hands_freed_pages_back():
    out = subprocess.run(
        [sys.executable, "-c", _RELEASE_PROBE], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["released"]
    assert probe["kept"] > 300  # reuse: the freed 384 MB stay mapped
    assert probe["after"] < 100  # and go back on release


# Where .ci/run installs it (Debian's libtcmalloc-minimal4), on any architecture.
_TCMALLOC = next(iter(sorted(glob.glob("/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4"))), None)

# Which malloc serves the process, whether reuse applies, and a tiny model's training loss and
# gradient checksum: the allocator moves where tensors live, never a value.
_ALLOCATOR_PROBE = """
import json, torch
from ovseg.utils.host_memory import host_allocator, reuse_freed_host_memory
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
x = torch.randn(2, 3, 64, 64)
loss = net(x).square().mean()
loss.backward()
grads = sum(p.grad.double().abs().sum().item() for p in net.parameters())
print(json.dumps({"allocator": host_allocator(), "reuse": reuse_freed_host_memory(),
                  "loss": loss.item(), "grads": grads}))
"""


def _allocator_probe(**env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _ALLOCATOR_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_host_allocator_is_glibc_by_default():
    assert host_memory.host_allocator() == "glibc"


@pytest.mark.skipif(
    _TCMALLOC is None, reason="gperftools' tcmalloc is not installed (.ci/run installs it)"
)
def test_preloaded_tcmalloc_is_told_apart_reuse_skipped_and_values_unchanged():
    plain = _allocator_probe()
    tc = _allocator_probe(LD_PRELOAD=_TCMALLOC)
    assert plain["allocator"] == "glibc" and plain["reuse"] is True
    # glibc's mallopt settings would tune a malloc nobody calls: not applied under tcmalloc.
    assert tc["allocator"] == "tcmalloc" and tc["reuse"] is False
    assert tc["loss"] == plain["loss"] and tc["grads"] == plain["grads"]
