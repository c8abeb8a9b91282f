"""One run, whatever the engine: :func:`open_run` opens it, :func:`process_video` processes a video.

Guarantees (docs/runs.md): one bad input never stops the batch; every input gets a
record in ``OUT_DIR/manifest.jsonl``; outputs appear atomically; a re-run skips inputs whose
output is complete and was made from the same input with the same configuration; one run per
output directory at a time; Ctrl-C/SIGTERM stop after the current video.

The engines (:mod:`videobert_cli.engines`) only decide where decoding and encoding happen:
each calls :func:`execute` with a :class:`RunRequest` and a function that places the work,
and each video's features, warnings, timings and file come from :func:`process_video` (or,
for the local engine's cross-video batches, :func:`finish_video`).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from videobert_cli.version import __version__
from videobert_cli.config import PipelineConfig
from videobert_cli.errors import OutputError, TranscriptError
from videobert_cli.pipeline.inputs import VideoInput
from videobert_cli.pipeline.lock import OutputLock
from videobert_cli.pipeline.plan import (
    PlannedVideo,
    clean_stale_temps,
    ensure_output_dir,
    load_run_vocab,
    plan_videos,
    source_info,
    transcript_identity,
)
from videobert_cli.pipeline.report import (
    MANIFEST_NAME,
    STATUS_OK,
    Manifest,
    RunObserver,
    RunOptions,
    RunRecord,
    RunReport,
    SilentObserver,
    now,
    record_failure,
    record_unstarted,
)
from videobert_cli.pipeline.signals import StopFlag, graceful_signals
from videobert_cli.pipeline.timing import StageTimer


@dataclass(frozen=True)
class RunRequest:
    """What every engine is asked to do: ``items`` into ``out_dir`` with ``config`` and
    ``options``, telling ``observer``, stopping when ``stop`` is set."""

    items: tuple[VideoInput, ...]
    out_dir: Path
    config: PipelineConfig = field(default_factory=PipelineConfig)
    options: RunOptions = field(default_factory=RunOptions)
    observer: RunObserver = field(default_factory=SilentObserver)
    stop: StopFlag = field(default_factory=StopFlag)

    @classmethod
    def of(cls, items, out_dir: str | Path, config: PipelineConfig | None = None, options: RunOptions | None = None,
           *, observer: RunObserver | None = None, stop: StopFlag | None = None) -> "RunRequest":
        """A request with the defaults for what is None."""
        return cls(tuple(items), Path(out_dir), config or PipelineConfig(), options or RunOptions(),
                   observer or SilentObserver(), stop or StopFlag())

    def with_config(self, config: PipelineConfig) -> "RunRequest":
        return replace(self, config=config)


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs to process the videos of a run (pickled to device and Ray workers)."""

    config: PipelineConfig
    options: RunOptions
    config_hash: str


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
            from videobert_cli.pipeline.text_stages import TextStage

            self._text = TextStage(self.config)
        return self._text

    @property
    def fusion(self):
        if self._fusion is None:
            from videobert_cli.pipeline.text_stages import FusionStage

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

    def load(self) -> "Pipeline":
        """Load every model now (a missing model fails here, before any video is written) and
        check the vocabulary against the video model."""
        self.fusion
        self.video.ready()
        if self.vocab is not None:
            from videobert_cli.vocab import check_compatible

            check_compatible(self.video.identity(), self.video.feature_dim, self.vocab)
        return self

    def identities(self) -> dict:
        return {
            "video": self.video.identity(),
            "text": self.text.identity(),
            "fusion": {k: v for k, v in self.fusion.attrs.items() if k != "checkpoint_metadata"},
        }


def load_pipeline(spec: RunSpec, vocab=None) -> Pipeline:
    """The pipeline of a worker with every model loaded (its own copy of ``--vocab``)."""
    if vocab is None:
        vocab = load_run_vocab(spec.options.vocab)
    return Pipeline(spec.config, vocab).load()


# --- opening a run --------------------------------------------------------------------------------
@dataclass
class OpenRun:
    """A run whose output directory is locked and whose inputs are planned."""

    request: RunRequest
    spec: RunSpec
    report: RunReport
    plan: list[PlannedVideo]
    vocab: object  # the loaded --vocab, or None
    started: float

    @property
    def todo(self) -> list[PlannedVideo]:
        return [video for video in self.plan if video.needed]

    def finish_report(self) -> None:
        self.report.finished_at = now()
        self.report.seconds = time.perf_counter() - self.started

    @contextmanager
    def recording(self, fields: dict | None = None, *, stopping: str,
                  on_second_signal: Callable[[], None] | None = None) -> Iterator[Manifest]:
        """The manifest of the run, its run line written (``fields`` added), under graceful
        signals (the first one's message says ``stopping``). A second signal interrupts the run
        (``on_second_signal`` then runs); at the end the inputs left unstarted are recorded and
        the summary written, whatever happened."""
        request, report = self.request, self.report
        manifest = Manifest(request.out_dir / MANIFEST_NAME)
        manifest.write({"type": "run", "started_at": report.started_at, "tool_version": __version__,
                        "config_hash": self.spec.config_hash, "inputs": len(self.plan), "pid": os.getpid(),
                        **(fields or {})})
        request.observer.on_start(len(self.plan))
        try:
            with graceful_signals(request.stop, on_first=lambda name: request.observer.on_message(
                    f"{name}: {stopping}, then stopping (again to stop now)")):
                yield manifest
        except KeyboardInterrupt:
            report.interrupted = True
            if on_second_signal is not None:
                on_second_signal()
        finally:
            if report.interrupted:
                record_unstarted(manifest, report, self.plan)
            self.finish_report()
            manifest.write({"type": "summary", **report.summary()})
            manifest.close()


