"""Synthetic feature files for the search and plot tests, written with the project's writer.

Frames are 1 per second unless ``times`` says otherwise; each cue carries one token per word
(random token features of ``text_dim``), so the files look like what `videobert run` writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from videobert_cli.features import SourceInfo, TextFeatures, VideoFeatures
from videobert_cli.store.hdf5 import write_feature_file

VD = 12  # video feature width


def write_file(path: Path, video: np.ndarray, *, times: np.ndarray | None = None,
               cues: Sequence[tuple[float, float, str]] = (), video_model: str = "vid-a", text_model: str = "txt-a",
               text_dim: int = 8, source: Path | None = None, seed: int = 0, duration: float | None = None) -> Path:
    """A complete feature file with video/ (and text/ when ``cues``)."""
    rng = np.random.default_rng(seed)
    n = len(video)
    times = np.arange(n, dtype=np.float64) if times is None else np.asarray(times, np.float64)
    attrs = {"model_name": video_model, "duration": float(duration if duration is not None else times[-1] + 1.0)}
    text = None
    if cues:
        token_cue = np.array([c for c, (_, _, words) in enumerate(cues) for _ in words.split()], np.int32)
        tokens = [w for _, _, words in cues for w in words.split()]
        feats = rng.standard_normal((len(tokens), text_dim)).astype(np.float32)
        starts = np.array([cues[c][0] for c in token_cue], float)
        ends = np.array([cues[c][1] for c in token_cue], float)
        text = TextFeatures(
            token_features=feats, token_ids=rng.integers(1000, 2000, len(tokens)), tokens=tokens,
            token_start=starts, token_end=ends, token_cue=token_cue, token_window=np.zeros(len(tokens), np.int32),
            cue_features=np.stack([feats[token_cue == c].mean(0) for c in range(len(cues))]),
            cue_start=np.array([c[0] for c in cues], float), cue_end=np.array([c[1] for c in cues], float),
            cue_text=[c[2] for c in cues], attrs={"model_name": text_model, "feature_dim": text_dim},
        )
    info = None
    if source is not None:
        stat = os.stat(source) if Path(source).exists() else None
        info = SourceInfo(path=str(source), size=stat.st_size if stat else 0, mtime=stat.st_mtime if stat else 0.0)
    write_feature_file(path, video=VideoFeatures(np.asarray(video, np.float32), times, np.arange(n), attrs=attrs),
                       text=text, source=info, tool_version="test", config_hash="test")
    return path


def planted_corpus(folder: Path, *, files: int = 5, frames: int = 12, seed: int = 0, **kwargs) -> tuple[list[Path], np.ndarray]:
    """Random-frame files ``f0..``; file ``f2`` holds the direction ``u`` (returned) at 6-9 s."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(VD)
    u /= np.linalg.norm(u)
    paths = []
    for i in range(files):
        video = rng.standard_normal((frames, VD))
        if i == 2:
            video[6:10] = 6.0 * u + 0.2 * rng.standard_normal((4, VD))
        cues = [(0.0, 5.0, f"intro of video {i}"), (6.0, 10.0, f"the planted part {i}" if i == 2 else f"middle {i}")]
        paths.append(write_file(folder / f"f{i}.h5", video, cues=cues, seed=i, **kwargs))
    return paths, u
