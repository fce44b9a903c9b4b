"""keep_freed_host_memory: once the heap has grown to a step's needs, later steps allocate without page faults."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Four 40 MiB tensors alive at once, as a step's activations are: each is above glibc's largest mmap
# threshold (32 MiB), so by default every step maps and faults them afresh (4 x 10240 pages of 4 KiB).
PROBE = textwrap.dedent(
    """
    import resource, sys, torch
    from trd.engine.host_memory import keep_freed_host_memory

    kept = keep_freed_host_memory() if sys.argv[1] == "keep" else False
    def faults_of_one_step():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        tensors = [torch.ones(10 * 2**20) for _ in range(4)]
        del tensors
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(kept, *[faults_of_one_step() for _ in range(6)])
    """
)


def _probe(mode: str) -> tuple[str, list[int]]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    kept, *faults = out.stdout.split()[-7:]
    return kept, [int(f) for f in faults]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_kept_heap_serves_later_steps_without_page_faults():
    kept, faults_kept = _probe("keep")
    _, faults_default = _probe("release")
    assert kept == "True"
    assert faults_default[-1] > 30_000, faults_default  # the default faults every step's tensors in again
    assert faults_kept[-1] < 1_000, faults_kept


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_keeping_twice_is_harmless():
    script = "from trd.engine.host_memory import keep_freed_host_memory as k; print(k(), k())"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["True", "True"]