@contextmanager
def open_run(request: RunRequest) -> Iterator[OpenRun]:
    """Open a run: its vocabulary and configuration fingerprint, the output directory (made,
    checked, locked, cleared of an interrupted run's temporary files) and the plan."""
    options, out_dir, observer = request.options, request.out_dir, request.observer
    report = RunReport(output_dir=str(out_dir), started_at=now(), dry_run=options.dry_run)
    started = time.perf_counter()
    vocab = load_run_vocab(options.vocab)
    config_hash = request.config.fingerprint(identities={"vocab_sha256": vocab.sha256} if vocab is not None else None)
    ensure_output_dir(out_dir)
    with OutputLock(out_dir, wait=options.wait_lock):
        removed = clean_stale_temps(out_dir)
        if removed:
            observer.on_message(f"removed {removed} temporary file(s) left by an interrupted run")
        plan = plan_videos(request.items, out_dir, config_hash, options)
        yield OpenRun(request, RunSpec(request.config, options, config_hash), report, plan, vocab, started)


def execute(request: RunRequest, place: Callable[[OpenRun], None]) -> RunReport:
    """Open the run and let ``place`` (an engine) do the work; a dry run only records its plan."""
    with open_run(request) as run:
        if request.options.dry_run:
            run.report.records.extend(video.dry_run_record() for video in run.plan)
            run.finish_report()
        else:
            place(run)
    return run.report


# --- one video ------------------------------------------------------------------------------------
@dataclass
class VideoWork:
    """One video being processed: its plan entry, its record and its stage timer."""

    video: PlannedVideo
    record: RunRecord
    timer: StageTimer
    started: float

    @classmethod
    def start(cls, video: PlannedVideo, timer: StageTimer | None = None) -> "VideoWork":
        return cls(video, video.record(), timer if timer is not None else StageTimer(), time.perf_counter())

    def close(self) -> None:
        """Its time and stage timings go into the record."""
        self.record.seconds = round(time.perf_counter() - self.started, 4)
        self.record.timings = self.timer.as_dict()


def fatal_error(error: BaseException | None) -> OutputError | None:
    """The error that stops a run (out of space, read-only output: later videos would fail the
    same way), or None."""
    return error if isinstance(error, OutputError) else None


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


def process_video(spec: RunSpec, pipeline: Pipeline, work: VideoWork,
                  open_stream: Callable[[dict], tuple]) -> BaseException | None:
    """Everything after decoding for one video, shared by every engine; returns the error that
    failed it (recorded in ``work.record``) or None (the record says ``ok``).

    ``open_stream(timings)`` returns ``(VideoInfo, iterator of CropChunk)`` - from the local
    decode worker, a Ray decode task, or in-process decoding - and fills ``timings`` with the
    decoder's stage times.
    """
    decode_timings: dict = {}
    failure = None
    try:
        transcript = load_transcript(work.video.item, spec.options, work.record)
        info, chunks = open_stream(decode_timings)
        features = pipeline.video.encode_chunks(info, chunks, work.timer, path=str(work.video.item.path))
        finish_video(spec, pipeline, work, info, features, transcript)()
        for stage, seconds in decode_timings.items():
            work.timer.add(stage, seconds)
        work.record.status = STATUS_OK
    except Exception as error:  # one input's failure is recorded, the batch goes on
        record_failure(work.record, error)
        failure = error
    work.close()
    return failure


def finish_video(spec: RunSpec, pipeline: Pipeline, work: VideoWork, info, video, transcript) -> Callable[[], None]:
    """The rest of :func:`process_video` once the video's features are encoded: visual words,
    text features and fusion; returns the function that writes the file (the local engine runs
    it in the background while the next video is encoded)."""
    from videobert_cli.store.hdf5 import write_feature_file

    config, options, record, timer = spec.config, spec.options, work.record, work.timer
    item, output = work.video.item, work.video.output
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
                config_hash=spec.config_hash,
                extra_attrs={
                    "transcript_source": transcript_identity(item.transcript, with_hash=options.verify_hash),
                    "created_by": "videobert run",
                },
                dtype=config.output.dtype,
                compression=config.output.compression,
            )
        if source.sha256:
            record.fingerprint["sha256"] = source.sha256

    return write
