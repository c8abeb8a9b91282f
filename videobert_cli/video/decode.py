"""Decoding with decord: video facts, the sampling plan, and frames streamed in bounded chunks.

torch is imported before decord on purpose: importing decord first and then initialising CUDA
can segfault (dmlc/decord #293, #324).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch  # noqa: F401  (import order matters, see module docstring)

from videobert_cli.config import SamplingConfig
from videobert_cli.errors import VideoDecodeError

#: frames decoded per chunk; bounds memory independently of video length
DEFAULT_CHUNK_FRAMES = 16


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video as the decoder sees them."""

    path: str
    num_frames: int
    native_fps: float
    duration: float  # end time of the last frame, seconds
    width: int
    height: int
    frame_starts: np.ndarray  # (num_frames,) presentation start time of every frame, seconds
    frame_ends: np.ndarray  # (num_frames,)

    def to_attrs(self) -> dict:
        """The video facts stored in the HDF5 ``video/`` group."""
        return {
            "native_fps": float(self.native_fps),
            "num_frames": int(self.num_frames),
            "duration": float(self.duration),
            "width": int(self.width),
            "height": int(self.height),
        }


def _check_input_file(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError("file not found", path=path, hint="check the path")
    if path.is_dir():
        raise VideoDecodeError("is a directory, not a video file", path=path)
    if not os.access(path, os.R_OK):
        raise VideoDecodeError("file is not readable (permission denied)", path=path, hint="check its permissions")
    if path.stat().st_size == 0:
        raise VideoDecodeError("file is empty (0 bytes)", path=path)


def open_video(path: str | Path, *, num_threads: int = 0):
    """Open a video with decord, turning its failures into :class:`VideoDecodeError`."""
    import decord

    path = Path(path)
    _check_input_file(path)
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
    except Exception as exc:  # decord raises DECORDError/RuntimeError with C++ messages
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if "stream" in message.lower() and "video" in message.lower():
            reason = "no video stream (audio-only or not a video)"
        else:
            reason = "not a readable video (unknown format or corrupt)"
        raise VideoDecodeError(f"{reason}: {message[:160]}", path=path) from exc


def probe_video(reader, path: str | Path) -> VideoInfo:
    """Read frame count, rate, size and every frame's timestamp (no pixel decoding)."""
    num_frames = len(reader)
    if num_frames <= 0:
        raise VideoDecodeError("video has no frames", path=path)
    try:
        times = np.asarray(reader.get_frame_timestamp(np.arange(num_frames)), dtype=np.float64)
        first = reader[0]
    except Exception as exc:
        raise VideoDecodeError(f"cannot decode frames: {str(exc).splitlines()[0][:160]}", path=path) from exc
    height, width = int(first.shape[0]), int(first.shape[1])
    starts, ends = times[:, 0], times[:, 1]
    if not np.all(np.isfinite(starts)):
        raise VideoDecodeError("decoder reported invalid frame timestamps", path=path)
    # decord reports 0-length last frames for some containers; the frame still lasts 1/fps.
    native_fps = float(reader.get_avg_fps()) or 0.0
    ends = np.where(ends > starts, ends, starts + (1.0 / native_fps if native_fps > 0 else 0.0))
    return VideoInfo(
        path=str(path),
        num_frames=num_frames,
        native_fps=native_fps,
        duration=float(ends.max()),
        width=width,
        height=height,
        frame_starts=starts,
        frame_ends=ends,
    )


def frame_at(frame_starts: np.ndarray, t: float) -> int:
    """Index of the frame on screen at time ``t``: the last one that starts at or before it."""
    index = int(np.searchsorted(frame_starts, t + 1e-9, side="right")) - 1
    return max(index, 0)


def plan_sampling(info: VideoInfo, sampling: SamplingConfig) -> np.ndarray:
    """The frame indices to encode, in playback order.

    ``fps`` mode takes the frame on screen at t = 0, 1/fps, 2/fps, ... while t is inside the
    video; a video shorter than one interval still yields its first frame. ``num_frames`` mode
    takes the frames on screen at the centres of N equal spans of the video. Both follow the
    frames' real timestamps, so variable frame rate videos are sampled by time, not by index.
    """
    # decord's timestamps are sorted by presentation for all containers we have seen; sort
    # anyway so searchsorted is valid if a container lists them otherwise.
    order = np.argsort(info.frame_starts, kind="stable")
    starts = info.frame_starts[order]
    origin = float(starts[0])
    span = info.duration - origin
    if sampling.num_frames is not None:
        count = sampling.num_frames
        targets = origin + (np.arange(count) + 0.5) * span / count
    else:
        count = max(1, int(math.ceil(span * sampling.fps - 1e-9)))
        targets = origin + np.arange(count) / sampling.fps
    picks = np.array([order[frame_at(starts, t)] for t in targets], dtype=np.int64)
    return picks


def iter_frame_chunks(
    reader, indices: np.ndarray, *, chunk_frames: int = DEFAULT_CHUNK_FRAMES, path: str | Path = ""
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, frames)`` with frames uint8 (n, H, W, 3), at most ``chunk_frames`` at a time.

    Repeated indices (several sample times on one long-lasting frame) are decoded once.
    """
    unique, inverse = np.unique(indices, return_inverse=True)
    if not np.all(np.diff(indices) >= 0):
        raise ValueError("indices must be in playback order")
    position = 0
    for start in range(0, len(unique), chunk_frames):
        wanted = unique[start : start + chunk_frames]
        try:
            frames = reader.get_batch(wanted.tolist()).asnumpy()
        except Exception as exc:
            raise VideoDecodeError(
                f"decoding failed near frame {int(wanted[0])} (truncated or corrupt): "
                f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__}",
                path=path,
            ) from exc
        # expand back to the requested (possibly repeated) indices of this chunk
        lo, hi = start, start + len(wanted)
        take = []
        while position < len(indices) and lo <= inverse[position] < hi:
            take.append(inverse[position] - lo)
            position += 1
        yield indices[position - len(take) : position], frames[np.asarray(take, dtype=np.int64)]
