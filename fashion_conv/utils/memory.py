"""``keep_freed_memory``: stop glibc from giving each step's large buffers back to the kernel and faulting them in again."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest; the default starts at 128 KiB and moves only as mmapped blocks are freed
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # glibc's own ratio when it moves the mmap threshold


def keep_freed_memory() -> bool:
    """Serve buffers below 32 MiB from the heap and keep up to 64 MiB of freed heap, on Linux with glibc.

    By default glibc maps each block above its threshold afresh (and unmaps it when freed), and that threshold only
    rises after such a block is freed. A bf16 cnn step in batches of 256 allocates activations of 12.8 MB, so a
    process either happened to raise the threshold early, and ran its epochs in 4.6-5.2 s, or paged those
    buffers in every step, 8-9 s (issue 18: fit-fast's bimodal speed). True where the settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # another C library (musl): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
