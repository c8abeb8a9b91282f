"""The batch runner behind ``videobert run``: one HDF5 file per video, unattended-safe.

Guarantees (see README "Batch runs"): one bad input never stops the batch; every input gets a
record in ``OUT_DIR/manifest.jsonl``; outputs appear atomically; a re-run skips inputs whose
output is complete and was made from the same input with the same configuration; one run per
output directory at a time; Ctrl-C/SIGTERM stop after the current video.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import threading
import time
import traceback
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Protocol

from videobert_cli import __version__
from videobert_cli.config import PipelineConfig
from videobert_cli.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    OutputError,
    TranscriptError,
    VideoBertError,
    out_of_memory,
)
from videobert_cli.features import SourceInfo
from videobert_cli.hashing import file_sha256
from videobert_cli.pipeline.inputs import VideoInput
from videobert_cli.pipeline.lock import OutputLock
from videobert_cli.pipeline.signals import StopFlag, graceful_signals
from videobert_cli.pipeline.timing import StageTimer

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
    """What happened to one input (one line of the manifest)."""

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


class _SilentObserver:
    def on_start(self, total: int) -> None:
        pass

    def on_input_start(self, item: VideoInput) -> None:
        pass

    def on_input_done(self, record: RunRecord) -> None:
        pass

    def on_message(self, message: str) -> None:
        pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def source_info(path: Path, *, with_hash: bool = False) -> SourceInfo:
    """Size, mtime (and optionally sha256) of an input file."""
    stat = path.stat()
    return SourceInfo(
        path=str(path.resolve()),
        size=stat.st_size,
        mtime=stat.st_mtime,
        sha256=file_sha256(path) if with_hash else None,
    )


def _transcript_identity(path: Path | None, *, with_hash: bool = False) -> dict:
    if path is None:
        return {}
    try:
        stat = path.stat()
    except OSError:
        return {"path": str(path)}
    identity = {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}
    if with_hash:
        identity["sha256"] = file_sha256(path)
    return identity


def decide(item: VideoInput, output: Path, config_hash: str, options: RunOptions) -> tuple[bool, str]:
    """Whether ``item`` must be (re)processed, and why; never loads a model."""
    from videobert_cli.store.hdf5 import read_attrs

    if options.force:
        return True, "forced"
    if options.require_transcript and item.transcript is None:
        return True, "no transcript"  # fails as it would in a new output directory
    if not output.exists():
        return True, "new"
    try:
        attrs = read_attrs(output)
    except Exception:
        return True, "unreadable output"
    if not attrs.get("complete"):
        return True, "incomplete output"
    if attrs.get("config_hash") != config_hash:
        return True, "changed configuration"
    try:
        current = source_info(item.path)
    except OSError:
        return True, "new"
    if options.verify_hash:
        stored = attrs.get("source_sha256")
        if not stored:
            return True, "no content hash stored (made without --verify-hash)"
        if stored != file_sha256(item.path):
            return True, "changed input (content hash)"
    elif attrs.get("source_size") != current.size or not math.isclose(
        float(attrs.get("source_mtime", -1.0)), current.mtime, abs_tol=1e-6
    ):
        return True, "changed input"
    # the transcript is judged like the video, by its content, not by where it is: a dataset
    # copied elsewhere with its times kept (cp -a, rsync -a) is not redone
    stored_transcript = attrs.get("transcript_source") or {}
    if bool(stored_transcript) != (item.transcript is not None):
        return True, "transcript added or removed"
    if item.transcript is None:
        return False, "up to date"
    if options.verify_hash:
        stored = stored_transcript.get("sha256")
        if not stored:
            return True, "no transcript content hash stored (made without --verify-hash)"
        try:
            if stored != file_sha256(item.transcript):
                return True, "changed transcript (content hash)"
        except OSError:
            return True, "changed transcript"
        return False, "up to date"
    current_transcript = _transcript_identity(item.transcript)
    if stored_transcript.get("size") != current_transcript.get("size") or not math.isclose(
        float(stored_transcript.get("mtime", -1.0)), current_transcript.get("mtime", -2.0), abs_tol=1e-6
    ):
        return True, "changed transcript"
    return False, "up to date"


def _load_run_vocab(path: str | None):
    """The vocabulary of ``run --vocab`` (a bad file is a configuration error: exit 2)."""
    if not path:
        return None
    from videobert_cli.errors import ConfigError, FeatureFileError
    from videobert_cli.vocab import load_vocab

    try:
        return load_vocab(path)
    except FeatureFileError as error:
        raise ConfigError(error.message, path=error.path, hint=error.hint) from error


def _input_fingerprint(path: Path) -> dict:
    try:
        stat = path.stat()
    except OSError:
        return {}
    return {"size": stat.st_size, "mtime": stat.st_mtime}


class _Manifest:
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


def record_unstarted(manifest: _Manifest, report: RunReport,
                     plan: Iterable[tuple[VideoInput, Path, bool, str]]) -> None:
    """After a stop request: a record for each input of ``plan`` (item, output, needed,
    decision) that has none - "pending" if it needed work, else "skipped" - so the summary
    counts what the next run has left to do."""
    recorded = {record.input for record in report.records}
    for item, output, needed, why in plan:
        if str(item.path) in recorded:
            continue
        record = RunRecord(input=str(item.path), output=str(output), status=STATUS_PENDING if needed else STATUS_SKIPPED,
                           decision=why, message="not started: the run was stopped" if needed else "",
                           transcript=str(item.transcript) if item.transcript else None)
        manifest.write(record)
        report.records.append(record)


def record_input(manifest: _Manifest, report: RunReport, observer: RunObserver, record: RunRecord) -> None:
    """An input is done: its manifest line, its place in the report, and the observer told."""
    manifest.write(record)
    report.records.append(record)
    observer.on_input_done(record)


def _ensure_output_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError("output path exists and is not a directory", path=out_dir, hint="give -o a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory: {exc.strerror}", path=out_dir) from exc
    if not out_dir.is_dir():
        raise OutputError("output path exists and is not a directory", path=out_dir)
    probe = out_dir / f".videobert-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"output directory is not writable: {exc.strerror}",
            path=out_dir,
            hint="choose another -o directory or fix its permissions/free space",
        ) from exc


def _safe_output_path(out_dir: Path, name: str) -> Path:
    output = (out_dir / name).resolve()
    root = out_dir.resolve()
    if root != output and root not in output.parents:
        raise OutputError(f"refusing to write outside the output directory: {name}", path=out_dir)
    return out_dir / name


def _clean_stale_temps(out_dir: Path) -> int:
    from videobert_cli.store.hdf5 import clean_stale_temp_files

    removed = 0
    for current, dirnames, _ in os.walk(out_dir):
        removed += clean_stale_temp_files(current)
    return removed


class Pipeline:
    """The three stages, loaded lazily and once (a run with nothing to do loads no model)."""

    def __init__(self, config: PipelineConfig, vocab=None):
        self.config = config
        self.vocab = vocab  # a loaded videobert_cli.vocab.Vocabulary, or None
        self._video = self._text = self._fusion = None

    @property
    def video(self):
        if self._video is None:
            from videobert_cli.pipeline.stages import VideoStage

            self._video = VideoStage(self.config)
        return self._video

    @property
    def text(self):
        if self._text is None:
            from videobert_cli.pipeline.stages import TextStage

            self._text = TextStage(self.config)
        return self._text

    @property
    def fusion(self):
        if self._fusion is None:
            from videobert_cli.pipeline.stages import FusionStage

            self._fusion = FusionStage(
                self.config,
                video_dim=self.video.feature_dim,
                text_dim=self.text.feature_dim,
                video_model=self.video.model.name,
                text_model=self.text.model.name,
                video_weights=self.video.model.weights_sha256 or None,
                text_weights=self.text.model.weights_sha256 or None,
            )
        return self._fusion

    def identities(self) -> dict:
        return {
            "video": self.video.identity(),
            "text": self.text.identity(),
            "fusion": {k: v for k, v in self.fusion.attrs.items() if k != "checkpoint_metadata"},
        }


def _failure(record: RunRecord, error: BaseException) -> None:
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


class _Encoded:
    """A video encoded on its own (clip models): complete from the start."""

    complete = True

    def __init__(self, features):
        self._features = features

    def result(self):
        return self._features


@dataclass
class _EncodedVideo:
    """A video whose frames are decoded, waiting for its last ones to be encoded."""

    item: VideoInput
    output: Path
    record: RunRecord
    timer: StageTimer
    started: float
    info: object
    pending: object  # stages.PendingVideo or _Encoded
    transcript: object

    def close_record(self) -> None:
        self.record.seconds = round(time.perf_counter() - self.started, 4)
        self.record.timings = self.timer.as_dict()


class _WriteBehind:
    """Feature files written in a background thread, one after the other, at most ``depth``
    waiting.

    Writing (HDF5, compression, ``--verify-hash``) then overlaps with the next videos' decoding
    and encoding instead of adding to it. ``drain`` waits for the writes and calls their
    ``done(error)`` callbacks in the caller's thread, in order, so records keep the input order.
    """

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self._pending: deque = deque()  # [thread, done, error]

    def start(self, write: Callable[[], None], done: Callable[[BaseException | None], None]) -> None:
        """Write in the background after the writes already started; wait if ``depth`` are pending."""
        while len(self._pending) >= self.depth:
            self._finish_oldest()
        entry = [None, done, None]
        previous = self._pending[-1][0] if self._pending else None

        def run() -> None:
            if previous is not None:
                previous.join()  # files are written in input order
            try:
                write()
            except BaseException as error:  # handed to done() in the caller's thread
                entry[2] = error

        entry[0] = threading.Thread(target=run, name="videobert-writer", daemon=True)
        entry[0].start()
        self._pending.append(entry)

    def drain(self) -> None:
        """Wait for every write started, calling each ``done`` in turn (which may raise)."""
        while self._pending:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        thread, done, _ = self._pending[0]
        thread.join()
        _, done, error = self._pending.popleft()
        done(error)


def run_batch(
    inputs: list[VideoInput],
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    options: RunOptions | None = None,
    *,
    observer: RunObserver | None = None,
    stop: StopFlag | None = None,
    decode: Callable | None = None,
) -> RunReport:
    """Process ``inputs`` into ``out_dir``; see the module docstring for the guarantees.

    ``decode`` replaces the worker's decode function (a module-level callable; tests use it to
    simulate hanging decoders).
    """
    from videobert_cli.pipeline.decode_worker import DecodeWorker, decoder_niceness, default_decode
    from videobert_cli.pipeline.stages import SharedBatches

    config = config or PipelineConfig()
    options = options or RunOptions()
    observer = observer or _SilentObserver()
    stop = stop or StopFlag()
    out_dir = Path(out_dir)
    report = RunReport(output_dir=str(out_dir), started_at=_now(), dry_run=options.dry_run)
    started = time.perf_counter()
    vocab = _load_run_vocab(options.vocab)
    config_hash = config.fingerprint(identities={"vocab_sha256": vocab.sha256} if vocab is not None else None)

    _ensure_output_dir(out_dir)
    with OutputLock(out_dir, wait=options.wait_lock):
        removed = _clean_stale_temps(out_dir)
        if removed:
            observer.on_message(f"removed {removed} temporary file(s) left by an interrupted run")
        plan = []
        for item in inputs:
            output = _safe_output_path(out_dir, item.output_name)
            needed, why = decide(item, output, config_hash, options)
            plan.append((item, output, needed, why))

        if options.dry_run:
            for item, output, needed, why in plan:
                report.records.append(
                    RunRecord(
                        input=str(item.path),
                        output=str(output),
                        status=STATUS_PENDING if needed else STATUS_SKIPPED,
                        decision=why,
                        transcript=str(item.transcript) if item.transcript else None,
                    )
                )
            report.finished_at = _now()
            report.seconds = time.perf_counter() - started
            return report

        pipeline = Pipeline(config, vocab)
        if any(entry[2] for entry in plan):
            # load every model before the first video: a missing model fails the run before
            # anything is written, and per-video timings measure work, not loading
            observer.on_message("loading models")
            pipeline.fusion
            if vocab is not None:
                from videobert_cli.vocab import check_compatible

                check_compatible(pipeline.video.identity(), pipeline.video.feature_dim, vocab)
        manifest = _Manifest(out_dir / MANIFEST_NAME)
        manifest.write({"type": "run", "started_at": report.started_at, "tool_version": __version__,
                        "config_hash": config_hash, "inputs": len(plan), "pid": os.getpid()})
        observer.on_start(len(plan))
        worker = DecodeWorker(timeout=options.timeout, decode=decode or default_decode,
                              niceness=decoder_niceness(pipeline.video.device))
        writer = _WriteBehind()
        todo = [entry for entry in plan if entry[2]]
        submitted: dict[int, object] = {}

        def submit(position: int) -> None:
            if position < len(todo) and position not in submitted:
                item = todo[position][0]
                submitted[position] = worker.submit(
                    str(item.path), pipeline.video.decode_config, pipeline.video.model.preprocessing, options.chunk_frames
                )

        # Cross-video batching: a video's last frames wait in `batches` for the next video's
        # first ones, so short videos fill the model's batches together. A video is finished
        # (text, fusion, file) once its frames are all encoded; records keep the input order.
        batches = SharedBatches(pipeline.video) if pipeline.video.model.kind != "clip" else None
        waiting: list[_EncodedVideo] = []

        def hand_over(video: _EncodedVideo) -> None:
            """Finish a video whose frames are all encoded; its file is written in the background."""
            try:
                job = VideoJob(video.item, video.output, pipeline, config, options, video.record, video.timer,
                               config_hash)
                write = finish_video(job, video.info, video.pending.result(), video.transcript, defer_write=True)
            except Exception as error:
                _failure(video.record, error)
                video.close_record()
                writer.drain()
                record_input(manifest, report, observer, video.record)
                if isinstance(error, OutputError):
                    raise
                return
            writer.start(write, lambda error, v=video: written(v, error))

        def hand_over_ready(*, flush: bool) -> None:
            """Finish the waiting videos that are complete, in order (``flush``: all of them,
            encoding what is still queued first)."""
            if flush and waiting and batches is not None:
                # a model error lands on the videos concerned; hand_over records it
                batches.flush()
            while waiting and waiting[0].pending.complete:
                hand_over(waiting.pop(0))

        def finish(record: RunRecord) -> None:
            """Record one input; the earlier inputs (their encoding and files) come first."""
            hand_over_ready(flush=True)
            writer.drain()
            record_input(manifest, report, observer, record)

        def written(video: _EncodedVideo, error: BaseException | None) -> None:
            """Called by ``writer.drain`` once an input's file is written (or failed to be)."""
            if error is not None:
                _failure(video.record, error)
            else:
                video.record.status = STATUS_OK
            video.close_record()
            record_input(manifest, report, observer, video.record)
            if isinstance(error, OutputError):
                raise error  # out of space or read-only: later videos would fail the same way

        try:
            with graceful_signals(stop, on_first=lambda name: observer.on_message(
                f"{name}: finishing the current video, then stopping (again to stop now)")):
                position = 0
                for item, output, needed, why in plan:
                    if stop.is_set():
                        report.interrupted = True
                        break
                    record = RunRecord(
                        input=str(item.path),
                        output=str(output),
                        status=STATUS_SKIPPED,
                        decision=why,
                        transcript=str(item.transcript) if item.transcript else None,
                        fingerprint=_input_fingerprint(item.path),
                    )
                    observer.on_input_start(item)
                    if not needed:
                        finish(record)
                        continue
                    item_started = time.perf_counter()
                    timer = StageTimer()
                    this_position = position
                    position += 1

                    def get_job(p=this_position):
                        submit(p)
                        return submitted.pop(p)

                    try:
                        decode_timings: dict = {}
                        transcript = load_transcript(item, options, record)
                        info, chunks = worker.stream(get_job(), timings=decode_timings,
                                                     on_done=lambda next_position=position: submit(next_position))
                        if batches is None:  # clip models: whole clips, one video at a time
                            pending = _Encoded(pipeline.video.encode_chunks(info, chunks, timer, path=str(item.path)))
                        else:
                            pending = pipeline.video.stream_into(batches, info, chunks, timer, path=str(item.path))
                        for stage, seconds in decode_timings.items():
                            timer.add(stage, seconds)
                    except KeyboardInterrupt:
                        raise
                    except Exception as error:  # one input's failure is recorded, the batch goes on
                        _failure(record, error)
                        if worker.has_pending():
                            # a half-consumed job would feed stale frames to the next video
                            worker.abandon()
                            submitted.clear()
                        record.seconds = round(time.perf_counter() - item_started, 4)
                        record.timings = timer.as_dict()
                        finish(record)
                        if isinstance(error, OutputError):
                            raise  # out of space or read-only: later videos would fail the same way
                        continue
                    # finished (and written, in the background) as soon as its last frames
                    # are encoded, which may be in the next video's first batch
                    waiting.append(_EncodedVideo(item, output, record, timer, item_started, info, pending, transcript))
                    hand_over_ready(flush=False)
                hand_over_ready(flush=True)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            try:
                writer.drain()  # a file being written is finished, not dropped
            except KeyboardInterrupt:
                report.interrupted = True
            finally:
                worker.close()
                if report.interrupted:
                    record_unstarted(manifest, report, plan)
                report.finished_at = _now()
                report.seconds = time.perf_counter() - started
                manifest.write({"type": "summary", **report.summary()})
                manifest.close()
    return report


