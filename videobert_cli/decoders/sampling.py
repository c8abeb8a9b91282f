"""Which frames to encode: the sampling plan (from a probe's frame times) and clips over it.

Decoder-independent: every decoder is given the same plan for the same probe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from videobert_cli.config import SamplingConfig
from videobert_cli.decoders.base import VideoInfo
#: decord reports frame times as float32 (about 0.1 ms of error an hour into a video); times
#: closer than this count as equal when choosing the frame on screen at a sample time
TIME_TOLERANCE = 5e-4


def frame_at(frame_starts: np.ndarray, t: float) -> int:
    """Index of the frame on screen at time ``t``: the last one that starts at or before it."""
    index = int(np.searchsorted(frame_starts, t + TIME_TOLERANCE, side="right")) - 1
    return max(index, 0)


def _sample_count(span: float, rate: float) -> int:
    """Sample times 0, 1/rate, ... strictly inside a span (within the time tolerance), at least 1."""
    return max(1, int(math.ceil((span - TIME_TOLERANCE) * rate)))


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
    if sampling.is_clip:
        count = _sample_count(span, sampling.clip_fps)
        targets = origin + np.arange(count) / sampling.clip_fps
    elif sampling.num_frames is not None:
        count = sampling.num_frames
        targets = origin + (np.arange(count) + 0.5) * span / count
    else:
        count = _sample_count(span, sampling.fps)
        targets = origin + np.arange(count) / sampling.fps
    picks = np.array([order[frame_at(starts, t)] for t in targets], dtype=np.int64)
    return picks


@dataclass(frozen=True)
class ClipPlan:
    """Clips over the sampled frames: clip ``i`` uses sampled frames ``starts[i]`` onwards."""

    starts: np.ndarray  # (C,) index of each clip's first sampled frame
    real_frames: np.ndarray  # (C,) frames of the clip that exist (< clip_len: padded tail)
    start_times: np.ndarray  # (C,) seconds
    end_times: np.ndarray  # (C,) seconds


def plan_clips(num_sampled: int, sampling: SamplingConfig, *, origin: float = 0.0, duration: float | None = None) -> ClipPlan:
    """Clips of ``clip_len`` sampled frames every ``clip_stride`` frames.

    A clip starting at sampled frame ``s`` spans ``[origin + s/clip_fps, origin + (s+len)/clip_fps)``
    (clamped to the video's end). The last clip, when fewer than ``clip_len`` frames remain,
    is kept and padded by repeating its last frame, or dropped with ``drop_tail``; a video
    shorter than one clip yields one padded clip (none with ``drop_tail``).
    """
    length, stride, rate = sampling.clip_len, sampling.clip_stride or sampling.clip_len, sampling.clip_fps
    starts = []
    start = 0
    while start < num_sampled:
        if start + length > num_sampled and sampling.drop_tail:
            break
        starts.append(start)
        if start + length >= num_sampled:
            break
        start += stride
    starts_arr = np.asarray(starts, dtype=np.int64)
    real = np.minimum(num_sampled - starts_arr, length).astype(np.int64)
    start_times = origin + starts_arr / rate
    end_times = origin + (starts_arr + length) / rate
    if duration is not None:
        end_times = np.minimum(end_times, duration)
    return ClipPlan(starts_arr, real, start_times, end_times)
