"""Tests of the visual vocabulary (videobert_cli.vocab and `videobert vocab`).

All data is synthetic, written with the feature store; every build is small (a few thousand
rows, 16-d) so the module runs in a few seconds on two cores.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from videobert_cli import load
from videobert_cli.cli import vocab as vocab_cli
from videobert_cli.errors import ConfigError, FeatureFileError, InputError, OutputError
from videobert_cli.features import VideoFeatures
from videobert_cli.hashing import file_sha256
from videobert_cli.store.hdf5 import is_complete, stale_temp_files, write_feature_file
from videobert_cli.vocab import (
    Vocabulary,
    assign_file,
    assign_words,
    build_vocabulary,
    check_compatible,
    load_vocab,
    minibatch_kmeans,
    save_vocab,
    usage_stats,
)
from videobert_cli.vocab import files as vocab_files
from videobert_cli.vocab.kmeans import NodeKMeans, Reservoir

SHA = "ab" * 32
MODEL = {"model_name": "synthnet", "weights_sha256": SHA, "feature_layer": "pool", "preprocessing": {"size": 224}}


def write_features(path: Path, x: np.ndarray, **attrs) -> Path:
    n = x.shape[0]
    video = VideoFeatures(
        features=np.asarray(x, dtype=np.float32),
        timestamps=np.arange(n, dtype=np.float64) * 0.5,
        frame_indices=np.arange(n, dtype=np.int64),
        attrs={**MODEL, **attrs},
    )
    return write_feature_file(path, video=video, source=None, tool_version="test", config_hash="h")


def split_files(tmp_path: Path, x: np.ndarray, sizes: list[int], **attrs) -> list[Path]:
    assert sum(sizes) == x.shape[0]
    out, start = [], 0
    for i, size in enumerate(sizes):
        out.append(write_features(tmp_path / f"part{i}.h5", x[start : start + size], **attrs))
        start += size
    return out


def blobs(n_per: int, centres: np.ndarray, std: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(centres)), n_per)
    x = centres[labels] + std * rng.standard_normal((labels.size, centres.shape[1]))
    order = rng.permutation(labels.size)  # files must not hold one blob each
    return x[order].astype(np.float32), labels[order]


def planted_centres(k: int = 12, dim: int = 16, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-20, 20, size=(k, dim))


def reference_words(x: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Brute-force descent, independent of the library's routing code."""
    ids = np.empty(len(x), dtype=np.int64)
    for r, row in enumerate(x.astype(np.float64)):
        node = 0
        for level in range(vocab.levels):
            exists = vocab.counts[level][node] > 0
            d = np.linalg.norm(vocab.centroids[level][node].astype(np.float64) - row, axis=1)
            d[~exists] = np.inf
            node = node * vocab.clusters + int(np.argmin(d))
        ids[r] = node
    return ids


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """12 well-separated Gaussian blobs in 16-d, 2,400 rows over 3 files."""
    tmp = tmp_path_factory.mktemp("planted")
    centres = planted_centres()
    x, labels = blobs(200, centres, std=0.5, seed=1)
    files = split_files(tmp, x, [900, 800, 700])
    return centres, x, labels, files


@pytest.fixture(scope="module")
def random_data(tmp_path_factory):
    """2,000 unstructured 16-d rows over 3 files, and a 2-level x 3-cluster vocabulary of them."""
    tmp = tmp_path_factory.mktemp("random")
    x = np.random.default_rng(3).standard_normal((2000, 16)).astype(np.float32)
    files = split_files(tmp, x, [700, 650, 650])
    vocab = build_vocabulary(files, levels=2, clusters=3, seed=0, batch_size=256)
    vocab_path = save_vocab(vocab, tmp / "vocab.h5")
    return x, files, vocab, vocab_path


# --------------------------------------------------------------------------------------------
# k-means
# --------------------------------------------------------------------------------------------
def test_recovers_planted_clusters(planted):
    centres, x, labels, files = planted
    vocab = build_vocabulary(files, levels=1, clusters=12, seed=0, batch_size=128)
    found = vocab.centroids[0][0]
    assert (vocab.counts[0][0] > 0).sum() == 12
    # every planted centre has a found centroid within 0.2 (blob std 0.5, 200 points: the
    # mean's error is ~0.035 per dimension), and the matching is one-to-one
    dist = np.linalg.norm(centres[:, None, :] - found[None, :, :], axis=2)
    nearest = dist.argmin(axis=1)
    assert dist.min(axis=1).max() < 0.2
    assert len(set(nearest.tolist())) == 12
    # the words partition the rows exactly as the planted labels do
    ids, _ = assign_words(x, vocab)
    assert np.array_equal(nearest[labels], ids)


