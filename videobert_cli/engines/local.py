"""The local engine on one device: this process encodes, a decode worker process decodes.

The decode worker reads one video ahead (:class:`~videobert_cli.pipeline.overlap.DecodeFeed`,
as for ``extract-video``). Short videos share the model's batches (a video's last frames wait for the next
video's first ones), and each file is written in the background while the next videos are
encoded (:class:`~videobert_cli.pipeline.overlap.WriteBehind`); records keep the input order.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from videobert_cli.pipeline.decode_worker import start_fork_server
from videobert_cli.pipeline.overlap import DecodeFeed, WriteBehind, open_feed
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


class LocalRun:
    """The work of one open run on this machine's single device."""

    def __init__(self, run: OpenRun, pipeline: Pipeline, manifest: Manifest, feed: DecodeFeed | None):
        from videobert_cli.pipeline.stages import SharedBatches

        self.run = run
        self.manifest = manifest
        self.pipeline = pipeline
        self.feed = feed  # None: nothing to do (no model is loaded)
        self.writer = WriteBehind()
        # Cross-video batching: a video's last frames wait in `batches` for the next video's
        # first ones, so short videos fill the model's batches together. A video is finished
        # (text, fusion, file) once its frames are all encoded; records keep the input order.
        video = self.pipeline.video if feed is not None else None
        self.batches = SharedBatches(video) if video is not None and video.model.kind != "clip" else None
        self.waiting: list[EncodedVideo] = []

    @property
    def report(self) -> RunReport:
        return self.run.report

    def record(self, record: RunRecord) -> None:
        record_input(self.manifest, self.report, self.run.request.observer, record)

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
            info, chunks = self.feed.open(position, decode_timings)
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
            self.feed.failed()
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


def place_locally(run: OpenRun) -> None:
    """Load the models (a missing model fails the run before anything is written, and per-video
    timings measure work, not loading), then process the plan on this device."""
    pipeline = Pipeline(run.spec.config, run.vocab)
    if run.todo:
        run.request.observer.on_message("loading models")
        start_fork_server()  # beside the video model's loading
        options = run.spec.options
        # the first videos decode while the models load
        feed = open_feed(run.spec.config, [str(planned.item.path) for planned in run.todo], lambda: pipeline.video,
                         timeout=options.timeout, chunk_frames=options.chunk_frames, decode=hooks.current().decode)
    else:
        feed = None
    try:
        if feed is not None:
            pipeline.load()
        with run.recording(stopping="finishing the current video") as manifest:
            LocalRun(run, pipeline, manifest, feed).process()
    finally:
        if feed is not None:
            feed.close()


def run_single(request: RunRequest) -> RunReport:
    """The local engine on one device."""
    return execute(request, place_locally)
