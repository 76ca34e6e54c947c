"""Handing freed memory back to the operating system between the blocks of a long job.

glibc's allocator keeps freed heap memory for reuse: after an export block's frames and score tiles are
freed, the process still holds their pages. :func:`release_free_memory` asks it to return them
(``malloc_trim(0)``), so a block-by-block job's resident memory stays near what its live arrays need. In
the export benchmark (9,583 products' fused top-10) the export's peak growth went from 31-39 MiB to 21-26
MiB with a trim after each block, at no measurable cost in time. Elsewhere (macOS, Windows, musl) it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import Any

__all__ = ["release_free_memory"]


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the allocator's free heap memory to the system; True when it could be asked (glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
