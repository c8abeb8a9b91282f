"""In-memory feature containers: what the pipeline produces and the HDF5 store writes and loads.

Arrays are numpy; times are seconds (float64) with NaN where the source has no time.
``attrs`` hold JSON-serialisable metadata (str, int, float, bool, or nested dict/list, which
the store writes as JSON strings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Modality codes of the fused sequence (``fused/modality``).
MODALITY_CLS = 0
MODALITY_VIDEO = 1
MODALITY_TEXT = 2
MODALITY_SEP_VIDEO = 3  # VideoBERT's [>] between the text and the video of a segment
MODALITY_SEP = 4  # [SEP] closing a segment
MODALITY_NAMES = {
    MODALITY_CLS: "cls",
    MODALITY_VIDEO: "video",
    MODALITY_TEXT: "text",
    MODALITY_SEP_VIDEO: "[>]",
    MODALITY_SEP: "[SEP]",
}


@dataclass
class VideoFeatures:
    """Per-frame (or per-clip) features of one video."""

    features: np.ndarray  # (N, D) float
    timestamps: np.ndarray  # (N,) float64, presentation time of each frame used, seconds
    frame_indices: np.ndarray  # (N,) int64, index of each frame in decode order
    attrs: dict[str, Any] = field(default_factory=dict)
    #: optional per-row datasets, first dimension N: clip_end, clip_real_frames,
    #: clip_frame_indices (clip models), word_ids, word_paths (visual vocabulary)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.features.shape[0])


@dataclass
class TextFeatures:
    """Token-level and cue-level features of one transcript."""

    token_features: np.ndarray  # (T, D) float, last hidden state of each content token
    token_ids: np.ndarray  # (T,) int64
    tokens: list[str]  # (T,) token strings
    token_start: np.ndarray  # (T,) float64, start of the token's cue (NaN: no time)
    token_end: np.ndarray  # (T,) float64
    token_cue: np.ndarray  # (T,) int32, index of the cue the token belongs to
    token_window: np.ndarray  # (T,) int32, index of the model window the token was encoded in
    cue_features: np.ndarray  # (C, D) float, mean of the cue's token features
    cue_start: np.ndarray  # (C,) float64
    cue_end: np.ndarray  # (C,) float64
    cue_text: list[str]  # (C,)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.token_features.shape[0])


@dataclass
class FusedFeatures:
    """The fused sequence: [CLS], then video positions, then text positions."""

    sequence: np.ndarray  # (L, d_model) float
    modality: np.ndarray  # (L,) int8, MODALITY_* codes
    time: np.ndarray  # (L,) float64 seconds (NaN for [CLS] and untimed text)
    source_index: np.ndarray  # (L,) int32, row in video/ or text/ tokens (-1 for [CLS])
    cls: np.ndarray  # (d_model,) float, the pooled [CLS] vector
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.sequence.shape[0])


@dataclass
class FusedSegments:
    """Sentence-aligned fused sequences in VideoBERT's layout, concatenated.

    Segment ``i`` is rows ``offsets[i]:offsets[i+1]`` of the per-position arrays:
    ``[CLS] text... [>] video... [SEP]`` for the cue ``cue_index[i]`` and the video positions
    whose time span overlaps the cue.
    """

    sequence: np.ndarray  # (P, d_model)
    modality: np.ndarray  # (P,) int8 MODALITY_* codes (incl. [>] and [SEP])
    time: np.ndarray  # (P,) float64 seconds
    source_index: np.ndarray  # (P,) int32 row in video/ or text/ tokens (-1: special token)
    offsets: np.ndarray  # (S + 1,) int64
    cue_index: np.ndarray  # (S,) int32 row in text/cue_*
    cls: np.ndarray  # (S, d_model)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.cue_index.shape[0])


@dataclass
class SourceInfo:
    """Identity of an input file, used for provenance and for skipping unchanged inputs."""

    path: str
    size: int
    mtime: float
    sha256: str | None = None


@dataclass
class FeatureFile:
    """Everything one HDF5 feature file holds; any group may be absent."""

    path: str
    attrs: dict[str, Any]
    video: VideoFeatures | None = None
    text: TextFeatures | None = None
    fused: FusedFeatures | None = None
    segments: FusedSegments | None = None
