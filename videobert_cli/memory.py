"""Giving freed heap memory back to the operating system (glibc only)."""

from __future__ import annotations

import ctypes
from typing import Callable

_malloc_trim: Callable[[int], int] | None | bool = None


def release_freed_memory() -> None:
    """Return the free pages of every malloc heap to the OS (``malloc_trim(0)``); a no-op
    where the C library is not glibc.

    Large buffers that are allocated and freed over and over (a model's activations, decoded
    frames, pickled chunks) come from glibc's heaps once its mmap threshold has adapted to
    them; freed, they stay resident, and a long run's peak RSS keeps creeping up with the
    fragmentation of those heaps. Measured cost: none within the noise per model batch
    (``docs/benchmarks.md``).
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)