def record_and_dispatch(
    out_dir: Path,
    plan: list,
    report: RunReport,
    observer: RunObserver,
    stop: StopFlag,
    started: float,
    run_fields: dict,
    attach: Callable[[_Manifest], None],
    run_tasks: Callable[[list], bool],
    on_second_signal: Callable[[], None] | None = None,
) -> None:
    """The manifest side shared by the engines that hand videos to workers (devices, Ray).

    Writes the run line (``run_fields`` added; its ``config_hash`` keeps the place it has in
    every engine's run line), records the up-to-date inputs of ``plan``
    (``(task, needed)`` pairs whose tasks have ``.item`` and ``.record()``) at once, then calls
    ``run_tasks(needed tasks)`` - which returns whether a stop request interrupted it - under
    graceful signals, and always writes the summary. ``attach(manifest)`` hands the manifest to
    the driver before any task runs; ``on_second_signal`` runs when a second signal stops the run.
    """
    tasks = [task for task, needed in plan if needed]
    manifest = _Manifest(out_dir / MANIFEST_NAME)
    manifest.write({"type": "run", "started_at": report.started_at, "tool_version": __version__,
                    "config_hash": run_fields["config_hash"], "inputs": len(plan), "pid": os.getpid(),
                    **run_fields})
    attach(manifest)
    observer.on_start(len(plan))
    try:
        with graceful_signals(stop, on_first=lambda name: observer.on_message(
                f"{name}: finishing the videos in progress, then stopping (again to stop now)")):
            for task, needed in plan:  # up to date: recorded at once
                if needed:
                    continue
                observer.on_input_start(task.item)
                record_input(manifest, report, observer, task.record())
            if tasks:
                report.interrupted = run_tasks(tasks)
    except KeyboardInterrupt:
        report.interrupted = True
        if on_second_signal is not None:
            on_second_signal()
    finally:
        if report.interrupted:
            record_unstarted(manifest, report, [(task.item, task.output, needed, task.why) for task, needed in plan])
        report.finished_at = _now()
        report.seconds = time.perf_counter() - started
        manifest.write({"type": "summary", **report.summary()})
        manifest.close()


