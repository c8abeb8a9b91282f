"""Decode functions that misbehave like real broken decoders (or report on the decode process)
for the batch runner's worker, and hooks that make a device worker of the local engine die or
fail mid-video.

They live in their own importable module because the decode worker and the device workers are
processes started from a fork server that import their targets by name.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from videobert_cli.pipeline.decode_worker import CPU_DECODER_NICENESS, default_decode


def hang_on_marked_files(job, emit) -> None:
    """Hang forever (as decord's get_batch does on some files) for files named ``hang*``."""
    if Path(job.path).name.startswith("hang"):
        while True:
            time.sleep(1)
    default_decode(job, emit)


def crash_on_marked_files(job, emit) -> None:
    """Die of SIGSEGV (as decord does on some corrupt files) for files named ``crash*``."""
    if Path(job.path).name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    default_decode(job, emit)


def slow_frames(job, emit) -> None:
    """Decode normally but slowly (0.3 s per chunk), so a test can interrupt a run mid-way."""
    def slow_emit(message):
        if message[0] == "chunk":
            time.sleep(0.3)
        emit(message)

    default_decode(job, slow_emit)


def record_thread_niceness(job, emit) -> None:
    """Decode normally; when the first chunk is ready, write the niceness of every thread of
    the decode process to ``<video>.niceness`` (one per line)."""
    recorded = []

    def recording_emit(message):
        if message[0] == "chunk" and not recorded:
            for task in Path("/proc/self/task").iterdir():
                try:
                    recorded.append(thread_niceness(task))
                except (FileNotFoundError, ProcessLookupError):
                    pass  # a short-lived thread (e.g. a conversion thread) ended meanwhile
            Path(job.path + ".niceness").write_text("\n".join(map(str, recorded)))
        emit(message)

    default_decode(job, recording_emit)


def record_new_imports(job, emit) -> None:
    """Decode normally; write the modules that decoding imported to ``<video>.imports``."""
    before = set(sys.modules)
    default_decode(job, emit)
    Path(job.path + ".imports").write_text("\n".join(sorted(set(sys.modules) - before)))


def record_loaded_modules(job, emit) -> None:
    """Decode normally; write every module this process holds afterwards to ``<video>.modules``."""
    default_decode(job, emit)
    Path(job.path + ".modules").write_text("\n".join(sorted(sys.modules)))


def recorded_modules(video: Path) -> list[str]:
    """What :func:`record_loaded_modules` wrote for ``video``."""
    return Path(str(video) + ".modules").read_text().split()


def recorded_imports(video: Path) -> list[str]:
    """What :func:`record_new_imports` wrote for ``video``."""
    return Path(str(video) + ".imports").read_text().split()


def thread_niceness(task: Path) -> int:
    """The niceness of one thread, from its ``/proc/<pid>/task/<tid>/stat`` (field 19)."""
    return int(_stat_fields(task / "stat")[16])


def lowered_niceness() -> int:
    """The niceness a decode worker started from this process has for a CPU model."""
    return min(19, os.nice(0) + CPU_DECODER_NICENESS)


def recorded_niceness(video: Path) -> list[int]:
    """What :func:`record_thread_niceness` wrote for ``video``: one niceness per thread."""
    return [int(line) for line in Path(str(video) + ".niceness").read_text().split()]


# --- in a device worker of the local engine (`run --device cpu,cpu`, hook device_worker) ---
def die_in_worker(item) -> None:
    """Mid-video (its decoding has started): the worker process dies of SIGKILL, as by the OOM
    killer, for videos whose name contains ``die``."""
    if "die" in Path(item.path).name:
        os.kill(os.getpid(), signal.SIGKILL)


def disk_full_in_worker(item) -> None:
    """Mid-video: the output filesystem is full, for videos whose name contains ``full``."""
    if "full" in Path(item.path).name:
        from videobert_cli.errors import OutputError

        raise OutputError("no space left on device", path=item.path, hint="free disk space")


# --- watching processes (tests that kill or signal whole runs) ---------------------------------------
def wait_for(predicate, timeout: float = 120.0) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(entry / "stat")[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found.extend(children)
        frontier.extend(children)
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = _stat_fields(Path(f"/proc/{pid}/stat"))[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _stat_fields(stat: Path) -> list[str]:
    """The fields of a ``/proc/.../stat`` file after the command name (field 3, the state, first);
    the name is in parentheses and may itself hold spaces and parentheses."""
    return stat.read_text().rsplit(")", 1)[1].split()