def test_matches_sklearn_kmeans(planted):
    import sklearn.cluster as sklearn_cluster
    import sklearn.metrics as metrics
    _, x, labels, files = planted
    vocab = build_vocabulary(files, levels=1, clusters=12, seed=5, batch_size=128)
    ids, _ = assign_words(x, vocab)
    reference = sklearn_cluster.KMeans(n_clusters=12, n_init=4, random_state=0).fit(x.astype(np.float64))
    ours = float(((x - vocab.centroids[0][0][ids]) ** 2).sum())
    assert metrics.adjusted_rand_score(labels, ids) > 0.999
    assert metrics.adjusted_rand_score(reference.labels_, ids) > 0.999
    assert ours <= 1.001 * reference.inertia_


def test_minibatch_kmeans_in_memory_and_few_distinct_points():
    centres = planted_centres(k=5, dim=4, seed=2)
    x, labels = blobs(100, centres, std=0.3, seed=4)
    found, lab = minibatch_kmeans(x, 5, seed=0, batch_size=64)
    assert found.shape == (5, 4)
    # one-to-one with the planted labels
    pairs = set(zip(labels.tolist(), lab.tolist()))
    assert len(pairs) == 5
    # fewer distinct points than clusters: one centre per distinct point, no more
    few = np.repeat(np.eye(3, dtype=np.float32) * 5, 10, axis=0)
    found, lab = minibatch_kmeans(few, 8, seed=0, batch_size=7)
    assert found.shape == (3, 3)
    assert np.allclose(np.sort(found, axis=0), np.sort(np.eye(3) * 5, axis=0))
    assert np.allclose(found[lab], few)


def test_node_with_fewer_points_than_clusters(tmp_path):
    points = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32) * 10
    path = write_features(tmp_path / "five.h5", points)
    vocab = build_vocabulary([path], levels=1, clusters=8, seed=0, batch_size=2)
    exists = vocab.counts[0][0] > 0
    assert exists.sum() == 5
    assert np.allclose(np.sort(vocab.centroids[0][0][exists], axis=0), np.sort(points, axis=0), atol=1e-5)
    ids, _ = assign_words(points, vocab)
    assert len(set(ids.tolist())) == 5


def test_reservoir_is_algorithm_r():
    """The vectorised reservoir equals Vitter's sequential algorithm R on the same draws."""
    size, x = 10, np.arange(1000, dtype=np.float32).reshape(-1, 1)
    reservoir = Reservoir(1, size, 1, np.random.default_rng(4))
    draws = np.random.default_rng(4)
    expected, seen = np.zeros(size, dtype=np.float32), 0
    for start, stop in ((0, 7), (7, 300), (300, 301), (301, 1000)):
        reservoir.add(x[start:stop], np.zeros(stop - start, dtype=np.int64))
        for value, u in zip(x[start:stop, 0], draws.random(stop - start)):
            slot = seen if seen < size else int(np.floor(u * (seen + 1)))
            if slot < size:
                expected[slot] = value
            seen += 1
    assert np.array_equal(reservoir.sample(0)[:, 0], expected)
    assert reservoir.seen[0] == 1000


