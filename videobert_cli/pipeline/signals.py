"""Graceful stop: the first Ctrl-C/SIGTERM finishes the current video, the second stops at once."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class StopFlag:
    """Set by the first signal; checked by the runner between videos."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def set(self, name: str = "stop") -> None:
        self.signal_name = name
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@contextmanager
def graceful_signals(flag: StopFlag, on_first=None):
    """Install SIGINT/SIGTERM handlers for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum, frame):
        name = signal.Signals(signum).name
        if flag.is_set():
            raise KeyboardInterrupt(name)
        flag.set(name)
        if on_first is not None:
            on_first(name)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
