"""One run per output directory at a time (overlapping cron jobs must not collide)."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from videobert_cli.errors import LockedError, OutputError

LOCK_NAME = ".videobert.lock"


class OutputLock:
    """An exclusive ``flock`` on ``OUT_DIR/.videobert.lock``, released when the process dies.

    ``wait`` is how many seconds to wait for another run to finish (0: fail at once with
    :class:`LockedError`). flock locks vanish with their process, so a ``kill -9`` never leaves
    a stale lock behind.
    """

    def __init__(self, directory: str | Path, *, wait: float = 0.0):
        self.path = Path(directory) / LOCK_NAME
        self.wait = wait
        self._fd: int | None = None

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(
                f"cannot create the lock file: {exc.strerror}", path=self.path, hint="check that the output directory is writable"
            ) from exc
        deadline = time.monotonic() + max(self.wait, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = self._holder()
                    os.close(fd)
                    waited = f" (waited {self.wait:g} s)" if self.wait > 0 else ""
                    raise LockedError(
                        f"another videobert run ({holder}) is writing to {self.path.parent}{waited}",
                        hint="wait for it, or pass --wait-lock SECONDS" if self.wait <= 0
                        else "it is still running: try again later or wait longer with --wait-lock",
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