def test_empty_cluster_is_reseeded_or_dropped():
    x = np.r_[np.full(50, -10.0), np.full(50, 10.0)].astype(np.float32)[:, None]
    x += np.random.default_rng(0).normal(0, 0.1, x.shape).astype(np.float32)
    node = np.zeros(100, dtype=np.int64)
    km = NodeKMeans(1, 2, 1, sample_size=100, rng=np.random.default_rng(0))
    km.observe(x, node)
    km.initialise()
    km.centres[0] = [[0.0], [1000.0]]  # the second centre is nobody's nearest
    km._refresh_norms()
    km.start_epoch()
    km.partial_fit(x, node)
    assert km.end_epoch() is False  # a re-seeded node has not converged
    assert km.reseeded == 1 and km.valid[0].all()
    assert abs(float(km.centres[0, 1, 0])) > 5  # moved onto a data point, away from 1000
    # all points identical: nothing distinct to re-seed with, the empty centre is dropped
    same = np.ones((20, 1), dtype=np.float32)
    km = NodeKMeans(1, 2, 1, sample_size=20, rng=np.random.default_rng(0))
    km.observe(same, node[:20])
    km.initialise()
    assert km.valid[0].tolist() == [True, False]  # k-means++ found one distinct point
    km.valid[0, 1], km.centres[0, 1] = True, 5.0
    km._refresh_norms()
    km.start_epoch()
    km.partial_fit(same, node[:20])
    km.end_epoch()
    assert km.valid[0].tolist() == [True, False] and km.dropped == 1


# --------------------------------------------------------------------------------------------
# the tree
# --------------------------------------------------------------------------------------------
def test_tree_depth_size_and_paths(random_data):
    x, _, vocab, _ = random_data
    assert vocab.size == 9
    assert [c.shape for c in vocab.centroids] == [(1, 3, 16), (3, 3, 16)]
    assert [n.shape for n in vocab.counts] == [(1, 3), (3, 3)]
    ids, paths = assign_words(x, vocab)
    assert ids.dtype == np.int64 and ids.shape == (2000,)
    assert paths.dtype == np.int16 and paths.shape == (2000, 2)
    assert ids.min() >= 0 and ids.max() < 9
    assert paths.min() >= 0 and paths.max() < 3
    assert np.array_equal(ids, paths[:, 0].astype(np.int64) * 3 + paths[:, 1])
    assert len(set(ids.tolist())) == 9  # 2,000 random rows use every word
    assert np.array_equal(ids, reference_words(x, vocab))
    # the stored counts are the training rows per word
    assert np.array_equal(np.bincount(ids, minlength=9), vocab.word_counts())
    assert vocab.counts[0].sum() == vocab.counts[1].sum() == 2000
    assert np.array_equal(vocab.counts[0].reshape(-1), vocab.counts[1].sum(axis=1))


def test_deterministic_with_seed(tmp_path):
    x = np.random.default_rng(11).standard_normal((600, 16)).astype(np.float32)
    files = split_files(tmp_path, x, [250, 350])
    a = build_vocabulary(files, levels=2, clusters=3, seed=0, batch_size=100)
    b = build_vocabulary(files, levels=2, clusters=3, seed=0, batch_size=100)
    c = build_vocabulary(files, levels=2, clusters=3, seed=1, batch_size=100)
    for level in range(2):
        assert np.array_equal(a.centroids[level], b.centroids[level])
        assert np.array_equal(a.counts[level], b.counts[level])
    assert not all(np.array_equal(a.centroids[i], c.centroids[i]) for i in range(2))


