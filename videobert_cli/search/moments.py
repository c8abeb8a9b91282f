"""Moments: the unit search ranks, and the rule that merges neighbouring hits into one.

The moment unit
    A *window* is the run of consecutive feature rows (sampled frames, or clips) whose
    timestamps fall in ``[t0 + k * hop_s, t0 + k * hop_s + window_s)``, ``t0`` the first row's
    time, ``k = 0, 1, ...`` while the window starts at or before the last row. Empty windows and
    windows holding the same rows as the previous one are dropped. A window's time span is
    from its first row's timestamp to the end of its last row: a frame lasts until the next
    sampled frame (the last one until the video's ``duration``), a clip until its ``clip_end``.
    A video shorter than ``window_s`` is one window.

    Its embedding in a feature space without a model of its own (raw video features, or an
    aligned image-text encoder) is the L2-normalised mean of its L2-normalised rows.

Merging
    Windows are taken best first. A window that overlaps a moment of its own video, or lies
    within ``gap_s`` of it, joins that moment (joining moments it bridges); any other window
    starts a new moment, until the window that would start moment ``top + 1``: there it stops.
    So every window scoring above the best window left out is in a reported moment, and a
    moment is the union of its windows' spans, scored by its best window. Moments rank by
    score (ties: the lower window index first). Asking for more moments than the videos hold
    apart merges everything that touches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: default window length and hop, seconds (at the default 1 frame/s: 4 frames, half overlapping)
WINDOW_S = 4.0
HOP_S = 2.0
#: windows sorted at first, as a multiple of the moments asked for (widened by this factor
#: while the merging needs more)
POOL_FACTOR = 4


@dataclass(frozen=True)
class Windows:
    """The windows of one video: rows ``row_start[i]:row_stop[i]`` span ``[start[i], end[i]]``."""

    row_start: np.ndarray  # (W,) int64
    row_stop: np.ndarray  # (W,) int64
    start: np.ndarray  # (W,) float64 seconds
    end: np.ndarray  # (W,) float64 seconds

    def __len__(self) -> int:
        return int(self.row_start.shape[0])


def row_ends(timestamps: np.ndarray, duration: float | None = None, clip_end: np.ndarray | None = None) -> np.ndarray:
    """When each row's span ends: ``clip_end`` for clips, else the next row's time, the last
    row's at ``duration`` (or one median step after it when the duration is unknown)."""
    t = np.asarray(timestamps, dtype=np.float64)
    if clip_end is not None:
        return np.asarray(clip_end, dtype=np.float64)
    if t.size == 0:
        return t.copy()
    ends = np.empty_like(t)
    ends[:-1] = t[1:]
    step = float(np.median(np.diff(t))) if t.size > 1 else 0.0
    last = t[-1] + step
    if duration is not None and np.isfinite(duration) and duration > t[-1]:
        last = float(duration)
    ends[-1] = last
    return ends


def make_windows(timestamps: np.ndarray, ends: np.ndarray, window_s: float = WINDOW_S, hop_s: float = HOP_S) -> Windows:
    """The windows of one video (see the module doc); ``timestamps`` must be non-decreasing."""
    if not (window_s > 0 and hop_s > 0):
        raise ValueError(f"window ({window_s}) and hop ({hop_s}) must be positive")
    t = np.asarray(timestamps, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.float64)
    if t.size == 0:
        empty = np.zeros(0, np.int64)
        return Windows(empty, empty.copy(), np.zeros(0), np.zeros(0))
    t0, last = float(t[0]), float(t[-1])
    count = int(np.floor((last - t0) / hop_s + 1e-9)) + 1
    starts = t0 + hop_s * np.arange(count)
    lo = np.searchsorted(t, starts - 1e-9, side="left")
    hi = np.searchsorted(t, starts + window_s - 1e-9, side="left")
    keep = hi > lo
    lo, hi = lo[keep], hi[keep]
    keep = np.ones(lo.shape, bool)
    keep[1:] = hi[1:] > hi[:-1]  # a window inside the previous one adds nothing
    lo, hi = lo[keep].astype(np.int64), hi[keep].astype(np.int64)
    # spans end with their last row; cumulative max, because clips may overlap
    end = np.maximum.accumulate(ends)[hi - 1]
    return Windows(lo, hi, t[lo], end)


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def pool_windows(features: np.ndarray, windows: Windows) -> np.ndarray:
    """Each window's embedding: the normalised mean of its normalised rows, (W, D) float32."""
    rows = normalise(features).astype(np.float64)
    csum = np.concatenate([np.zeros((1, rows.shape[1])), np.cumsum(rows, axis=0)])
    sums = csum[windows.row_stop] - csum[windows.row_start]
    return normalise(sums / (windows.row_stop - windows.row_start)[:, None])


@dataclass(frozen=True)
class Hit:
    """One merged moment: windows ``windows`` of file ``file`` (indices into the corpus)."""

    file: int
    start: float
    end: float
    score: float
    best: int  # the best window's corpus index
    windows: tuple[int, ...]


def top_windows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first (ties: lower index first)."""
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    return part[np.lexsort((part, -scores[part]))]


def merge_hits(scores: np.ndarray, file: np.ndarray, start: np.ndarray, end: np.ndarray, top: int,
               *, gap_s: float = 0.0, exclude: np.ndarray | None = None) -> list[Hit]:
    """The ``top`` best moments (see the module doc for the rule).

    ``exclude``: a boolean mask of windows never used (``--like``'s own moment).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if exclude is not None:
        scores = np.where(exclude, -np.inf, scores)
    available = int(np.sum(np.isfinite(scores)))
    pool = min(available, POOL_FACTOR * max(top, 1))
    while True:
        hits, complete = _merge(top_windows(scores, pool), scores, file, start, end, top, gap_s)
        if complete or pool >= available:
            return sorted(hits, key=lambda h: (-h.score, h.best))
        pool = min(available, pool * POOL_FACTOR)


def _merge(order: np.ndarray, scores, file, start, end, top: int, gap_s: float) -> tuple[list[Hit], bool]:
    """Merge windows ``order`` (best first); True when the window that would start moment
    ``top + 1`` was reached (the result cannot change with more windows)."""
    hits: list[Hit] = []
    for i in order.tolist():
        f, s, e = int(file[i]), float(start[i]), float(end[i])
        touching = [h for h in hits if h.file == f and s <= h.end + gap_s and e >= h.start - gap_s]
        if not touching:
            if len(hits) == top:
                return hits, True
            hits.append(Hit(f, s, e, float(scores[i]), i, (i,)))
            continue
        first = touching[0]  # the earliest made is the best scored
        merged = Hit(f, min([s] + [h.start for h in touching]), max([e] + [h.end for h in touching]), first.score,
                     first.best, tuple(sorted({i, *(w for h in touching for w in h.windows)})))
        hits = [merged if h is first else h for h in hits if h is first or h not in touching]
    return hits, False
