"""Tests of the HDF5 feature store (videobert_cli.store: hdf5, writer, reader, schema, atomic)."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from videobert_cli.errors import ConfigError, FeatureFileError, OutputError
from videobert_cli.features import (
    MODALITY_CLS,
    MODALITY_TEXT,
    MODALITY_VIDEO,
    FusedFeatures,
    SourceInfo,
    TextFeatures,
    VideoFeatures,
)
from videobert_cli.store import atomic, writer
from videobert_cli.store.atomic import match_temp_name
from videobert_cli.store.hdf5 import (
    FORMAT_NAME,
    SCHEMA_VERSION,
    clean_stale_temp_files,
    describe,
    is_complete,
    load,
    read_attrs,
    stale_temp_files,
    temp_name_for,
    write_feature_file,
)

# A pid above Linux's maximum pid_max (2**22): guaranteed not to be a live process.
DEAD_PID = 99_999_999


# --------------------------------------------------------------------------------------------
# fixtures / builders
# --------------------------------------------------------------------------------------------
def make_video(rng: np.random.Generator, n: int = 7, d: int = 16) -> VideoFeatures:
    return VideoFeatures(
        features=rng.standard_normal((n, d)).astype(np.float32),
        timestamps=np.arange(n, dtype=np.float64) * 0.5 + 0.04,
        frame_indices=np.arange(n, dtype=np.int64) * 12,
        attrs={
            "model_name": "efficientnet_lite0",
            "weights_sha256": "ab" * 32,
            "feature_layer": "pool",
            "native_fps": 29.97,
            "num_frames": 1234,
            "duration": 41.2,
            "width": 640,
            "height": 360,
            "preprocessing": {"resize": [224, 224], "mean": [0.485, 0.456, 0.406], "crop": None},
            "sampling": {"mode": "fps", "fps": 2.0},
        },
    )


def make_text(rng: np.random.Generator, t: int = 6, c: int = 3, d: int = 8) -> TextFeatures:
    tokens = ["café", "日本語", "hello", "##lo", "naïve", "🙂"][:t] + ["x"] * max(0, t - 6)
    return TextFeatures(
        token_features=rng.standard_normal((t, d)).astype(np.float32),
        token_ids=rng.integers(0, 30000, size=t, dtype=np.int64),
        tokens=tokens,
        token_start=np.array([0.0, 0.0, np.nan, 2.5, 2.5, np.nan][:t], dtype=np.float64),
        token_end=np.array([1.0, 1.0, np.nan, 3.0, 3.0, np.nan][:t], dtype=np.float64),
        token_cue=np.array([0, 0, 1, 2, 2, 1][:t], dtype=np.int32),
        token_window=np.array([0, 0, 0, 1, 1, 1][:t], dtype=np.int32),
        cue_features=rng.standard_normal((c, d)).astype(np.float32),
        cue_start=np.array([0.0, np.nan, 2.5][:c]),
        cue_end=np.array([1.0, np.nan, 3.0][:c]),
        cue_text=["café au lait", "日本語のテキスト", "plain"][:c],
        attrs={"model_name": "all-MiniLM-L6-v2", "max_length": 256, "stride": 64},
    )


def make_fused(rng: np.random.Generator, n_video: int = 7, n_text: int = 6, d: int = 12):
    length = 1 + n_video + n_text
    modality = np.array(
        [MODALITY_CLS] + [MODALITY_VIDEO] * n_video + [MODALITY_TEXT] * n_text, dtype=np.int8
    )
    time_ = np.concatenate([[np.nan], np.arange(n_video) * 0.5, [0.0, np.nan] * (n_text // 2)])
    source_index = np.concatenate([[-1], np.arange(n_video), np.arange(n_text)]).astype(np.int32)
    seq = rng.standard_normal((length, d)).astype(np.float32)
    return FusedFeatures(
        sequence=seq,
        modality=modality,
        time=time_.astype(np.float64),
        source_index=source_index,
        cls=seq[0].copy(),
        attrs={"d_model": d, "projection": "random-orthogonal", "seed": 0},
    )


SOURCE = SourceInfo(path="/videos/clip ü.mp4", size=123456, mtime=1700000000.25, sha256="cd" * 32)


def write_all(path: Path, rng: np.random.Generator, **kwargs):
    video, text, fused = make_video(rng), make_text(rng), make_fused(rng)
    kwargs.setdefault("source", SOURCE)
    kwargs.setdefault("tool_version", "0.1.0")
    kwargs.setdefault("config_hash", "deadbeef")
    out = write_feature_file(path, video=video, text=text, fused=fused, **kwargs)
    return out, video, text, fused


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _listdir(d: Path) -> list[str]:
    return sorted(os.listdir(d))


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------
def test_round_trip_all_groups_float32_exact(tmp_path: Path, rng):
    dest = tmp_path / "clip.h5"
    out, video, text, fused = write_all(dest, rng, extra_attrs={"run_id": "r1"})
    assert out == dest
    assert _listdir(tmp_path) == ["clip.h5"]  # no temp left behind

    ff = load(dest)
    assert ff.path == str(dest)

    v = ff.video
    assert v is not None
    assert v.features.dtype == np.float32
    np.testing.assert_array_equal(v.features, video.features)
    np.testing.assert_array_equal(v.timestamps, video.timestamps)
    assert v.timestamps.dtype == np.float64
    np.testing.assert_array_equal(v.frame_indices, video.frame_indices)
    assert v.frame_indices.dtype == np.int64
    assert v.attrs == {**video.attrs, "feature_dim": 16, "count": 7}

    t = ff.text
    assert t is not None
    np.testing.assert_array_equal(t.token_features, text.token_features)
    np.testing.assert_array_equal(t.token_ids, text.token_ids)
    assert t.token_ids.dtype == np.int64
    assert t.tokens == ["café", "日本語", "hello", "##lo", "naïve", "🙂"]
    assert all(type(s) is str for s in t.tokens)
    # NaN preserved (assert_array_equal treats NaN == NaN)
    np.testing.assert_array_equal(t.token_start, text.token_start)
    np.testing.assert_array_equal(t.token_end, text.token_end)
    assert np.isnan(t.token_start[2]) and np.isnan(t.token_start[5])
    np.testing.assert_array_equal(t.token_cue, text.token_cue)
    assert t.token_cue.dtype == np.int32
    assert t.token_window.dtype == np.int32
    np.testing.assert_array_equal(t.token_window, text.token_window)
    np.testing.assert_array_equal(t.cue_features, text.cue_features)
    np.testing.assert_array_equal(t.cue_start, text.cue_start)
    np.testing.assert_array_equal(t.cue_end, text.cue_end)
    assert t.cue_text == ["café au lait", "日本語のテキスト", "plain"]
    assert t.attrs == text.attrs

    f = ff.fused
    assert f is not None
    np.testing.assert_array_equal(f.sequence, fused.sequence)
    np.testing.assert_array_equal(f.modality, fused.modality)
    assert f.modality.dtype == np.int8
    np.testing.assert_array_equal(f.time, fused.time)
    np.testing.assert_array_equal(f.source_index, fused.source_index)
    assert f.source_index.dtype == np.int32
    np.testing.assert_array_equal(f.cls, fused.cls)
    assert f.attrs == fused.attrs

    attrs = ff.attrs
    assert attrs["format"] == FORMAT_NAME == "videobert-features"
    assert attrs["schema_version"] == SCHEMA_VERSION == "1.0"
    assert attrs["tool_version"] == "0.1.0"
    assert attrs["config_hash"] == "deadbeef"
    assert attrs["complete"] is True
    assert attrs["source_path"] == "/videos/clip ü.mp4"
    assert attrs["source_size"] == 123456 and type(attrs["source_size"]) is int
    assert attrs["source_mtime"] == 1700000000.25
    assert attrs["source_sha256"] == "cd" * 32
    assert attrs["run_id"] == "r1"
    assert attrs["created_at"].endswith("Z")
    assert "json_attrs" not in attrs


def test_load_subset_of_groups(tmp_path: Path, rng):
    dest = tmp_path / "a.h5"
    write_all(dest, rng)
    ff = load(dest, groups=["text"])
    assert ff.text is not None and ff.video is None and ff.fused is None
    ff = load(dest, groups="fused")
    assert ff.fused is not None and ff.video is None and ff.text is None
    with pytest.raises(ValueError):
        load(dest, groups=["audio"])


def test_absent_groups_not_written_and_requesting_them_fails(tmp_path: Path, rng):
    dest = tmp_path / "v.h5"
    write_feature_file(
        dest, video=make_video(rng), source=None, tool_version="0.1", config_hash="h"
    )
    with h5py.File(dest, "r") as f:
        assert list(f.keys()) == ["video"]
        assert "source_path" not in f.attrs
    ff = load(dest)
    assert ff.video is not None and ff.text is None and ff.fused is None
    with pytest.raises(FeatureFileError, match="text/") as ei:
        load(dest, groups=["text"])
    assert str(dest) in str(ei.value)


def test_source_without_sha256(tmp_path: Path, rng):
    dest = tmp_path / "s.h5"
    write_feature_file(
        dest,
        video=make_video(rng),
        source=SourceInfo(path="/x.mp4", size=1, mtime=2.0),
        tool_version="0.1",
        config_hash="h",
    )
    attrs = read_attrs(dest)
    assert "source_sha256" not in attrs
    assert (attrs["source_path"], attrs["source_size"], attrs["source_mtime"]) == ("/x.mp4", 1, 2.0)


def test_empty_arrays_round_trip(tmp_path: Path):
    video = VideoFeatures(
        features=np.zeros((0, 16), np.float32),
        timestamps=np.array([]),
        frame_indices=np.array([]),  # float64 empty: emptiness must be accepted
    )
    text = TextFeatures(
        token_features=np.zeros((0, 8), np.float32),
        token_ids=np.zeros(0, np.int64),
        tokens=[],
        token_start=np.zeros(0),
        token_end=np.zeros(0),
        token_cue=np.zeros(0, np.int32),
        token_window=np.zeros(0, np.int32),
        cue_features=np.zeros((0, 8), np.float32),
        cue_start=np.zeros(0),
        cue_end=np.zeros(0),
        cue_text=[],
        attrs={"note": "silent video"},
    )
    fused = FusedFeatures(
        sequence=np.ones((1, 4), np.float32),
        modality=np.array([MODALITY_CLS], np.int8),
        time=np.array([np.nan]),
        source_index=np.array([-1], np.int32),
        cls=np.ones(4, np.float32),
    )
    dest = tmp_path / "empty.h5"
    for compression in (None, "gzip"):
        write_feature_file(
            dest,
            video=video,
            text=text,
            fused=fused,
            source=None,
            tool_version="0.1",
            config_hash="h",
            compression=compression,
        )
        ff = load(dest)
        assert ff.video is not None and ff.text is not None and ff.fused is not None
        assert ff.video.features.shape == (0, 16)
        assert ff.video.features.dtype == np.float32
        assert ff.video.timestamps.shape == (0,)
        assert ff.video.frame_indices.shape == (0,) and ff.video.frame_indices.dtype == np.int64
        assert ff.video.attrs == {"feature_dim": 16, "count": 0}
        assert len(ff.video) == 0
        assert ff.text.token_features.shape == (0, 8)
        assert ff.text.tokens == [] and ff.text.cue_text == []
        assert ff.text.token_ids.shape == (0,) and ff.text.token_cue.dtype == np.int32
        assert ff.text.cue_features.shape == (0, 8)
        assert ff.text.attrs == {"note": "silent video"}
        assert ff.fused.sequence.shape == (1, 4)
        assert np.isnan(ff.fused.time[0])


def test_json_attrs_round_trip(tmp_path: Path, rng):
    extra = {
        "config": {"video": {"fps": 2.0, "model": "effnet"}, "layers": [1, 2, [3, 4]], "x": None},
        "inputs": ["a.mp4", "日本語.mp4"],
        "maybe": None,
        "pair": (1, 2),
        "plain": "{not json: just a string}",
        "flag": False,
        "count": 3,
        "ratio": 0.5,
        "huge": 2**70,
        "np_scalar": np.float32(1.5),
        "vector": np.arange(3, dtype=np.int64),
    }
    dest = tmp_path / "j.h5"
    write_all(dest, rng, extra_attrs=extra)
    attrs = load(dest).attrs
    assert attrs["config"] == {
        "video": {"fps": 2.0, "model": "effnet"},
        "layers": [1, 2, [3, 4]],
        "x": None,
    }
    assert attrs["inputs"] == ["a.mp4", "日本語.mp4"]
    assert attrs["maybe"] is None
    assert attrs["pair"] == [1, 2]
    assert attrs["plain"] == "{not json: just a string}"
    assert attrs["flag"] is False
    assert attrs["count"] == 3 and type(attrs["count"]) is int
    assert attrs["ratio"] == 0.5
    assert attrs["huge"] == 2**70
    assert attrs["np_scalar"] == 1.5
    np.testing.assert_array_equal(attrs["vector"], [0, 1, 2])
    # read_attrs decodes the same way
    assert read_attrs(dest)["config"] == attrs["config"]
    # the on-disk convention: JSON strings plus a json_attrs list naming them
    with h5py.File(dest, "r") as f:
        listed = sorted(s.decode() if isinstance(s, bytes) else s for s in f.attrs["json_attrs"])
        assert listed == ["config", "huge", "inputs", "maybe", "pair"]
        assert isinstance(f.attrs["config"], str)
        assert f["video"].attrs["json_attrs"].tolist() == ["preprocessing", "sampling"]


def test_reserved_extra_attrs_rejected(tmp_path: Path, rng):
    with pytest.raises(ValueError, match="complete"):
        write_all(tmp_path / "r.h5", rng, extra_attrs={"complete": True})
    with pytest.raises(ValueError, match="json_attrs"):
        write_all(tmp_path / "r.h5", rng, extra_attrs={"json_attrs": "x"})
    assert _listdir(tmp_path) == []


@pytest.mark.parametrize("compression", [None, "lzf", "gzip"])
def test_float16_and_compression(tmp_path: Path, rng, compression):
    dest = tmp_path / f"c-{compression}.h5"
    _, video, text, fused = write_all(dest, rng, dtype="float16", compression=compression)
    ff = load(dest)
    assert ff.video.features.dtype == np.float16
    np.testing.assert_allclose(ff.video.features, video.features, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ff.text.token_features, text.token_features, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ff.text.cue_features, text.cue_features, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ff.fused.sequence, fused.sequence, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ff.fused.cls, fused.cls, rtol=1e-3, atol=1e-3)
    assert not np.array_equal(ff.video.features.astype(np.float32), video.features)  # really f16
    # non-feature datasets keep their exact types and values
    np.testing.assert_array_equal(ff.video.timestamps, video.timestamps)
    with h5py.File(dest, "r") as f:
        for name in ("video/features", "text/token_features", "text/cue_features",
                     "fused/sequence", "fused/cls"):
            ds = f[name]
            assert ds.dtype == np.float16, name
            assert ds.chunks is not None, name
            assert ds.compression == compression, name
        assert f["video/features"].chunks == (7, 16)
        assert f["video/timestamps"].compression is None


def test_float32_lossless_with_compression(tmp_path: Path, rng):
    for compression in ("lzf", "gzip"):
        dest = tmp_path / f"{compression}.h5"
        _, video, _, fused = write_all(dest, rng, compression=compression)
        ff = load(dest)
        np.testing.assert_array_equal(ff.video.features, video.features)
        np.testing.assert_array_equal(ff.fused.sequence, fused.sequence)


def test_chunk_rows_are_bounded(tmp_path: Path, rng):
    video = make_video(rng, n=1000, d=16)
    dest = tmp_path / "big.h5"
    write_feature_file(dest, video=video, source=None, tool_version="0", config_hash="h")
    with h5py.File(dest, "r") as f:
        assert f["video/features"].chunks == (256, 16)
    wide = make_video(rng, n=600, d=2048)  # 8 KiB rows: 512 KiB budget -> 64 rows
    write_feature_file(dest, video=wide, source=None, tool_version="0", config_hash="h")
    with h5py.File(dest, "r") as f:
        assert f["video/features"].chunks == (64, 2048)


def test_bad_options_and_bad_shapes(tmp_path: Path, rng):
    dest = tmp_path / "x.h5"
    with pytest.raises(ConfigError):
        write_all(dest, rng, dtype="float64")
    with pytest.raises(ConfigError):
        write_all(dest, rng, compression="zstd")
    video = make_video(rng)
    video.timestamps = video.timestamps[:-1]
    with pytest.raises(ValueError, match="video.timestamps"):
        write_feature_file(dest, video=video, source=None, tool_version="0", config_hash="h")
    fused = make_fused(rng)
    fused.modality[1] = 7
    with pytest.raises(ValueError, match="unknown codes"):
        write_feature_file(dest, fused=fused, source=None, tool_version="0", config_hash="h")
    text = make_text(rng)
    text.token_cue = np.array([0, 0, 1, 2, 2, 2**40], dtype=np.int64)
    with pytest.raises(ValueError, match="out of range"):
        write_feature_file(dest, text=text, source=None, tool_version="0", config_hash="h")
    assert _listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------
# atomicity
# --------------------------------------------------------------------------------------------
def test_failure_mid_write_leaves_previous_file_untouched(tmp_path: Path, rng, monkeypatch):
    dest = tmp_path / "clip.h5"
    write_all(dest, rng, extra_attrs={"generation": 1})
    before = dest.read_bytes()
    seen_temps: list[list[str]] = []
    real_write_group = writer._write_group

    def failing_write_group(parent, name, arrays, attrs, compression):
        real_write_group(parent, name, arrays, attrs, compression)
        if name == "text":  # video and text written, fused not yet
            seen_temps.append([n for n in _listdir(tmp_path) if n != "clip.h5"])
            raise RuntimeError("boom")

    monkeypatch.setattr(writer, "_write_group", failing_write_group)
    with pytest.raises(RuntimeError, match="boom"):
        write_all(dest, rng, extra_attrs={"generation": 2})

    # a temp file really existed during the write, matching the stale-temp pattern ...
    assert len(seen_temps) == 1 and len(seen_temps[0]) == 1
    assert match_temp_name(seen_temps[0][0])
    assert seen_temps[0][0].startswith(".clip.h5.tmp-")
    # ... and is gone now; the old file is byte-for-byte what it was
    assert _listdir(tmp_path) == ["clip.h5"]
    assert dest.read_bytes() == before
    assert load(dest).attrs["generation"] == 1


def test_failure_without_previous_file_leaves_nothing(tmp_path: Path, rng, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_write_group", boom)
    with pytest.raises(KeyboardInterrupt):
        write_all(tmp_path / "new.h5", rng)
    assert _listdir(tmp_path) == []
    assert atomic._ACTIVE_TEMPS == set()


def test_array_that_raises_during_conversion(tmp_path: Path, rng):
    class Exploding:
        def __array__(self, *a, **k):
            raise RuntimeError("cannot materialise")

    video = make_video(rng)
    video.features = Exploding()  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="materialise"):
        write_feature_file(
            tmp_path / "e.h5", video=video, source=None, tool_version="0", config_hash="h"
        )
    assert _listdir(tmp_path) == []


@pytest.mark.parametrize(
    "code, needle",
    [
        (errno.ENOSPC, "no space left"),
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "read-only"),
    ],
)
def test_oserror_becomes_output_error(tmp_path: Path, rng, monkeypatch, code, needle):
    dest = tmp_path / "clip.h5"
    write_all(dest, rng)
    before = dest.read_bytes()

    def fail(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(writer, "_write_group", fail)
    with pytest.raises(OutputError) as ei:
        write_all(dest, rng)
    err = ei.value
    assert needle in err.message
    assert err.path == str(dest)
    assert err.hint
    assert str(dest) in str(err)
    assert _listdir(tmp_path) == ["clip.h5"]
    assert dest.read_bytes() == before


def test_failed_replace_becomes_output_error(tmp_path: Path, rng, monkeypatch):
    def fail_replace(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(atomic.os, "replace", fail_replace)
    with pytest.raises(OutputError, match="move feature file into place"):
        write_all(tmp_path / "z.h5", rng)
    assert _listdir(tmp_path) == []


def test_incomplete_temp_never_replaces(tmp_path: Path, rng, monkeypatch):
    dest = tmp_path / "clip.h5"
    write_all(dest, rng, extra_attrs={"generation": 1})
    monkeypatch.setattr(writer, "is_complete", lambda p: False)
    with pytest.raises(OutputError):
        write_all(dest, rng, extra_attrs={"generation": 2})
    monkeypatch.undo()
    assert load(dest).attrs["generation"] == 1
    assert _listdir(tmp_path) == ["clip.h5"]


def _can_write_despite_chmod(directory: Path) -> bool:
    probe = directory / "probe"
    try:
        probe.write_bytes(b"x")
    except PermissionError:
        return False
    probe.unlink()
    return True


_WRITE_AS_UNPRIVILEGED = """
import sys
import numpy as np
from videobert_cli.errors import OutputError
from videobert_cli.features import VideoFeatures
from videobert_cli.store.hdf5 import write_feature_file
video = VideoFeatures(np.zeros((2, 3), np.float32), np.zeros(2), np.zeros(2, np.int64))
try:
    write_feature_file(sys.argv[1], video=video, source=None, tool_version="t", config_hash="h")
