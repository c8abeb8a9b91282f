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
    The search scores every window; the *pool* is the ``POOL_FACTOR * top`` best windows.
    Within the pool, windows of one video whose spans overlap or lie within ``gap_s`` of each
    other are joined (transitively) into one moment: its span is their union, its score the
    best of theirs. Moments rank by score (ties: video, then start). When the pool yields
    fewer than ``top`` moments it is widened ``POOL_FACTOR``-fold until it does or holds
    every window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: default window length and hop, seconds (at the default 1 frame/s: 4 frames, half overlapping)
WINDOW_S = 4.0
HOP_S = 2.0
#: the pool of windows merged into moments, as a multiple of the moments asked for
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

    ``exclude``: a boolean mask of windows never returned (``--like``'s own moment).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if exclude is not None:
        scores = np.where(exclude, -np.inf, scores)
    available = int(np.sum(np.isfinite(scores)))
    pool = min(available, POOL_FACTOR * max(top, 1))
    while True:
        hits = _merge_pool(top_windows(scores, pool), scores, file, start, end, gap_s)
        if len(hits) >= top or pool >= available:
            return hits[:top]
        pool = min(available, pool * POOL_FACTOR)


def _merge_pool(pool: np.ndarray, scores, file, start, end, gap_s: float) -> list[Hit]:
    hits: list[Hit] = []
    order = pool[np.lexsort((start[pool], file[pool]))]
    group: list[int] = []

    def close() -> None:
        if group:
            best = max(group, key=lambda i: (scores[i], -i))
            hits.append(Hit(int(file[group[0]]), float(start[group].min()), float(end[group].max()),
                            float(scores[best]), int(best), tuple(sorted(group))))

    reach = -np.inf
    for i in order.tolist():
        if group and (file[i] != file[group[0]] or start[i] > reach + gap_s):
            close()
            group, reach = [], -np.inf
        group.append(i)
        reach = max(reach, float(end[i]))
    close()
    hits.sort(key=lambda h: (-h.score, h.file, h.start))
    return hits
