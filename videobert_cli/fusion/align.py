"""Pairing transcript cues with the video positions inside their time span (VideoBERT segments).

Rules (also in docs/commands.md, under fuse):

- a video position (a sampled frame or a clip) spans ``[start, end)``: a clip its own
  start/end; a sampled frame from its time until the next sampled frame (the last one until
  the end of the video);
- a cue is paired with every position whose span overlaps ``[cue_start, cue_end)``; a cue
  shorter than one sampling interval still gets the position on screen at its start;
- cues without times (``.txt`` transcripts) cannot be aligned: no segments are written;
- cues that start at or after the end of the video get no segment; cues with no tokens get no
  segment; both are counted in the segments' attributes;
- videos without a transcript get no segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videobert_cli.features import TextFeatures, VideoFeatures


@dataclass(frozen=True)
class Segment:
    """One cue and the rows (video positions, text tokens) paired with it."""

    cue_index: int
    video_rows: np.ndarray
    text_rows: np.ndarray


def video_spans(video: VideoFeatures) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of every video position, by the rules in the module docstring."""
    starts = np.asarray(video.timestamps, dtype=np.float64)
    if "clip_end" in video.extra:
        return starts, np.asarray(video.extra["clip_end"], dtype=np.float64)
    duration = float(video.attrs.get("duration", starts[-1] if len(starts) else 0.0))
    ends = np.empty_like(starts)
    if len(starts):
        ends[:-1] = starts[1:]
        ends[-1] = max(duration, starts[-1])
    return starts, ends


def align_segments(video: VideoFeatures, text: TextFeatures) -> tuple[list[Segment], dict]:
    """Segments for every alignable cue, and counts of cues that were not aligned (and why)."""
    starts, ends = video_spans(video)
    duration = float(ends.max()) if len(ends) else 0.0
    stats = {"cues": len(text.cue_text), "segments": 0, "untimed_cues": 0, "cues_after_video_end": 0,
             "cues_without_tokens": 0}
    segments: list[Segment] = []
    for cue in range(len(text.cue_text)):
        cue_start, cue_end = float(text.cue_start[cue]), float(text.cue_end[cue])
        if not (np.isfinite(cue_start) and np.isfinite(cue_end)):
            stats["untimed_cues"] += 1
            continue
        if cue_start >= duration:
            stats["cues_after_video_end"] += 1
            continue
        text_rows = np.flatnonzero(text.token_cue == cue)
        if len(text_rows) == 0:
            stats["cues_without_tokens"] += 1
            continue
        overlap = (starts < cue_end) & (ends > cue_start)
        if cue_end <= cue_start:  # a zero-length cue: the position on screen at its start
            overlap = (starts <= cue_start) & (ends > cue_start)
        segments.append(Segment(cue, np.flatnonzero(overlap), text_rows))
    stats["segments"] = len(segments)
    return segments, stats
