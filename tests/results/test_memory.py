"""Freed memory given back: the call is there on glibc and harmless everywhere."""

from __future__ import annotations

import ctypes
import platform
import sys

import pytest

from batchchat.results.memory import malloc_trim, release_freed_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_on_glibc_the_heap_is_trimmed() -> None:
    trim = malloc_trim()
    assert trim is not None
    # freed blocks larger than a page make free pages that a trim can return (1) or not (0)
    blocks = [ctypes.create_string_buffer(64 << 10) for _ in range(256)]
    del blocks
    assert trim(0) in (0, 1)


def test_giving_memory_back_never_fails() -> None:
    release_freed_memory()
    release_freed_memory()
