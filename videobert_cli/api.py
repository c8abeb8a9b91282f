"""The public library API: everything the CLI does, as functions.

In-memory functions (:func:`extract_video`, :func:`extract_text`, :func:`fuse`) return feature
containers; file functions (:func:`extract_video_files`, :func:`extract_text_files`,
:func:`fuse_files`, :func:`run`) write HDF5 files. Stages are cached per configuration so that
calling a function in a loop loads each model once.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, TextIO

from videobert_cli.version import __version__
from videobert_cli.config import PipelineConfig
from videobert_cli.devices import require_single_device
from videobert_cli.pipeline.decoding import check_frame_decoder
from videobert_cli.errors import FeatureFileError, InputError, UsageError, out_of_memory
from videobert_cli.features import FusedFeatures, SourceInfo, TextFeatures, VideoFeatures
from videobert_cli.pipeline.inputs import output_names, plan_inputs
from videobert_cli.pipeline.overlap import WriteBehind, open_feed
from videobert_cli.pipeline.plan import source_info
from videobert_cli.pipeline.report import RunObserver, RunOptions, RunReport
from videobert_cli.pipeline.signals import StopFlag

_STAGES: dict[tuple[str, PipelineConfig], object] = {}


#: where each kind of stage is defined (imported when first used: the text stages need torch)
_STAGE_CLASSES = {"video": ("stages", "VideoStage"), "text": ("text_stages", "TextStage"),
                  "fusion": ("text_stages", "FusionStage")}


def _stage(kind: str, config: PipelineConfig, **extra):
    import importlib

    key = (kind, config, tuple(sorted(extra.items())))
    if key not in _STAGES:
        module, name = _STAGE_CLASSES[kind]
        factory = getattr(importlib.import_module(f"videobert_cli.pipeline.{module}"), name)
        _STAGES[key] = factory(config, **extra)
    return _STAGES[key]


def _transcript_of(source, *, literal: bool = False):
    from videobert_cli.text.transcripts import Transcript, parse_text, parse_transcript

    if isinstance(source, Transcript):
        return source
    if literal:
        return parse_text(str(source))
    return parse_transcript(source)


def _config(config: PipelineConfig | None) -> PipelineConfig:
    """``config``, or the defaults; a wrong type is a usage error here, not a TypeError deep inside."""
    if config is None:
        return PipelineConfig()
    if not isinstance(config, PipelineConfig):
        raise UsageError(f"config must be a PipelineConfig, got {type(config).__name__}",
                         hint="e.g. PipelineConfig(sampling=SamplingConfig(fps=2.0))")
    return config


def _path(path, what: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"{what} must be a file path (str or Path), got {type(path).__name__}")
    return Path(path)


def _paths(paths, what: str) -> list:
    """A list of inputs; a single path is one input, not a sequence of characters."""
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    if paths is None:
        raise UsageError(f"{what}: give a list of paths")
    return list(paths)


def extract_video(path: str | Path, config: PipelineConfig | None = None) -> VideoFeatures:
    """CNN features of the sampled frames of one video (in memory)."""
    path = _path(path, "video")
    return _stage("video", _config(config)).extract(path)


def extract_text(source, config: PipelineConfig | None = None, *, literal: bool = False) -> TextFeatures:
    """Token and cue features of a transcript file, a :class:`Transcript`, or (``literal``) a string."""
    config = _config(config)
    return _stage("text", config).extract(_transcript_of(source, literal=literal))


def _fusion_stage(config: PipelineConfig, video: VideoFeatures | None, text: TextFeatures | None):
    from videobert_cli.text.models import registered_text_models

    if video is None and text is None:
        raise UsageError("nothing to fuse: give video features, text features, or both")
    for value, kind, name in ((video, VideoFeatures, "video"), (text, TextFeatures, "text")):
        if value is not None and not isinstance(value, kind):
            raise UsageError(f"fuse: {name} must be {kind.__name__} or None, got {type(value).__name__}",
                             hint="fuse(video, text, config): video features first, as extract_video returns them")
    video_dim = int(video.features.shape[1]) if video is not None else None
    text_dim = int(text.token_features.shape[1]) if text is not None else None
    video_model = video.attrs.get("model_name") if video is not None else None
    text_model = text.attrs.get("model_name") if text is not None else None
    video_weights = (video.attrs.get("weights_sha256") or None) if video is not None else None
    text_weights = (text.attrs.get("weights_sha256") or None) if text is not None else None
    if video_dim is None:
        from videobert_cli.video.models import get_video_model_entry

        video_model = config.video_model.name
        video_dim = get_video_model_entry(video_model).feature_dim()
    if text_dim is None:
        text_model = config.text_model.name
        alias = {a.name: a for a in registered_text_models()}.get(text_model)
        text_dim = alias.feature_dim if alias is not None else _stage("text", config).feature_dim
    return _stage(
        "fusion", config, video_dim=video_dim, text_dim=text_dim, video_model=video_model, text_model=text_model,
        video_weights=video_weights, text_weights=text_weights,
    )


def fuse(
    video: VideoFeatures | None, text: TextFeatures | None, config: PipelineConfig | None = None
) -> FusedFeatures:
    """Fuse video and text features with the fusion Transformer (either side may be None)."""
    config = _config(config)
    return _fusion_stage(config, video, text).fuse(video, text)


def fuse_segments(video: VideoFeatures, text: TextFeatures, config: PipelineConfig | None = None):
    """VideoBERT segments ([CLS] text [>] video [SEP]), one per cue; None if none aligns."""
    config = _config(config)
    return _fusion_stage(config, video, text).fuse_segments(video, text)


# --- file-level helpers ----------------------------------------------------------------------
@dataclass
class FileResult:
    """One input of a file command: where it went, or why it failed."""

    input: str
    output: str | None = None
    error: str | None = None
    reason: str | None = None
    exception: BaseException | None = None  # kept so the CLI can show a traceback with --debug


@dataclass
class FileResults:
    results: list[FileResult] = field(default_factory=list)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.error]


def _input_failed(result: FileResult, error: BaseException) -> None:
    """Record ``error`` as the failure of one input (an :class:`InputError`, or out of memory as a
    ``resource`` failure); anything else is raised: it stops the command."""
    if isinstance(error, InputError):
        if error.path is None:  # e.g. a check on features that do not know their file
            error.path = result.input
        result.error, result.reason, result.exception = str(error), error.reason, error
        return
    # out of memory on one input (a long video, a big batch) leaves the next ones to try
    memory_error = out_of_memory(error, result.input) if isinstance(error, (MemoryError, RuntimeError)) else None
    if memory_error is None:
        raise error
    result.error, result.reason, result.exception = str(memory_error), memory_error.reason, error


def _run_file_jobs(jobs: Iterable[tuple[str, Callable[[], tuple[Path, Callable[[], None]]]]], on_done=None,
                   on_failure: Callable[[], None] | None = None) -> FileResults:
    """Run ``(label, work)`` jobs in order, as ``run`` processes videos: ``work()`` computes an
    input's features and returns ``(destination, write)``; the file is written in the background
    while the next input is worked on. An input's failure is recorded (``on_failure`` is called
    first) and the next one goes on; results keep the input order."""
    results = FileResults()
    writer = WriteBehind()

    def record(result: FileResult) -> None:
        results.results.append(result)
        if on_done is not None:
            on_done(result)

    def written(result: FileResult, destination: Path, error: BaseException | None) -> None:
        if error is None:
            result.output = str(destination)
        else:
            _input_failed(result, error)
        record(result)

    try:
        for label, work in jobs:
            result = FileResult(label)
            try:
                destination, write = work()
            except Exception as error:
                if on_failure is not None:
                    on_failure()
                _input_failed(result, error)
                writer.drain()
                record(result)
                continue
            writer.start(write, lambda error, r=result, d=destination: written(r, d, error))
    except BaseException:
        try:
            writer.drain()  # the files of earlier inputs are finished, not dropped
        except Exception:
            pass
        raise
    writer.drain()
    return results


def _outputs_for(inputs: list[Path], output: str | Path, suffix_hint: str) -> list[Path]:
    output = Path(output)
    if output.suffix in (".h5", ".hdf5"):
        if len(inputs) != 1:
            raise UsageError(
                f"-o {output} names one file but {len(inputs)} inputs were given",
                hint="give -o a directory to write one .h5 per input",
            )
        return [output]
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {output} exists and is not a directory", hint=f"use a directory or a {suffix_hint} file name")
    names = output_names([(path, None) for path in inputs])
    return [output / name for name in names]


def _write(path: Path, *, config: PipelineConfig, source: SourceInfo | None, extra: dict, **groups) -> None:
    from videobert_cli.store.hdf5 import write_feature_file

    write_feature_file(
        path,
        source=source,
        tool_version=__version__,
        config_hash=config.fingerprint(),
        extra_attrs=extra,
        dtype=config.output.dtype,
        compression=config.output.compression,
        **groups,
    )


def extract_video_files(
    videos: Iterable[str | Path], output: str | Path, config: PipelineConfig | None = None, *, on_done=None
) -> FileResults:
    """Write ``video/`` features of each video to ``output`` (a .h5 file for one video, else a directory).

    As in ``run``, the videos are decoded in a decode worker process, one ahead, while this
    process encodes, and each file is written while the next video is encoded. Each file's
    failure is one :class:`FileResult`; FFmpeg's own lines about it are not printed."""
    from videobert_cli.engines import hooks
    from videobert_cli.pipeline.timing import StageTimer
    from videobert_cli.decoders.decord import quiet_decoder_logs

    config = _config(config)
    require_single_device(config.runtime.device, "extract-video")
    check_frame_decoder(config.runtime.decoder)
    quiet_decoder_logs()
    paths = [_path(v, "video") for v in _paths(videos, "videos")]
    destinations = _outputs_for(paths, output, ".h5")
    from videobert_cli.pipeline.decode_worker import start_fork_server

    start_fork_server()  # beside the model's loading
    options = RunOptions()  # run's decoder timeout and chunk size
    feed = open_feed(config, [str(path) for path in paths], lambda: _stage("video", config), timeout=options.timeout,
                     chunk_frames=options.chunk_frames, decode=hooks.current().decode)
    stage = _stage("video", config)

    def work(position: int, path: Path, destination: Path):
        info, chunks = feed.open(position)
        features = stage.encode_chunks(info, chunks, StageTimer(), path=str(path))
        return destination, lambda: _write(destination, config=config, source=source_info(path),
                                           extra={"created_by": "videobert extract-video"}, video=features)

    try:
        stage.ready()
        return _run_file_jobs(
            ((str(path), lambda i=i, p=path, d=destination: work(i, p, d))
             for i, (path, destination) in enumerate(zip(paths, destinations))),
            on_done, on_failure=feed.failed,
        )
    finally:
        feed.close()


