"""Minimal-pair evaluation: can a model tell two captions apart that differ in one factor only?

A *contrasts* file (``contrasts.json``, written by ``scripts/make_time_corpus.py``) lists,
per subset, caption pairs that differ only there::

    {"motion": [["A red square moves left slowly.", "A red square moves right slowly."], ...],
     "speed": [...], "order": [...]}

For a pair ``(a, b)`` and every evaluated video whose caption is ``a`` (or ``b``), the
*two-way choice* is correct when the video's embedding is closer (cosine) to its own
caption's text embedding than to the other's; a tie counts one half (a model that cannot
tell them apart scores 0.5 in expectation, never less). A subset's accuracy is the mean over
all such choices; pairs with a caption absent from the evaluated set are not counted.
Captions are compared after stripping surrounding white space.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from videobert_cli.errors import ConfigError


def load_contrasts(source: str | Path | Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Read and check a contrasts file (or mapping): subset name -> list of caption pairs."""
    path = None
    if not isinstance(source, Mapping):
        path = Path(source)
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the contrasts file: {exc.strerror}", path=path) from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the contrasts file is not JSON: {exc}", path=path) from exc
    if not isinstance(source, Mapping):
        raise ConfigError("contrasts must map subset names to lists of caption pairs", path=path,
                          hint='e.g. {"motion": [["moves left", "moves right"]]}')
    out: dict[str, list[tuple[str, str]]] = {}
    for name, pairs in source.items():
        if not isinstance(pairs, list) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(c, str) for c in p) for p in pairs
        ):
            raise ConfigError(f"contrasts subset {name!r} is not a list of two-caption lists", path=path,
                              hint='e.g. {"motion": [["moves left", "moves right"]]}')
        out[str(name)] = [(a.strip(), b.strip()) for a, b in pairs]
    return out


def choice_accuracy(
    video_emb: np.ndarray,
    text_emb: np.ndarray,
    captions: Sequence[str],
    pairs: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """Two-way choice accuracy of one subset (see the module doc).

    ``video_emb``/``text_emb`` (N, D): row i is evaluated pair i, whose caption is
    ``captions[i]``. The text embedding of a caption is that of its first pair (identical
    captions have identical text embeddings).
    """
    v = np.asarray(video_emb, dtype=np.float64)
    t = np.asarray(text_emb, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    caps = [c.strip() for c in captions]
    first: dict[str, int] = {}
    for i, c in enumerate(caps):
        first.setdefault(c, i)
    scores: list[float] = []
    used = 0
    for a, b in pairs:
        if a not in first or b not in first or a == b:
            continue
        used += 1
        ta, tb = t[first[a]], t[first[b]]
        for own, other in ((a, tb), (b, ta)):
            mine = t[first[own]]
            for i in (i for i, c in enumerate(caps) if c == own):
                sa, sb = float(v[i] @ mine), float(v[i] @ other)
                scores.append(1.0 if sa > sb else 0.5 if sa == sb else 0.0)
    return {
        "accuracy": float(np.mean(scores)) if scores else None,
        "choices": len(scores),
        "caption_pairs": used,
    }


def contrast_report(
    video_emb: np.ndarray,
    text_emb: np.ndarray,
    captions: Sequence[str],
    contrasts: Mapping[str, Sequence[tuple[str, str]]],
) -> dict[str, dict[str, Any]]:
    """:func:`choice_accuracy` of every subset of ``contrasts``."""
    return {name: choice_accuracy(video_emb, text_emb, captions, pairs) for name, pairs in contrasts.items()}


def pair_captions(refs: Sequence[Any]) -> list[str]:
    """The transcript text of each pair (:class:`~videobert_cli.training.data.PairRef`).

    A whole-video pair's caption is its cues' texts joined by a space; a sentence pair's
    the text of its cue.
    """
    import h5py

    out: list[str] = []
    cache: dict[Path, list[str]] = {}
    for ref in refs:
        if ref.path not in cache:
            with h5py.File(ref.path, "r", locking="best-effort") as f:
                raw = f["text/cue_text"][()]
            cache[ref.path] = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in raw]
        cues = cache[ref.path]
        out.append(" ".join(c.strip() for c in cues) if ref.cue < 0 else cues[ref.cue].strip())
    return out