def load_transcript(item: VideoInput, options: RunOptions, record: RunRecord):
    """The item's parsed transcript, or None (video-only); warnings go to the record."""
    from videobert_cli.text.transcripts import parse_transcript

    transcript = None
    if item.transcript is not None:
        transcript = parse_transcript(item.transcript)
        record.warnings.extend(transcript.warnings)
        if not transcript.cues:
            record.warnings.append(f"{item.transcript}: transcript has no text; video only")
            transcript = None
    elif options.require_transcript:
        raise TranscriptError("no transcript with the same stem", path=item.path,
                              hint="pass --transcripts DIR or drop --require-transcript")
    else:
        record.warnings.append("no transcript found; video features only")
    return transcript


@dataclass(frozen=True)
class VideoJob:
    """One video of a run with the run's settings: what every engine hands to
    :func:`process_video` (and the local engine to :func:`finish_video`)."""

    item: VideoInput
    output: Path
    pipeline: Pipeline
    config: PipelineConfig
    options: RunOptions
    record: RunRecord
    timer: StageTimer
    config_hash: str


def process_video(
    job: VideoJob, open_stream: Callable[[], tuple], *, defer_write: bool = False
) -> Callable[[], None] | None:
    """Everything after decoding for one video, shared by every engine.

    ``open_stream()`` returns ``(VideoInfo, iterator of CropChunk)`` - from the local decode
    worker, a Ray decode task, or in-process decoding. Raises on failure; the caller records it.
    With ``defer_write`` the file is not written here: the function that writes it is returned
    (the local engine runs it in the background while the next video is encoded).
    """
    transcript = load_transcript(job.item, job.options, job.record)
    info, chunks = open_stream()
    video = job.pipeline.video.encode_chunks(info, chunks, job.timer, path=str(job.item.path))
    return finish_video(job, info, video, transcript, defer_write=defer_write)


