"""Hand the allocator's free memory back to the operating system during long runs.

glibc's malloc keeps freed memory in its heaps for reuse. The front end frees ~1.3 GB of temporaries per
2**19-sample buffer, in many sizes, and over hours of audio the free holes it keeps grow the process.
``malloc_trim`` returns the free pages; it walks the heaps, so it is called every few minutes of audio, not
per buffer. Elsewhere than glibc this is a no-op. (Memory against file length: the README's performance
section, from ``benchmarks/bench_detect.py``.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None


def release_free_memory() -> bool:
    """Return the heap's free pages to the system (glibc ``malloc_trim(0)``).

    Returns
    -------
    bool
        True where glibc's ``malloc_trim`` exists and was called, False where it does not exist.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
