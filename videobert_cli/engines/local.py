"""The local engine on one device: this process encodes, a decode worker process decodes.

The decode worker (:class:`~videobert_cli.pipeline.decode_worker.DecodeWorker`) reads one
video ahead. Short videos share the model's batches (a video's last frames wait for the next
video's first ones), and each file is written in the background while the next videos are
encoded (:class:`WriteBehind`); records keep the input order.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from videobert_cli.engines import hooks
from videobert_cli.pipeline.core import (
    OpenRun,
    Pipeline,
    RunRequest,
    VideoWork,
    execute,
    fatal_error,
    finish_video,
    load_transcript,
)
from videobert_cli.pipeline.plan import PlannedVideo
from videobert_cli.pipeline.report import STATUS_OK, Manifest, RunRecord, RunReport, record_failure, record_input


class Encoded:
    """A video encoded on its own (clip models): complete from the start."""

    complete = True

    def __init__(self, features):
        self.features = features

    def result(self):
        return self.features


@dataclass
class EncodedVideo:
    """A video whose frames are decoded, waiting for its last ones to be encoded."""

    work: VideoWork
    info: object
    pending: object  # stages.PendingVideo or Encoded
    transcript: object


class WriteBehind:
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


class LocalRun:
    """The work of one open run on this machine's single device."""

    def __init__(self, run: OpenRun, pipeline: Pipeline, manifest: Manifest):
        from videobert_cli.pipeline.decode_worker import DecodeWorker, decoder_niceness, default_decode
        from videobert_cli.pipeline.stages import SharedBatches

        self.run = run
        self.manifest = manifest
        self.pipeline = pipeline
        video = self.pipeline.video
        self.worker = DecodeWorker(timeout=run.spec.options.timeout, decode=hooks.current().decode or default_decode,
                                   niceness=decoder_niceness(video.device))
        self.writer = WriteBehind()
        self.todo = run.todo
        self.submitted: dict[int, object] = {}
        # Cross-video batching: a video's last frames wait in `batches` for the next video's
        # first ones, so short videos fill the model's batches together. A video is finished
        # (text, fusion, file) once its frames are all encoded; records keep the input order.
        self.batches = SharedBatches(video) if video.model.kind != "clip" else None
        self.waiting: list[EncodedVideo] = []

    @property
    def report(self) -> RunReport:
        return self.run.report

    def record(self, record: RunRecord) -> None:
        record_input(self.manifest, self.report, self.run.request.observer, record)

    # -- decoding, one video ahead ------------------------------------------------------------------
    def submit(self, position: int) -> None:
        if position < len(self.todo) and position not in self.submitted:
            video = self.pipeline.video
            self.submitted[position] = self.worker.submit(
                str(self.todo[position].item.path), video.decode_config, video.model.preprocessing,
                self.run.spec.options.chunk_frames)

    def take(self, position: int):
        self.submit(position)
        return self.submitted.pop(position)

    # -- finishing videos -----------------------------------------------------------------------------
    def hand_over(self, encoded: EncodedVideo) -> None:
        """Finish a video whose frames are all encoded; its file is written in the background."""
        work = encoded.work
        try:
            write = finish_video(self.run.spec, self.pipeline, work, encoded.info, encoded.pending.result(),
                                 encoded.transcript)
        except Exception as error:
            record_failure(work.record, error)
            work.close()
            self.writer.drain()
            self.record(work.record)
            if fatal_error(error):
                raise
            return
        self.writer.start(write, lambda error, w=work: self.written(w, error))

    def hand_over_ready(self, *, flush: bool) -> None:
        """Finish the waiting videos that are complete, in order (``flush``: all of them,
        encoding what is still queued first)."""
        if flush and self.waiting and self.batches is not None:
            # a model error lands on the videos concerned; hand_over records it
            self.batches.flush()
        while self.waiting and self.waiting[0].pending.complete:
            self.hand_over(self.waiting.pop(0))

    def finish(self, record: RunRecord) -> None:
        """Record one input; the earlier inputs (their encoding and files) come first."""
        self.hand_over_ready(flush=True)
        self.writer.drain()
        self.record(record)

    def written(self, work: VideoWork, error: BaseException | None) -> None:
        """Called by ``writer.drain`` once an input's file is written (or failed to be)."""
        if error is not None:
            record_failure(work.record, error)
        else:
            work.record.status = STATUS_OK
        work.close()
        self.record(work.record)
        if fatal_error(error):
            raise error  # out of space or read-only: later videos would fail the same way

    # -- the loop ---------------------------------------------------------------------------------------
    def start_video(self, video: PlannedVideo, position: int) -> None:
        """Decode ``video`` (the ``position``-th of those needing work) and queue its frames for
        encoding; a failure is recorded at once."""
        work = VideoWork.start(video)
        try:
            decode_timings: dict = {}
            transcript = load_transcript(video.item, self.run.spec.options, work.record)
            info, chunks = self.worker.stream(self.take(position), timings=decode_timings,
                                              on_done=lambda: self.submit(position + 1))
            path = str(video.item.path)
            if self.batches is None:  # clip models: whole clips, one video at a time
                pending = Encoded(self.pipeline.video.encode_chunks(info, chunks, work.timer, path=path))
            else:
                pending = self.pipeline.video.stream_into(self.batches, info, chunks, work.timer, path=path)
            for stage, seconds in decode_timings.items():
                work.timer.add(stage, seconds)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # one input's failure is recorded, the batch goes on
            record_failure(work.record, error)
            if self.worker.has_pending():
                # a half-consumed job would feed stale frames to the next video
                self.worker.abandon()
                self.submitted.clear()
            work.close()
            self.finish(work.record)
            if fatal_error(error):
                raise  # out of space or read-only: later videos would fail the same way
            return
        # finished (and written, in the background) as soon as its last frames are encoded,
        # which may be in the next video's first batch
        self.waiting.append(EncodedVideo(work, info, pending, transcript))
        self.hand_over_ready(flush=False)

    def process(self) -> None:
        stop, observer = self.run.request.stop, self.run.request.observer
        try:
            position = 0
            for video in self.run.plan:
                if stop.is_set():
                    self.report.interrupted = True
                    break
                observer.on_input_start(video.item)
                if not video.needed:
                    self.finish(video.record())
                    continue
                self.start_video(video, position)
                position += 1
            self.hand_over_ready(flush=True)
        finally:
            try:
                self.writer.drain()  # a file being written is finished, not dropped
            except KeyboardInterrupt:
                self.report.interrupted = True
            finally:
                self.worker.close()


def place_locally(run: OpenRun) -> None:
    """Load the models (a missing model fails the run before anything is written, and per-video
    timings measure work, not loading), then process the plan on this device."""
    pipeline = Pipeline(run.spec.config, run.vocab)
    if run.todo:
        run.request.observer.on_message("loading models")
        pipeline.load()
    with run.recording(stopping="finishing the current video") as manifest:
        LocalRun(run, pipeline, manifest).process()


def run_single(request: RunRequest) -> RunReport:
    """The local engine on one device."""
    return execute(request, place_locally)
