"""``search()``: the best moments of a corpus for a text query or for a moment of another video.

Scores are cosine similarities from one matrix-vector product over every window
(:func:`cosine_scores`: exact for the best windows, see there). Neighbouring hits merge as :mod:`~videobert_cli.search.moments`
says. Which space a query is compared in is decided by :func:`query_space`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from videobert_cli.errors import ConfigError, UsageError
from videobert_cli.search.corpus import Corpus, fusion_embeddings_of_index, load_corpus
from videobert_cli.search.files import file_moments, words_between
from videobert_cli.search.moments import POOL_FACTOR, merge_hits
from videobert_cli.search import spaces
from videobert_cli.store.reader import read_attrs

#: rows per chunk of the exact score product (bounds the float32 copy of float16 embeddings)
SCORE_CHUNK = 1 << 16
#: float16 scores this close to the best ones are rescored exactly (the product's error is < 3e-4)
APPROX_MARGIN = 2e-3


@dataclass(frozen=True)
class SearchOptions:
    """How to search: moments wanted, window (None: the index's, else the default), merging."""

    top: int = 10
    window_s: float | None = None
    hop_s: float | None = None
    gap_s: float = 0.0
    fusion_weights: str | Path | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class Moment:
    """One result row."""

    rank: int
    video: str  # the file's id: its name without .h5, or its index id
    path: str  # the feature file
    source_path: str  # the video it was extracted from ("" when unknown)
    start: float
    end: float
    score: float
    words: str  # transcript cues overlapping [start, end]
    windows: int  # windows merged into it

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SearchResult:
    moments: list[Moment]
    space: str  # "video", "fusion", "aligned"
    searched: int  # windows scored
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def cosine_scores(embeddings: np.ndarray, query: np.ndarray, *, exact_top: int | None = None) -> np.ndarray:
    """``embeddings @ query`` as float32 (M,); rows and query are already normalised.

    float16 embeddings (an index) with ``exact_top``: one float16 product over all rows (torch;
    converting 1M x 512 to float32 first costs ~10x more here), then the ``exact_top`` best
    rows, and every row within :data:`APPROX_MARGIN` of them, are scored again in float32.
    Other rows keep the float16 product's score (off by < 3e-4 measured at 512-d).
    """
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    n = embeddings.shape[0]
    if embeddings.dtype == np.float16 and exact_top is not None and n > exact_top:
        import torch

        approx = (torch.from_numpy(np.ascontiguousarray(embeddings)) @ torch.from_numpy(q).half()).float().numpy()
        kth = np.partition(approx, n - exact_top)[n - exact_top]
        candidates = np.flatnonzero(approx >= kth - APPROX_MARGIN)
        approx[candidates] = embeddings[candidates].astype(np.float32) @ q
        return approx
    out = np.empty(n, dtype=np.float32)
    for lo in range(0, n, SCORE_CHUNK):
        out[lo:lo + SCORE_CHUNK] = np.asarray(embeddings[lo:lo + SCORE_CHUNK], dtype=np.float32) @ q
    return out


def like_query(corpus: Corpus, path: str | Path, at: float) -> tuple[np.ndarray, np.ndarray]:
    """The embedding of ``path``'s window at ``at`` seconds, and the corpus windows to leave out
    (those of the same file overlapping it)."""
    moments = file_moments(path, corpus.window_s, corpus.hop_s)
    mine, theirs = moments.models, corpus.models
    if (mine.video_model, mine.video_dim) != (theirs.video_model, theirs.video_dim) or (
            mine.video_weights and theirs.video_weights and mine.video_weights != theirs.video_weights):
        raise ConfigError(f"the moment's file has video features from {mine.video_model!r} ({mine.video_dim}-d), "
                          f"the searched files from {theirs.video_model!r} ({theirs.video_dim}-d), e.g. "
                          f"{corpus.paths[int(corpus.file[0])] if len(corpus) else '?'}", path=path,
                          hint="compare moments of files extracted with one video model")
    w = moments.windows
    inside = np.flatnonzero((w.start <= at) & (at <= w.end))
    if inside.size == 0:
        span = f"{w.start.min():g}-{w.end.max():g} s" if len(w) else "no frames"
        raise UsageError(f"at {at:g} s is outside the video ({span})", path=path, field="at",
                         hint="give a time within the video")
    centre = (w.start[inside] + w.end[inside]) / 2
    chosen = int(inside[np.argmin(np.abs(centre - at))])
    query = moments.embeddings[chosen]
    same = np.array([p.resolve() == Path(path).resolve() for p in corpus.paths])
    exclude = same[corpus.file] & (corpus.start < w.end[chosen]) & (corpus.end > w.start[chosen])
    return query, exclude


def query_space(corpus: Corpus, options: SearchOptions) -> str:
    """"fusion" with weights, "aligned" for an aligned encoder pair; else the refusal."""
    if options.fusion_weights is not None:
        return "fusion"
    if spaces.aligned_models(corpus.models):
        return "aligned"
    raise spaces.refuse_unrelated(corpus.models)


def fusion_corpus(corpus: Corpus, space: spaces.FusionSpace, notes: list[str]) -> np.ndarray:
    """The corpus in the fusion space: stored in the index under the weights' hash, or computed."""
    if corpus.index is not None:
        stored = fusion_embeddings_of_index(corpus.index, space.sha256)
        if stored is not None:
            return stored
        notes.append(f"the index stores no embeddings for these fusion weights: computed from the files "
                     f"(store them with: videobert index {corpus.index.parent} --fusion-weights {space.weights})")
    return spaces.fusion_moments(space, corpus.paths, corpus.file, corpus.row_start, corpus.row_stop,
                                 corpus.start, corpus.end)


def search(query: str | None, sources: Sequence[str | Path], *, like: tuple[str | Path, float] | None = None,
           options: SearchOptions = SearchOptions(), on_message: Callable[[str], None] | None = None) -> SearchResult:
    """The ``options.top`` best moments of ``sources`` for a text ``query`` or a moment ``like``.

    Raises:
        UsageError: neither or both of ``query`` and ``like``; a bad ``top``.
        ConfigError: no shared space for a text query, mixed models, weights of other features.
        FeatureFileError: unreadable files, a stale index.
    """
    if (query is None) == (like is None):
        raise UsageError("give a text query or a moment to search like, not both" if query is not None
                         else "give a text query or a moment to search like", hint="e.g. videobert search 'a dog' feats/")
    if options.top < 1:
        raise UsageError(f"top must be at least 1, got {options.top}", field="top")
    clock = time.perf_counter()
    seconds: dict[str, float] = {}
    corpus = load_corpus(sources, window_s=options.window_s, hop_s=options.hop_s)
    seconds["load"] = time.perf_counter() - clock
    notes = list(corpus.notes)
    exclude = None
    if like is not None:
        space, embeddings = "video", corpus.embeddings
        vector, exclude = like_query(corpus, like[0], float(like[1]))
    else:
        space = query_space(corpus, options)
        if space == "fusion":
            fusion = spaces.load_fusion_space(options.fusion_weights, corpus.models, device=options.device)
            embeddings = fusion_corpus(corpus, fusion, notes)
            vector = spaces.fusion_text(fusion, [query])[0]
        else:
            embeddings = corpus.embeddings
            vector = spaces.aligned_text(corpus.models, [query], device=options.device)[0]
    seconds["embed"] = time.perf_counter() - clock - seconds["load"]
    mark = time.perf_counter()
    # exact scores for every window the merging can reach without widening its pool twice
    scores = cosine_scores(embeddings, vector, exact_top=POOL_FACTOR ** 3 * options.top)
    hits = merge_hits(scores, corpus.file, corpus.start, corpus.end, options.top, gap_s=options.gap_s, exclude=exclude)
    seconds["rank"] = time.perf_counter() - mark
    moments = []
    sources_of: dict[int, str] = {}
    for rank, hit in enumerate(hits, 1):
        path = corpus.paths[hit.file]
        if hit.file not in sources_of:
            sources_of[hit.file] = str(read_attrs(path).get("source_path") or "")
        moments.append(Moment(rank, corpus.ids[hit.file], str(path), sources_of[hit.file], hit.start, hit.end,
                              hit.score, words_between(path, hit.start, hit.end), len(hit.windows)))
    seconds["total"] = time.perf_counter() - clock
    for note in notes:
        if on_message is not None:
            on_message(note)
    return SearchResult(moments, space, len(corpus), notes, seconds)
