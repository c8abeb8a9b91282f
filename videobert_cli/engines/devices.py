"""Several devices on one machine: one long-lived worker process per device.

``videobert run --device cuda:0,cuda:1`` (or ``--devices all``, or ``cpu,cpu``) with the local
engine. Ray is not needed.

Who does what
    * The **parent** (the ``videobert run`` process) keeps every guarantee of
      :func:`~videobert_cli.pipeline.runner.run_batch`: the output-directory lock, the
      skip/resume decisions (:func:`~videobert_cli.pipeline.runner.decide`), ``manifest.jsonl``
      (written by the parent only, record by record, as results come back), observer callbacks,
      exit codes and Ctrl-C/SIGTERM. It loads no model.
    * **One worker process per device**, started from the decode worker's fork server (never a
      plain fork of a process that has imported torch). Each builds the pipeline once on its
      device, owns its own decode worker process, and processes one video at a time with
      :func:`~videobert_cli.pipeline.runner.process_video` - the function every engine uses - so
      each video's file, warnings and timings are those of a single-device run.
    * **Dynamic dispatch**: a free worker takes the next pending video. A busy worker also has
      the following video reserved, and its decoding starts as soon as the current video is
      decoded (run_batch's read-ahead); a worker that falls idle while nothing is pending takes
      over another worker's reserved video, so one long video never holds up the rest.

Failures
    * A video that fails (decoder error, hang, bad transcript, out of memory) is recorded by its
      worker; the batch goes on.
    * A worker process that dies (segfault, OOM kill, ``os._exit``) fails only the video it was
      processing, with reason ``worker-lost`` (as the Ray engine); a video it had reserved goes
      back to the queue, the worker is restarted and the run continues. A worker that dies or
      fails while loading its models is not restarted; when no worker is left, the remaining
      videos are reported ``worker-lost``. If no worker can load its models at all, the run
      fails before anything is written, as run_batch does.
    * An :class:`~videobert_cli.errors.OutputError` (disk full, read-only output) starts no
      further video; the videos in progress finish, then the error is raised (exit code 2).
    * The first SIGINT/SIGTERM starts no further video and lets the ones in progress finish
      (exit code 130 if videos were left); a second one stops the workers at once.

Threads: see :func:`videobert_cli.devices.worker_threads` (CPU workers split the cores).
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing import connection as mp_connection
from pathlib import Path
from typing import Callable

from videobert_cli.config import PipelineConfig
from videobert_cli.devices import resolve_devices, worker_threads
from videobert_cli.errors import OutputError, UsageError, VideoBertError
from videobert_cli.pipeline.inputs import VideoInput
from videobert_cli.pipeline.lock import OutputLock
from videobert_cli.pipeline.runner import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    RunObserver,
    RunOptions,
    RunRecord,
    RunReport,
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
    record_and_dispatch,
    record_input,
)
from videobert_cli.pipeline.signals import StopFlag

#: the reason code of a video whose worker process died (the Ray engine's code)
REASON_WORKER_LOST = "worker-lost"
#: deaths of an idle worker (no video held) before its device is given up
_MAX_IDLE_DEATHS = 3
#: seconds a worker may take to finish after "stop" (its decode worker needs up to 2 s)
_STOP_GRACE = 10.0


# --- messages --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Task:
    """One video to process, as the parent hands it to a worker."""

    id: int
    item: VideoInput
    output: Path
    why: str

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


@dataclass(frozen=True)
class _WorkerSettings:
    """What a worker process needs to build its pipeline (pickled once, at its start)."""

    index: int
    device: str
    config: PipelineConfig  # runtime.device and runtime.num_threads already set for this worker
    options: RunOptions
    config_hash: str
    decode: Callable | None = None  # test hook: replaces the decode worker's decode function
    hook: Callable | None = None  # test hook: called with the VideoInput once its decoding started


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError with its text (for the pipe)."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{error.__class__.__name__}: {error}")


# --- the worker process ----------------------------------------------------------------------
class _ReadAhead:
    """The decode job started ahead for a worker's next video (run_batch's read-ahead).

    ``on_done_for`` gives the callback the decode worker runs (in the decode thread) when the
    current video is fully decoded; it submits the next video's job. Each :meth:`take` or
    :meth:`cancel` starts a new generation, so a late callback of an earlier video submits
    nothing.
    """

    def __init__(self, worker, decode_config: PipelineConfig, preprocessing, chunk_frames: int):
        self.worker = worker
        self._args = (decode_config, preprocessing, chunk_frames)
        self._lock = threading.Lock()
        self._generation = 0
        self._job = None
        self._path: str | None = None

    def submit(self, path: str):
        with self._lock:
            return self.worker.submit(path, *self._args)

    def on_done_for(self, hint: str | None) -> Callable[[], None] | None:
        if hint is None:
            return None
        generation = self._generation

        def start() -> None:
            with self._lock:
                if generation == self._generation and self._job is None:
                    self._job, self._path = self.worker.submit(hint, *self._args), hint

        return start

    def take(self, path: str):
        """The job started ahead for ``path``, or None (a stale one is dropped)."""
        with self._lock:
            self._generation += 1
            job, ahead = self._job, self._path
            self._job = self._path = None
            if job is not None and ahead == path:
                return job
            if self.worker.has_pending():
                # read ahead for a video the parent gave to another worker: its frames must not
                # be taken for this one
                self.worker.abandon()
            return None

    def cancel(self) -> None:
        """After a failure: a half-consumed job would feed stale frames to the next video."""
        with self._lock:
            self._generation += 1
            self._job = self._path = None
            if self.worker.has_pending():
                self.worker.abandon()


def _load_pipeline(settings: _WorkerSettings):
    """The worker's pipeline with every model loaded (a missing model fails here)."""
    from videobert_cli.pipeline.runner import Pipeline

    if settings.device.startswith("cuda:"):
        import torch

        # without it, CUDA puts a context for every worker on GPU 0 as well
        torch.cuda.set_device(int(settings.device.split(":", 1)[1]))
    vocab = _load_run_vocab(settings.options.vocab)
    pipeline = Pipeline(settings.config, vocab)
    pipeline.fusion
    if vocab is not None:
        from videobert_cli.vocab import check_compatible

        check_compatible(pipeline.video.identity(), pipeline.video.feature_dim, vocab)
    return pipeline


