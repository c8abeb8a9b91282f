"""`videobert plot`: the plotted arrays against an independent numpy/torch computation, the PNG
written, the one-line error without matplotlib."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from searchdata import VD, write_file
from videobert_cli.cli.app import app
from videobert_cli.errors import EXIT_USAGE
from videobert_cli.viz import plot_data

CUES = [(0.0, 2.5, "a red square"), (2.5, 6.0, "moves to the left side")]


@pytest.fixture()
def feature_file(tmp_path, tiny_bert_dir):
    rng = np.random.default_rng(5)
    return write_file(tmp_path / "clip.h5", rng.standard_normal((6, VD)), times=np.arange(6) * 1.0 + 0.25,
                      cues=CUES, text_model=str(tiny_bert_dir), text_dim=32, duration=6.5)


def test_plot_data_without_a_shared_space(feature_file):
    from videobert_cli import load

    data = plot_data(feature_file)
    video = load(feature_file).video
    x = video.features.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(data.self_similarity, x @ x.T, atol=1e-5)
    np.testing.assert_array_equal(data.times, video.timestamps)
    assert list(zip(data.cue_start, data.cue_end, data.cue_text)) == CUES
    assert data.cross is None and data.space is None


def test_plot_data_in_the_fusion_space(feature_file, tmp_path, tiny_bert_dir):
    from videobert_cli import load
    from videobert_cli.fusion.checkpoint import save_fusion_weights
    from videobert_cli.fusion.model import FusionConfig, build_fusion

    config = FusionConfig(video_dim=VD, text_dim=32, d_model=16, num_layers=1, num_heads=2, ff_dim=32)
    model = build_fusion(config, seed=11)
    ckpt = tmp_path / "fusion.safetensors"
    save_fusion_weights(ckpt, model, config, {"video_model": "vid-a", "text_model": str(tiny_bert_dir)})
    data = plot_data(feature_file, fusion_weights=ckpt)
    f = load(feature_file)
    expected = np.zeros((len(CUES), len(f.video.timestamps)))
    with torch.no_grad():
        frames = []
        for n in range(len(f.video.timestamps)):  # each frame alone, at its time
            v = model(torch.from_numpy(f.video.features[n:n + 1].astype(np.float32))[None],
                      torch.tensor([[f.video.timestamps[n]]], dtype=torch.float64), None,
                      torch.zeros(1, 0, 32), torch.zeros(1, 0), None).cls[0].numpy()
            frames.append(v / np.linalg.norm(v))
        for c, (start, end, _) in enumerate(CUES):
            rows = np.flatnonzero(f.text.token_cue == c)
            times = start + (np.arange(len(rows)) + 0.5) / len(rows) * (end - start)  # tokens spread over the cue
            t = model(torch.zeros(1, 0, VD), torch.zeros(1, 0), None,
                      torch.from_numpy(f.text.token_features[rows].astype(np.float32))[None],
                      torch.from_numpy(times)[None], None).cls[0].numpy()
            expected[c] = np.stack(frames) @ (t / np.linalg.norm(t))
    assert data.space == "fusion"
    np.testing.assert_allclose(data.cross, expected, atol=1e-5)


def test_plot_command_writes_a_png(feature_file, tmp_path):
    out = tmp_path / "clip.png"
    result = CliRunner().invoke(app, ["plot", str(feature_file), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "no cue-by-frame panel" in result.output


def test_plot_without_matplotlib_says_how_to_install_it(feature_file, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = CliRunner().invoke(app, ["plot", str(feature_file), "-o", str(tmp_path / "x.png")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == EXIT_USAGE and len(lines) == 1
    assert "pip install 'videobert-cli[plot]'" in lines[0]
    assert not (tmp_path / "x.png").exists()


from test_hf_models import clip_dir  # noqa: E402,F401  (the shared tiny CLIP fixture)


def test_plot_data_in_an_aligned_pairs_space(clip_dir, tmp_path):
    from videobert_cli.aligned import embed_text_queries

    name = f"hf:{clip_dir}"
    rng = np.random.default_rng(2)
    path = write_file(tmp_path / "c.h5", rng.standard_normal((5, 16)), cues=CUES, video_model=name, text_model=name,
                      text_dim=32)
    data = plot_data(path)
    x = np.asarray(__import__("videobert_cli").load(path).video.features, np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert data.space == "aligned"
    np.testing.assert_allclose(data.cross, embed_text_queries(name, [c[2] for c in CUES]) @ x.T, atol=1e-5)