def finish_video(job: VideoJob, info, video, transcript, *, defer_write: bool = False) -> Callable[[], None] | None:
    """The rest of :func:`process_video` once the video's features are encoded: visual words,
    text features, fusion and the file (written now, or returned to be written later)."""
    from videobert_cli.store.hdf5 import write_feature_file

    item, output, pipeline, config, options = job.item, job.output, job.pipeline, job.config, job.options
    record, timer, config_hash = job.record, job.timer, job.config_hash

    if info.timestamps_source != "decoder":
        record.warnings.append(f"frame times from the {info.timestamps_source}")
    if info.decoder_note:
        record.warnings.append(info.decoder_note)
    if pipeline.vocab is not None and len(video):
        from videobert_cli.vocab import assign_words, word_attrs

        with timer.stage("vocab"):
            # words of the features as stored, so `vocab assign` on the file gives the same ids
            stored = video.features.astype(config.output.dtype).astype(np.float32)
            video.extra["word_ids"], video.extra["word_paths"] = assign_words(stored, pipeline.vocab)
            video.attrs.update(word_attrs(pipeline.vocab))
    text = pipeline.text.extract(transcript, timer) if transcript is not None else None
    fused = pipeline.fusion.fuse(video, text, timer)
    segments = None
    if config.fusion.align == "sentences":
        if text is None:
            record.warnings.append("--align sentences: no transcript, no segments")
        else:
            segments = pipeline.fusion.fuse_segments(video, text, timer)
            if segments is None:
                record.warnings.append("--align sentences: no cue could be aligned (untimed or outside the video)")
    record.frames = len(video)
    record.tokens = len(text) if text is not None else 0

    def write() -> None:
        with timer.stage("write"):
            write_feature_file(
                output,
                video=video,
                text=text,
                fused=fused,
                segments=segments,
                source=(source := source_info(item.path, with_hash=options.verify_hash)),
                tool_version=__version__,
                config_hash=config_hash,
                extra_attrs={
                    "transcript_source": _transcript_identity(item.transcript, with_hash=options.verify_hash),
                    "created_by": "videobert run",
                },
                dtype=config.output.dtype,
                compression=config.output.compression,
            )
        if source.sha256:
            record.fingerprint["sha256"] = source.sha256

    if defer_write:
        return write
    write()
    return None