except OutputError as error:
    print("OutputError:", error.message, "|", error.hint)
"""


def test_unwritable_directory(tmp_path: Path, rng):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not _can_write_despite_chmod(ro):
            with pytest.raises(OutputError) as ei:
                write_all(ro / "clip.h5", rng)
            assert "permission denied" in ei.value.message
            assert ei.value.hint
        else:
            # root ignores permissions; drop the capabilities that let it, as a real user lacks them
            import subprocess
            import sys

            result = subprocess.run(
                ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search",
                 sys.executable, "-c", _WRITE_AS_UNPRIVILEGED, str(ro / "clip.h5")],
                capture_output=True, text=True, timeout=120,
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith("OutputError:") and "permission denied" in result.stdout, result.stdout
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o700)


def test_destination_parent_is_a_file(tmp_path: Path, rng):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError):
        write_all(tmp_path / "afile" / "clip.h5", rng)


def test_destination_is_a_directory(tmp_path: Path, rng):
    (tmp_path / "clip.h5").mkdir()
    with pytest.raises(OutputError, match="directory"):
        write_all(tmp_path / "clip.h5", rng)


def test_missing_parent_directories_are_created(tmp_path: Path, rng):
    dest = tmp_path / "a" / "b" / "clip.h5"
    write_all(dest, rng)
    assert is_complete(dest)


# --------------------------------------------------------------------------------------------
# completeness / corrupt files
# --------------------------------------------------------------------------------------------
def _truncated(tmp_path: Path, rng) -> Path:
    p = tmp_path / "trunc.h5"
    write_all(p, rng)
    size = p.stat().st_size
    os.truncate(p, size // 2)
    return p


def _random_bytes(tmp_path: Path, rng) -> Path:
    p = tmp_path / "random.h5"
    p.write_bytes(rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    return p


def _missing(tmp_path: Path, rng) -> Path:
    return tmp_path / "missing.h5"


def _without_complete(tmp_path: Path, rng) -> Path:
    p = tmp_path / "nocomplete.h5"
    write_all(p, rng)
    with h5py.File(p, "r+") as f:
        del f.attrs["complete"]
    return p


def _complete_false(tmp_path: Path, rng) -> Path:
    p = tmp_path / "false.h5"
    write_all(p, rng)
    with h5py.File(p, "r+") as f:
        f.attrs["complete"] = False
    return p


def _wrong_format(tmp_path: Path, rng) -> Path:
    p = tmp_path / "foreign.h5"
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "something-else"
        f.attrs["schema_version"] = "1.0"
        f.attrs["complete"] = True
    return p


def _future_major(tmp_path: Path, rng) -> Path:
    p = tmp_path / "future.h5"
    write_all(p, rng)
    with h5py.File(p, "r+") as f:
        f.attrs["schema_version"] = "2.0"
    return p


def _a_directory(tmp_path: Path, rng) -> Path:
    p = tmp_path / "dir.h5"
    p.mkdir()
    return p


BAD_FILES = {
    "truncated": (_truncated, "truncated"),
    "random": (_random_bytes, "not an HDF5 file"),
    "missing": (_missing, "not found"),
    "no-complete": (_without_complete, "incomplete"),
    "complete-false": (_complete_false, "incomplete"),
    "wrong-format": (_wrong_format, "format"),
    "future-major": (_future_major, "schema version"),
    "directory": (_a_directory, "not a regular file"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files(tmp_path: Path, rng, kind):
    make, needle = BAD_FILES[kind]
    p = make(tmp_path, rng)
    assert is_complete(p) is False
    with pytest.raises(FeatureFileError) as ei:
        load(p)
    assert str(p) in str(ei.value)
    assert needle in str(ei.value)
    assert ei.value.hint


def test_is_complete_true_and_minor_version_accepted(tmp_path: Path, rng):
    p = tmp_path / "ok.h5"
    write_all(p, rng)
    assert is_complete(p) is True
    assert is_complete(str(p)) is True
    with h5py.File(p, "r+") as f:
        f.attrs["schema_version"] = "1.7"  # newer minor: additive changes only
    assert is_complete(p) is True
    assert load(p).video is not None


def test_missing_dataset_is_feature_file_error(tmp_path: Path, rng):
    p = tmp_path / "nods.h5"
    write_all(p, rng)
    with h5py.File(p, "r+") as f:
        del f["text/token_ids"]
    with pytest.raises(FeatureFileError, match="token_ids"):
        load(p)
    assert load(p, groups=["video"]).video is not None


def test_read_attrs_errors(tmp_path: Path, rng):
    with pytest.raises(FeatureFileError):
        read_attrs(tmp_path / "nope.h5")
    with pytest.raises(FeatureFileError):
        read_attrs(_random_bytes(tmp_path, rng))
    # partial files are readable (for inspect), they just say complete=False
    assert read_attrs(_complete_false(tmp_path, rng))["complete"] is False


# --------------------------------------------------------------------------------------------
# stale temp files
# --------------------------------------------------------------------------------------------
def test_stale_temp_cleanup(tmp_path: Path):
    dead = tmp_path / f".a.h5.tmp-{DEAD_PID}-0123abcd"
    mine_old = tmp_path / f".b.h5.tmp-{os.getpid()}-deadbeef"
    mine_new = tmp_path / f".c.h5.tmp-{os.getpid()}-cafef00d"
    unrelated = [
        tmp_path / "a.h5",
        tmp_path / ".hidden",
        tmp_path / "a.h5.tmp",
        tmp_path / f".d.h5.tmp-{DEAD_PID}-xyz",  # token not 8 hex digits
        tmp_path / f".e.h5.tmp-{DEAD_PID}-0123abcd.bak",
    ]
    for p in [dead, mine_old, mine_new, *unrelated]:
        p.write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(mine_old, (old, old))
    subdir = tmp_path / f".f.h5.tmp-{DEAD_PID}-0123abcd"  # a directory is never a temp file
    subdir.mkdir()

    assert stale_temp_files(tmp_path, older_than_s=3600) == [dead, mine_old]
    assert clean_stale_temp_files(tmp_path, older_than_s=3600) == 2
    assert not dead.exists() and not mine_old.exists() and mine_new.exists()
    assert all(p.exists() for p in unrelated) and subdir.is_dir()

    # older_than_s=0: every matching temp is stale, even one of a live pid
    assert stale_temp_files(tmp_path) == [mine_new]
    assert clean_stale_temp_files(tmp_path) == 1
    assert not mine_new.exists()
    assert stale_temp_files(tmp_path) == []
    assert clean_stale_temp_files(tmp_path) == 0
    assert all(p.exists() for p in unrelated)


def test_stale_temp_missing_directory(tmp_path: Path):
    assert stale_temp_files(tmp_path / "nope") == []
    assert clean_stale_temp_files(tmp_path / "nope") == 0


def test_temp_being_written_is_never_stale(tmp_path: Path, rng, monkeypatch):
    found: list[list[Path]] = []
    real_write_group = writer._write_group

    def spying_write_group(*args, **kwargs):
        found.append(stale_temp_files(tmp_path, older_than_s=0))
        return real_write_group(*args, **kwargs)

    monkeypatch.setattr(writer, "_write_group", spying_write_group)
    write_all(tmp_path / "clip.h5", rng)
    assert found == [[], [], []]
    assert is_complete(tmp_path / "clip.h5")


def test_temp_name_pattern_and_long_names(tmp_path: Path):
    t = temp_name_for(tmp_path / "clip.h5")
    assert t.parent == tmp_path
    m = match_temp_name(t.name)
    assert m and m["name"] == "clip.h5" and int(m["pid"]) == os.getpid()
    long_name = "ü" * 120 + ".h5"  # 243 bytes: fits, but not with the temp decoration
    t = temp_name_for(tmp_path / long_name)
    assert len(os.fsencode(t.name)) <= 255
    assert match_temp_name(t.name)
    write_feature_file(
        tmp_path / long_name,
        video=make_video(np.random.default_rng(0)),
        source=None,
        tool_version="0",
        config_hash="h",
    )
    assert is_complete(tmp_path / long_name)


def test_temp_names_of_another_tag_are_apart(tmp_path: Path):
    """A tag names a separate family of temp files: cleaning one never touches the other."""
    building = atomic.temp_name_for(tmp_path / "index.h5", DEAD_PID, tag="building")
    assert building.name.startswith(".index.h5.building-") and match_temp_name(building.name) is None
    assert match_temp_name(building.name, "building")["pid"] == str(DEAD_PID)
    ordinary = temp_name_for(tmp_path / "clip.h5", DEAD_PID)
    for p in (building, ordinary):
        p.write_bytes(b"partial")
    assert stale_temp_files(tmp_path) == [ordinary]
    assert clean_stale_temp_files(tmp_path, tag="building") == 1
    assert _listdir(tmp_path) == [ordinary.name]


# --------------------------------------------------------------------------------------------
# atomic writes of other files (vocabularies, the index, checkpoints, reports)
# --------------------------------------------------------------------------------------------
def test_atomic_replace_keeps_the_old_file_when_fill_or_verify_fails(tmp_path: Path):
    final = tmp_path / "thing.bin"
    final.write_bytes(b"old")
    seen: list[list[Path]] = []

    def fill(tmp: Path) -> None:
        tmp.write_bytes(b"new")
        seen.append(stale_temp_files(tmp_path))  # the temp being written is never stale

    def refuse(tmp: Path) -> None:
        assert tmp.read_bytes() == b"new"
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with pytest.raises(OutputError, match="cannot write thing: ") as ei:
        atomic.atomic_replace(final, fill, "cannot write thing", verify=refuse)
    assert ei.value.path == str(final) and ei.value.hint
    assert seen == [[]]
    assert _listdir(tmp_path) == ["thing.bin"] and final.read_bytes() == b"old"
    atomic.atomic_replace(final, fill, "cannot write thing")
    assert _listdir(tmp_path) == ["thing.bin"] and final.read_bytes() == b"new"
    assert atomic._ACTIVE_TEMPS == set()


def test_atomic_write_bytes_mode_and_errors(tmp_path: Path):
    path = tmp_path / "report.json"
    atomic.atomic_write(path, b"{}\n")
    assert path.read_bytes() == b"{}\n" and _listdir(tmp_path) == ["report.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    atomic.atomic_write(path, b"[]\n")  # replaces
    assert path.read_bytes() == b"[]\n"
    missing = tmp_path / "no" / "such" / "dir" / "w.safetensors"
    with pytest.raises(OutputError) as ei:
        atomic.atomic_write(missing, b"x", what="fusion weights")
    assert ei.value.message == f"cannot write fusion weights: {os.strerror(errno.ENOENT)}"
    assert ei.value.hint == "check that the directory exists, is writable and has free space"
    with pytest.raises(OutputError, match="cannot write w.safetensors: "):
        atomic.atomic_write(missing, b"x")  # what: the file's name


# --------------------------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------------------------
def test_describe_lists_every_group_and_dataset(tmp_path: Path, rng):
    p = tmp_path / "d.h5"
    write_all(p, rng, extra_attrs={"config": {"fps": 2}})
    rows = describe(p)
    by_name = {r["name"]: r for r in rows}
    expected_shapes = {
        "/video/features": (7, 16),
        "/video/timestamps": (7,),
        "/video/frame_indices": (7,),
        "/text/token_features": (6, 8),
        "/text/token_ids": (6,),
        "/text/tokens": (6,),
        "/text/token_start": (6,),
        "/text/token_end": (6,),
        "/text/token_cue": (6,),
        "/text/token_window": (6,),
        "/text/cue_features": (3, 8),
        "/text/cue_start": (3,),
        "/text/cue_end": (3,),
        "/text/cue_text": (3,),
        "/fused/sequence": (14, 12),
        "/fused/modality": (14,),
        "/fused/time": (14,),
        "/fused/source_index": (14,),
        "/fused/cls": (12,),
    }
    datasets = {r["name"]: r["shape"] for r in rows if r["kind"] == "dataset"}
    assert datasets == expected_shapes
    groups = [r["name"] for r in rows if r["kind"] == "group"]
    assert groups == ["/", "/video", "/text", "/fused"]  # file (creation) order
    assert rows[0]["name"] == "/"
    assert rows[0]["attrs"]["config"] == {"fps": 2}
    assert rows[0]["attrs"]["complete"] is True
    assert by_name["/video/features"]["dtype"] == "float32"
    assert by_name["/video/timestamps"]["attrs"]["units"] == "seconds"
    assert by_name["/video/frame_indices"]["dtype"] == "int64"
    assert by_name["/text/tokens"]["dtype"] == "str"
    assert by_name["/fused/modality"]["dtype"] == "int8"
    assert by_name["/fused/modality"]["attrs"]["codes"] == {"0": "cls", "1": "video", "2": "text", "3": "[>]", "4": "[SEP]"}
    assert by_name["/video"]["attrs"]["count"] == 7
    assert by_name["/video"]["attrs"]["preprocessing"]["resize"] == [224, 224]
    for r in rows:
        if r["kind"] == "dataset":
            assert r["attrs"]["description"], r["name"]
            assert "json_attrs" not in r["attrs"]


def test_describe_bad_file(tmp_path: Path, rng):
    with pytest.raises(FeatureFileError):
        describe(_random_bytes(tmp_path, rng))
    with pytest.raises(FeatureFileError):
        describe(tmp_path / "missing.h5")
