"""`videobert search`: moments, merging, --like, refusals, the index, staleness, the fusion space,
thumbnails. Feature files are synthetic with planted structure (tests/searchdata.py)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from searchdata import VD, planted_corpus, write_file
from videobert_cli.cli.app import app
from videobert_cli.errors import EXIT_USAGE, ConfigError, FeatureFileError
from videobert_cli.search.engine import SearchOptions, search
from videobert_cli.search.moments import make_windows, merge_hits, pool_windows, row_ends
from videobert_cli.store.index import INDEX_NAME, read_index, write_index


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


@pytest.fixture()
def corpus(tmp_path):
    paths, u = planted_corpus(tmp_path / "feats")
    rng = np.random.default_rng(99)
    query = rng.standard_normal((8, VD))
    query[2:6] = 6.0 * u + 0.2 * rng.standard_normal((4, VD))  # the same thing, at 2-5 s of another video
    like = write_file(tmp_path / "other" / "q.h5", query, seed=7)
    return tmp_path / "feats", paths, like


# --------------------------------------------------------------------------------------------
# the moment unit and the merging rule
# --------------------------------------------------------------------------------------------
def test_windows_cover_the_video_and_pool_normalised_means():
    t = np.arange(10.0)
    w = make_windows(t, row_ends(t, 10.0), 4.0, 2.0)
    assert w.row_start.tolist() == [0, 2, 4, 6] and w.row_stop.tolist() == [4, 6, 8, 10]
    assert w.start.tolist() == [0, 2, 4, 6] and w.end.tolist() == [4, 6, 8, 10]  # [8, 10) adds no row
    short = make_windows(np.array([0.0, 0.5, 1.0]), row_ends(np.array([0.0, 0.5, 1.0]), 1.5), 4.0, 2.0)
    assert (short.row_start.tolist(), short.row_stop.tolist(), short.end.tolist()) == ([0], [3], [1.5])
    clips = make_windows(np.array([0.0, 2.0, 4.0]), np.array([3.0, 5.0, 7.0]), 4.0, 2.0)
    assert clips.end.tolist() == [5.0, 7.0]  # a clip's span ends at clip_end
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 5))
    emb = pool_windows(x, w)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expect = unit[2:6].mean(0)
    np.testing.assert_allclose(emb[1], expect / np.linalg.norm(expect), atol=1e-6)


def test_merge_rule_joins_overlapping_windows_of_one_video():
    file = np.array([0, 0, 0, 0, 1])
    start = np.array([0.0, 2.0, 4.0, 10.0, 0.0])
    end = np.array([4.0, 6.0, 8.0, 14.0, 4.0])
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.85])
    hits = merge_hits(scores, file, start, end, 3)
    assert [(h.file, h.start, h.end, h.score) for h in hits] == [
        (0, 0.0, 8.0, 0.9), (1, 0.0, 4.0, 0.85), (0, 10.0, 14.0, 0.7)]
    assert hits[0].windows == (0, 1, 2) and hits[0].best == 0
    gap = merge_hits(scores, file, start, end, 3, gap_s=2.0)
    assert [(h.file, h.start, h.end) for h in gap] == [(0, 0.0, 14.0), (1, 0.0, 4.0)]  # window 2 bridges
    # top 1 stops at window 4 (it would start moment 2): only windows scoring above 0.85 are in
    assert [(h.start, h.end, h.windows) for h in merge_hits(scores, file, start, end, 1)] == [(0.0, 4.0, (0,))]
    assert [(h.file, h.start, h.end) for h in merge_hits(scores, file, start, end, 2)] == [(0, 0.0, 6.0), (1, 0.0, 4.0)]
    excluded = merge_hits(scores, file, start, end, 1, exclude=np.array([1, 1, 1, 0, 0], bool))
    assert [(h.file, h.score) for h in excluded] == [(1, 0.85)]


# --------------------------------------------------------------------------------------------
# --like
# --------------------------------------------------------------------------------------------
def test_like_finds_the_planted_moment_with_its_words(corpus):
    folder, paths, like = corpus
    result = search(None, [folder], like=(like, 3.5), options=SearchOptions(top=3))
    best = result.moments[0]
    assert result.space == "video" and best.video == "f2"
    assert best.start <= 6.0 and best.end >= 10.0 and best.start >= 4.0
    assert "the planted part 2" in best.words
    assert best.score > 0.9 > result.moments[1].score
    # the CLI prints the same as JSON
    out = invoke("search", "--like", str(like), "--at", "3.5", str(folder), "--top", "3", "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)["moments"]
    assert [(r["video"], r["start"], r["end"]) for r in rows] == [(m.video, m.start, m.end) for m in result.moments]
    assert rows[0]["score"] == pytest.approx(best.score)


def test_like_leaves_out_the_query_moment_itself(corpus):
    folder, paths, _ = corpus
    result = search(None, [folder], like=(paths[2], 7.5), options=SearchOptions(top=20))
    for m in result.moments:
        assert not (m.video == "f2" and m.start < 9.0 and m.end > 6.0), m


def test_like_refuses_another_video_model_and_times_outside(corpus, tmp_path):
    folder, _, _ = corpus
    other = write_file(tmp_path / "b.h5", np.ones((6, VD)), video_model="vid-b")
    out = invoke("search", "--like", str(other), "--at", "1", str(folder))
    line = one_line(out.output)
    assert out.exit_code == EXIT_USAGE and "'vid-b'" in line and "'vid-a'" in line
    out = invoke("search", "--like", str(folder / "f0.h5"), "--at", "99", str(folder))
    assert out.exit_code == EXIT_USAGE and "outside the video" in one_line(out.output)


# --------------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------------
def test_text_query_over_unrelated_spaces_is_refused_naming_both_ways(corpus):
    folder, _, _ = corpus
    out = invoke("search", "a planted thing", str(folder))
    line = one_line(out.output)
    assert out.exit_code == EXIT_USAGE
    assert "'vid-a'" in line and "'txt-a'" in line and "--fusion-weights" in line and "aligned" in line


def test_mixed_models_are_refused_naming_two_files(corpus, tmp_path):
    folder, _, like = corpus
    write_file(folder / "sub" / "b.h5", np.ones((6, VD)), video_model="vid-b")
    out = invoke("search", "--like", str(like), "--at", "3", str(folder))
    line = one_line(out.output)
    assert out.exit_code == EXIT_USAGE and "f0.h5" in line and "b.h5" in line and "'vid-b'" in line
    with pytest.raises(ConfigError, match="different video models"):
        write_index(folder) and search(None, [folder / INDEX_NAME], like=(like, 3.0))


# --------------------------------------------------------------------------------------------
# the index
# --------------------------------------------------------------------------------------------
def test_index_backed_search_equals_file_backed(corpus):
    folder, paths, like = corpus
    write_index(folder)
    with h5py.File(folder / INDEX_NAME, "r") as f:
        group = f["search"]
        assert group["embeddings"].dtype == np.float16 and group.attrs["count"] == len(group["file"])
        assert group.attrs["video_model"] == "vid-a" and group.attrs["window_s"] == 4.0
    assert {row["file_size"] for row in read_index(folder)} == {p.stat().st_size for p in paths}
    by_files = search(None, [folder], like=(like, 3.5), options=SearchOptions(top=5))
    by_index = search(None, [folder / INDEX_NAME], like=(like, 3.5), options=SearchOptions(top=5))
    assert [(m.video, m.start, m.end, m.words) for m in by_index.moments] == \
        [(m.video, m.start, m.end, m.words) for m in by_files.moments]
    np.testing.assert_allclose([m.score for m in by_index.moments], [m.score for m in by_files.moments], atol=2e-3)
    # other windows than the index's: refused with how to get them
    with pytest.raises(ConfigError, match="stores windows of 4 s"):
        search(None, [folder / INDEX_NAME], like=(like, 3.5), options=SearchOptions(window_s=6.0))
    # `videobert index --window` changes them, and a refresh keeps them
    assert invoke("index", str(folder), "--window", "6", "--hop", "3").exit_code == 0
    write_index(folder)
    assert search(None, [folder / INDEX_NAME], like=(like, 3.5), options=SearchOptions(window_s=6.0)).moments


def test_a_stale_index_is_reported_not_searched(corpus):
    folder, paths, like = corpus
    write_index(folder)
    stat = paths[1].stat()
    os.utime(paths[1], (stat.st_atime, stat.st_mtime + 5))
    with pytest.raises(FeatureFileError, match=r"stale: f1.h5 \(changed\)"):
        search(None, [folder / INDEX_NAME], like=(like, 3.5))
    paths[3].unlink()
    out = invoke("search", "--like", str(like), "--at", "3.5", str(folder / INDEX_NAME))
    line = one_line(out.output)
    assert out.exit_code == 1 and "stale" in line and "and 1 more" in line and "videobert index" in line


def test_an_index_written_before_search_data_existed_is_refused(corpus):
    folder, _, like = corpus
    write_index(folder)
    with h5py.File(folder / INDEX_NAME, "r+") as f:
        del f["search"]
        del f["table/file_size"]
        del f["table/file_mtime"]
    assert all(row["file_size"] is None for row in read_index(folder))  # old indexes still read
    with pytest.raises(FeatureFileError, match="older version"):
        search(None, [folder / INDEX_NAME], like=(like, 3.5))


# --------------------------------------------------------------------------------------------
# the fusion space
# --------------------------------------------------------------------------------------------
@pytest.fixture()
def fusion_corpus(tmp_path, tiny_bert_dir):
    from videobert_cli.fusion.checkpoint import save_fusion_weights
    from videobert_cli.fusion.model import FusionConfig, build_fusion

    folder = tmp_path / "fused"
    paths, _ = planted_corpus(folder, files=3, frames=10, text_model=str(tiny_bert_dir), text_dim=32)
    config = FusionConfig(video_dim=VD, text_dim=32, d_model=16, num_layers=1, num_heads=2, ff_dim=32)
    model = build_fusion(config, seed=3)
    ckpt = tmp_path / "fusion.safetensors"
    save_fusion_weights(ckpt, model, config, {"video_model": "vid-a", "text_model": str(tiny_bert_dir), "pairs": "video"})
    return folder, paths, ckpt, model


def independent_fusion_scores(model, tiny_bert_dir, query, paths):
    """Cosine of the query's text-only [CLS] and every window's video-only [CLS], by hand."""
    from videobert_cli import load
    from videobert_cli.config import TextModelConfig
    from videobert_cli.text.encoder import TextEncoder
    from videobert_cli.text.models import load_text_model
    from videobert_cli.text.transcripts import parse_text

    tokens = TextEncoder(load_text_model(TextModelConfig(name=str(tiny_bert_dir)))).encode(parse_text(query))
    with torch.no_grad():
        t = model(torch.zeros(1, 0, VD), torch.zeros(1, 0), None, torch.from_numpy(tokens.token_features)[None],
                  torch.full((1, len(tokens)), float("nan"), dtype=torch.float64), None).cls[0].numpy()
    t = t / np.linalg.norm(t)
    rows = []
    for i, path in enumerate(paths):
        video = load(path).video
        for lo in range(0, len(video.timestamps), 2):  # windows of 4 s every 2 s at 1 frame/s
            hi = min(lo + 4, len(video.timestamps))
            with torch.no_grad():
                v = model(torch.from_numpy(video.features[lo:hi].astype(np.float32))[None],
                          torch.from_numpy(video.timestamps[lo:hi])[None], None, torch.zeros(1, 0, 32),
                          torch.zeros(1, 0), None).cls[0].numpy()
            rows.append((i, float(video.timestamps[lo]), float(v @ t / np.linalg.norm(v))))
            if hi == len(video.timestamps):
                break
    return rows


def test_fusion_search_ranks_by_the_eval_space_cosine(fusion_corpus, tiny_bert_dir):
    folder, paths, ckpt, model = fusion_corpus
    query = "a planted square moves"
    result = search(query, [folder], options=SearchOptions(top=50, fusion_weights=ckpt))
    expected = independent_fusion_scores(model, tiny_bert_dir, query, paths)
    assert result.space == "fusion"
    assert result.moments[0].score == pytest.approx(max(s for _, _, s in expected), abs=1e-5)
    for m in result.moments:  # every moment scores its best window
        inside = [s for i, start, s in expected if f"f{i}" == m.video and m.start <= start < m.end]
        assert m.score == pytest.approx(max(inside), abs=1e-5)
    # stored in the index under the weights' hash: the same ranking from float16 embeddings
    out = invoke("index", str(folder), "--fusion-weights", str(ckpt))
    assert out.exit_code == 0, out.output
    indexed = search(query, [folder / INDEX_NAME], options=SearchOptions(top=3, fusion_weights=ckpt))
    assert not indexed.notes
    np.testing.assert_allclose([m.score for m in indexed.moments], [m.score for m in result.moments[:3]], atol=3e-3)
    out = invoke("search", query, str(folder / INDEX_NAME), "--fusion-weights", str(ckpt), "--json", "--top", "2")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["space"] == "fusion"


def test_fusion_weights_of_other_features_are_refused(fusion_corpus, tmp_path):
    folder, _, ckpt, _ = fusion_corpus
    other = tmp_path / "b"
    planted_corpus(other, files=2, video_model="vid-b")
    out = invoke("search", "anything", str(other), "--fusion-weights", str(ckpt))
    assert out.exit_code == EXIT_USAGE and "'vid-a'" in one_line(out.output)


# --------------------------------------------------------------------------------------------
# thumbnails
# --------------------------------------------------------------------------------------------
def test_thumbnails_decode_the_moment_frames_and_placeholder_a_vanished_source(tmp_path):
    from synth import closest_signature, make_video
    from videobert_cli.viz import PLACEHOLDER_GREY, contact_sheet

    video = make_video(tmp_path / "v.mp4", width=64, height=48, fps=10, num_frames=100)
    gone = make_video(tmp_path / "gone.mp4", width=64, height=48, fps=10, num_frames=100)
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((10, VD))
    folder = tmp_path / "feats"
    write_file(folder / "v.h5", frames, source=video)
    write_file(folder / "gone.h5", frames + 0.01 * rng.standard_normal((10, VD)), source=gone)
    gone.unlink()
    like = write_file(tmp_path / "q.h5", frames[3:7], times=np.arange(4.0))
    result = search(None, [folder], like=(like, 1.5), options=SearchOptions(top=2))
    assert {m.video for m in result.moments} == {"v", "gone"}
    sheet = contact_sheet(result.moments, tmp_path / "hits.png")
    assert (tmp_path / "hits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for m, decoded, index, tile in zip(result.moments, sheet.decoded, sheet.frame_index, sheet.tiles):
        if m.video == "v":
            expected = int(round((m.start + m.end) / 2 * 10))  # the frame on screen mid-moment, 10 fps
            assert decoded and index == expected
            assert closest_signature(tile, range(100)) == expected
        else:
            assert not decoded and index is None and (tile == PLACEHOLDER_GREY).all()
    assert len(sheet.warnings) == 1 and "gone" in sheet.warnings[0]
    out = invoke("search", "--like", str(like), "--at", "1.5", str(folder), "--top", "2", "--thumbnails",
                 str(tmp_path / "cli.png"))
    assert out.exit_code == 0, out.output
    assert "placeholder" in out.output and (tmp_path / "cli.png").is_file()


def test_float16_scores_are_exact_for_the_best_rows():
    from videobert_cli.search.engine import cosine_scores

    rng = np.random.default_rng(3)
    x = rng.standard_normal((5000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    half = x.astype(np.float16)
    q = x[17] + 0.3 * x[99]
    q /= np.linalg.norm(q)
    exact = half.astype(np.float64) @ q
    scores = cosine_scores(half, q, exact_top=40)
    best = np.argsort(-exact)[:40]
    np.testing.assert_allclose(scores[best], exact[best], atol=1e-6)
    np.testing.assert_allclose(scores, exact, atol=1e-3)
    assert np.argsort(-scores, kind="stable")[:40].tolist() == np.argsort(-exact, kind="stable")[:40].tolist()


# --------------------------------------------------------------------------------------------
# an aligned encoder pair (tiny random CLIP of tests/test_hf_models.py)
# --------------------------------------------------------------------------------------------
from test_hf_models import clip_dir  # noqa: E402,F401  (the shared tiny CLIP fixture)


def test_text_search_in_an_aligned_pairs_space(clip_dir, tmp_path):
    from videobert_cli.aligned import embed_text_queries

    name = f"hf:{clip_dir}"
    query = "a red square"
    q = embed_text_queries(name, [query])[0]
    rng = np.random.default_rng(4)
    folder = tmp_path / "clip"
    for i in range(3):
        video = rng.standard_normal((10, len(q)))
        if i == 1:
            video[6:10] = 4.0 * q + 0.3 * rng.standard_normal((4, len(q)))
        write_file(folder / f"c{i}.h5", video, cues=[(6.0, 10.0, f"cue of {i}")], video_model=name, text_model=name,
                   text_dim=32)
    result = search(query, [folder], options=SearchOptions(top=2))
    assert result.space == "aligned"
    best = result.moments[0]
    assert (best.video, best.words, best.end) == ("c1", "cue of 1", 10.0) and best.start <= 6.0
    from videobert_cli import load

    x = load(folder / "c1.h5").video.features.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    window = x[6:10].mean(0)  # the best window: 6-10 s
    assert best.score == pytest.approx(float(window @ q / np.linalg.norm(window)), abs=1e-5)
    write_index(folder)
    indexed = search(query, [folder / INDEX_NAME], options=SearchOptions(top=2))
    assert [(m.video, m.start, m.end) for m in indexed.moments] == [(m.video, m.start, m.end) for m in result.moments]


def test_a_refresh_reads_only_the_files_that_changed(corpus, monkeypatch):
    import videobert_cli.store.index as index_module

    folder, paths, _ = corpus
    write_index(folder)
    read = []
    original = index_module.file_moments
    monkeypatch.setattr(index_module, "file_moments", lambda path, *a: read.append(Path(path).name) or original(path, *a))
    stat = paths[1].stat()
    os.utime(paths[1], (stat.st_atime, stat.st_mtime + 5))
    write_index(folder)
    assert read == ["f1.h5"]
    with h5py.File(folder / INDEX_NAME, "r") as f:
        refreshed = {name: f["search"][name][()] for name in ("embeddings", "file", "start", "end", "row_start")}
    (folder / INDEX_NAME).unlink()
    write_index(folder)
    with h5py.File(folder / INDEX_NAME, "r") as f:
        for name, value in refreshed.items():
            np.testing.assert_array_equal(f["search"][name][()], value)