def extract_text_files(
    transcripts: Iterable[str | Path],
    output: str | Path,
    config: PipelineConfig | None = None,
    *,
    texts: Iterable[str] = (),
    on_done=None,
) -> FileResults:
    """Write ``text/`` features of each transcript (and each literal text) to ``output``."""
    config = _config(config)
    require_single_device(config.runtime.device, "extract-text")
    paths = [_path(t, "transcript") for t in _paths(transcripts, "transcripts")]
    literals = list(texts)
    names = [*paths, *(Path(f"text-{i}.txt") for i in range(len(literals)))]
    destinations = _outputs_for(names, output, ".h5")

    def work(source, is_literal: bool, destination: Path):
        features = extract_text(source, config, literal=is_literal)
        return destination, lambda: _write(destination, config=config,
                                           source=None if is_literal else source_info(Path(source)),
                                           extra={"created_by": "videobert extract-text"}, text=features)

    jobs = []
    for index, destination in enumerate(destinations):
        is_literal = index >= len(paths)
        source = literals[index - len(paths)] if is_literal else paths[index]
        jobs.append(("--text" if is_literal else str(source), lambda s=source, lit=is_literal, d=destination: work(s, lit, d)))
    return _run_file_jobs(jobs, on_done)


def _group_feature_files(paths: list[Path], *, pair_two: bool = True) -> list[tuple[str, Path | None, Path | None]]:
    """Pair files holding video/ and text/ features: by stem, or (``pair_two``) the only two
    files named."""
    from videobert_cli.store.hdf5 import load

    kinds: list[tuple[Path, bool, bool]] = []
    for path in paths:
        data = load(path)
        kinds.append((path, data.video is not None, data.text is not None))
    if pair_two and len(paths) == 2 and paths[0].stem != paths[1].stem:
        (a, av, at), (b, bv, bt) = kinds
        if av and not at and bt and not bv:
            return [(a.stem, a, b)]
        if bv and not bt and at and not av:
            return [(b.stem, b, a)]
    groups: dict[str, list] = {}
    for path, has_video, has_text in kinds:
        entry = groups.setdefault(path.stem, [path.stem, None, None])
        if has_video:
            if entry[1] is not None:
                raise UsageError(f"two files with video features for {path.stem!r}: {entry[1]} and {path}")
            entry[1] = path
        if has_text:
            if entry[2] is not None and entry[2] != entry[1]:
                raise UsageError(f"two files with text features for {path.stem!r}: {entry[2]} and {path}")
            entry[2] = path
    return [tuple(entry) for entry in groups.values()]


