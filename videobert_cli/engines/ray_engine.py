"""The Ray engine: decode tasks and long-lived model actors on a Ray cluster.

Who does what
    * The **driver** (the ``videobert run`` process) keeps every guarantee of a run: the
      output-directory lock, the skip/resume decisions (:func:`~videobert_cli.pipeline.plan.decide`),
      ``manifest.jsonl`` (written here, record by record, as results come back), progress callbacks,
      Ctrl-C/SIGTERM, the exit code, per-video timeouts and retries of lost workers. It
      schedules videos with :mod:`videobert_cli.engines.scheduler`, as the local engine's
      device workers are.
    * **Model actors** (``--workers N``, ``num_gpus=--gpus-per-worker``) load the pipeline once and
      process one video per call with :func:`~videobert_cli.pipeline.core.process_video` - the
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
from dataclasses import dataclass, field, fields, replace

from videobert_cli.config import PipelineConfig
from videobert_cli.engines import hooks
from videobert_cli.engines.ray_decode import DecodeStream, Progress, ProgressTimer, WorkerLostError, decode_task
from videobert_cli.engines.scheduler import REASON_WORKER_LOST, Scheduler, Slot, Task
from videobert_cli.errors import UsageError, VideoBertError
from videobert_cli.pipeline.core import (
    OpenRun,
    Pipeline,
    RunRequest,
    RunSpec,
    VideoWork,
    execute,
    fatal_error,
    process_video,
)
from videobert_cli.pipeline.inputs import VideoInput
from videobert_cli.pipeline.plan import load_run_vocab
from videobert_cli.pipeline.report import STATUS_FAILED, RunObserver, RunOptions, RunRecord, RunReport, record_failure

INSTALL_HINT = "pip install 'videobert-cli[ray]'"


__all__ = ["INSTALL_HINT", "ModelWorker", "RayDriver", "RaySettings", "WorkerLostError", "config_for_workers",
           "connect", "import_ray", "run_ray"]


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

    @classmethod
    def from_options(cls, options: dict) -> "RaySettings":
        names = {f.name for f in fields(cls)}
        values = {}
        for key, value in options.items():
            if key in names:
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


def config_for_workers(config: PipelineConfig, settings: RaySettings) -> PipelineConfig:
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


# --- model actor -------------------------------------------------------------------------------
class ModelWorker:
    """A model actor: loads the pipeline once, then processes one video per :meth:`process` call.

    Runs as a threaded actor (``max_concurrency=2``) so that :meth:`status` answers while a video
    is being processed.
    """

    def __init__(self, spec: RunSpec, settings: RaySettings, cwd: str | None, test_hooks: hooks.Hooks = hooks.NONE):
        self.cwd_ok = bool(cwd) and os.path.isdir(cwd)
        if self.cwd_ok:
            os.chdir(cwd)  # relative input and output paths mean what they meant to the driver
        self.cwd = cwd
        self.spec = spec  # its config's device is the one the driver chose (config_for_workers)
        self.options = spec.options
        self.settings = settings
        self.hooks = test_hooks
        self.pipeline = Pipeline(spec.config)
        self.progress = Progress()
        self._call: int | None = None
        self._prefetched: DecodeStream | None = None
        self._dropped: set[str] = set()  # hints the driver gave to another worker meanwhile
        self._lock = threading.Lock()
        self._remote = None

    def ready(self) -> dict:
        """Load every model (a missing model fails here, before any video); describe this worker."""
        if self.options.vocab and self.pipeline.vocab is None:
            self.pipeline.vocab = load_run_vocab(self.options.vocab)
        self.pipeline.load()
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
            )(decode_task)
        return self._remote

    def _start(self, path: str) -> DecodeStream:
        import ray

        return DecodeStream(ray, self._decode_remote(), path, self)

    def _stream_for(self, item: VideoInput, hint: VideoInput | None) -> DecodeStream:
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

    def process(self, call_id: int, task: Task, hint: VideoInput | None = None) -> tuple[RunRecord, VideoBertError | None]:
        """Process one video exactly as the local engine does; returns its record (and a fatal
        :class:`OutputError`, which stops the run, if writing failed)."""
        self._call = call_id
        item = task.item
        with self._lock:
            self._dropped.clear()
        self.progress.watch(True)
        work = VideoWork.start(task.video, ProgressTimer(self.progress))
        stream: DecodeStream | None = None
        try:
            if self.hooks.ray_actor is not None:
                self.hooks.ray_actor(item)

            def open_stream(timings: dict):
                nonlocal stream
                stream = self._stream_for(item, hint)
                return stream.open(timings)

            error = process_video(self.spec, self.pipeline, work, open_stream)
        finally:
            if stream is not None:
                stream.close()
            elif self._prefetched is not None and self._prefetched.path == str(item.path):
                self.drop_prefetch(str(item.path))  # failed before decoding (e.g. its transcript)
            self._call = None
            self.progress.watch(False)
        work.close()
        return work.record, fatal_error(error)


# --- driver ------------------------------------------------------------------------------------
@dataclass
class _Call:
    id: int
    task: Task
    ref: object
    submitted: float
    idle: float = 0.0


class RaySlot(Slot):
    """The driver's view of one model actor."""

    def __init__(self, index: int, handle):
        super().__init__(index)
        self.handle = handle
        self.ready_ref = None
        self.retry_ready_at: float | None = None
        self.alive = False
        self.info: dict = {}
        self.call: _Call | None = None
        self.status_ref = None
        self.status_sent = 0.0
        self.last_status = 0.0

    @property
    def busy(self) -> bool:
        return self.call is not None