def _process(settings: _WorkerSettings, pipeline, read_ahead: _ReadAhead, task: _Task, hint: str | None):
    """One video, exactly as run_batch processes it; returns ``(record, fatal OutputError or None)``."""
    from videobert_cli.pipeline.runner import VideoJob, process_video
    from videobert_cli.pipeline.timing import StageTimer

    worker = read_ahead.worker
    record = task.record()
    started = time.perf_counter()
    timer = StageTimer()
    decode_timings: dict = {}
    fatal = None
    path = str(task.item.path)
    job = read_ahead.take(path)

    def open_stream():
        nonlocal job
        if job is None:
            job = read_ahead.submit(path)
        stream = worker.stream(job, timings=decode_timings, on_done=read_ahead.on_done_for(hint))
        if settings.hook is not None:
            settings.hook(task.item)
        return stream

    try:
        process_video(VideoJob(task.item, task.output, pipeline, settings.config, settings.options, record, timer,
                               settings.config_hash), open_stream)
        for stage, seconds in decode_timings.items():
            timer.add(stage, seconds)
        record.status = STATUS_OK
    except Exception as error:  # one input's failure is recorded, the batch goes on
        _failure(record, error)
        read_ahead.cancel()
        if isinstance(error, OutputError):
            fatal = error  # out of space or read-only: the parent stops the run
    record.seconds = round(time.perf_counter() - started, 4)
    record.timings = timer.as_dict()
    return record, fatal


