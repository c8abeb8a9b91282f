"""Atomic small-file writes: a file appears under its final name only when complete."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from videobert_cli.errors import OutputError


def atomic_write_bytes(path: str | Path, blob: bytes, *, what: str = "file") -> None:
    """Write ``blob`` to ``path`` through a fsynced temporary file in the same directory and
    ``os.replace``; the file gets the usual umask-based mode. OSError becomes OutputError."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    tmp_name: str | None = None
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
            tmp.write(blob)
            tmp.flush()
            os.fsync(tmp.fileno())
        # NamedTemporaryFile creates 0600
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise OutputError(
            f"cannot write {what}: {exc.strerror or exc}",
            path=path,
            hint="check that the directory exists, is writable and has free space",
        ) from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