def fuse_files(
    inputs: Iterable[str | Path], output: str | Path, config: PipelineConfig | None = None, *, on_done=None
) -> FileResults:
    """Fuse the video and text features of HDF5 files (paired by stem; a directory stands for
    its ``*.h5`` feature files) into new files.

    Each output holds the ``video/`` and ``text/`` groups it was made from plus ``fused/``, the
    same layout as ``run`` writes.
    """
    from videobert_cli.store.hdf5 import load

    from videobert_cli.training.data import expand_feature_paths

    config = _config(config)
    require_single_device(config.runtime.device, "fuse")
    # a directory stands for its feature files: `fuse vid/ txt/` pairs them by name only
    given = [_path(p, "feature file") for p in _paths(inputs, "inputs")]
    paths = expand_feature_paths(given, groups=())
    for path in paths:
        if not path.is_file():
            raise FeatureFileError("file not found", path=path, hint="give HDF5 files written by extract-video/extract-text")
    groups = _group_feature_files(paths, pair_two=not any(path.is_dir() for path in given))
    destinations = _outputs_for([Path(stem + ".h5") for stem, _, _ in groups], output, ".h5")

    def work(video_path: Path | None, text_path: Path | None, destination: Path):
        video_file = load(video_path) if video_path is not None else None
        text_file = load(text_path) if text_path is not None else None
        video = video_file.video if video_file is not None else None
        text = text_file.text if text_file is not None else None
        fused = fuse(video, text, config)
        segments = None
        if config.fusion.align == "sentences" and video is not None and text is not None:
            segments = fuse_segments(video, text, config)
        attrs = (video_file or text_file).attrs
        source = None
        if attrs.get("source_path"):
            source = SourceInfo(attrs["source_path"], int(attrs.get("source_size", 0)),
                                float(attrs.get("source_mtime", 0.0)), attrs.get("source_sha256") or None)
        return destination, lambda: _write(destination, config=config, source=source,
                                           extra={"created_by": "videobert fuse"}, video=video, text=text,
                                           fused=fused, segments=segments)

    return _run_file_jobs(
        ((" + ".join(str(p) for p in (video_path, text_path) if p is not None),
          lambda v=video_path, t=text_path, d=destination: work(v, t, d))
         for (_, video_path, text_path), destination in zip(groups, destinations)),
        on_done,
    )