def _worker_main(settings: _WorkerSettings, tasks, results, owner_pid: int) -> None:
    """A device worker: load the pipeline, then process the videos the parent sends."""
    # Ctrl-C reaches the whole process group and systemd sends SIGTERM to every process of a
    # service: the parent decides how to stop (finish the current videos first), not the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from videobert_cli.pipeline.decode_worker import DecodeWorker, _exit_with_owner, decoder_niceness, default_decode

    _exit_with_owner(owner_pid)  # a `kill -9` of the run must not leave workers behind
    try:
        decoder = DecodeWorker(timeout=settings.options.timeout, decode=settings.decode or default_decode)
        from multiprocessing import forkserver

        # this worker's decode process comes from a fork server of its own, which imports torch
        # and decord: start it now, to do that while the models load, not on the first video
        forkserver.ensure_running()
        pipeline = _load_pipeline(settings)
        decoder.niceness = decoder_niceness(pipeline.video.device)  # before its process starts
    except BaseException as error:
        results.send(("load-error", _portable(error)))
        return
    results.send(("ready", {"pid": os.getpid(), "device": str(pipeline.video.device)}))
    video = pipeline.video
    read_ahead = _ReadAhead(decoder, video.decode_config, video.model.preprocessing, settings.options.chunk_frames)
    try:
        while True:
            try:
                message = tasks.recv()
            except (EOFError, OSError):  # the parent is gone
                return
            if message[0] != "run":
                return
            _, task, hint = message
            record, fatal = _process(settings, pipeline, read_ahead, task, hint)
            results.send(("done", task.id, record, _portable(fatal) if fatal is not None else None))
    finally:
        if decoder.has_pending():
            decoder.abandon()  # read ahead for a video the parent took back: no need to wait for it
        decoder.close()


# --- the parent --------------------------------------------------------------------------------
class _Slot:
    """The parent's view of one device's worker."""

    def __init__(self, index: int, device: str, threads: int | None):
        self.index = index
        self.device = device
        self.threads = threads
        self.process = None
        self.tasks = None  # parent -> worker
        self.results = None  # worker -> parent
        self.ready = False
        self.ever_ready = False
        self.dead = False
        self.task: _Task | None = None
        self.reserved: _Task | None = None
        self.started = 0.0
        self.idle_deaths = 0

    @property
    def name(self) -> str:
        return f"worker {self.index} ({self.device})"


