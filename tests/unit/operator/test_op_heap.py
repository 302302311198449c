"""After a burst, the operator hands the heap's free pages back (glibc), so its RSS follows what it
holds. In a child process: the test's own interpreter has a heap of its own history."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHILD = r"""
import ctypes, json
from pathlib import Path
from ttsfleet.operator import heap

def rss_kib():
    status = Path("/proc/self/status").read_text()
    return int(next(l for l in status.splitlines() if l.startswith("VmRSS:")).split()[1])

heap.few_arenas()
# A burst of many small objects (as a busy pass makes), freed except every 64th one, which keeps
# the heap's top in use: glibc's automatic trimming only releases a free top, not holes below it.
burst = [bytearray(4000) for _ in range(40_000)]
kept = burst[::64]
del burst
before = rss_kib()
heap.release_free_memory()
print(json.dumps({"before": before, "after": rss_kib(), "kept": len(kept)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_free_pages_of_a_burst_go_back_to_the_kernel() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], check=True, capture_output=True, text=True).stdout
    figures = json.loads(out)
    # 40,000 objects of 4 kB were freed but for one in 64: most of ~160 MB must leave the process.
    assert figures["before"] - figures["after"] > 100_000, figures
