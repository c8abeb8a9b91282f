"""What a run tells: its options, one record per input, the report and ``manifest.jsonl``.

A :class:`RunRecord` is made in one place, :func:`input_record`; a failure is written into it
by :func:`record_failure` (the reason codes of :mod:`videobert_cli.errors`, out of memory as a
``resource`` failure). The manifest is append-only JSON lines, flushed per record.
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Protocol

from videobert_cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, VideoBertError, out_of_memory
from videobert_cli.pipeline.inputs import VideoInput

MANIFEST_NAME = "manifest.jsonl"

STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
STATUS_FAILED = "failed"
STATUS_PENDING = "pending"  # dry run: would be processed; interrupted run: not started


@dataclass(frozen=True)
class RunOptions:
    """How a batch behaves (what is computed is in :class:`PipelineConfig`)."""

    force: bool = False
    verify_hash: bool = False
    dry_run: bool = False
    timeout: float = 120.0  # seconds the decoder may go without progress
    wait_lock: float = 0.0
    require_transcript: bool = False
    chunk_frames: int = 16
    vocab: str | None = None  # a vocabulary file: also store each row's visual word


@dataclass
class RunRecord:
    """What happened to one input (one line of the manifest); made by :func:`input_record`."""

    input: str
    output: str
    status: str
    decision: str = ""  # new / changed input / changed configuration / incomplete / up to date / forced
    reason: str = ""  # machine-readable failure class (errors.VideoBertError.reason)
    message: str = ""
    transcript: str | None = None
    frames: int = 0
    tokens: int = 0
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    fingerprint: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"type": "input", **asdict(self)}, ensure_ascii=False, default=str)


@dataclass
class RunReport:
    """The outcome of a run: records per input, counts and the exit code."""

    output_dir: str
    records: list[RunRecord] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""
    seconds: float = 0.0
    interrupted: bool = False
    dry_run: bool = False

    def count(self, status: str) -> int:
        return sum(1 for record in self.records if record.status == status)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_SOME_FAILED if self.count(STATUS_FAILED) else EXIT_OK

    def summary(self) -> dict:
        return {
            "output_dir": self.output_dir,
            "total": len(self.records),
            "ok": self.count(STATUS_OK),
            "skipped": self.count(STATUS_SKIPPED),
            "failed": self.count(STATUS_FAILED),
            "pending": self.count(STATUS_PENDING),
            "interrupted": self.interrupted,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "failures": [
                {"input": r.input, "reason": r.reason, "message": r.message}
                for r in self.records
                if r.status == STATUS_FAILED
            ],
        }


class RunObserver(Protocol):
    """Progress callbacks (the CLI draws a progress bar with them; the core draws nothing)."""

    def on_start(self, total: int) -> None: ...
    def on_input_start(self, item: VideoInput) -> None: ...
    def on_input_done(self, record: RunRecord) -> None: ...
    def on_message(self, message: str) -> None: ...


class SilentObserver:
    """An observer that ignores everything (the default)."""

    def on_start(self, total: int) -> None:
        pass

    def on_input_start(self, item: VideoInput) -> None:
        pass

    def on_input_done(self, record: RunRecord) -> None:
        pass

    def on_message(self, message: str) -> None:
        pass


def now() -> str:
    """The current UTC time as the manifest writes it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def input_fingerprint(path: Path) -> dict:
    """Size and mtime of an input as the run found it ({} if it cannot be read)."""
    try:
        stat = path.stat()
    except OSError:
        return {}
    return {"size": stat.st_size, "mtime": stat.st_mtime}


def input_record(item: VideoInput, output: Path, decision: str, *, status: str = STATUS_SKIPPED,
                 message: str = "", fingerprint: bool = True) -> RunRecord:
    """The record of one input: every record of a run is made here (``fingerprint``: with the
    input's size and mtime, as every input that the run looked at has)."""
    return RunRecord(
        input=str(item.path),
        output=str(output),
        status=status,
        decision=decision,
        message=message,
        transcript=str(item.transcript) if item.transcript else None,
        fingerprint=input_fingerprint(item.path) if fingerprint else {},
    )


def record_failure(record: RunRecord, error: BaseException) -> None:
    """Mark ``record`` failed by ``error``: its reason code, out of memory as a ``resource``
    failure, anything unexpected as ``internal`` with where it was raised."""
    record.status = STATUS_FAILED
    if isinstance(error, VideoBertError):
        record.reason = error.reason
        record.message = str(error)
    elif (memory_error := out_of_memory(error, record.input)) is not None:
        record.reason = memory_error.reason
        record.message = str(memory_error)
    else:
        record.reason = "internal"
        last = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        where = f" at {Path(last.filename).name}:{last.lineno}" if last else ""
        record.message = f"{record.input}: unexpected {error.__class__.__name__}: {str(error)[:200]}{where}"


def failed_record(item: VideoInput, output: Path, decision: str, reason: str, message: str,
                  seconds: float = 0.0) -> RunRecord:
    """A record failed for a reason the engine found itself (a lost worker, a watchdog)."""
    record = input_record(item, output, decision)
    record.status = STATUS_FAILED
    record.reason = reason
    record.message = message
    record.seconds = round(seconds, 4)
    return record


class Manifest:
    """Append-only JSON lines, flushed per record so a killed run still tells what it did."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = open(path, "w", encoding="utf-8")

    def write(self, record: dict | RunRecord) -> None:
        line = record.to_json() if isinstance(record, RunRecord) else json.dumps(record, default=str)
        self._handle.write(line + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def record_input(manifest: Manifest, report: RunReport, observer: RunObserver, record: RunRecord) -> None:
    """An input is done: its manifest line, its place in the report, and the observer told."""
    manifest.write(record)
    report.records.append(record)
    observer.on_input_done(record)


def record_unstarted(manifest: Manifest, report: RunReport, plan: Iterable) -> None:
    """After a stop request: a record for each planned input (``.item``, ``.output``,
    ``.needed``, ``.why``) that has none - "pending" if it needed work, else "skipped" - so the
    summary counts what the next run has left to do."""
    recorded = {record.input for record in report.records}
    for video in plan:
        if str(video.item.path) in recorded:
            continue
        record = input_record(video.item, video.output, video.why,
                              status=STATUS_PENDING if video.needed else STATUS_SKIPPED,
                              message="not started: the run was stopped" if video.needed else "", fingerprint=False)
        manifest.write(record)
        report.records.append(record)
