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

    cropping = [0.0]  # seconds spent in resize_and_crop, inside the decode loop

    def crop(frame: np.ndarray) -> np.ndarray:
        # each frame is cropped as soon as it is decoded: one full-resolution frame alive at a
        # time instead of a chunk of them (16 x 6 MB at 1080p, 16 x 24 MB at 4K)
        started = time.perf_counter()
        cropped = resize_and_crop(frame[None], preprocessing)[0].numpy()
        cropping[0] += time.perf_counter() - started
        return cropped

    def chunks() -> Iterator[CropChunk]:
        iterator = iter_frame_chunks(handle, indices, chunk_frames=chunk_frames, path=path, transform=crop)
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

    return info, CropStream(chunks(), handle)


#: decoded crops a decoder may run ahead of a slower encoder before its reader is suspended:
#: ~430 crops of 224 x 224, over a dozen batches; more only raises the worker's peak memory
#: (256 MB made it 1.4x higher on a 10-minute video than on a 1-minute one)
READ_AHEAD_BYTES = 64 * 1024 * 1024


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
