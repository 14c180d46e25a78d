"""Process tuning of the server processes: large buffers come from the reused heap, not fresh mappings."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    from imagebank.runtime import tune_server_process
    tune_server_process()
before = libc.mallinfo2().hblkhd
buffers = [bytes(1 << 20) for _ in range(40)]  # instance-sized buffers, as a WADO-RS retrieve reads them
print((libc.mallinfo2().hblkhd - before) >> 20)
"""


def _mapped_mib(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.system() != "Linux" or not hasattr(ctypes.CDLL(None), "mallinfo2"),
                    reason="glibc (2.33+) only")
def test_server_processes_take_instance_sized_buffers_from_the_heap_not_fresh_mappings() -> None:
    assert _mapped_mib("default") >= 39  # glibc's default: each 1 MiB buffer is its own mmap
    assert _mapped_mib("tuned") == 0
