"""Decoding in a separate process, so that a decoder that hangs or crashes costs one video.

decord is a C++ library: on some corrupt files it blocks forever in ``get_batch``
(dmlc/decord #269) or takes the process down. The worker process decodes, resizes and crops;
the parent encodes. A stalled worker is killed after the timeout and a crashed one is
replaced; both are reported for that one video, and the batch goes on. While the parent
encodes the tail of one video the worker already decodes the next one.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from videobert_cli.errors import DecodeTimeoutError, InputError, VideoDecodeError
from videobert_cli.pipeline.decoding import CropChunk, CropStream, DecodeRequest, one_compute_thread

#: decoded chunks allowed in flight between the worker and the parent (bounds memory)
_QUEUE_CHUNKS = 4

#: how much the decode worker lowers its priority when the model runs on the CPU
CPU_DECODER_NICENESS = 10


def decoder_niceness(model_device) -> int:
    """The niceness increment for the decode worker of a model on ``model_device``.

    On the CPU the decoder and torch's intra-op threads share the cores, and torch's threads
    wait for each other at the end of every parallel operation: when the scheduler gives the
    decoder a core in the middle of one, the other model thread waits, so the model loses
    more time than the decoder gains. At a lower priority the scheduler gives the model's
    threads the cores first (+8% frames/s end to end on 2 cores; docs/benchmarks.md, round of
    2026-11-28 07:05 UTC). A GPU model leaves the CPU to the decoder, which is then what feeds
    it: no change.
    """
    return CPU_DECODER_NICENESS if str(model_device) == "cpu" else 0


@dataclass(frozen=True)
class DecodeJob:
    """What the worker receives for one video: a number and what decoding needs, nothing more."""

    job_id: int
    request: DecodeRequest

    @property
    def path(self) -> str:
        return self.request.path


def default_decode(job: DecodeJob, emit: Callable[[tuple], None]) -> None:
    """Decode one job in the worker, emitting ("info", ...), ("chunk", ...) messages."""
    from videobert_cli.memory import release_freed_memory
    from videobert_cli.pipeline.decoding import decode
    from videobert_cli.pipeline.timing import StageTimer

    timer = StageTimer()
    info, chunks = decode(job.request, timer)
    emit(("info", info))
    for chunk in chunks.read_ahead():
        emit(("chunk", chunk.frame_indices, chunk.timestamps, chunk.crops))
        del chunk
        # full-resolution frames are freed in one thread and the queue's feeder thread frees
        # the pickled chunks in another; without this the worker grew on long videos
        release_freed_memory()
    emit(("timings", timer.as_dict()))


def _capture_stderr():
    """Send fd 2 (where ffmpeg and decord print) to a private temp file we can read back."""
    import tempfile

    log = tempfile.TemporaryFile(mode="w+b")
    os.dup2(log.fileno(), 2)
    return log


def _read_log(log) -> str:
    log.seek(0)
    text = log.read()[-4000:].decode("utf-8", "replace")
    log.seek(0)
    log.truncate()
    return text


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def exit_with_owner(owner_pid: int) -> None:
    """Watchdog: end this worker (and its fork server) once the run that owns it is gone.

    A ``kill -9`` of ``videobert run`` gives its children no chance to clean up, and the
    worker's own copy of the job queue keeps it waiting forever; without this, every killed
    cron run would leave a fork server and a decode worker (about 1 GB) behind.
    """
    import threading

    def watch() -> None:
        while _process_alive(owner_pid):
            time.sleep(1.0)
        parent = os.getppid()
        try:
            with open(f"/proc/{parent}/cmdline", "rb") as handle:
                if b"multiprocessing.forkserver" in handle.read():
                    os.kill(parent, signal.SIGTERM)
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch, name="videobert-owner-watch", daemon=True).start()


def _worker_main(
    jobs: mp.Queue,
    results: mp.Queue,
    decode: Callable,
    owner_pid: int | None = None,
    quiet_decoder: bool = True,
    niceness: int = 0,
) -> None:
    # The parent handles Ctrl-C; the worker must not die of it mid-chunk.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness:
        # before this process starts any thread: Linux keeps a niceness per thread, and a new
        # thread inherits the one of the thread that starts it
        os.nice(niceness)
    if owner_pid is not None:
        exit_with_owner(owner_pid)
    one_compute_thread()  # resize/crop is light; leave the cores to the encoder
    log = _capture_stderr() if quiet_decoder else None
    while True:
        job = jobs.get()
        if job is None:
            return
        if log is not None:
            _read_log(log)
        try:
            decode(job, lambda message: results.put((job.job_id, *message)))
            results.put((job.job_id, "done"))
        except InputError as error:
            if log is not None and getattr(error, "raw", None) is not None:
                from videobert_cli.decoders.base import decode_failure

                error = decode_failure(job.path, error.raw, _read_log(log))
            results.put((job.job_id, "error", error.__class__.__name__, error.message, error.hint, error.reason))
        except MemoryError:
            results.put((job.job_id, "error", "ResourceError", "out of memory while decoding", None, "out-of-memory"))
        except Exception as error:  # anything else is still only this video's failure
            from videobert_cli.decoders.base import raised_by_a_decoder

            from_decoder = raised_by_a_decoder(error)
            results.put((job.job_id, "error", "VideoDecodeError", f"{error.__class__.__name__}: {error}"[:300],
                         None if from_decoder else "this is a bug in videobert-cli; please report it",
                         "corrupt" if from_decoder else "internal"))


def _error_from(name: str, message: str, hint: str | None, reason: str | None, path: str) -> InputError:
    from videobert_cli import errors

    cls = getattr(errors, name, VideoDecodeError)
    if not (isinstance(cls, type) and issubclass(cls, InputError)):
        cls = VideoDecodeError
    return cls(message, path=path, hint=hint, reason=reason)


@contextlib.contextmanager
def main_module_hidden():
    """Start children without re-running the user's main script.

    multiprocessing's spawn/forkserver children re-import ``__main__`` by default, which runs
    a user's script again when it has no ``if __name__ == "__main__"`` guard, and fails for
    ``python - < script``. The worker needs nothing from ``__main__``, so its path and spec are
    hidden while the child starts. One thread at a time: two starts overlapping (the fork server
    started beside the model's loading, a worker for the early decoding) would each save the
    other's hidden state and restore the script for the later start.
    """
    with _HIDING:
        main = sys.modules.get("__main__")
        saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
        try:
            for name in saved:
                if name == "__spec__":
                    main.__spec__ = None
                else:
                    delattr(main, name)
            yield
        finally:
            for name, value in saved.items():
                setattr(main, name, value)


_HIDING = threading.RLock()


#: what the fork server imports for its workers (tests/test_batch.py checks that a worker's
#: first video imports nothing more)
_WORKER_PRELOAD = [
    "videobert_cli.pipeline.decode_process", "av", "av.subtitles.stream", "numpy.ma",
    "videobert_cli.pipeline.decode_worker", "videobert_cli.pipeline.decoding", "videobert_cli.pipeline.prefetch",
    "videobert_cli.memory", "videobert_cli.video.container", "videobert_cli.decoders", "decord",
]


def worker_context():
    """A forkserver context that preloads the decode stack once per process.

    Forking the main process after torch or decord started threads is unsafe, and spawning a
    fresh interpreter costs seconds of imports per worker (restarts after a crash or timeout
    included). A fork server imports the decode stack (numpy, PyAV, decord; not torch) once and
    forks cheap workers from that clean state.

    Everything a worker's first video imports is preloaded too, or each new worker pays for it
    again, at its lower priority: a fresh worker took 0.43 s instead of 0.08 s to open a
    1080p video, 0.3 s of it for ``numpy.ma``, which ``np.unique`` imports on first use.
    ``decode_process`` comes first, so that decord comes without torch (see
    ``decoders/decord.py``); a module that is not installed is skipped by multiprocessing.
    """
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(_WORKER_PRELOAD)
    return context


def start_fork_server() -> None:
    """Start the fork server in a background thread now, while this process imports and loads its
    models: it is a fresh interpreter that imports the decode stack, which the first decode
    worker would otherwise wait for."""
    from multiprocessing import forkserver

    worker_context()  # sets the preload list the server imports

    def start() -> None:
        with contextlib.suppress(Exception):  # the first worker's own start reports any failure
            with main_module_hidden():
                forkserver.ensure_running()

    threading.Thread(target=start, name="videobert-forkserver-start", daemon=True).start()


class DecodeWorker:
    """A restartable decode process with a per-video stall timeout and a total time budget."""

    def __init__(
        self,
        *,
        timeout: float = 120.0,
        decode: Callable[[DecodeJob, Callable], None] = default_decode,
        niceness: int = 0,
    ):
        """``niceness``: how much the worker process lowers its scheduling priority (see
        :func:`decoder_niceness`); takes effect when the next worker process starts."""
        self.timeout = timeout
        self.niceness = niceness
        self._decode = decode
        self._context = worker_context()
        self._process = None
        self._jobs = None
        self._results = None
        self._next_id = 0
        self._queued: list[DecodeJob] = []

    # -- process management --------------------------------------------------------------
    def _start(self) -> None:
        self._jobs = self._context.Queue()
        self._results = self._context.Queue(maxsize=_QUEUE_CHUNKS)
        self._process = self._context.Process(
            target=_worker_main,
            args=(self._jobs, self._results, self._decode, os.getpid()),
            kwargs={"niceness": self.niceness},
            daemon=True,
            name="videobert-decode",
        )
        with main_module_hidden():
            self._process.start()

    def _kill(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
        for q in (self._jobs, self._results):
            if q is not None:
                q.cancel_join_thread()
                q.close()
        self._process = self._jobs = self._results = None
        self._queued.clear()

    def close(self) -> None:
        """Stop the worker process."""
        if self._process is not None and self._process.is_alive() and self._jobs is not None:
            self._jobs.put(None)
            self._process.join(timeout=2)
        self._kill()

    def __enter__(self) -> "DecodeWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- jobs ---------------------------------------------------------------------------------
    def submit(self, request: DecodeRequest) -> DecodeJob:
        """Queue a video (``VideoStage.decode_request``); the worker starts on it as soon as it is
        free."""
        if self._process is None or not self._process.is_alive():
            self._kill()
            self._start()
        job = DecodeJob(self._next_id, request)
        self._next_id += 1
        self._jobs.put(job)
        self._queued.append(job)
        return job

    def _receive(self, job: DecodeJob, deadline: float):
        while True:
            remaining = min(self.timeout, deadline - time.monotonic())
            if remaining <= 0:
                raise queue.Empty
            try:
                message = self._results.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if not self._process.is_alive():
                    code = self._process.exitcode
                    how = f"signal {-code}" if code and code < 0 else f"exit code {code}"
                    self._kill()
                    raise VideoDecodeError(
                        f"decoder crashed ({how}); the file is probably corrupt", path=job.path, reason="decoder-crash"
                    ) from None
                if time.monotonic() >= self._stall_deadline:
                    raise queue.Empty from None
                continue
            if message[0] != job.job_id:
                continue  # leftovers of a job abandoned after an error
            self._stall_deadline = time.monotonic() + self.timeout
            return message[1:]

    def stream(self, job: DecodeJob, timings: dict | None = None, on_done: Callable[[], None] | None = None):
        """Receive ``job``'s video info and an iterator of crop chunks.

        The iterator raises :class:`DecodeTimeoutError` if the worker makes no progress for
        ``timeout`` seconds or the video takes longer than ``timeout + 20 x its duration``.
        """
        if not self._queued or self._queued[0].job_id != job.job_id:
            raise RuntimeError("jobs must be streamed in submission order")
        self._stall_deadline = time.monotonic() + self.timeout
        deadline = time.monotonic() + self.timeout

        def fail_timeout(what: str):
            self._kill()
            return DecodeTimeoutError(
                f"decoder made no progress for {self.timeout:g} s ({what}); stopped",
                path=job.path,
                hint="the file may be damaged; raise --timeout if it is just very slow",
            )

        try:
            message = self._receive(job, deadline)
        except queue.Empty:
            raise fail_timeout("opening the video") from None
        if message[0] == "error":
            self._queued.pop(0)
            raise _error_from(*message[1:], path=job.path)
        info = message[1]
        deadline = time.monotonic() + self.timeout + 20.0 * max(info.duration, 0.0)

        def chunks() -> Iterator[CropChunk]:
            while True:
                try:
                    message = self._receive(job, deadline)
                except queue.Empty:
                    raise fail_timeout("decoding frames") from None
                kind = message[0]
                if kind == "chunk":
                    _, indices, stamps, crops = message
                    yield CropChunk(np.asarray(indices), np.asarray(stamps), crops)
                elif kind == "timings":
                    if timings is not None:
                        timings.update(message[1])
                elif kind == "done":
                    self._queued.pop(0)
                    if on_done is not None:
                        on_done()
                    return
                elif kind == "error":
                    self._queued.pop(0)
                    raise _error_from(*message[1:], path=job.path)

        return info, CropStream(chunks())

    def has_pending(self) -> bool:
        """Whether a submitted job has not been fully received (its frames are still queued)."""
        return bool(self._queued)

    def abandon(self) -> None:
        """Forget queued jobs after a failure by restarting the worker (stale output is dropped)."""
        self._kill()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None


def worker_cpu_count() -> int:
    from videobert_cli.devices import allowed_cpus

    return len(allowed_cpus())
