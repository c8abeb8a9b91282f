"""What search reads from one feature file: its models, its windows and their embeddings, the
words of a time span; and the check that a set of files shares one feature space."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from videobert_cli.errors import ConfigError, FeatureFileError
from videobert_cli.search.moments import Windows, make_windows, pool_windows, row_ends
from videobert_cli.store.reader import load
from videobert_cli.store.schema import attr_text, open_file


@dataclass(frozen=True)
class FileModels:
    """The feature extractors of one file (``text_model`` None: the file has no text/)."""

    path: str
    video_model: str | None
    video_dim: int
    video_weights: str | None
    text_model: str | None
    text_dim: int | None


@dataclass(frozen=True)
class FileMoments:
    """One file's windows, their pooled embeddings (W, D) float32 and its models."""

    models: FileModels
    windows: Windows
    embeddings: np.ndarray


def read_video(path: str | Path) -> tuple[FileModels, np.ndarray, np.ndarray, np.ndarray]:
    """(models, features (N, D), timestamps (N,), row ends (N,)) of a complete feature file."""
    path = Path(path)
    feature_file = load(path, groups=["video"])
    video = feature_file.video
    text_model, text_dim = None, None
    try:
        with open_file(path, "r") as f:
            text = f.get("text")
            if isinstance(text, h5py.Group):
                text_model = attr_text(text.attrs.get("model_name")) or None
                if "token_features" in text:
                    text_dim = int(text["token_features"].shape[1])
    except OSError as exc:
        raise FeatureFileError(f"cannot read feature file: {exc}", path=path, hint="the file is damaged") from exc
    attrs = video.attrs
    features = np.asarray(video.features)
    if features.ndim != 2:
        raise FeatureFileError("video/features is not 2-d", path=path, hint="re-run extraction")
    duration = attrs.get("duration")
    ends = row_ends(video.timestamps, float(duration) if duration is not None else None, video.extra.get("clip_end"))
    models = FileModels(
        path=str(path),
        video_model=attr_text(attrs.get("model_name")) or None,
        video_dim=int(features.shape[1]),
        video_weights=attr_text(attrs.get("weights_sha256")) or None,
        text_model=text_model,
        text_dim=text_dim,
    )
    return models, features, np.asarray(video.timestamps, dtype=np.float64), ends


def file_moments(path: str | Path, window_s: float, hop_s: float) -> FileMoments:
    """The windows of ``path``'s video and their embeddings in its video feature space."""
    models, features, times, ends = read_video(path)
    if not np.isfinite(features).all():
        raise FeatureFileError("video/features holds NaN or inf", path=path, reason="non-finite",
                               hint="extract this video again, or leave its file out")
    windows = make_windows(times, ends, window_s, hop_s)
    return FileMoments(models, windows, pool_windows(features, windows))


def common_models(models: Sequence[FileModels]) -> FileModels:
    """The one video space (model, width, weights) and text model of ``models``.

    Raises:
        ConfigError: two files differ in video model, width or weights, or in text model;
            the message names both files.
    """
    if not models:
        raise ConfigError("no feature files to search", hint="pass .h5 files, a folder of them, or an index.h5")
    first = models[0]
    for other in models[1:]:
        for what, a, b in (("video model", first.video_model, other.video_model),
                           ("video feature width", first.video_dim, other.video_dim)):
            if a != b:
                raise ConfigError(
                    f"files of different {what}s cannot be searched together: {first.path} has {a!r}, "
                    f"{other.path} has {b!r}",
                    hint="search files extracted with one video model, or search each set on its own")
    weights = [m for m in models if m.video_weights]
    for other in weights[1:]:
        if other.video_weights != weights[0].video_weights:
            raise ConfigError(
                f"files of different weights of {first.video_model!r} cannot be searched together: "
                f"{weights[0].path} ({weights[0].video_weights[:12]}) and {other.path} ({other.video_weights[:12]})",
                hint="search files extracted with one set of weights")
    texts = [m for m in models if m.text_model]
    for other in texts[1:]:
        if other.text_model != texts[0].text_model:
            raise ConfigError(
                f"files of different text models cannot be searched together: {texts[0].path} has "
                f"{texts[0].text_model!r}, {other.path} has {other.text_model!r}",
                hint="search files extracted with one text model")
    return FileModels(
        path="", video_model=first.video_model, video_dim=first.video_dim,
        video_weights=weights[0].video_weights if weights else None,
        text_model=texts[0].text_model if texts else None,
        text_dim=texts[0].text_dim if texts else None,
    )


def words_between(path: str | Path, start: float, end: float) -> str:
    """The transcript text of the cues of ``path`` that overlap ``[start, end]`` ("" if none)."""
    try:
        with open_file(path, "r") as f:
            text = f.get("text")
            if not isinstance(text, h5py.Group) or "cue_text" not in text:
                return ""
            cue_start = np.asarray(text["cue_start"][()], dtype=np.float64)
            cue_end = np.asarray(text["cue_end"][()], dtype=np.float64)
            hit = np.flatnonzero(np.isfinite(cue_start) & np.isfinite(cue_end) & (cue_start < end) & (cue_end > start))
            if hit.size == 0:
                return ""
            cues = text["cue_text"].asstr()[()]
            return " ".join(str(cues[i]).strip() for i in hit)
    except OSError as exc:
        raise FeatureFileError(f"cannot read the transcript: {exc}", path=path, hint="the file is damaged") from exc
