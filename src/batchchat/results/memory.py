"""Memory a run has freed, given back to the operating system.

glibc's ``malloc`` keeps freed memory in its heap for later allocations rather than giving
it back. Folding a journal into a Parquet part allocates and frees tens of MB of Arrow
buffers (Arrow's memory comes from the system allocator in ``batchchat run``), and glibc
kept them for the rest of the run: a 1M-row run held 172 MB while sending until its first
part was folded, and ~195 MB from then on. ``malloc_trim(0)`` returns every wholly free
page of the heap (the heap's top, and since glibc 2.8 free pages inside it) and costs about
a millisecond; Dask's workers do the same. Where there is no glibc (macOS, musl) this does
nothing: those allocators return memory on their own terms.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


def release_freed_memory() -> None:
    """Give the pages the C heap holds free back to the operating system (glibc only)."""
    trim = malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    return function
