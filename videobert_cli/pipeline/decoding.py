"""Decoding stage: open, plan, decode and crop in bounded chunks.

Kept apart from the model stages so that decode processes (the local decode worker, Ray decode
tasks) import torch, torchvision and decord only, not transformers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from videobert_cli.config import PipelineConfig
from videobert_cli.errors import ConfigError
from videobert_cli.pipeline.timing import StageTimer
from videobert_cli.video.decode import (
    DEFAULT_CHUNK_FRAMES,
    ReaderHandle,
    VideoInfo,
    iter_frame_chunks,
    key_indices,
    open_video,
    plan_sampling,
    probe_video,
)
from videobert_cli.video.models import Preprocessing
from videobert_cli.video.preprocess import resize_and_crop

log = logging.getLogger(__name__)

#: ``(indices, frames)`` runs of decoded (and transformed) frames, as iter_frame_chunks yields
FrameChunks = Iterator[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class FrameJob:
    """One video's frames to decode: what every frame decoder is given."""

    path: str | Path
    info: VideoInfo
    indices: np.ndarray
    chunk_frames: int
    transform: Callable[[np.ndarray], np.ndarray]
    decode_threads: int


@dataclass
class FrameSource:
    """A decoder's frames, its way to stop work while the consumer waits, and its name."""

    chunks: FrameChunks
    suspend: Callable[[], None]
    decoder: str
    note: str = ""  # a warning for the manifest: why not the decoder asked for, or what to beware of


#: the manifest warning for open-GOP streams decoded by decord
OPEN_GOP_WARNING = ("decord may return shifted frames here: this stream has open GOPs (decord counts frames in "
                    "decoding order when it skips or seeks); --decoder auto decodes such MP4/Matroska/AVI files with PyAV")


def _decord_source(job: FrameJob, reader) -> FrameSource:
    path, threads = job.path, job.decode_threads  # the reopen closure must not hold the reader
    note = ""
    if len(job.indices):
        from videobert_cli.video.pyav_decode import decode_order_differs

        keyframes = key_indices(reader)  # None without an index: decord then skips without seeking
        if keyframes is not None and decode_order_differs(path, keyframes):
            log.warning("%s: %s", path, OPEN_GOP_WARNING)
            note = OPEN_GOP_WARNING
    handle = ReaderHandle(reader, lambda: open_video(path, num_threads=threads))
    chunks = iter_frame_chunks(handle, job.indices, chunk_frames=job.chunk_frames, path=job.path, transform=job.transform)
    return FrameSource(chunks, handle.suspend, "decord", note)


def _pyav_source(job: FrameJob, reader, *, asked: bool = True) -> FrameSource:
    """PyAV's frames where they are known to equal decord's, decord's otherwise.

    ``asked``: the user named PyAV (``--decoder pyav``), so falling back is worth a warning;
    under ``auto`` it is the expected course for, e.g., 10-bit video.
    """
    from videobert_cli.video.pyav_decode import iter_frame_chunks_pyav, pyav_plan

    plan, why_not = pyav_plan(job.path, job.info.num_frames, job.info.frame_starts, (job.info.width, job.info.height))
    if plan is None:
        log.log(logging.WARNING if asked else logging.INFO, "%s: decoding with decord, not PyAV: %s", job.path, why_not)
        source = _decord_source(job, reader)
        if asked:
            source.note = "; ".join(filter(None, [f"decoded with decord, not PyAV: {why_not}", source.note]))
        return source
    del reader  # decord must not decode ahead in the background while PyAV decodes
    # nothing runs between calls here, so there is nothing to stop while the consumer waits
    chunks = iter_frame_chunks_pyav(job.path, plan, job.indices, chunk_frames=job.chunk_frames,
                                    transform=job.transform, threads=job.decode_threads)
    return FrameSource(chunks, lambda: None, "pyav")


def _check_pyav() -> None:
    from videobert_cli.video.pyav_decode import import_av

    import_av()


def _auto_source(job: FrameJob, reader) -> FrameSource:
    """The default: PyAV where it gives decord's pixels, since decord's read-ahead makes the
    decode worker's peak memory grow with the video's length (``docs/benchmarks.md``);
    decord for the rest, and wherever PyAV is not installed."""
    try:
        _check_pyav()
    except ConfigError:
        return _decord_source(job, reader)
    return _pyav_source(job, reader, asked=False)


#: frame decoders by name (``RuntimeConfig.decoder``, ``--decoder``); all give the same pixels
FRAME_DECODERS: dict[str, Callable[[FrameJob, object], FrameSource]] = {
    "auto": _auto_source,
    "decord": _decord_source,
    "pyav": _pyav_source,
}
#: what a decoder needs beyond decord, checked when a configuration names it
_DECODER_CHECKS: dict[str, Callable[[], None]] = {"pyav": _check_pyav}


