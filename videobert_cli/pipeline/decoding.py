"""Decoding stage: open, plan, decode and crop in bounded chunks, from a :class:`DecodeRequest`.

Kept apart from the model stages so that decode processes (the local decode worker, Ray decode
tasks) import numpy and the decoders only: neither torch nor transformers.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from videobert_cli.config import PipelineConfig, SamplingConfig
from videobert_cli.decoders import base as decoders
from videobert_cli.decoders.base import DEFAULT_CHUNK_FRAMES, VideoInfo
from videobert_cli.decoders.sampling import plan_sampling
from videobert_cli.pipeline.prefetch import Prefetched, prefetch
from videobert_cli.pipeline.timing import StageTimer
from videobert_cli.video.preprocess import Preprocessing, resize_and_crop

def one_compute_thread() -> None:
    """Resize and crop on one thread in this (decode) process: the cores belong to the encoder.

    numpy's BLAS is limited now; torch, which only a few preprocessings import, reads
    ``OMP_NUM_THREADS`` when it is first imported (or is limited now if it already is).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


#: check a decoder name before any work (unknown, or its package missing: ConfigError)
check_frame_decoder = decoders.check


@dataclass(frozen=True)
class DecodeRequest:
    """Everything decoding one video needs (what a decode worker or task receives)."""

    path: str
    sampling: SamplingConfig  # resolved for the model's kind (clip defaults for clip models)
    preprocessing: Preprocessing  # the resize and centre crop done next to the decoder
    decoder: str = decoders.AUTO  # ``--decoder``
    decode_threads: int = 1
    chunk_frames: int = DEFAULT_CHUNK_FRAMES

    @classmethod
    def of(cls, path: str | Path, config: PipelineConfig, preprocessing: Preprocessing,
           chunk_frames: int = DEFAULT_CHUNK_FRAMES, decode_threads: int | None = None) -> "DecodeRequest":
        """The request for ``path`` under ``config`` (``VideoStage.decode_config``: sampling resolved,
        decoding threads set for the model's device; 1 where they are not set)."""
        return cls(str(path), config.sampling, preprocessing, config.runtime.decoder,
                   decode_threads or config.runtime.decode_threads or 1, chunk_frames)


@dataclass
class CropChunk:
    """A decoded, resized and cropped run of sampled frames."""

    frame_indices: np.ndarray  # (n,) int64
    timestamps: np.ndarray  # (n,) float64 seconds
    crops: np.ndarray  # (n, 3, S, S) uint8


#: decoded crops a decoder may run ahead of a slower encoder before it is suspended: ~430
#: crops of 224 x 224, over a dozen batches; more only raises the decoding process's peak memory
#: (256 MB made it 1.4x higher on a 10-minute video than on a 1-minute one)
READ_AHEAD_BYTES = 64 * 1024 * 1024
#: chunks read ahead of the model from elsewhere (the decode worker's queue bounds it already)
READ_AHEAD_CHUNKS = 2


class CropStream:
    """One video's chunks, and how to read them ahead in a thread (:meth:`read_ahead`).

    ``suspend``: stops the decoder while the read-ahead is full (decord: closes its reader);
    given for chunks decoded in this process, which are then read ahead up to
    :data:`READ_AHEAD_BYTES`; chunks from elsewhere are read :data:`READ_AHEAD_CHUNKS` ahead.
    """

    def __init__(self, chunks: Iterator[CropChunk], suspend: Callable[[], None] | None = None, decoder: str = ""):
        self._source = chunks
        self._suspend = suspend
        self.decoder = decoder  # the decoder that decodes this video ("" where not known here)

    def __iter__(self) -> "CropStream":
        return self

    def __next__(self) -> CropChunk:
        return next(self._source)

    def suspend(self) -> None:
        if self._suspend is not None:
            self._suspend()

    def read_ahead(self) -> Prefetched[CropChunk]:
        if self._suspend is None:
            return prefetch(self, depth=READ_AHEAD_CHUNKS)
        return prefetch(self, depth=1 << 20, max_bytes=READ_AHEAD_BYTES, on_full=self.suspend,
                        size_of=lambda chunk: chunk.crops.nbytes)


def read_ahead(chunks: Iterator[CropChunk]) -> Prefetched[CropChunk]:
    """``chunks`` (a :class:`CropStream`, or any iterator of chunks) read ahead in a thread."""
    return (chunks if isinstance(chunks, CropStream) else CropStream(chunks)).read_ahead()


def decode(request: DecodeRequest, timer: StageTimer | None = None) -> tuple[VideoInfo, CropStream]:
    """Open the video, plan the sampled frames once (``info.sampled``) and return its cropped chunks.

    Frames are decoded in playback order, ``chunk_frames`` at a time, and each is cropped as
    soon as it is decoded, so memory does not grow with the video's length.
    """
    timer = timer or StageTimer()
    with timer.stage("decode"):
        video = decoders.open_video(request.path, request.decoder, threads=request.decode_threads)
        indices = plan_sampling(video.info, request.sampling)
    info = replace(video.info, sampled=indices)
    cropping = [0.0]  # seconds spent in resize_and_crop, inside the decode loop

    def crop(frame: np.ndarray) -> np.ndarray:
        # one full-resolution frame alive at a time instead of a chunk of them (16 x 6 MB at
        # 1080p, 16 x 24 MB at 4K)
        started = time.perf_counter()
        cropped = resize_and_crop(frame[None], request.preprocessing)[0]
        cropping[0] += time.perf_counter() - started
        return cropped

    def chunks() -> Iterator[CropChunk]:
        iterator = video.chunks(indices, chunk_frames=request.chunk_frames, transform=crop)
        while True:
            started = time.perf_counter()
            cropping[0] = 0.0
            try:
                chunk_indices, crops = next(iterator)
            except StopIteration:
                return
            timer.add("decode", time.perf_counter() - started - cropping[0])
            timer.add("preprocess", cropping[0])
            yield CropChunk(chunk_indices, info.frame_starts[chunk_indices], crops)

    return info, CropStream(chunks(), video.suspend, info.decoder)


def decode_crops(
    path: str | Path,
    config: PipelineConfig,
    preprocessing: Preprocessing,
    *,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    decode_threads: int | None = None,
    timer: StageTimer | None = None,
) -> tuple[VideoInfo, CropStream]:
    """:func:`decode` of ``DecodeRequest.of(path, config, ...)``."""
    return decode(DecodeRequest.of(path, config, preprocessing, chunk_frames, decode_threads), timer)