def test_streams_in_batches_no_larger_than_batch_size(tmp_path, monkeypatch):
    x = np.random.default_rng(5).standard_normal((2000, 16)).astype(np.float32)
    files = split_files(tmp_path, x, [700, 650, 650])
    reads: list[int] = []
    original_getitem = h5py.Dataset.__getitem__

    def spy_getitem(self, key, *args, **kwargs):
        out = original_getitem(self, key, *args, **kwargs)
        if self.name == "/video/features":
            reads.append(int(np.shape(out)[0]) if np.ndim(out) else 1)
        return out

    def refuse_array(self, *args, **kwargs):  # np.asarray(dataset) would read it whole
        raise AssertionError("a whole dataset was read")

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy_getitem)
    monkeypatch.setattr(h5py.Dataset, "__array__", refuse_array)
    vocab = build_vocabulary(files, levels=2, clusters=3, seed=0, batch_size=64)
    monkeypatch.undo()
    assert reads and max(reads) <= 64
    # every pass reads each row exactly once: per level one sampling pass plus its epochs,
    # and one final counting pass
    passes = sum(1 + e for e in vocab.params["epochs"]) + 1
    assert sum(reads) == 2000 * passes
    assert len(reads) == passes * sum(-(-n // 64) for n in (700, 650, 650))


def test_memory_does_not_grow_with_the_data(tmp_path):
    x = np.random.default_rng(6).standard_normal((12000, 128)).astype(np.float32)  # 6 MB
    files = split_files(tmp_path, x, [4000, 4000, 4000])
    tracemalloc.start()
    try:
        build_vocabulary(files, levels=2, clusters=3, seed=0, batch_size=64, max_iter=2, sample_size=32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes / 8, f"peak {peak} bytes for {x.nbytes} bytes of features"


# --------------------------------------------------------------------------------------------
# usage statistics
# --------------------------------------------------------------------------------------------
def test_usage_statistics(random_data):
    _, _, vocab, vocab_path = random_data
    stats = vocab.stats
    counts = vocab.word_counts()
    assert stats["rows"] == 2000 == counts.sum()
    assert stats["words_total"] == 9
    assert stats["words_used"] == int((counts > 0).sum()) == 9
    assert stats["largest_share"] == pytest.approx(counts.max() / 2000)
    assert stats["degenerate"] is False and stats["warnings"] == []
    assert 1.0 < stats["perplexity"] <= 9.0
    assert load_vocab(vocab_path).stats == stats

    s = usage_stats(np.array([90, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), levels=1, clusters=12)
    assert s["words_used"] == 2 and s["largest_share"] == pytest.approx(0.9) and s["largest_word"] == 0
    assert s["degenerate"] is True and any("90%" in w for w in s["warnings"])
    s = usage_stats(np.array([1] * 2 + [0] * 98), levels=2, clusters=10)
    assert s["largest_share"] == 0.5 and s["degenerate"] is True  # 2% of the words used
    assert len(s["warnings"]) == 1 and "2 of 100" in s["warnings"][0]


def test_degenerate_identical_points(tmp_path):
    path = write_features(tmp_path / "same.h5", np.full((300, 16), 0.25, dtype=np.float32))
    vocab = build_vocabulary([path], levels=2, clusters=4, seed=0, batch_size=50)
    assert vocab.stats["words_used"] == 1
    assert vocab.stats["largest_share"] == 1.0
    assert vocab.stats["degenerate"] is True and len(vocab.stats["warnings"]) == 2
    assert [int((n > 0).sum()) for n in vocab.counts] == [1, 1]  # one child per node, no more
    ids, _ = assign_words(np.full((4, 16), 0.25, dtype=np.float32), vocab)
    assert set(ids.tolist()) == {vocab.stats["largest_word"]}


# --------------------------------------------------------------------------------------------
# inputs and the vocabulary file
# --------------------------------------------------------------------------------------------
def test_build_refuses_mixed_feature_models(tmp_path):
    x = np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32)
    a = write_features(tmp_path / "a.h5", x)
    b = write_features(tmp_path / "b.h5", x, model_name="othernet")
    c = write_features(tmp_path / "c.h5", x, weights_sha256="cd" * 32)
    d = write_features(tmp_path / "d.h5", x[:, :8])
    for other, what in ((b, "model_name"), (c, "weights_sha256"), (d, "feature_dim")):
        with pytest.raises(ConfigError) as info:
            build_vocabulary([a, other], levels=1, clusters=2)
        message = str(info.value)
        assert str(a) in message and str(other) in message and what in message
    with pytest.raises(FeatureFileError):
        build_vocabulary([a, tmp_path / "missing.h5"], levels=1, clusters=2)
    with pytest.raises(ConfigError):
        build_vocabulary([write_features(tmp_path / "empty.h5", np.zeros((0, 16)))], levels=1, clusters=2)


def test_build_refuses_non_finite_rows(tmp_path):
    x = np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32)
    x[17, 3] = np.nan
    path = write_features(tmp_path / "nan.h5", x)
    with pytest.raises(FeatureFileError, match="row 17"):
        build_vocabulary([path], levels=1, clusters=2, batch_size=8)


def test_vocab_file_round_trip(random_data, tmp_path):
    _, files, vocab, vocab_path = random_data
    loaded = load_vocab(vocab_path)
    assert (loaded.levels, loaded.clusters, loaded.feature_dim) == (2, 3, 16)
    for level in range(2):
        assert np.array_equal(loaded.centroids[level], vocab.centroids[level])
        assert np.array_equal(loaded.counts[level], vocab.counts[level])
    assert loaded.identity["model_name"] == "synthnet" and loaded.identity["weights_sha256"] == SHA
    assert loaded.identity["preprocessing"] == {"size": 224} and loaded.identity["feature_layer"] == "pool"
    assert loaded.params["seed"] == 0 and loaded.params["epochs"] == vocab.params["epochs"]
    assert loaded.sources == [(str(f.resolve()), n) for f, n in zip(files, (700, 650, 650))]
    assert loaded.sha256 == file_sha256(vocab_path) == vocab.sha256
    with h5py.File(vocab_path, "r") as f:
        assert f.attrs["format"] == "videobert-vocab" and bool(f.attrs["complete"]) is True
        assert f["level_1/centroids"].shape == (3, 3, 16)
        assert f["usage/word_counts"].shape == (9,)
    with pytest.raises(FeatureFileError, match="not a videobert vocabulary"):
        load_vocab(files[0])
    before = file_sha256(files[0])
    with pytest.raises(OutputError):
        save_vocab(vocab, files[0])  # never clobber a feature file
    assert file_sha256(files[0]) == before


# --------------------------------------------------------------------------------------------
# assignment
# --------------------------------------------------------------------------------------------
def test_assign_words_is_pure_and_checks_input(random_data):
    x, _, vocab, _ = random_data
    x_copy, c_copy = x.copy(), [c.copy() for c in vocab.centroids]
    ids, paths = assign_words(x, vocab)
    assert np.array_equal(x, x_copy) and all(np.array_equal(a, b) for a, b in zip(vocab.centroids, c_copy))
    assert np.array_equal(assign_words(x[::-1], vocab)[0], ids[::-1])  # row order does not matter
    half = x.astype(np.float16)
    assert np.array_equal(assign_words(half, vocab)[0], assign_words(half.astype(np.float32), vocab)[0])
    empty_ids, empty_paths = assign_words(np.zeros((0, 16), np.float32), vocab)
    assert empty_ids.shape == (0,) and empty_paths.shape == (0, 2)
    with pytest.raises(ConfigError, match="dimension 8"):
        assign_words(x[:, :8], vocab)
    bad = x[:3].copy()
    bad[1, 0] = np.inf
    with pytest.raises(InputError, match="row 1"):
        assign_words(bad, vocab)


def test_assign_file_writes_word_datasets(random_data, tmp_path):
    x, _, _, vocab_path = random_data
    vocab = load_vocab(vocab_path)
    path = write_features(tmp_path / "clip.h5", x[:300])
    result = assign_file(path, vocab)
    assert result["rows"] == 300
    ff = load(path)
    assert ff.video is not None and np.array_equal(ff.video.features, x[:300])
    assert is_complete(path)
    expected_ids, expected_paths = assign_words(x[:300], vocab)
    with h5py.File(path, "r") as f:
        ids, paths = f["video/word_ids"], f["video/word_paths"]
        assert ids.dtype == np.int64 and ids.shape == (300,)
        assert paths.dtype == np.int16 and paths.shape == (300, 2)
        assert np.array_equal(ids[()], expected_ids) and np.array_equal(paths[()], expected_paths)
        assert ids.attrs["vocab_sha256"] == file_sha256(vocab_path)
        assert ids.attrs["vocab_path"] == str(Path(vocab_path).resolve())
        assert int(ids.attrs["vocab_levels"]) == 2 and int(ids.attrs["vocab_clusters"]) == 3
    assert result["distinct_words"] == len(set(expected_ids.tolist()))
    assign_file(path, vocab)  # again: replaces the datasets
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["video/word_ids"][()], expected_ids)
    assert stale_temp_files(tmp_path) == []


def test_assign_refuses_other_model_or_dimension(random_data, tmp_path):
    x, _, vocab, _ = random_data
    other_model = write_features(tmp_path / "other.h5", x[:50], model_name="othernet")
    other_dim = write_features(tmp_path / "narrow.h5", x[:50, :8])
    for path, what in ((other_model, "model_name"), (other_dim, "feature_dim")):
        before = file_sha256(path)
        with pytest.raises(ConfigError, match=what):
            assign_file(path, vocab)
        assert file_sha256(path) == before
    check_compatible({**MODEL}, 16, vocab)  # the right model passes
    with pytest.raises(ConfigError, match="feature_layer"):
        check_compatible({**MODEL, "feature_layer": "logits"}, 16, vocab)


def test_assign_is_atomic(random_data, tmp_path, monkeypatch):
    x, _, vocab, _ = random_data
    path = write_features(tmp_path / "clip.h5", x[:100])
    before = file_sha256(path)
    real_write_words = vocab_files.write_words

    def write_then_fail(group, ids, paths, v):
        real_write_words(group, ids, paths, v)
        raise RuntimeError("disk exploded")

    monkeypatch.setattr(vocab_files, "write_words", write_then_fail)
    with pytest.raises(RuntimeError, match="disk exploded"):
        assign_file(path, vocab)
    assert file_sha256(path) == before
    assert stale_temp_files(tmp_path) == []
    with h5py.File(path, "r") as f:
        assert "word_ids" not in f["video"]


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(vocab_cli.app, [str(a) for a in args])


def test_cli_build_then_assign(planted, tmp_path):
    _, x, _, files = planted
    out = tmp_path / "vocab.h5"
    result = invoke("build", *files, "-o", out, "--levels", "1", "--clusters", "12", "--batch-size", "256", "--json")
    assert result.exit_code == 0, result.output
    assert "12 of 12 words used" in result.stderr and "warning" not in result.stderr
    assert '"words_used": 12' in result.stdout
    vocab = load_vocab(out)
    clip = write_features(tmp_path / "clip.h5", x[:120])
    result = invoke("assign", clip, "--vocab", out)
    assert result.exit_code == 0, result.output
    assert "assigned" in result.stderr
    assert np.array_equal(load(clip).video.features, x[:120])
    with h5py.File(clip, "r") as f:
        assert np.array_equal(f["video/word_ids"][()], assign_words(x[:120], vocab)[0])


def test_cli_assign_mismatch_exits_2_and_writes_nothing(random_data, tmp_path):
    x, _, _, vocab_path = random_data
    good = write_features(tmp_path / "good.h5", x[:30])
    bad = write_features(tmp_path / "bad.h5", x[:30, :8])
    before = {p: file_sha256(p) for p in (good, bad)}
    result = invoke("assign", good, bad, "--vocab", vocab_path)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "feature_dim" in lines[0]
    assert {p: file_sha256(p) for p in (good, bad)} == before
    result = invoke("assign", good, "--vocab", good)  # a feature file is no vocabulary
    assert result.exit_code == 2 and "not a videobert vocabulary" in result.stderr
    assert file_sha256(good) == before[good]


def test_cli_assign_goes_on_after_a_bad_file(random_data, tmp_path):
    x, _, _, vocab_path = random_data
    good = write_features(tmp_path / "good.h5", x[:30])
    missing = tmp_path / "missing.h5"
    result = invoke("assign", missing, good, "--vocab", vocab_path, "--json")
    assert result.exit_code == 1
    assert str(missing) in result.stderr and "1 of 2 files failed" in result.stderr
    assert '"status": "ok"' in result.stdout and '"status": "failed"' in result.stdout
    with h5py.File(good, "r") as f:
        assert f["video/word_ids"].shape == (30,)


def test_cli_build_degenerate_warning_and_errors(tmp_path):
    same = write_features(tmp_path / "same.h5", np.ones((50, 16), dtype=np.float32))
    result = invoke("build", same, "-o", tmp_path / "v.h5", "--levels", "2", "--clusters", "3")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "degenerate" in result.stderr
    other = write_features(tmp_path / "other.h5", np.ones((50, 16), dtype=np.float32), model_name="othernet")
    result = invoke("build", same, other, "-o", tmp_path / "v2.h5", "--levels", "1", "--clusters", "2")
    assert result.exit_code == 2 and "othernet" in result.stderr
    assert not (tmp_path / "v2.h5").exists()
    result = invoke("build", same, "-o", same)
    assert result.exit_code == 2 and "one of the inputs" in result.stderr


def test_cli_help_has_examples():
    for command in ("build", "assign"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.output


def invoke_main(*args):
    from videobert_cli.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_run_with_vocab_stores_the_same_words_as_vocab_assign(tmp_path, fast_cli_flags):
    """`run --vocab` and `vocab assign` on the output of a plain run give identical words."""
    import json

    from synth import make_video

    for index in range(3):
        make_video(tmp_path / "in" / f"v{index}.mp4", width=64, height=48, fps=10, num_frames=30)
    plain, with_words = tmp_path / "plain", tmp_path / "words"
    assert invoke_main("--quiet", "run", str(tmp_path / "in"), "-o", str(plain), "--fps", "5", *fast_cli_flags).exit_code == 0
    vocab_path = tmp_path / "vocab.h5"
    result = invoke_main("vocab", "build", str(plain), "-o", str(vocab_path), "--levels", "2", "--clusters", "3")
    assert result.exit_code == 0, result.output
    result = invoke_main("--quiet", "run", str(tmp_path / "in"), "-o", str(with_words), "--fps", "5",
                    "--vocab", str(vocab_path), "--json", *fast_cli_flags)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] == 3
    assert invoke_main("vocab", "assign", str(plain), "--vocab", str(vocab_path)).exit_code == 0
    for index in range(3):
        ours = load(with_words / f"v{index}.h5").video
        theirs = load(plain / f"v{index}.h5").video
        np.testing.assert_array_equal(ours.extra["word_ids"], theirs.extra["word_ids"])
        np.testing.assert_array_equal(ours.extra["word_paths"], theirs.extra["word_paths"])
        assert ours.attrs["vocab_sha256"] == theirs.attrs["vocab_sha256"] == load_vocab(vocab_path).sha256
        # the datasets name their vocabulary as well (training reads vocab_size from them)
        with h5py.File(with_words / f"v{index}.h5") as ours_file, h5py.File(plain / f"v{index}.h5") as theirs_file:
            for name in ("word_ids", "word_paths"):
                mine, assigned = ours_file["video"][name].attrs, theirs_file["video"][name].attrs
                for key in ("vocab_sha256", "vocab_size", "vocab_levels", "vocab_clusters", "vocab_path"):
                    assert mine[key] == assigned[key], (name, key)
    # a vocabulary of another feature model is refused before anything is written
    other = tmp_path / "other"
    result = invoke_main("--quiet", "run", str(tmp_path / "in"), "-o", str(other), "--vocab", str(vocab_path),
                    *[f if f != "mobilenet_v3_small" else "resnet18" for f in fast_cli_flags])
    assert result.exit_code == 2 and not list(other.glob("*.h5"))


def test_build_skips_files_of_a_folder_without_the_group(random_data, tmp_path):
    """A folder of `run` outputs may hold text-only files (extract-text); a video vocabulary
    skips them there, and a library caller may pass the folder as one path."""
    from videobert_cli.features import TextFeatures
    from videobert_cli.vocab.vocab import build_vocabulary, feature_files

    folder = tmp_path / "mixed"
    folder.mkdir()
    x = random_data[0]
    paths = [write_features(folder / f"v{i}.h5", x[i * 100 : (i + 1) * 100]) for i in range(3)]
    rng = np.random.default_rng(0)
    write_feature_file(folder / "words.h5", text=TextFeatures(
        token_features=rng.standard_normal((2, 8)).astype(np.float32), token_ids=np.array([5, 6]), tokens=["a", "b"],
        token_start=np.zeros(2), token_end=np.ones(2), token_cue=np.zeros(2, np.int32), token_window=np.zeros(2, np.int32),
        cue_features=rng.standard_normal((1, 8)).astype(np.float32), cue_start=np.zeros(1), cue_end=np.ones(1),
        cue_text=["a b"], attrs={"model_name": "txt"}), source=None, tool_version="test", config_hash="test")
    assert feature_files(str(folder), "video") == paths
    assert feature_files(folder, "text") == [folder / "words.h5"]
    vocab = build_vocabulary(str(folder), levels=1, clusters=2)
    assert vocab.size == 2
    # assigning over the folder skips the text-only file the same way
    vocab_path = save_vocab(vocab, tmp_path / "vocab.h5")
    result = invoke("assign", folder, "--vocab", vocab_path)
    assert result.exit_code == 0, result.output
    with h5py.File(paths[0], "r") as f:
        assert f["video/word_ids"].shape == (100,)
