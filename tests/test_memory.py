"""release_freed_memory: malloc_trim on glibc, nothing elsewhere."""

from __future__ import annotations

import ctypes

import pytest

from videobert_cli import memory


def test_release_is_a_no_op_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_glibc(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(memory, "_malloc_trim", None)
    monkeypatch.setattr(ctypes, "CDLL", no_glibc)
    memory.release_freed_memory()
    memory.release_freed_memory()
    assert memory._malloc_trim is False  # looked up once, then remembered


def test_release_calls_malloc_trim_with_no_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda pad: calls.append(pad) or 1)
    memory.release_freed_memory()
    assert calls == [0]
