"""Decoding stage: open, plan, decode and crop in bounded chunks.

Kept apart from the model stages so that decode processes (the local decode worker, Ray decode
tasks) import torch, torchvision and decord only, not transformers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from videobert_cli.config import PipelineConfig
from videobert_cli.pipeline.timing import StageTimer
from videobert_cli.video.decode import (
    DEFAULT_CHUNK_FRAMES,
    ReaderHandle,
    VideoInfo,
    iter_frame_chunks,
    open_video,
    plan_sampling,
    probe_video,
)
from videobert_cli.video.models import Preprocessing
from videobert_cli.video.preprocess import resize_and_crop


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
    decode_threads: int = 1,
    timer: StageTimer | None = None,
) -> tuple[VideoInfo, Iterator[CropChunk]]:
    """Open ``path``, plan the sampled frames and return an iterator of cropped chunks.

    Frames are decoded in playback order, ``chunk_frames`` at a time, and dropped as soon as
    they are cropped, so memory does not grow with the video's length.
    """
    timer = timer or StageTimer()
    with timer.stage("decode"):
        reader = open_video(path, num_threads=decode_threads)
        info = probe_video(reader, path)
        indices = plan_sampling(info, config.sampling)

    handle = ReaderHandle(reader, lambda: open_video(path, num_threads=decode_threads))

    def chunks() -> Iterator[CropChunk]:
        iterator = iter_frame_chunks(handle, indices, chunk_frames=chunk_frames, path=path)
        while True:
            started = time.perf_counter()
            try:
                chunk_indices, frames = next(iterator)
            except StopIteration:
                return
            decoded = time.perf_counter()
            crops = resize_and_crop(frames, preprocessing)
            del frames
            timer.add("decode", decoded - started)
            timer.add("preprocess", time.perf_counter() - decoded)
            yield CropChunk(chunk_indices, info.frame_starts[chunk_indices], crops)

    return info, CropStream(chunks(), handle)


#: decoded crops a decoder may run ahead of a slower encoder before its reader is suspended
READ_AHEAD_BYTES = 256 * 1024 * 1024


class CropStream:
    """The chunks of one video, with :meth:`suspend` to close the reader while waiting."""

    def __init__(self, chunks: Iterator[CropChunk], handle: ReaderHandle):
        self._chunks = chunks
        self.handle = handle

    def __iter__(self) -> "CropStream":
        return self

    def __next__(self) -> CropChunk:
        return next(self._chunks)

    def suspend(self) -> None:
        self.handle.suspend()

    def read_ahead(self) -> Iterator[CropChunk]:
        """Decode in a thread up to READ_AHEAD_BYTES of crops ahead of the consumer; when that
        is full, close the reader (see ReaderHandle) until the consumer catches up."""
        from videobert_cli.pipeline.prefetch import prefetch

        return prefetch(self, depth=1 << 20, max_bytes=READ_AHEAD_BYTES, on_full=self.suspend,
                        size_of=lambda chunk: chunk.crops.numel())
