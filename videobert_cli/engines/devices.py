"""Several devices on one machine: one long-lived worker process per device.

``videobert run --device cuda:0,cuda:1`` (or ``--devices all``, or ``cpu,cpu``) with the local
engine. Ray is not needed.

Who does what
    * The **parent** (the ``videobert run`` process) keeps every guarantee of
      a run (:func:`~videobert_cli.pipeline.core.open_run`): the output-directory lock, the
      skip/resume decisions (:func:`~videobert_cli.pipeline.plan.decide`), ``manifest.jsonl``
      (written by the parent only, record by record, as results come back), observer callbacks,
      exit codes and Ctrl-C/SIGTERM. It loads no model.
    * **One worker process per device**, started from the decode worker's fork server (never a
      plain fork of a process that has imported torch). Each builds the pipeline once on its
      device, owns its own decode worker process, and processes one video at a time with
      :func:`~videobert_cli.pipeline.core.process_video` - the function every engine uses - so
      each video's file, warnings and timings are those of a single-device run.
    * **Dynamic dispatch** by :mod:`videobert_cli.engines.scheduler`, shared with the Ray
      engine: a free worker takes the next pending video, a busy one has the following video
      reserved (its decoding starts as soon as the current video is decoded, the local engine's
      read-ahead), an idle one takes over another's reserved video.

Failures
    * A video that fails (decoder error, hang, bad transcript, out of memory) is recorded by its
      worker; the batch goes on.
    * A worker process that dies (segfault, OOM kill, ``os._exit``) fails only the video it was
      processing, with reason ``worker-lost`` (as the Ray engine); a video it had reserved goes
      back to the queue, the worker is restarted and the run continues. A worker that dies or
      fails while loading its models is not restarted; when no worker is left, the remaining
      videos are reported ``worker-lost``. If no worker can load its models at all, the run
      fails before anything is written, as on one device.
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
from dataclasses import dataclass, replace
from multiprocessing import connection as mp_connection
from pathlib import Path
from typing import Callable

from videobert_cli.devices import resolve_devices, worker_threads
from videobert_cli.engines import hooks
from videobert_cli.engines.local import run_single
from videobert_cli.engines.scheduler import REASON_WORKER_LOST, Scheduler, Slot, Task
from videobert_cli.errors import UsageError, VideoBertError
from videobert_cli.pipeline.core import (
    OpenRun,
    RunRequest,
    RunSpec,
    VideoWork,
    execute,
    fatal_error,
    load_pipeline,
    process_video,
)
from videobert_cli.pipeline.report import RunRecord, RunReport
from videobert_cli.pipeline.decoding import DecodeRequest

#: deaths of an idle worker (no video held) before its device is given up
MAX_IDLE_DEATHS = 3
#: seconds a worker may take to finish after "stop" (its decode worker needs up to 2 s)
STOP_GRACE = 10.0


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker process needs to build its pipeline (pickled once, at its start)."""

    index: int
    device: str
    spec: RunSpec  # its config's runtime.device and runtime.num_threads already set for this worker
    hooks: hooks.Hooks = hooks.NONE


def portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError with its text (for the pipe)."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{error.__class__.__name__}: {error}")


# --- the worker process ----------------------------------------------------------------------
class ReadAhead:
    """The decode job started ahead for a worker's next video (the local engine's read-ahead).

    ``on_done_for`` gives the callback the decode worker runs (in the decode thread) when the
    current video is fully decoded; it submits the next video's job. Each :meth:`take` or
    :meth:`cancel` starts a new generation, so a late callback of an earlier video submits
    nothing.
    """

    def __init__(self, worker, request_for: Callable[[str], DecodeRequest]):
        self.worker = worker
        self._request_for = request_for
        self._lock = threading.Lock()
        self._generation = 0
        self._job = None
        self._path: str | None = None

    def submit(self, path: str):
        with self._lock:
            return self.worker.submit(self._request_for(path))

    def on_done_for(self, hint: str | None) -> Callable[[], None] | None:
        if hint is None:
            return None
        generation = self._generation

        def start() -> None:
            with self._lock:
                if generation == self._generation and self._job is None:
                    self._job, self._path = self.worker.submit(self._request_for(hint)), hint

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


def worker_pipeline(settings: WorkerSettings):
    """The worker's pipeline with every model loaded (a missing model fails here)."""
    if settings.device.startswith("cuda:"):
        import torch

        # without it, CUDA puts a context for every worker on GPU 0 as well
        torch.cuda.set_device(int(settings.device.split(":", 1)[1]))
    return load_pipeline(settings.spec)


