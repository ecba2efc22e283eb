"""fit sets glibc's malloc thresholds, so each step's large buffers are reused, not paged in afresh."""

import subprocess
import sys

import pytest

from fashion_conv.utils.memory import MMAP_THRESHOLD, keep_freed_memory

# In a fresh interpreter: allocate, fill and free a 12.8 MB block (a bf16 cnn step's activations) 20 times; print the
# page faults of the last 19 rounds. Without the settings glibc pages at least one round in afresh (3,125 faults of
# 4 KiB; in a real run, with blocks of many sizes, its moving threshold can keep doing so every step).
ROUNDS = """
import ctypes, resource, sys
from fashion_conv.utils.memory import keep_freed_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def round_trip():
    block = libc.malloc(12_800_000)
    ctypes.memset(block, 1, 12_800_000)
    libc.free(block)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(19):
    round_trip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_buffers_are_reused_not_paged_in_again_after_keep_freed_memory():
    faults = {mode: int(subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True).stdout)
              for mode in ("default", "tuned")}  # fmt: skip
    assert faults["default"] > 3000 and faults["tuned"] < 100, faults
    assert MMAP_THRESHOLD == 32 * 2**20 and keep_freed_memory() is True
