"""Sentence-aligned VideoBERT segments: which video positions each cue gets, and the layout."""

from __future__ import annotations

import math

import numpy as np
import pytest

from videobert_cli.config import FusionConfigOptions, PipelineConfig
from videobert_cli.features import (
    MODALITY_CLS,
    MODALITY_SEP,
    MODALITY_SEP_VIDEO,
    MODALITY_TEXT,
    MODALITY_VIDEO,
    TextFeatures,
    VideoFeatures,
)
from videobert_cli.fusion.align import align_segments, video_spans
from videobert_cli.pipeline.text_stages import FusionStage

NAN = math.nan


def frames(times, duration, dim=6) -> VideoFeatures:
    rng = np.random.default_rng(0)
    times = np.asarray(times, dtype=np.float64)
    return VideoFeatures(rng.normal(size=(len(times), dim)).astype(np.float32), times,
                         np.arange(len(times)), attrs={"duration": duration})


def transcript(cues, tokens_per_cue=2, dim=5) -> TextFeatures:
    rng = np.random.default_rng(1)
    token_cue = np.repeat(np.arange(len(cues)), tokens_per_cue).astype(np.int32)
    starts = np.array([c[0] for c in cues], dtype=np.float64)
    ends = np.array([c[1] for c in cues], dtype=np.float64)
    n = len(token_cue)
    return TextFeatures(
        token_features=rng.normal(size=(n, dim)).astype(np.float32), token_ids=np.arange(n),
        tokens=[f"t{i}" for i in range(n)], token_start=starts[token_cue], token_end=ends[token_cue],
        token_cue=token_cue, token_window=np.zeros(n, np.int32), cue_features=np.zeros((len(cues), dim), np.float32),
        cue_start=starts, cue_end=ends, cue_text=[f"cue {i}" for i in range(len(cues))])


def test_frame_spans_run_to_the_next_sample_and_the_last_to_the_end():
    starts, ends = video_spans(frames([0.0, 1.0, 2.0], duration=2.6))
    assert starts.tolist() == [0.0, 1.0, 2.0] and ends.tolist() == [1.0, 2.0, 2.6]


def test_clip_spans_come_from_clip_end():
    video = frames([0.0, 0.8], duration=1.5)
    video.extra["clip_end"] = np.array([1.6, 1.5])
    assert video_spans(video)[1].tolist() == [1.6, 1.5]


@pytest.mark.parametrize(
    "cue, expected_rows",
    [
        ((0.0, 1.0), [0]),  # exactly the first frame's span
        ((0.5, 1.5), [0, 1]),  # straddles two frames
        ((0.2, 0.3), [0]),  # shorter than one interval
        ((1.0, 1.0), [1]),  # zero length: the frame on screen at its start
        ((2.9, 4.0), [2]),  # runs past the end: the last frame
        ((0.0, 10.0), [0, 1, 2]),
    ],
)
def test_cue_gets_the_positions_overlapping_its_span(cue, expected_rows):
    segments, stats = align_segments(frames([0.0, 1.0, 2.0], duration=3.0), transcript([cue]))
    assert [seg.video_rows.tolist() for seg in segments] == [expected_rows]
    assert segments[0].text_rows.tolist() == [0, 1] and stats["segments"] == 1


def test_untimed_and_late_cues_get_no_segment_and_are_counted():
    text = transcript([(0.0, 1.0), (NAN, NAN), (5.0, 6.0), (1.0, 2.0)])
    segments, stats = align_segments(frames([0.0, 1.0, 2.0], duration=3.0), text)
    assert [seg.cue_index for seg in segments] == [0, 3]
    assert stats == {"cues": 4, "segments": 2, "untimed_cues": 1, "cues_after_video_end": 1, "cues_without_tokens": 0}


def test_segments_are_fused_in_the_videobert_layout():
    video = frames([0.0, 1.0, 2.0], duration=3.0)
    text = transcript([(0.0, 1.5), (2.0, 3.0)], tokens_per_cue=3)
    config = PipelineConfig(fusion=FusionConfigOptions(d_model=16, num_layers=1, num_heads=2, ff_dim=32))
    stage = FusionStage(config, video_dim=6, text_dim=5)
    segments = stage.fuse_segments(video, text)
    assert segments.offsets.tolist() == [0, 8, 15]  # [CLS] 3 text [>] 2 video [SEP]; [CLS] 3 [>] 1 [SEP]
    first = slice(0, 8)
    assert segments.modality[first].tolist() == [MODALITY_CLS, *[MODALITY_TEXT] * 3, MODALITY_SEP_VIDEO,
                                                 MODALITY_VIDEO, MODALITY_VIDEO, MODALITY_SEP]
    assert segments.source_index[first].tolist() == [-1, 0, 1, 2, -1, 0, 1, -1]
    assert segments.source_index[8:15].tolist() == [-1, 3, 4, 5, -1, 2, -1]
    assert segments.cue_index.tolist() == [0, 1] and segments.cls.shape == (2, 16)
    # each segment equals fusing that segment alone (batching and padding change nothing)
    alone = stage.fuse_segments(frames([2.0], duration=3.0), transcript([(2.0, 3.0)], tokens_per_cue=3))
    solo_video = VideoFeatures(video.features[[2]], np.array([2.0]), np.array([2]), attrs={"duration": 3.0})
    solo_text = transcript([(2.0, 3.0)], tokens_per_cue=3)
    solo_text.token_features = text.token_features[3:6]
    alone = stage.fuse_segments(solo_video, solo_text)
    np.testing.assert_allclose(alone.sequence, segments.sequence[8:15], atol=1e-5)
    np.testing.assert_allclose(alone.cls[0], segments.cls[1], atol=1e-5)


def test_nothing_alignable_gives_none():
    config = PipelineConfig(fusion=FusionConfigOptions(d_model=16, num_layers=1, num_heads=2, ff_dim=32))
    stage = FusionStage(config, video_dim=6, text_dim=5)
    assert stage.fuse_segments(frames([0.0], duration=1.0), transcript([(NAN, NAN)])) is None