def run(
    inputs: Iterable[str],
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    options: RunOptions | None = None,
    *,
    recursive: bool = False,
    pattern: str | None = None,
    list_files: Iterable[str | Path] = (),
    transcripts_dir: str | Path | None = None,
    transcript_language: str | None = None,
    stdin: TextIO | None = None,
    observer: RunObserver | None = None,
    stop: StopFlag | None = None,
    engine: str = "local",
    engine_options: dict | None = None,
    index: bool | None = None,
) -> RunReport:
    """The whole pipeline per video: one HDF5 file per video in ``out_dir`` plus ``manifest.jsonl``.

    ``inputs`` are files, directories, or ``-`` (paths on ``stdin``). Returns a
    :class:`RunReport`; its ``exit_code`` is what the CLI exits with. Each video is paired with
    the transcript of its stem (``transcript_language`` chooses among ``NAME.en.vtt``,
    ``NAME.de.vtt``, ...; see :class:`~videobert_cli.pipeline.inputs.TranscriptFinder`).

    ``engine`` is ``"local"`` or ``"ray"`` (:mod:`videobert_cli.engines`; ``engine_options``
    such as ``address``, ``workers``, ``gpus_per_worker`` go to it). ``index``: write
    ``out_dir/index.h5`` at the end (True), never (False), or refresh it if it exists (None).

    Several devices, one worker process each (local engine): ``config.runtime.device`` a list
    such as ``"cuda:0,cuda:1"`` (``"cpu,cpu"`` on a CPU) or ``"all"`` (every visible GPU), e.g.
    ``run(["videos/"], "features/", PipelineConfig(runtime=RuntimeConfig(device="all")))``.
    """
    # --- engines and index (videobert_cli.engines, videobert_cli.store.index) ---
    from videobert_cli.engines import run_engine

    notes: list[str] = []
    if not isinstance(out_dir, (str, os.PathLike)):
        raise UsageError(f"out_dir must be a directory path, got {type(out_dir).__name__}")
    config = _config(config)
    check_frame_decoder(config.runtime.decoder)  # unknown, or its package missing: before any work
    if options is not None and not isinstance(options, RunOptions):
        raise UsageError(f"options must be RunOptions, got {type(options).__name__}")
    items = plan_inputs(
        _paths(inputs, "inputs"),
        recursive=recursive,
        pattern=pattern,
        list_files=list_files,
        stdin=stdin if stdin is not None else sys.stdin,
        transcripts_dir=transcripts_dir,
        transcript_language=transcript_language,
        out_dir=out_dir,
        notes=notes,
    )
    for note in notes:
        if observer is not None:
            observer.on_message(note)
    report = run_engine(engine, items, out_dir, config, options, observer=observer, stop=stop,
                        **(engine_options or {}))
    _refresh_index(out_dir, options, index, observer)
    return report


def _refresh_index(out_dir: str | Path, options: RunOptions | None, index: bool | None, observer) -> None:
    """Write or refresh ``out_dir/index.h5`` after a run; a failure is a message, not an error."""
    from videobert_cli.store.index import INDEX_NAME, write_index

    if index is False or (options is not None and options.dry_run):
        return
    if index is None and not (Path(out_dir) / INDEX_NAME).is_file():
        return
    try:
        write_index(out_dir)
    except Exception as error:  # the run's own outcome stands
        if observer is not None:
            observer.on_message(f"index not refreshed: {error}")
