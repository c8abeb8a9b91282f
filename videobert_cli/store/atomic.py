"""Atomic file writes: a file appears under its final name only when it is complete.

Every file videobert-cli writes for keeps (feature files, vocabularies, the corpus index,
fusion checkpoints and training state, JSON reports) goes through :func:`atomic_replace`: the
file is built under a temporary name in the destination directory,
``.<name>.<tag>-<pid>-<8 hex>`` (``tag`` is ``tmp`` unless the caller says otherwise), fsynced,
renamed over the final name with ``os.replace``, and the directory is fsynced. A reader
therefore sees either the previous complete file or the new complete one, never a partial
file; on any failure the temporary file is removed and the final name is left untouched.

Temporaries left by killed processes are found by :func:`stale_temp_files` (the pid in the name
tells whether their writer still lives) and removed by :func:`clean_stale_temp_files`.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from videobert_cli.errors import OutputError

__all__ = [
    "TEMP_TAG",
    "atomic_replace",
    "atomic_write",
    "clean_stale_temp_files",
    "make_parent",
    "match_temp_name",
    "output_error",
    "stale_temp_files",
    "temp_name_for",
]

#: the tag of ordinary temporary names, ``.<name>.tmp-<pid>-<8 hex>``
TEMP_TAG = "tmp"

_NAME_MAX = 255

# Temp files this process is writing right now: cleaning must never delete them, even with
# older_than_s=0 (a cleanup and a write can run in one process, e.g. from worker threads).
_ACTIVE_TEMPS: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# temporary names
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _temp_re(tag: str) -> re.Pattern[str]:
    return re.compile(
        rf"^\.(?P<name>.+)\.{re.escape(tag)}-(?P<pid>\d+)-(?P<token>[0-9a-f]{{8}})$", re.DOTALL
    )


def match_temp_name(name: str, tag: str = TEMP_TAG) -> re.Match[str] | None:
    """Match a file name against ``.<name>.<tag>-<pid>-<8 hex>``; groups ``name``, ``pid``, ``token``."""
    return _temp_re(tag).match(name)


def temp_name_for(final: str | Path, pid: int | None = None, *, tag: str = TEMP_TAG) -> Path:
    """Return a fresh temporary path next to ``final``, matching the stale-temp pattern."""
    final = Path(final)
    pid = os.getpid() if pid is None else pid
    token = secrets.token_hex(4)
    embed = final.name
    # The final name is only informative inside the temp name; trim it so that long output
    # names do not turn into ENAMETOOLONG.
    while embed and len(os.fsencode(f".{embed}.{tag}-{pid}-{token}")) > _NAME_MAX:
        embed = embed[:-1]
    return final.with_name(f".{embed or 'x'}.{tag}-{pid}-{token}")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OverflowError:
        return False
    return True


def stale_temp_files(directory: str | Path, older_than_s: float = 0, *, tag: str = TEMP_TAG) -> list[Path]:
    """List temp files in ``directory`` left by interrupted writes (not recursive).

    Only names matching ``.<name>.<tag>-<pid>-<8 hex>`` count. A file is stale when its writer
    pid is no longer alive, or when it is at least ``older_than_s`` seconds old (a pid can be
    reused, or belong to another machine on shared storage). Temp files this very process is
    writing right now are never listed. A missing directory yields an empty list.
    """
    directory = Path(directory)
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    now = time.time()
    with _ACTIVE_LOCK:
        active = set(_ACTIVE_TEMPS)
    stale: list[Path] = []
    for entry in entries:
        match = match_temp_name(entry.name, tag)
        if not match:
            continue
        path = directory / entry.name
        if str(path.absolute()) in active:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue  # removed meanwhile
        if not _pid_alive(int(match["pid"])) or age >= older_than_s:
            stale.append(path)
    return sorted(stale)


def clean_stale_temp_files(directory: str | Path, older_than_s: float = 0, *, tag: str = TEMP_TAG) -> int:
    """Remove the files :func:`stale_temp_files` reports; return how many were removed."""
    removed = 0
    for path in stale_temp_files(directory, older_than_s=older_than_s, tag=tag):
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass  # another cleaner got there first
        except OSError as exc:
            raise output_error(exc, path, "cannot remove stale temporary file") from exc
    return removed


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def output_error(exc: OSError, path: Path, action: str) -> OutputError:
    """``OutputError("<action>: <reason>")`` for ``exc``, with a hint for the usual causes."""
    code = exc.errno
    text = str(exc).lower()
    if code == errno.ENOSPC or "no space" in text:
        hint = "free disk space on the output filesystem, or choose another --output"
        what = "no space left on device"
    elif code == errno.EROFS or "read-only file system" in text:
        hint = "the output filesystem is mounted read-only; choose another --output"
        what = "read-only file system"
    elif code in (errno.EACCES, errno.EPERM) or "permission denied" in text:
        hint = "check the permissions of the output directory, or choose another --output"
        what = "permission denied"
    elif code == errno.EDQUOT:
        hint = "the disk quota is exhausted; free space or choose another --output"
        what = "disk quota exceeded"
    elif code == errno.ENOTDIR:
        hint = "a component of the output path is a file; choose another --output"
        what = "not a directory"
    elif code == errno.EISDIR:
        hint = "a directory exists where the feature file should go; remove it or rename"
        what = "destination is a directory"
    else:
        hint = "check that the output directory exists, is writable and has free space"
        what = exc.strerror or str(exc)
    return OutputError(f"{action}: {what}", path=path, hint=hint)


def _file_error(exc: OSError, path: Path, action: str) -> OutputError:
    # the wording of single-file outputs (checkpoints, reports), which have no --output
    return OutputError(
        f"{action}: {exc.strerror or exc}",
        path=path,
        hint="check that the directory exists, is writable and has free space",
    )


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def make_parent(final: Path) -> None:
    """Create the directory ``final`` goes into (and its parents); OutputError when impossible."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, final.parent, "cannot create output directory") from exc


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot fsync a directory; the rename itself is still atomic.
        if not directory or exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_replace(
    final: Path,
    fill: Callable[[Path], None],
    action: str,
    *,
    verify: Callable[[Path], None] | None = None,
    replace_action: str | None = None,
    sync_action: str | None = None,
    tag: str = TEMP_TAG,
    errors: Callable[[OSError, Path, str], OutputError] = output_error,
) -> None:
    """Run ``fill(tmp)`` on a temp path next to ``final``, fsync it, rename it over ``final``.

    ``fill`` creates the file at ``tmp``; ``verify(tmp)``, when given, runs after the fsync and
    may refuse the file by raising. Any failure removes the temp file and leaves ``final`` untouched; an OSError becomes
    ``errors(exc, final, phase)``, by default :func:`output_error`'s "<phase>: <reason>" with a
    hint, where the phase is ``action`` while the file is written, ``replace_action`` while it
    is renamed and ``sync_action`` while the directory is synced (both default to ``action``).
    While it is written the temp file is never reported stale by this process.
    """
    tmp = temp_name_for(final, tag=tag)
    tmp_key = str(tmp.absolute())
    with _ACTIVE_LOCK:
        _ACTIVE_TEMPS.add(tmp_key)
    phase = action
    try:
        fill(tmp)
        _fsync_path(tmp)
        if verify is not None:
            verify(tmp)
        phase = replace_action or action
        os.replace(tmp, final)
        phase = sync_action or action
        _fsync_path(final.parent, directory=True)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass  # best effort; stale_temp_files() will find it later
        if isinstance(exc, OSError):
            raise errors(exc, final, phase) from exc
        raise
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE_TEMPS.discard(tmp_key)


def atomic_write(path: str | Path, blob: bytes, *, what: str | None = None) -> None:
    """Write ``blob`` to ``path`` with :func:`atomic_replace`; the file gets the usual
    umask-based mode. OSError becomes OutputError "cannot write <what>: <reason>" (``what``
    defaults to the file's name)."""
    path = Path(path)

    def fill(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            f.write(blob)

    atomic_replace(path, fill, f"cannot write {what or path.name}", errors=_file_error)


def write_cache_file(path: str | Path, blob: bytes, *, what: str) -> bool:
    """:func:`atomic_write` for a cache entry, creating its folder: an unwritable cache is not an
    error (the entry is only missing next time), so this logs and returns False."""
    try:
        make_parent(Path(path))
        atomic_write(path, blob, what=what)
    except OutputError as error:
        logging.getLogger(__name__).info("%s not written: %s", what, error)
        return False
    return True
