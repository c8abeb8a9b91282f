"""The Ray engine: decode tasks and long-lived model actors on a Ray cluster.

Who does what
    * The **driver** (the ``videobert run`` process) keeps every guarantee of a run: the
      output-directory lock, the skip/resume decisions (:func:`~videobert_cli.pipeline.runner.decide`),
      ``manifest.jsonl`` (written here, record by record, as results come back), progress callbacks,
      Ctrl-C/SIGTERM, the exit code, per-video timeouts and retries of lost workers.
    * **Model actors** (``--workers N``, ``num_gpus=--gpus-per-worker``) load the pipeline once and
      process one video per call with :func:`~videobert_cli.pipeline.runner.process_video` - the
      very function the local engine uses - writing the video's HDF5 file atomically themselves.
      Outputs of both engines are therefore identical, and either engine resumes the other's runs.
    * **Decode tasks**: for each video the actor starts a Ray streaming-generator task
      (``num_returns="streaming"``) that calls :func:`~videobert_cli.pipeline.stages.decode_crops`
      and yields the video's info, then crop chunks, then its timings. Ray's generator
      backpressure (``_generator_backpressure_num_objects``) pauses a task that is more than
      ``decode_buffer`` chunks ahead of its actor, so memory stays flat whatever the video length.
      While an actor encodes the tail of one video, the decode task of its next video starts.

Failures
    * A decoder that hangs: the actor stops waiting after ``--timeout`` seconds without a chunk
      (or ``timeout + 20 x duration`` in all, as the local engine), kills the decode task and
      reports ``timeout``; a decoder that crashes is reported ``decoder-crash``. The actor lives on.
    * A model actor that stops making progress (no answer to the driver's status calls, or no
      pipeline activity) for ``watchdog`` seconds (default ``max(2 x timeout, timeout + 60)``) is
      killed and restarted by Ray; its video is reported ``timeout``.
    * A model actor (or a decode task's node) that dies: Ray restarts the actor (``max_restarts``)
      and the driver retries the video on a live worker up to ``retries`` times, then reports it
      ``failed`` with reason ``worker-lost``. A video is never silently lost.

Ray is imported only when this engine runs; ``--engine ray`` without Ray is a usage error.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from videobert_cli.config import PipelineConfig
from videobert_cli.errors import (
    DecodeTimeoutError,
    InputError,
    OutputError,
    ResourceError,
    UsageError,
    VideoBertError,
    VideoDecodeError,
)
from videobert_cli.pipeline.inputs import VideoInput
from videobert_cli.pipeline.lock import OutputLock
from videobert_cli.pipeline.runner import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    Pipeline,
    RunObserver,
    RunOptions,
    RunRecord,
    RunReport,
    VideoJob,
    _clean_stale_temps,
    _ensure_output_dir,
    _failure,
    _input_fingerprint,
    _load_run_vocab,
    _Manifest,
    _now,
    _safe_output_path,
    _SilentObserver,
    decide,
    process_video,
    record_and_dispatch,
    record_input,
)
from videobert_cli.pipeline.signals import StopFlag
from videobert_cli.pipeline.timing import StageTimer

INSTALL_HINT = "pip install 'videobert-cli[ray]'"
REASON_WORKER_LOST = "worker-lost"


class WorkerLostError(InputError):
    """The process working on a video (model actor or decode task) was lost: node failure, OOM kill."""

    reason = REASON_WORKER_LOST


def import_ray():
    """The ``ray`` module, or a one-line :class:`UsageError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError("--engine ray needs Ray, which is not installed", hint=INSTALL_HINT) from exc
    return ray


# --- settings ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RaySettings:
    """Options of the Ray engine (``engine_options`` of :func:`videobert_cli.api.run`)."""

    address: str | None = None  # None: RAY_ADDRESS or a new local instance; "auto"; "ray://host:10001"
    workers: int | None = None  # model actors; None: one per GPU group, or per (worker + decode) CPUs
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    cpus_per_decode: float = 1.0
    decode_buffer: int = 4  # chunks a decode task may run ahead of its actor
    prefetch: bool = True  # start the next video's decode task while the current one is encoded
    retries: int = 1  # times a video whose worker was lost is tried again
    max_restarts: int = 4  # Ray restarts of each model actor
    watchdog: float | None = None  # seconds without progress before a model actor is killed
    heartbeat: float = 1.0  # seconds between status calls to a busy actor
    startup_timeout: float = 900.0  # seconds to wait for the first model actor
    schedule_timeout: float = 600.0  # seconds a decode task may wait for a free CPU
    init_options: dict = field(default_factory=dict)  # more ray.init() arguments (library only)
    # test hooks, never command-line flags: called in the actor with the VideoInput before a
    # video is processed, and in the decode task with the path before decoding
    actor_hook: Callable | None = None
    decode_hook: Callable | None = None

    @classmethod
    def from_options(cls, options: dict) -> "RaySettings":
        names = {f.name for f in fields(cls)} - {"actor_hook", "decode_hook"}
        values = {}
        for key, value in options.items():
            if key in ("_actor_hook", "_decode_hook"):
                values[key[1:]] = value
            elif key in names:
                values[key] = value
            else:
                raise UsageError(f"unknown option of the ray engine: {key!r}", hint=f"known: {', '.join(sorted(names))}")
        settings = cls(**values)
        if settings.workers is not None and settings.workers < 1:
            raise UsageError("--workers must be at least 1")
        for name in ("gpus_per_worker", "cpus_per_worker", "cpus_per_decode", "retries", "max_restarts"):
            if getattr(settings, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must not be negative")
        if settings.decode_buffer < 1:
            raise UsageError("decode_buffer must be at least 1")
        return settings

    def watchdog_for(self, options: RunOptions) -> float:
        if self.watchdog is not None:
            return float(self.watchdog)
        return max(2.0 * options.timeout, options.timeout + 60.0)


def _config_for_workers(config: PipelineConfig, settings: RaySettings) -> PipelineConfig:
    """``config`` with the device every model actor uses (``cuda`` when Ray gives each actor
    GPUs, else ``cpu``) and, unless given, as many decoding threads per video as a decode task
    holds CPUs.

    Ray leaves every GPU visible to an actor that asked for none, so ``auto`` there would put
    all actors on cuda:0 unaccounted; deciding here, in the driver, also lets the run's
    fingerprint know the precision ``auto`` stands for (fp16 on GPUs, fp32 on CPUs). The
    local engines' default decoding threads count the machine's cores; Ray hands those out
    itself.
    """
    device = (config.runtime.device or "auto").strip().lower()
    if device == "auto":
        device = "cuda" if settings.gpus_per_worker else "cpu"
    elif device.startswith("cuda") and not settings.gpus_per_worker:
        raise UsageError(
            f"--device {device} with --engine ray needs GPUs for the model workers",
            hint="give --gpus-per-worker 1 (or 0.5 to share a GPU); Ray picks each worker's GPU",
        )
    decode_threads = config.runtime.decode_threads or max(1, int(settings.cpus_per_decode))
    return config.with_(runtime=replace(config.runtime, device=device, decode_threads=decode_threads))


# --- decode task (runs in a Ray worker process) ------------------------------------------------
class _StderrCapture:
    """Route fd 2 (where FFmpeg and decord print) to a temp file for one task, then restore it."""

    def __init__(self) -> None:
        import sys
        import tempfile

        self._saved = None
        self._file = None
        try:
            sys.stderr.flush()
            self._file = tempfile.TemporaryFile(mode="w+b")
            self._saved = os.dup(2)
            os.dup2(self._file.fileno(), 2)
        except OSError:
            self.close()

    def read(self) -> str:
        if self._file is None:
            return ""
        self._file.seek(0)
        return self._file.read()[-4000:].decode("utf-8", "replace")

    def close(self) -> None:
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._saved = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _decode_task(path: str, config: PipelineConfig, preprocessing, chunk_frames: int, cwd: str | None, hook):
    """Yield ``("started", pid)``, ``("info", VideoInfo)``, ``("chunk", indices, times, crops)``...,
    ``("timings", dict)``; or ``("error", InputError)`` - the messages of the local decode worker."""
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)  # relative input paths mean what they meant to the driver
    import torch

    torch.set_num_threads(1)  # resize/crop is light; leave the cores to the encoders
    from videobert_cli.pipeline.decoding import decode_crops

    yield ("started", os.getpid())
    log = _StderrCapture()
    try:
        if hook is not None:
            hook(path)
        timer = StageTimer()
        info, chunks = decode_crops(path, config, preprocessing, chunk_frames=chunk_frames, timer=timer)
        yield ("info", info)
        for chunk in chunks:
            yield ("chunk", chunk.frame_indices, chunk.timestamps, chunk.crops.numpy())
        yield ("timings", timer.as_dict())
    except InputError as error:
        if getattr(error, "raw", None) is not None:
            from videobert_cli.decoders.base import decode_failure

            error = decode_failure(path, error.raw, log.read())
        yield ("error", error)
    except MemoryError:
        yield ("error", ResourceError("out of memory while decoding", path=path, reason="out-of-memory"))
    except Exception as error:  # anything else is still only this video's failure
        from videobert_cli.decoders.base import raised_by_a_decoder

        from_decoder = raised_by_a_decoder(error)
        yield ("error", VideoDecodeError(
            f"{error.__class__.__name__}: {error}"[:300], path=path,
            hint=None if from_decoder else "this is a bug in videobert-cli; please report it",
            reason="corrupt" if from_decoder else "internal"))
    finally:
        log.close()


class _Stall(Exception):
    pass


class _Progress:
    """When the pipeline last did something, as the driver's watchdog sees it."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.watched = False

    def tick(self) -> None:
        self.last = time.monotonic()

    def watch(self, watched: bool) -> None:
        self.watched = watched
        self.last = time.monotonic()

    def idle(self) -> float:
        return time.monotonic() - self.last if self.watched else 0.0


class _ProgressTimer(StageTimer):
    """A StageTimer whose every stage boundary (each encoded batch, text, fuse, write) is progress."""

    def __init__(self, progress: _Progress):
        super().__init__()
        self._progress = progress

    @contextmanager
    def stage(self, name: str):
        self._progress.tick()
        try:
            with super().stage(name):
                yield
        finally:
            self._progress.tick()

    def add(self, name: str, seconds: float) -> None:
        super().add(name, seconds)
        self._progress.tick()


class _DecodeStream:
    """One video's decode task, read with the local engine's stall and total timeouts."""

    def __init__(self, ray, remote, path: str, worker: "ModelWorker"):
        video = worker.pipeline.video
        self.ray = ray
        self.path = path
        self.worker = worker
        self.timeout = worker.options.timeout
        self.gen = remote.remote(path, video.decode_config, video.model.preprocessing, worker.options.chunk_frames,
                                 worker.cwd, worker.settings.decode_hook)
        self.finished = False
        self.on_done: Callable[[], None] | None = None

    def _next(self, limit: float):
        """The next message (None at the end of the stream); :class:`_Stall` after ``limit`` s."""
        ray = self.ray
        ready, _ = ray.wait([self.gen], timeout=max(limit, 0.0))
        if not ready:
            raise _Stall
        try:
            ref = next(self.gen)
        except StopIteration:
            self.finished = True
            return None
        try:
            return ray.get(ref)
        except ray.exceptions.WorkerCrashedError:
            self.finished = True
            raise VideoDecodeError("decoder crashed; the file is probably corrupt", path=self.path,
                                   reason="decoder-crash") from None
        except ray.exceptions.RayTaskError as error:  # a bug in the task body outside its handlers
            self.finished = True
            cause = getattr(error, "cause", None) or error
            raise VideoDecodeError(f"decode task failed: {cause.__class__.__name__}: {cause}"[:300], path=self.path,
                                   reason="internal") from None
        except ray.exceptions.RayError as error:  # node died, object lost, ...
            self.finished = True
            raise WorkerLostError(f"decode task lost ({error.__class__.__name__})", path=self.path) from None

    def _timeout(self, what: str) -> DecodeTimeoutError:
        self.close(force=True)
        return DecodeTimeoutError(
            f"decoder made no progress for {self.timeout:g} s ({what}); stopped",
            path=self.path,
            hint="the file may be damaged; raise --timeout if it is just very slow",
        )

    def _receive(self, deadline: float, what: str):
        try:
            return self._next(min(self.timeout, deadline - time.monotonic()))
        except _Stall:
            raise self._timeout(what) from None

    def open(self, timings: dict):
        """``(VideoInfo, iterator of CropChunk)`` as ``process_video`` expects from ``open_stream``."""
        import numpy as np

        from videobert_cli.pipeline.decoding import CropChunk

        progress = self.worker.progress
        # waiting for a free CPU (and the worker's imports) is not the decoder's fault
        progress.watch(False)
        deadline = time.monotonic() + self.worker.settings.schedule_timeout
        while True:
            try:
                message = self._next(deadline - time.monotonic())
            except _Stall:
                self.close(force=True)
                raise DecodeTimeoutError(
                    f"no CPU became free for its decode task in {self.worker.settings.schedule_timeout:g} s",
                    path=self.path,
                    hint="leave CPUs free for decode tasks besides the model workers (docs/cluster.md)",
                ) from None
            if message is None:
                raise WorkerLostError("decode task ended without output", path=self.path)
            if message[0] == "started":
                break
        progress.watch(True)
        message = self._receive(time.monotonic() + self.timeout, "opening the video")
        if message is None:
            raise WorkerLostError("decode task ended without output", path=self.path)
        if message[0] == "error":
            self.finished = True
            raise message[1]
        info = message[1]
        deadline = time.monotonic() + self.timeout + 20.0 * max(info.duration, 0.0)

        def chunks():
            import torch

            while True:
                message = self._receive(deadline, "decoding frames")
                if message is None:
                    if self.on_done is not None:
                        self.on_done()
                    return
                kind = message[0]
                if kind == "chunk":
                    progress.tick()
                    _, indices, stamps, crops = message
                    if not crops.flags.writeable:  # zero-copy from the object store
                        crops = np.array(crops)
                    yield CropChunk(np.asarray(indices), np.asarray(stamps), torch.from_numpy(crops))
                elif kind == "timings":
                    timings.update(message[1])
                elif kind == "error":
                    self.finished = True
                    raise message[1]

        return info, chunks()

    def close(self, *, force: bool = False) -> None:
        """Stop the task unless it ran to the end (``force`` kills a hung decoder's process)."""
        if not self.finished:
            self.finished = True
            try:
                self.ray.cancel(self.gen, force=force)
            except Exception:
                pass


# --- model actor -------------------------------------------------------------------------------
class ModelWorker:
    """A model actor: loads the pipeline once, then processes one video per :meth:`process` call.

    Runs as a threaded actor (``max_concurrency=2``) so that :meth:`status` answers while a video
    is being processed.
    """

    def __init__(self, config: PipelineConfig, options: RunOptions, config_hash: str, settings: RaySettings,
                 cwd: str | None):
        self.cwd_ok = bool(cwd) and os.path.isdir(cwd)
        if self.cwd_ok:
            os.chdir(cwd)  # relative input and output paths mean what they meant to the driver
        self.cwd = cwd
        self.config = config  # its device is the one the driver chose (_config_for_workers)
        self.options = options
        self.config_hash = config_hash
        self.settings = settings
        self.pipeline = Pipeline(config)
        self.progress = _Progress()
        self._call: int | None = None
        self._prefetched: _DecodeStream | None = None
        self._dropped: set[str] = set()  # hints the driver gave to another worker meanwhile
        self._lock = threading.Lock()
        self._remote = None

    def ready(self) -> dict:
        """Load every model (a missing model fails here, before any video); describe this worker."""
        if self.options.vocab and self.pipeline.vocab is None:
            self.pipeline.vocab = _load_run_vocab(self.options.vocab)
        self.pipeline.fusion
        if self.pipeline.vocab is not None:
            from videobert_cli.vocab import check_compatible

            check_compatible(self.pipeline.video.identity(), self.pipeline.video.feature_dim, self.pipeline.vocab)
        return {"pid": os.getpid(), "node": socket.gethostname(), "device": str(self.pipeline.video.device),
                "cwd_ok": self.cwd_ok}

    def status(self) -> dict:
        call = self._call
        return {"call": call, "idle": self.progress.idle() if call is not None else 0.0}

    def drop_prefetch(self, path: str) -> None:
        """Stop the decode task started ahead for ``path`` (the driver gave that video elsewhere)."""
        with self._lock:
            self._dropped.add(path)
            stream = self._prefetched
            if stream is None or stream.path != path:
                return
            self._prefetched = None
        stream.close()

    def _decode_remote(self):
        if self._remote is None:
            import ray

            self._remote = ray.remote(
                num_returns="streaming",
                num_cpus=self.settings.cpus_per_decode,
                max_retries=0,  # a crashing decoder is the file's failure; lost nodes are retried by the driver
                _generator_backpressure_num_objects=self.settings.decode_buffer,
            )(_decode_task)
        return self._remote

    def _start(self, path: str) -> _DecodeStream:
        import ray

        return _DecodeStream(ray, self._decode_remote(), path, self)

    def _stream_for(self, item: VideoInput, hint: VideoInput | None) -> _DecodeStream:
        path = str(item.path)
        with self._lock:
            stream, self._prefetched = self._prefetched, None
        if stream is None or stream.path != path:
            if stream is not None:
                stream.close()
            stream = self._start(path)
        if hint is not None and self.settings.prefetch:
            def prefetch(hint_path=str(hint.path)):
                with self._lock:
                    if hint_path not in self._dropped:
                        self._prefetched = self._start(hint_path)

            stream.on_done = prefetch
        return stream

    def process(self, call_id: int, item: VideoInput, output: Path, record: RunRecord,
                hint: VideoInput | None = None) -> tuple[RunRecord, VideoBertError | None]:
        """Process one video exactly as the local engine does; returns its record (and a fatal
        :class:`OutputError`, which stops the run, if writing failed)."""
        self._call = call_id
        with self._lock:
            self._dropped.clear()
        self.progress.watch(True)
        started = time.perf_counter()
        timer = _ProgressTimer(self.progress)
        decode_timings: dict = {}
        stream: _DecodeStream | None = None
        fatal = None
        try:
            if self.settings.actor_hook is not None:
                self.settings.actor_hook(item)

            def open_stream():
                nonlocal stream
                stream = self._stream_for(item, hint)
                return stream.open(decode_timings)

            process_video(VideoJob(item, output, self.pipeline, self.config, self.options, record, timer,
                                   self.config_hash), open_stream)
            for stage, seconds in decode_timings.items():
                timer.add(stage, seconds)
            record.status = STATUS_OK
        except Exception as error:  # one input's failure is recorded, the batch goes on
            _failure(record, error)
            if isinstance(error, OutputError):
                fatal = error
        finally:
            if stream is not None:
                stream.close()
            elif self._prefetched is not None and self._prefetched.path == str(item.path):
                self.drop_prefetch(str(item.path))  # failed before decoding (e.g. its transcript)
            self._call = None
            self.progress.watch(False)
        record.seconds = round(time.perf_counter() - started, 4)
        record.timings = timer.as_dict()
        return record, fatal


# --- driver ------------------------------------------------------------------------------------
@dataclass
class _Task:
    item: VideoInput
    output: Path
    why: str
    attempt: int = 0
    lost: list[str] = field(default_factory=list)

    def record(self) -> RunRecord:
        item = self.item
        return RunRecord(
            input=str(item.path),
            output=str(self.output),
            status=STATUS_SKIPPED,
            decision=self.why,
            transcript=str(item.transcript) if item.transcript else None,
            fingerprint=_input_fingerprint(item.path),
        )


@dataclass
class _Call:
    id: int
    task: _Task
    ref: object
    submitted: float
    idle: float = 0.0


class _Slot:
    """The driver's view of one model actor."""

    def __init__(self, index: int, handle):
        self.index = index
        self.handle = handle
        self.ready_ref = None
        self.retry_ready_at: float | None = None
        self.alive = False
        self.dead = False
        self.ever_ready = False
        self.info: dict = {}
        self.call: _Call | None = None
        self.reserved: _Task | None = None
        self.status_ref = None
        self.status_sent = 0.0
        self.last_status = 0.0


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {text[0][:160]}" if text else error.__class__.__name__


class _Driver:
    def __init__(self, ray, settings: RaySettings, config: PipelineConfig, options: RunOptions, config_hash: str,
                 observer: RunObserver, stop: StopFlag):
        self.ray = ray
        self.settings = settings
        self.config = config
        self.options = options
        self.config_hash = config_hash
        self.observer = observer
        self.stop = stop
        self.watchdog = settings.watchdog_for(options)
        self.slots: list[_Slot] = []
        self.pending: deque[_Task] = deque()
        self.manifest: _Manifest | None = None
        self.report: RunReport | None = None
        self.fatal: VideoBertError | None = None
        self.stopping = False
        self._next_call = 0
        self._last_death = ""
        self._no_worker_since: float | None = None

    # -- workers --------------------------------------------------------------------------------
    def worker_count(self, videos: int) -> int:
        s = self.settings
        resources = self.ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        if s.workers is not None:
            count = s.workers
        elif s.gpus_per_worker > 0:
            count = max(1, int(gpus // s.gpus_per_worker))
        else:
            count = max(1, int(cpus // max(s.cpus_per_worker + s.cpus_per_decode, 1e-6)))
        count = max(1, min(count, videos))
        if s.gpus_per_worker * count > gpus + 1e-9:
            self.observer.on_message(
                f"the cluster has {gpus:g} GPU(s) for {count} worker(s) x {s.gpus_per_worker:g}; "
                "workers wait until GPUs join (autoscaling) - or lower --workers")
        if s.cpus_per_worker * count + s.cpus_per_decode > cpus + 1e-9:
            self.observer.on_message(
                f"the cluster has {cpus:g} CPU(s) for {count} worker(s) x {s.cpus_per_worker:g} plus decode tasks "
                f"x {s.cpus_per_decode:g}; decoding waits for free CPUs - lower --workers")
        return count

    def start_workers(self, count: int) -> None:
        s = self.settings
        actor = self.ray.remote(ModelWorker).options(
            num_cpus=s.cpus_per_worker,
            num_gpus=s.gpus_per_worker,
            max_restarts=s.max_restarts,
            max_task_retries=0,  # the driver retries lost videos itself, on any live worker
            max_concurrency=2,  # process() and status()
        )
        gpus = f", {s.gpus_per_worker:g} GPU each" if s.gpus_per_worker else ""
        self.observer.on_message(f"starting {count} Ray model worker(s){gpus}; loading models")
        for index in range(count):
            handle = actor.remote(self.config, self.options, self.config_hash, s, os.getcwd())
            slot = _Slot(index, handle)
            slot.ready_ref = handle.ready.remote()
            self.slots.append(slot)

    def wait_first_ready(self) -> None:
        """Block until one worker has its models loaded; a model error ends the run here."""
        deadline = time.monotonic() + self.settings.startup_timeout
        while not any(slot.alive for slot in self.slots):
            if all(slot.dead for slot in self.slots):
                raise UsageError(f"no Ray model worker could start ({self._last_death or 'died'})",
                                 hint="is videobert-cli installed in the same environment on every node?")
            if time.monotonic() > deadline:
                raise UsageError(
                    f"no Ray model worker started within {self.settings.startup_timeout:g} s",
                    hint="the cluster may lack the CPUs/GPUs asked for (see `ray status`); lower --workers "
                    "or --gpus-per-worker")
            self._wait_once()

    def _ready_done(self, slot: _Slot) -> None:
        ray = self.ray
        ref, slot.ready_ref = slot.ready_ref, None
        try:
            slot.info = ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # the models failed to load
            cause = getattr(error, "cause", None)
            cause = cause if isinstance(cause, Exception) else error
            if not any(other.ever_ready for other in self.slots):
                raise cause from None  # before any video, as the local engine: the run fails
            slot.dead, slot.alive = True, False  # a restarted worker that cannot load (e.g. GPU memory)
            self._last_death = _describe(cause)
            self._return_reserved(slot)
            self.observer.on_message(f"a model worker could not restart: {self._last_death}")
            return
        except ray.exceptions.ActorDiedError as error:
            slot.dead, slot.alive = True, False
            self._last_death = _describe(error)
            self._return_reserved(slot)
            return
        except ray.exceptions.RayError:  # restarting (or its answer was lost): ask again shortly
            slot.retry_ready_at = time.monotonic() + 1.0
            return
        slot.alive = slot.ever_ready = True
        if not slot.info.get("cwd_ok", True):
            self.observer.on_message(
                f"worker on {slot.info.get('node')} cannot see {os.getcwd()}: inputs and OUT_DIR must be on storage "
                "every node mounts at the same path")

    def _restart(self, slot: _Slot) -> None:
        slot.alive = False
        slot.call = None
        slot.status_ref = None
        self._return_reserved(slot)
        slot.ready_ref = None
        slot.retry_ready_at = time.monotonic() + 0.5

    def _return_reserved(self, slot: _Slot) -> None:
        if slot.reserved is not None:
            self.pending.appendleft(slot.reserved)
            slot.reserved = None

    # -- records --------------------------------------------------------------------------------
    def _finish(self, task: _Task, record: RunRecord) -> None:
        if task.lost:
            record.warnings.append(f"tried {task.attempt + 1} times: worker lost ({'; '.join(task.lost)})")
        record_input(self.manifest, self.report, self.observer, record)

    def _fail(self, task: _Task, reason: str, message: str, seconds: float = 0.0) -> None:
        record = task.record()
        record.status = STATUS_FAILED
        record.reason = reason
        record.message = message
        record.seconds = round(seconds, 4)
        self._finish(task, record)

    def _lost(self, task: _Task, cause: str) -> None:
        task.lost.append(cause)
        task.attempt += 1
        if task.attempt <= self.settings.retries:
            self.observer.on_message(f"{task.item.path}: worker lost ({cause}); trying again")
            self.pending.appendleft(task)
        else:
            self._fail(task, REASON_WORKER_LOST,
                       f"{task.item.path}: the worker processing it was lost {task.attempt} time(s) ({cause})")

    # -- the loop -------------------------------------------------------------------------------
    def _submit(self, slot: _Slot, task: _Task, hint: VideoInput | None) -> None:
        self._next_call += 1
        ref = slot.handle.process.remote(self._next_call, task.item, task.output, task.record(), hint)
        now = time.monotonic()
        slot.call = _Call(self._next_call, task, ref, now)
        slot.status_ref = None
        slot.last_status = now
        self.observer.on_input_start(task.item)

    def _assign(self) -> None:
        for slot in self.slots:
            if not slot.alive or slot.call is not None:
                continue
            task, slot.reserved = slot.reserved, None
            if task is None and self.pending:
                task = self.pending.popleft()
            if task is None:
                task = self._steal()
            if task is None:
                continue
            hint = None
            if self.settings.prefetch and self.pending:
                slot.reserved = self.pending.popleft()
                hint = slot.reserved.item
            self._submit(slot, task, hint)

    def _steal(self) -> _Task | None:
        """A video reserved by a busy worker, for an idle one (the tail of a run)."""
        for other in self.slots:
            if other.reserved is not None and other.call is not None:
                task, other.reserved = other.reserved, None
                other.handle.drop_prefetch.remote(str(task.item.path))
                return task
        return None

    def _wait_once(self) -> None:
        """Wait briefly for any result, status or readiness, and handle what arrived."""
        ray = self.ray
        now = time.monotonic()
        for slot in self.slots:
            if not slot.dead and slot.ready_ref is None and slot.retry_ready_at is not None and now >= slot.retry_ready_at:
                slot.retry_ready_at = None
                slot.ready_ref = slot.handle.ready.remote()
            if slot.call is not None and slot.status_ref is None and now - slot.last_status >= self.settings.heartbeat:
                slot.status_ref = slot.handle.status.remote()
                slot.status_sent = now
        waiting = {}
        for slot in self.slots:
            for kind in ("ready_ref", "status_ref"):
                ref = getattr(slot, kind)
                if ref is not None:
                    waiting[ref] = (kind, slot)
            if slot.call is not None:
                waiting[slot.call.ref] = ("call", slot)
        if not waiting:
            time.sleep(0.2)
            return
        ready, _ = ray.wait(list(waiting), num_returns=1, timeout=0.2)
        for ref in ready:
            kind, slot = waiting[ref]
            if kind == "ready_ref" and slot.ready_ref == ref:
                self._ready_done(slot)
            elif kind == "status_ref" and slot.status_ref == ref:
                self._status_done(slot)
            elif kind == "call" and slot.call is not None and slot.call.ref == ref:
                self._call_done(slot)

    def _status_done(self, slot: _Slot) -> None:
        ref, slot.status_ref = slot.status_ref, None
        slot.last_status = time.monotonic()
        try:
            status = self.ray.get(ref)
        except self.ray.exceptions.RayError:
            return  # the call's own result says what happened
        if slot.call is not None and status.get("call") == slot.call.id:
            slot.call.idle = float(status.get("idle", 0.0))

    def _call_done(self, slot: _Slot) -> None:
        ray = self.ray
        call = slot.call
        slot.call = None
        slot.status_ref = None
        try:
            record, fatal = ray.get(call.ref)
        except ray.exceptions.RayActorError as error:
            self._restart(slot)
            self._lost(call.task, _describe(error))
            return
        except ray.exceptions.RayTaskError as error:  # a bug in process() itself
            record = call.task.record()
            _failure(record, getattr(error, "cause", None) or error)
            fatal = None
        except ray.exceptions.RayError as error:  # its result was lost with a node
            self._restart(slot)
            self._lost(call.task, _describe(error))
            return
        if record.reason == REASON_WORKER_LOST and record.status == STATUS_FAILED:
            self._lost(call.task, record.message)
            return
        self._finish(call.task, record)
        if fatal is not None:
            self.fatal = fatal

    def _check_watchdog(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            call = slot.call
            if call is None:
                continue
            unanswered = now - slot.status_sent if slot.status_ref is not None else 0.0
            if max(unanswered, call.idle) <= self.watchdog:
                continue
            self._fail(call.task, "timeout",
                       f"{call.task.item.path}: the model worker made no progress for {self.watchdog:g} s; stopped "
                       "it and started a new one - raise --timeout if the video is just very slow",
                       seconds=now - call.submitted)
            try:
                self.ray.kill(slot.handle, no_restart=False)
            except Exception:
                pass
            self._restart(slot)

    def run(self, tasks: list[_Task]) -> bool:
        """Process ``tasks``; returns whether the run stopped early (signal or fatal error)."""
        self.pending.extend(tasks)
        while True:
            if self.stop.is_set():
                self.stopping = True
            if not self.stopping and self.fatal is None:
                self._assign()
            if not any(slot.call is not None for slot in self.slots):
                left = bool(self.pending) or any(slot.reserved is not None for slot in self.slots)
                if self.stopping or self.fatal is not None or not left:
                    return left
                if all(slot.dead for slot in self.slots):
                    self._fail_remaining(f"no model worker left ({self._last_death or 'all died'})")
                    return False
                if not any(slot.alive for slot in self.slots):  # all restarting
                    now = time.monotonic()
                    self._no_worker_since = self._no_worker_since or now
                    if now - self._no_worker_since > self.settings.startup_timeout:
                        self._fail_remaining(
                            f"no model worker came back within {self.settings.startup_timeout:g} s")
                        return False
                else:
                    self._no_worker_since = None
            self._wait_once()
            self._check_watchdog()

    def _fail_remaining(self, why: str) -> None:
        for slot in self.slots:
            self._return_reserved(slot)
        while self.pending:
            task = self.pending.popleft()
            self._fail(task, REASON_WORKER_LOST, f"{task.item.path}: {why}")

    def close(self) -> None:
        for slot in self.slots:
            try:
                self.ray.kill(slot.handle, no_restart=True)
            except Exception:
                pass
        self.slots.clear()


def _connect(ray, settings: RaySettings, observer: RunObserver) -> bool:
    """Join (or start) a Ray instance; returns whether this run started it (and must stop it)."""
    if ray.is_initialized():
        if settings.address is not None:
            observer.on_message("using the Ray instance this process is already connected to; --address ignored")
        return False
    kwargs = {"address": settings.address, "log_to_driver": False, "logging_level": logging.ERROR}
    if settings.address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["include_dashboard"] = False
        observer.on_message("starting a local Ray instance (give --address auto to join a cluster)")
    kwargs.update(settings.init_options)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot connect to Ray at {settings.address or 'RAY_ADDRESS'}: {str(exc).splitlines()[0]}",
                         hint="start the cluster (`ray start --head`) or check --address") from exc
    return True


def run_ray(
    items: list[VideoInput],
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    options: RunOptions | None = None,
    *,
    observer: RunObserver | None = None,
    stop: StopFlag | None = None,
    **engine_options,
) -> RunReport:
    """:func:`~videobert_cli.pipeline.runner.run_batch` on a Ray cluster; same guarantees and report."""
    settings = RaySettings.from_options(engine_options)
    ray = import_ray()
    config = _config_for_workers(config or PipelineConfig(), settings)
    options = options or RunOptions()
    observer = observer or _SilentObserver()
    stop = stop or StopFlag()
    if options.dry_run:  # decisions only: no model, no cluster
        from videobert_cli.pipeline.runner import run_batch

        return run_batch(items, out_dir, config, options, observer=observer, stop=stop)
    out_dir = Path(out_dir)
    report = RunReport(output_dir=str(out_dir), started_at=_now())
    started = time.perf_counter()
    # as run_batch does (keep in step): a --vocab file is part of the configuration
    vocab = _load_run_vocab(options.vocab)
    config_hash = config.fingerprint(identities={"vocab_sha256": vocab.sha256} if vocab is not None else None)
    del vocab  # each model worker loads its own copy

    _ensure_output_dir(out_dir)
    with OutputLock(out_dir, wait=options.wait_lock):
        removed = _clean_stale_temps(out_dir)
        if removed:
            observer.on_message(f"removed {removed} temporary file(s) left by an interrupted run")
        plan: list[tuple[_Task, bool]] = []
        for item in items:
            output = _safe_output_path(out_dir, item.output_name)
            needed, why = decide(item, output, config_hash, options)
            plan.append((_Task(item, output, why), needed))
        tasks = [task for task, needed in plan if needed]

        driver = _Driver(ray, settings, config, options, config_hash, observer, stop)
        owns_ray = False
        try:
            workers = 0
            if tasks:
                owns_ray = _connect(ray, settings, observer)
                workers = driver.worker_count(len(tasks))
                driver.start_workers(workers)
                driver.wait_first_ready()

            def attach(manifest) -> None:
                driver.manifest, driver.report = manifest, report

            record_and_dispatch(
                out_dir, plan, report, observer, stop, started,
                {"config_hash": config_hash, "engine": "ray", "workers": workers,
                 "gpus_per_worker": settings.gpus_per_worker},
                attach, lambda tasks: driver.run(tasks) and driver.fatal is None,
            )
        finally:
            driver.close()
            if owns_ray:
                ray.shutdown()
    if driver.fatal is not None:
        raise driver.fatal  # out of space or read-only: as the local engine, a usage error
    return report