class _Pool:
    """The workers, the queue of videos and the bookkeeping of results."""

    def __init__(self, devices: tuple[str, ...], config: PipelineConfig, options: RunOptions, config_hash: str,
                 observer: RunObserver, stop: StopFlag, decode: Callable | None, hook: Callable | None):
        from videobert_cli.pipeline.decode_worker import worker_cpu_count

        self.config = config
        self.options = options
        self.config_hash = config_hash
        self.observer = observer
        self.stop = stop
        self.decode = decode
        self.hook = hook
        threads = worker_threads(devices, config.runtime.num_threads, worker_cpu_count())
        self.slots = [_Slot(index, device, count) for index, (device, count) in enumerate(zip(devices, threads))]
        self.pending: deque[_Task] = deque()
        self.manifest: _Manifest | None = None
        self.report: RunReport | None = None
        self.fatal: VideoBertError | None = None
        self.stopping = False
        self._last_death = ""

    # -- processes ------------------------------------------------------------------------------
    def start_all(self) -> None:
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: _Slot) -> None:
        from videobert_cli.pipeline.decode_worker import _main_module_hidden, _worker_context

        runtime = replace(self.config.runtime, device=slot.device, num_threads=slot.threads)
        settings = _WorkerSettings(slot.index, slot.device, self.config.with_(runtime=runtime), self.options,
                                   self.config_hash, self.decode, self.hook)
        # the decode worker's fork server: torch is imported there once, single-threaded, and
        # each worker is a cheap fork of that clean state (a plain fork of this process, which
        # may have started torch's threads, is unsafe)
        context = _worker_context()
        task_reader, task_writer = context.Pipe(duplex=False)
        result_reader, result_writer = context.Pipe(duplex=False)
        # not a daemon: a daemonic process may not start the decode worker it needs
        process = context.Process(target=_worker_main, args=(settings, task_reader, result_writer, os.getpid()),
                                  name=f"videobert-device-{slot.index}", daemon=False)
        with _main_module_hidden():
            process.start()
        task_reader.close()
        result_writer.close()
        slot.process, slot.tasks, slot.results = process, task_writer, result_reader
        slot.ready = False

    def _discard(self, slot: _Slot) -> None:
        """Forget a slot's (dead or stopped) process and its pipes."""
        if slot.process is not None:
            if slot.process.is_alive():
                slot.process.kill()
            slot.process.join(timeout=5)
        for end in (slot.tasks, slot.results):
            if end is not None:
                end.close()
        slot.process = slot.tasks = slot.results = None
        slot.ready = False

    def close(self, *, force: bool = False) -> None:
        """Stop every worker: idle ones finish cleanly; loading or busy ones (or all, with
        ``force``) are killed."""
        for slot in self.slots:
            if slot.process is None:
                continue
            if force or not slot.ready or slot.task is not None:
                slot.process.kill()
                continue
            try:
                slot.tasks.send(("stop",))
            except OSError:
                slot.process.kill()
        deadline = time.monotonic() + _STOP_GRACE
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(timeout=max(0.0, deadline - time.monotonic()))
            self._discard(slot)

    # -- start-up -------------------------------------------------------------------------------
    def wait_first_ready(self) -> None:
        """Block until one worker has loaded its models; a model error ends the run here."""
        while not any(slot.ready for slot in self.slots):
            if all(slot.dead for slot in self.slots):
                raise UsageError(f"no device worker could start ({self._last_death or 'died'})",
                                 hint="run again with one device (--device cpu or cuda:0) to see why")
            self._wait_once()

    # -- records --------------------------------------------------------------------------------
    def _finish(self, record: RunRecord) -> None:
        record_input(self.manifest, self.report, self.observer, record)

    def _fail(self, task: _Task, reason: str, message: str, seconds: float = 0.0) -> None:
        record = task.record()
        record.status = STATUS_FAILED
        record.reason = reason
        record.message = message
        record.seconds = round(seconds, 4)
        self._finish(record)

    def _fail_remaining(self, why: str) -> None:
        for slot in self.slots:
            if slot.reserved is not None:
                self.pending.appendleft(slot.reserved)
                slot.reserved = None
        while self.pending:
            task = self.pending.popleft()
            self._fail(task, REASON_WORKER_LOST, f"{task.item.path}: {why}")

    # -- dispatch -------------------------------------------------------------------------------
    def _halted(self) -> bool:
        if self.stop.is_set():
            self.stopping = True
        return self.stopping or self.fatal is not None

    def _dispatch(self, slot: _Slot, task: _Task) -> None:
        hint = self.pending.popleft() if self.pending else None
        slot.reserved = hint
        slot.task = task
        slot.started = time.monotonic()
        self.observer.on_input_start(task.item)
        try:
            slot.tasks.send(("run", task, str(hint.item.path) if hint is not None else None))
        except OSError:
            pass  # the worker is gone: its sentinel reports it, and the video is failed there

    def _steal(self) -> _Task | None:
        """A video reserved by a busy worker, for an idle one (the tail of a run)."""
        for other in self.slots:
            if other.reserved is not None and other.task is not None:
                task, other.reserved = other.reserved, None
                return task
        return None

    def _assign(self) -> None:
        for slot in self.slots:
            if slot.dead or slot.task is not None:
                continue
            if slot.process is None:
                if self.pending or any(other.reserved is not None for other in self.slots):
                    self._start(slot)  # a worker that died: its replacement loads its models
                continue
            if not slot.ready:
                continue
            task = self.pending.popleft() if self.pending else self._steal()
            if task is None:
                return
            self._dispatch(slot, task)

    def _continue(self, slot: _Slot) -> None:
        """After a video: the worker goes on with the video it had reserved (its decoding has
        started), unless the run is stopping."""
        task, slot.reserved = slot.reserved, None
        if task is None:
            return
        if self._halted():
            self.pending.appendleft(task)
        else:
            self._dispatch(slot, task)

    # -- events ---------------------------------------------------------------------------------
    def _wait_once(self, timeout: float = 0.2) -> None:
        waiting = {}
        for slot in self.slots:
            if slot.process is not None:
                waiting[slot.results] = ("message", slot)
                waiting[slot.process.sentinel] = ("exit", slot)
        if not waiting:
            time.sleep(timeout)
            return
        ready = mp_connection.wait(list(waiting), timeout=timeout)
        # messages first: a worker may send its last result and then die
        for handle in ready:
            kind, slot = waiting[handle]
            if kind == "message" and slot.results is handle:
                self._receive(slot)
        for handle in ready:
            kind, slot = waiting[handle]
            if kind == "exit" and slot.process is not None and slot.process.sentinel == handle:
                self._receive(slot)
                self._died(slot)

    def _receive(self, slot: _Slot) -> None:
        while slot.results is not None:
            try:
                if not slot.results.poll():
                    return
                message = slot.results.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                return  # the worker died mid-message; its sentinel says so
            kind = message[0]
            if kind == "ready":
                slot.ready = slot.ever_ready = True
            elif kind == "load-error":
                self._load_failed(slot, message[1])
                return
            elif kind == "done":
                self._done(slot, *message[1:])

    def _load_failed(self, slot: _Slot, error: BaseException) -> None:
        if not any(other.ever_ready for other in self.slots):
            raise error  # before any video, as run_batch: a missing model fails the run
        self._last_death = f"{error.__class__.__name__}: {error}"
        self.observer.on_message(f"{slot.name} could not load its models: {error}; going on without it")
        self._discard(slot)
        slot.dead = True
        self._requeue(slot)

    def _requeue(self, slot: _Slot) -> None:
        if slot.reserved is not None:
            self.pending.appendleft(slot.reserved)
            slot.reserved = None

    def _done(self, slot: _Slot, task_id: int, record: RunRecord, fatal: VideoBertError | None) -> None:
        if slot.task is None or slot.task.id != task_id:
            return  # cannot happen: a worker processes only what it was sent
        slot.task = None
        slot.idle_deaths = 0
        self._finish(record)
        if fatal is not None and self.fatal is None:
            self.fatal = fatal
        self._continue(slot)

    def _died(self, slot: _Slot) -> None:
        process = slot.process
        code = process.exitcode if process is not None else None
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        pid = process.pid if process is not None else None
        was_ready = slot.ready
        self._discard(slot)
        self._requeue(slot)
        task, slot.task = slot.task, None
        if task is not None:
            _remove_temp_files(task.output, pid)
            self._fail(task, REASON_WORKER_LOST,
                       f"{task.item.path}: the worker process on {slot.device} died ({how}) while processing it",
                       seconds=time.monotonic() - slot.started)
        if not was_ready:
            slot.dead = True
            self._last_death = f"{slot.name} died while loading its models ({how})"
            self.observer.on_message(f"{self._last_death}; going on without it")
            return
        if task is None:
            slot.idle_deaths += 1
            if slot.idle_deaths > _MAX_IDLE_DEATHS:
                slot.dead = True
                self._last_death = f"{slot.name} died {slot.idle_deaths} times without a video ({how})"
                self.observer.on_message(f"{self._last_death}; going on without it")
                return
        self._last_death = f"{slot.name} died ({how})"
        self.observer.on_message(f"{self._last_death}; starting a new one")
        # restarted by _assign when there is work for it

    # -- the loop -------------------------------------------------------------------------------
    def run(self, tasks: list[_Task]) -> bool:
        """Process ``tasks``; returns whether videos were left (a signal or a fatal error)."""
        self.pending.extend(tasks)
        while True:
            if not self._halted():
                self._assign()
            if not any(slot.task is not None for slot in self.slots):
                left = bool(self.pending) or any(slot.reserved is not None for slot in self.slots)
                if self._halted() or not left:
                    return left
                if all(slot.dead for slot in self.slots):
                    self._fail_remaining(f"no device worker left ({self._last_death or 'all died'})")
                    return False
            self._wait_once()


