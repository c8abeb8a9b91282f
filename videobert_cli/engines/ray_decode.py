"""The Ray engine's decoding: a decode task per video (a Ray streaming generator that runs in
a Ray worker process), and how a model actor reads it (:class:`DecodeStream`) with the local
engine's stall and total timeouts, telling the driver's watchdog of its progress.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable

from videobert_cli.pipeline.decoding import DecodeRequest
from videobert_cli.engines.scheduler import REASON_WORKER_LOST
from videobert_cli.errors import DecodeTimeoutError, InputError, ResourceError, VideoDecodeError
from videobert_cli.pipeline.timing import StageTimer


class WorkerLostError(InputError):
    """The process working on a video (model actor or decode task) was lost: node failure, OOM kill."""

    reason = REASON_WORKER_LOST


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


def decode_task(request: DecodeRequest, cwd: str | None, hook):
    """Yield ``("started", pid)``, ``("info", VideoInfo)``, ``("chunk", indices, times, crops)``...,
    ``("timings", dict)``; or ``("error", InputError)`` - the messages of the local decode worker."""
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)  # relative input paths mean what they meant to the driver
    from videobert_cli.pipeline.decoding import decode, one_compute_thread

    one_compute_thread()  # resize/crop is light; leave the cores to the encoders

    path = request.path
    yield ("started", os.getpid())
    log = _StderrCapture()
    try:
        if hook is not None:
            hook(path)
        timer = StageTimer()
        info, chunks = decode(request, timer)
        yield ("info", info)
        for chunk in chunks:
            yield ("chunk", chunk.frame_indices, chunk.timestamps, chunk.crops)
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


class Progress:
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


class ProgressTimer(StageTimer):
    """A StageTimer whose every stage boundary (each encoded batch, text, fuse, write) is progress."""

    def __init__(self, progress: Progress):
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


class DecodeStream:
    """One video's decode task, read with the local engine's stall and total timeouts."""

    def __init__(self, ray, remote, path: str, worker: "ModelWorker"):
        video = worker.pipeline.video
        self.ray = ray
        self.path = path
        self.worker = worker
        self.timeout = worker.options.timeout
        self.gen = remote.remote(video.decode_request(path, worker.options.chunk_frames), worker.cwd,
                                 worker.hooks.ray_decode)
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
                    yield CropChunk(np.asarray(indices), np.asarray(stamps), crops)
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