def register_frame_decoder(
    name: str, factory: Callable[[FrameJob, object], FrameSource], *, check: Callable[[], None] | None = None
) -> None:
    """Make ``factory(job, reader)`` available as ``--decoder NAME``; it must yield decord's frames.

    ``reader`` is the decord reader that probed the video: use it or drop every reference to
    it (decord decodes ahead in the background for as long as a reader lives). ``check``
    raises :class:`ConfigError` when the decoder cannot run here (e.g. a missing package).
    """
    FRAME_DECODERS[name] = factory
    if check is not None:
        _DECODER_CHECKS[name] = check


def check_frame_decoder(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is a registered decoder that can run here."""
    if name not in FRAME_DECODERS:
        raise ConfigError(f"unknown decoder {name!r}", hint=f"use one of {', '.join(sorted(FRAME_DECODERS))}")
    _DECODER_CHECKS.get(name, lambda: None)()


def frame_source(job: FrameJob, reader, decoder: str) -> FrameSource:
    """The frames of ``job`` from the decoder called ``decoder`` (which takes over ``reader``)."""
    check_frame_decoder(decoder)
    return FRAME_DECODERS[decoder](job, reader)


@dataclass
class CropChunk:
    """A decoded, resized and cropped run of sampled frames."""

    frame_indices: np.ndarray  # (n,) int64
    timestamps: np.ndarray  # (n,) float64 seconds
    crops: torch.Tensor  # (n, 3, S, S) uint8


def decode_crops(
    path: str | Path,
    config: PipelineConfig,
    preprocessing: Preprocessing,
    *,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    decode_threads: int | None = None,
    timer: StageTimer | None = None,
) -> tuple[VideoInfo, Iterator[CropChunk]]:
    """Open ``path``, plan the sampled frames and return an iterator of cropped chunks.

    Frames are decoded in playback order, ``chunk_frames`` at a time, and dropped as soon as
    they are cropped, so memory does not grow with the video's length. ``decode_threads``
    defaults to ``config.runtime.decode_threads``, and to 1 where that is not set (the
    pipeline's stages set it for their device: ``VideoStage.decode_config``).
    """
    timer = timer or StageTimer()
    decode_threads = decode_threads or config.runtime.decode_threads or 1
    with timer.stage("decode"):
        reader = open_video(path, num_threads=decode_threads)
        info = probe_video(reader, path)
        indices = plan_sampling(info, config.sampling)

    cropping = [0.0]  # seconds spent in resize_and_crop, inside the decode loop

    def crop(frame: np.ndarray) -> np.ndarray:
        # each frame is cropped as soon as it is decoded: one full-resolution frame alive at a
        # time instead of a chunk of them (16 x 6 MB at 1080p, 16 x 24 MB at 4K)
        started = time.perf_counter()
        cropped = resize_and_crop(frame[None], preprocessing)[0].numpy()
        cropping[0] += time.perf_counter() - started
        return cropped

    source = frame_source(FrameJob(path, info, indices, chunk_frames, crop, decode_threads), reader,
                          config.runtime.decoder)
    del reader  # the decoder owns it now (decord keeps it, PyAV drops it)
    info = replace(info, decoder=source.decoder, decoder_note=source.note)

    def chunks() -> Iterator[CropChunk]:
        iterator = source.chunks
        while True:
            started = time.perf_counter()
            cropping[0] = 0.0
            try:
                chunk_indices, crops = next(iterator)
            except StopIteration:
                return
            timer.add("decode", time.perf_counter() - started - cropping[0])
            timer.add("preprocess", cropping[0])
            yield CropChunk(chunk_indices, info.frame_starts[chunk_indices], torch.from_numpy(crops))

    return info, CropStream(chunks(), source)


#: decoded crops a decoder may run ahead of a slower encoder before its reader is suspended:
#: ~430 crops of 224 x 224, over a dozen batches; more only raises the worker's peak memory
#: (256 MB made it 1.4x higher on a 10-minute video than on a 1-minute one)
READ_AHEAD_BYTES = 64 * 1024 * 1024


class CropStream:
    """The chunks of one video, with :meth:`suspend` to close the reader while waiting."""

    def __init__(self, chunks: Iterator[CropChunk], source: FrameSource):
        self._chunks = chunks
        self.source = source

    def __iter__(self) -> "CropStream":
        return self

    def __next__(self) -> CropChunk:
        return next(self._chunks)

    @property
    def decoder(self) -> str:
        """The decoder that decodes this video (``pyav`` falls back to ``decord`` for some)."""
        return self.source.decoder

    def suspend(self) -> None:
        self.source.suspend()

    def read_ahead(self) -> Iterator[CropChunk]:
        """Decode in a thread up to READ_AHEAD_BYTES of crops ahead of the consumer; when that
        is full, stop the decoder (decord: close the reader, see ReaderHandle) until the
        consumer catches up."""
        from videobert_cli.pipeline.prefetch import prefetch

        return prefetch(self, depth=1 << 20, max_bytes=READ_AHEAD_BYTES, on_full=self.suspend,
                        size_of=lambda chunk: chunk.crops.numel())