def _remove_temp_files(output: Path, pid: int | None) -> None:
    """The temporary file a dead worker left for ``output`` (the next run would remove it too)."""
    if pid is None:
        return
    pattern = re.compile(rf"^\.{re.escape(output.name)}.*\.tmp-{pid}-[0-9a-f]{{8}}$", re.DOTALL)
    try:
        for entry in os.scandir(output.parent):
            if pattern.match(entry.name):
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
    except OSError:
        pass


def run_devices(
    items: list[VideoInput],
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    options: RunOptions | None = None,
    *,
    observer: RunObserver | None = None,
    stop: StopFlag | None = None,
    decode: Callable | None = None,
    worker_hook: Callable | None = None,
) -> RunReport:
    """:func:`~videobert_cli.pipeline.runner.run_batch` with one worker process per device of
    ``config.runtime.device`` (a list such as ``cuda:0,cuda:1``, or ``all``); same guarantees
    and report. A spec that resolves to one device is run by run_batch itself.

    ``decode`` and ``worker_hook`` are test hooks (module-level callables): the decode worker's
    decode function, and a function called in the worker with each VideoInput once its decoding
    has started.
    """
    config = config or PipelineConfig()
    options = options or RunOptions()
    observer = observer or _SilentObserver()
    stop = stop or StopFlag()
    devices = resolve_devices(config.runtime.device)
    if len(devices) == 1 or options.dry_run:  # a dry run loads no model: decisions only
        from videobert_cli.pipeline.runner import run_batch

        single = config.with_(runtime=replace(config.runtime, device=devices[0]))
        return run_batch(items, out_dir, single, options, observer=observer, stop=stop, decode=decode)
    out_dir = Path(out_dir)
    report = RunReport(output_dir=str(out_dir), started_at=_now())
    started = time.perf_counter()
    # as run_batch does (keep in step): a --vocab file is part of the configuration
    vocab = _load_run_vocab(options.vocab)
    config_hash = config.fingerprint(identities={"vocab_sha256": vocab.sha256} if vocab is not None else None)
    del vocab  # each worker loads its own copy

    _ensure_output_dir(out_dir)
    with OutputLock(out_dir, wait=options.wait_lock):
        removed = _clean_stale_temps(out_dir)
        if removed:
            observer.on_message(f"removed {removed} temporary file(s) left by an interrupted run")
        plan: list[tuple[_Task, bool]] = []
        for number, item in enumerate(items):
            output = _safe_output_path(out_dir, item.output_name)
            needed, why = decide(item, output, config_hash, options)
            plan.append((_Task(number, item, output, why), needed))
        tasks = [task for task, needed in plan if needed]
        # no more workers than videos; a run with nothing to do loads no model
        used = devices[: min(len(devices), len(tasks))]
        pool = _Pool(used, config, options, config_hash, observer, stop, decode, worker_hook)
        try:
            if tasks:
                observer.on_message(f"starting {len(used)} worker(s) on {', '.join(used)}; loading models")
                pool.start_all()
                pool.wait_first_ready()

            def attach(manifest) -> None:
                pool.manifest, pool.report = manifest, report

            record_and_dispatch(
                out_dir, plan, report, observer, stop, started,
                {"config_hash": config_hash, "engine": "local", "devices": list(used)}, attach,
                lambda tasks: pool.run(tasks) and pool.fatal is None,
                on_second_signal=lambda: pool.close(force=True),  # the second signal: stop now
            )
        finally:
            pool.close()
    if pool.fatal is not None:
        raise pool.fatal  # out of space or read-only: as run_batch, a usage error (exit 2)
    return report
