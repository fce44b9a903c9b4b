"""Keep freed host memory in the process, as CUDA's caching allocator keeps device memory.

PyTorch's CPU tensors come from glibc's malloc, which serves blocks of 32 MiB and more (a ResNet-18
activation at batch 128) with a fresh ``mmap`` and returns them on free, and trims its heap whenever
the top holds more than a few MiB free.  A training step frees and reallocates the same sizes every
step, so on CPU every large tensor costs page faults afresh: measured on a 2-core VM, a ResNet-18
cross-entropy step at batch 128 took 3.34 s with 453k minor faults per step and 2.40 s with 2.7k
with the heap kept (bench/host_memory_probe.py; bench/README.md, "Host memory on CPU").  :func:`keep_freed_host_memory` turns both off for the process, so
that after the first few steps the heap has grown to what a step needs and serves every later
step without a fault; the process's resident memory then stays at that size, as a GPU job's
reserved memory does.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int: the largest trim threshold it can express

_kept = False


def keep_freed_host_memory() -> bool:
    """Serve every allocation from the heap and never trim it; True where glibc took the settings.

    Idempotent; a no-op (False) off Linux or with another C library (musl, or an allocator such as
    jemalloc preloaded, whose mallopt is not glibc's).
    """
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        gnu_get_libc_version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return False
    gnu_get_libc_version.restype = ctypes.c_char_p
    if not gnu_get_libc_version():
        return False
    _kept = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return _kept