def process_task(settings: WorkerSettings, pipeline, read_ahead: ReadAhead, task: Task, hint: str | None):
    """One video, exactly as on one device; returns ``(record, fatal OutputError or None)``."""
    path = str(task.item.path)
    job = read_ahead.take(path)

    def open_stream(timings: dict):
        nonlocal job
        if job is None:
            job = read_ahead.submit(path)
        stream = read_ahead.worker.stream(job, timings=timings, on_done=read_ahead.on_done_for(hint))
        if settings.hooks.device_worker is not None:
            settings.hooks.device_worker(task.item)
        return stream

    work = VideoWork.start(task.video)
    error = process_video(settings.spec, pipeline, work, open_stream)
    if error is not None:
        read_ahead.cancel()
    return work.record, fatal_error(error)  # out of space or read-only: the parent stops the run


def worker_main(settings: WorkerSettings, tasks, results, owner_pid: int) -> None:
    """A device worker: load the pipeline, then process the videos the parent sends."""
    # Ctrl-C reaches the whole process group and systemd sends SIGTERM to every process of a
    # service: the parent decides how to stop (finish the current videos first), not the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from videobert_cli.pipeline.decode_worker import DecodeWorker, exit_with_owner, decoder_niceness, default_decode

    exit_with_owner(owner_pid)  # a `kill -9` of the run must not leave workers behind
    try:
        decoder = DecodeWorker(timeout=settings.spec.options.timeout, decode=settings.hooks.decode or default_decode)
        from multiprocessing import forkserver

        # this worker's decode process comes from a fork server of its own, which imports torch
        # and decord: start it now, to do that while the models load, not on the first video
        forkserver.ensure_running()
        pipeline = worker_pipeline(settings)
        decoder.niceness = decoder_niceness(pipeline.video.device)  # before its process starts
    except BaseException as error:
        results.send(("load-error", portable(error)))
        return
    results.send(("ready", {"pid": os.getpid(), "device": str(pipeline.video.device)}))
    video = pipeline.video
    chunk_frames = settings.spec.options.chunk_frames
    read_ahead = ReadAhead(decoder, lambda path: video.decode_request(path, chunk_frames))
    try:
        while True:
            try:
                message = tasks.recv()
            except (EOFError, OSError):  # the parent is gone
                return
            if message[0] != "run":
                return
            _, task, hint = message
            record, fatal = process_task(settings, pipeline, read_ahead, task, hint)
            results.send(("done", task.id, record, portable(fatal) if fatal is not None else None))
    finally:
        if decoder.has_pending():
            decoder.abandon()  # read ahead for a video the parent took back: no need to wait for it
        decoder.close()


# --- the parent --------------------------------------------------------------------------------
class DeviceSlot(Slot):
    """The parent's view of one device's worker."""

    def __init__(self, index: int, device: str, threads: int | None):
        super().__init__(index)
        self.device = device
        self.threads = threads
        self.process = None
        self.tasks = None  # parent -> worker
        self.results = None  # worker -> parent
        self.ready = False
        self.task: Task | None = None
        self.started = 0.0
        self.idle_deaths = 0

    @property
    def busy(self) -> bool:
        return self.task is not None

    @property
    def name(self) -> str:
        return f"worker {self.index} ({self.device})"