def describe(error: BaseException) -> str:
    """The first line of ``error``, with its class (for messages)."""
    text = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {text[0][:160]}" if text else error.__class__.__name__


class RayDriver(Scheduler):
    """The model actors, fed by the shared scheduler; watches them and retries lost videos."""

    noun = "model worker"

    def __init__(self, ray, settings: RaySettings, spec: RunSpec, observer: RunObserver, stop):
        super().__init__(observer, stop, prefetch=settings.prefetch)
        self.ray = ray
        self.settings = settings
        self.spec = spec
        self.hooks = hooks.current()
        self.watchdog = settings.watchdog_for(spec.options)
        self._next_call = 0
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
            handle = actor.remote(self.spec, s, os.getcwd(), self.hooks)
            slot = RaySlot(index, handle)
            slot.ready_ref = handle.ready.remote()
            self.slots.append(slot)

    def wait_first_ready(self) -> None:
        """Block until one worker has its models loaded; a model error ends the run here."""
        deadline = time.monotonic() + self.settings.startup_timeout
        while not any(slot.alive for slot in self.slots):
            if all(slot.dead for slot in self.slots):
                raise UsageError(f"no Ray model worker could start ({self.last_death or 'died'})",
                                 hint="is videobert-cli installed in the same environment on every node?")
            if time.monotonic() > deadline:
                raise UsageError(
                    f"no Ray model worker started within {self.settings.startup_timeout:g} s",
                    hint="the cluster may lack the CPUs/GPUs asked for (see `ray status`); lower --workers "
                    "or --gpus-per-worker")
            self.wait_once()

    def _ready_done(self, slot: RaySlot) -> None:
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
            self.last_death = describe(cause)
            self.return_reserved(slot)
            self.observer.on_message(f"a model worker could not restart: {self.last_death}")
            return
        except ray.exceptions.ActorDiedError as error:
            slot.dead, slot.alive = True, False
            self.last_death = describe(error)
            self.return_reserved(slot)
            return
        except ray.exceptions.RayError:  # restarting (or its answer was lost): ask again shortly
            slot.retry_ready_at = time.monotonic() + 1.0
            return
        slot.alive = slot.ever_ready = True
        if not slot.info.get("cwd_ok", True):
            self.observer.on_message(
                f"worker on {slot.info.get('node')} cannot see {os.getcwd()}: inputs and OUT_DIR must be on storage "
                "every node mounts at the same path")

    def _restart(self, slot: RaySlot) -> None:
        slot.alive = False
        slot.call = None
        slot.status_ref = None
        self.return_reserved(slot)
        slot.ready_ref = None
        slot.retry_ready_at = time.monotonic() + 0.5

    # -- the scheduler's questions --------------------------------------------------------------
    def available(self, slot: RaySlot) -> bool:
        return slot.alive

    def dispatch(self, slot: RaySlot, task: Task, hint: Task | None) -> None:
        self._next_call += 1
        ref = slot.handle.process.remote(self._next_call, task, hint.item if hint is not None else None)
        now = time.monotonic()
        slot.call = _Call(self._next_call, task, ref, now)
        slot.status_ref = None
        slot.last_status = now

    def stolen(self, slot: RaySlot, task: Task) -> None:
        slot.handle.drop_prefetch.remote(str(task.item.path))

    def give_up(self) -> str | None:
        if any(slot.alive for slot in self.slots):
            self._no_worker_since = None
            return None
        now = time.monotonic()  # all restarting
        self._no_worker_since = self._no_worker_since or now
        if now - self._no_worker_since > self.settings.startup_timeout:
            return f"no model worker came back within {self.settings.startup_timeout:g} s"
        return None

    def after_wait(self) -> None:
        self._check_watchdog()

    # -- events ---------------------------------------------------------------------------------
    def wait_once(self) -> None:
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

    def _status_done(self, slot: RaySlot) -> None:
        ref, slot.status_ref = slot.status_ref, None
        slot.last_status = time.monotonic()
        try:
            status = self.ray.get(ref)
        except self.ray.exceptions.RayError:
            return  # the call's own result says what happened
        if slot.call is not None and status.get("call") == slot.call.id:
            slot.call.idle = float(status.get("idle", 0.0))

    def _call_done(self, slot: RaySlot) -> None:
        ray = self.ray
        call = slot.call
        slot.call = None
        slot.status_ref = None
        try:
            record, fatal = ray.get(call.ref)
        except ray.exceptions.RayActorError as error:
            self._restart(slot)
            self.lost(call.task, describe(error), self.settings.retries)
            return
        except ray.exceptions.RayTaskError as error:  # a bug in process() itself
            record = call.task.video.record()
            record_failure(record, getattr(error, "cause", None) or error)
            fatal = None
        except ray.exceptions.RayError as error:  # its result was lost with a node
            self._restart(slot)
            self.lost(call.task, describe(error), self.settings.retries)
            return
        if record.reason == REASON_WORKER_LOST and record.status == STATUS_FAILED:
            self.lost(call.task, record.message, self.settings.retries)
            return
        self.done(call.task, record, fatal)

    def _check_watchdog(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            call = slot.call
            if call is None:
                continue
            unanswered = now - slot.status_sent if slot.status_ref is not None else 0.0
            if max(unanswered, call.idle) <= self.watchdog:
                continue
            self.fail(call.task, "timeout",
                      f"{call.task.item.path}: the model worker made no progress for {self.watchdog:g} s; stopped "
                      "it and started a new one - raise --timeout if the video is just very slow",
                      seconds=now - call.submitted)
            try:
                self.ray.kill(slot.handle, no_restart=False)
            except Exception:
                pass
            self._restart(slot)

    def close(self) -> None:
        for slot in self.slots:
            try:
                self.ray.kill(slot.handle, no_restart=True)
            except Exception:
                pass
        self.slots.clear()


def connect(ray, settings: RaySettings, observer: RunObserver) -> bool:
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


def run_ray(request: RunRequest, **engine_options) -> RunReport:
    """A run on a Ray cluster; same guarantees and report as the local engine."""
    settings = RaySettings.from_options(engine_options)
    ray = import_ray()
    request = request.with_config(config_for_workers(request.config, settings))

    def place(run: OpenRun) -> None:  # not called for a dry run: no model, no cluster
        driver = RayDriver(ray, settings, run.spec, request.observer, request.stop)
        owns_ray = False
        try:
            workers = 0
            if run.todo:
                owns_ray = connect(ray, settings, request.observer)
                workers = driver.worker_count(len(run.todo))
                driver.start_workers(workers)
                driver.wait_first_ready()
            driver.serve(run, {"engine": "ray", "workers": workers, "gpus_per_worker": settings.gpus_per_worker})
        finally:
            driver.close()
            if owns_ray:
                ray.shutdown()

    return execute(request, place)