class DevicePool(Scheduler):
    """One worker process per device, fed by the shared scheduler."""

    noun = "device worker"

    def __init__(self, devices: tuple[str, ...], spec: RunSpec, observer, stop):
        from videobert_cli.pipeline.decode_worker import worker_cpu_count

        super().__init__(observer, stop)
        self.spec = spec
        self.hooks = hooks.current()
        threads = worker_threads(devices, spec.config.runtime.num_threads, worker_cpu_count())
        self.slots = [DeviceSlot(index, device, count) for index, (device, count) in enumerate(zip(devices, threads))]

    # -- processes ------------------------------------------------------------------------------
    def start_all(self) -> None:
        for slot in self.slots:
            self.start(slot)

    def start(self, slot: DeviceSlot) -> None:
        from videobert_cli.pipeline.decode_worker import main_module_hidden, worker_context

        config = self.spec.config
        runtime = replace(config.runtime, device=slot.device, num_threads=slot.threads)
        settings = WorkerSettings(slot.index, slot.device, replace(self.spec, config=config.with_(runtime=runtime)),
                                  self.hooks)
        # the decode worker's fork server: torch is imported there once, single-threaded, and
        # each worker is a cheap fork of that clean state (a plain fork of this process, which
        # may have started torch's threads, is unsafe)
        context = worker_context()
        task_reader, task_writer = context.Pipe(duplex=False)
        result_reader, result_writer = context.Pipe(duplex=False)
        # not a daemon: a daemonic process may not start the decode worker it needs
        process = context.Process(target=worker_main, args=(settings, task_reader, result_writer, os.getpid()),
                                  name=f"videobert-device-{slot.index}", daemon=False)
        with main_module_hidden():
            process.start()
        task_reader.close()
        result_writer.close()
        slot.process, slot.tasks, slot.results = process, task_writer, result_reader
        slot.ready = False

    def discard(self, slot: DeviceSlot) -> None:
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
        deadline = time.monotonic() + STOP_GRACE
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(timeout=max(0.0, deadline - time.monotonic()))
            self.discard(slot)

    # -- start-up -------------------------------------------------------------------------------
    def wait_first_ready(self) -> None:
        """Block until one worker has loaded its models; a model error ends the run here."""
        while not any(slot.ready for slot in self.slots):
            if all(slot.dead for slot in self.slots):
                raise UsageError(f"no device worker could start ({self.last_death or 'died'})",
                                 hint="run again with one device (--device cpu or cuda:0) to see why")
            self.wait_once()

    # -- the scheduler's questions --------------------------------------------------------------
    def available(self, slot: DeviceSlot) -> bool:
        if slot.process is None:
            if self.left():
                self.start(slot)  # a worker that died: its replacement loads its models
            return False
        return slot.ready

    def dispatch(self, slot: DeviceSlot, task: Task, hint: Task | None) -> None:
        slot.task = task
        slot.started = time.monotonic()
        try:
            slot.tasks.send(("run", task, str(hint.item.path) if hint is not None else None))
        except OSError:
            pass  # the worker is gone: its sentinel reports it, and the video is failed there

    # -- events ---------------------------------------------------------------------------------
    def wait_once(self, timeout: float = 0.2) -> None:
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
                self.receive(slot)
        for handle in ready:
            kind, slot = waiting[handle]
            if kind == "exit" and slot.process is not None and slot.process.sentinel == handle:
                self.receive(slot)
                self.died(slot)

    def receive(self, slot: DeviceSlot) -> None:
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
                self.load_failed(slot, message[1])
                return
            elif kind == "done":
                self.finished(slot, *message[1:])

    def load_failed(self, slot: DeviceSlot, error: BaseException) -> None:
        if not any(other.ever_ready for other in self.slots):
            raise error  # before any video, as on one device: a missing model fails the run
        self.last_death = f"{error.__class__.__name__}: {error}"
        self.observer.on_message(f"{slot.name} could not load its models: {error}; going on without it")
        self.discard(slot)
        slot.dead = True
        self.return_reserved(slot)

    def finished(self, slot: DeviceSlot, task_id: int, record: RunRecord, fatal: VideoBertError | None) -> None:
        if slot.task is None or slot.task.id != task_id:
            return  # cannot happen: a worker processes only what it was sent
        task, slot.task = slot.task, None
        slot.idle_deaths = 0
        self.done(task, record, fatal)  # the scheduler hands it its reserved video next

    def died(self, slot: DeviceSlot) -> None:
        process = slot.process
        code = process.exitcode if process is not None else None
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        pid = process.pid if process is not None else None
        was_ready = slot.ready
        self.discard(slot)
        self.return_reserved(slot)
        task, slot.task = slot.task, None
        if task is not None:
            remove_temp_files(task.output, pid)
            self.fail(task, REASON_WORKER_LOST,
                       f"{task.item.path}: the worker process on {slot.device} died ({how}) while processing it",
                       seconds=time.monotonic() - slot.started)
        if not was_ready:
            slot.dead = True
            self.last_death = f"{slot.name} died while loading its models ({how})"
            self.observer.on_message(f"{self.last_death}; going on without it")
            return
        if task is None:
            slot.idle_deaths += 1
            if slot.idle_deaths > MAX_IDLE_DEATHS:
                slot.dead = True
                self.last_death = f"{slot.name} died {slot.idle_deaths} times without a video ({how})"
                self.observer.on_message(f"{self.last_death}; going on without it")
                return
        self.last_death = f"{slot.name} died ({how})"
        self.observer.on_message(f"{self.last_death}; starting a new one")
        # restarted by assign() when there is work for it


def remove_temp_files(output: Path, pid: int | None) -> None:
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


def run_devices(request: RunRequest) -> RunReport:
    """A run with one worker process per device of ``config.runtime.device`` (a list such as
    ``cuda:0,cuda:1``, or ``all``); same guarantees and report as on one device. A spec that
    resolves to one device is run on one device.
    """
    config = request.config
    devices = resolve_devices(config.runtime.device)
    if len(devices) == 1 or request.options.dry_run:  # a dry run loads no model: decisions only
        return run_single(request.with_config(config.with_(runtime=replace(config.runtime, device=devices[0]))))

    def place(run: OpenRun) -> None:
        todo = run.todo
        # no more workers than videos; a run with nothing to do loads no model
        used = devices[: min(len(devices), len(todo))]
        pool = DevicePool(used, run.spec, request.observer, request.stop)
        try:
            if todo:
                request.observer.on_message(f"starting {len(used)} worker(s) on {', '.join(used)}; loading models")
                pool.start_all()
                pool.wait_first_ready()
            pool.serve(run, {"engine": "local", "devices": list(used)},
                       on_second_signal=lambda: pool.close(force=True))  # the second signal: stop now
        finally:
            pool.close()

    return execute(request, place)
