"""Frame sampling: probe_video, plan_sampling and iter_frame_chunks on synthetic videos.

Expected frame indices are computed independently of the package, with exact rational
arithmetic on the presentation times PyAV wrote: the frame on screen at time t is the last one
whose start is <= t. Decoded pixels are matched back to frame indices with
``synth.closest_signature``, so the tests also check that decord's index i is the frame
written at position i.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import synth
from videobert_cli.config import SamplingConfig
from videobert_cli.errors import VideoDecodeError
from videobert_cli.decoders.decord import iter_frame_chunks
from videobert_cli.decoders.decord import open_reader as open_video
from videobert_cli.decoders.decord import probe as probe_video
from videobert_cli.decoders.sampling import plan_sampling


# --- independent expectations ----------------------------------------------------------------
def on_screen(starts: list[Fraction], t: Fraction) -> int:
    """Index of the last frame starting at or before ``t`` (exact)."""
    return max(i for i, start in enumerate(starts) if start <= t)


def expected_fps_picks(starts: list[Fraction], duration: Fraction, fps: Fraction) -> list[int]:
    """Frames on screen at t = 0, 1/fps, 2/fps, ... while t < duration (at least one)."""
    count = max(1, math.ceil((duration - starts[0]) * fps))
    return [on_screen(starts, starts[0] + Fraction(k) / fps) for k in range(count)]


def expected_centre_picks(starts: list[Fraction], duration: Fraction, n: int) -> list[int]:
    """Frames on screen at the centres of n equal spans of [first start, duration)."""
    span = duration - starts[0]
    return [on_screen(starts, starts[0] + (Fraction(2 * k + 1, 2 * n)) * span) for k in range(n)]


def cfr_starts(fps: int, n: int) -> list[Fraction]:
    return [Fraction(k, fps) for k in range(n)]


def probe(path: Path):
    return probe_video(open_video(path), path)


def decoded_identity(path: Path, indices) -> list[int]:
    """Which synthetic frame each decoded index really shows."""
    reader = open_video(path)
    frames = reader.get_batch([int(i) for i in indices]).asnumpy()
    return [synth.closest_signature(frame, range(len(reader))) for frame in frames]


@pytest.fixture(scope="module")
def cfr_video(tmp_path_factory) -> Path:
    """25 fps, 100 frames (4.0 s), 64x48."""
    return synth.make_video(tmp_path_factory.mktemp("cfr") / "cfr25.mp4", fps=25, num_frames=100)


# --- probing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm", ".avi"])
def test_probe_constant_rate_times_are_exact(tmp_path: Path, suffix: str) -> None:
    path = synth.make_video(tmp_path / f"v{suffix}", width=64, height=48, fps=25, num_frames=50)
    info = probe(path)
    written = synth.container_frame_times(path)
    assert info.num_frames == 50
    assert (info.width, info.height) == (64, 48)
    assert info.native_fps == pytest.approx(25.0, abs=1e-6)
    np.testing.assert_allclose(written, np.arange(50) / 25, atol=1e-9)  # what PyAV wrote
    np.testing.assert_allclose(info.frame_starts, written, rtol=0, atol=1e-6)
    np.testing.assert_allclose(info.frame_ends, (np.arange(50) + 1) / 25, rtol=0, atol=1e-6)
    assert info.duration == pytest.approx(2.0, abs=1e-6)
    attrs = info.to_attrs()
    assert attrs["num_frames"] == 50 and attrs["width"] == 64 and attrs["height"] == 48
    assert attrs["native_fps"] == pytest.approx(25.0) and attrs["duration"] == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_probe_variable_rate_times_match_written_pts(tmp_path: Path, suffix: str) -> None:
    pts = [0.0, 0.04, 0.1, 0.5, 0.52, 0.9, 1.5, 1.55, 2.0, 2.7, 2.72]
    path = synth.make_video(tmp_path / f"vfr{suffix}", fps=25, pts=pts)
    starts, ends = synth.container_frame_spans(path)
    np.testing.assert_allclose(starts, pts, atol=1e-9)
    info = probe(path)
    assert info.num_frames == len(pts)
    np.testing.assert_allclose(info.frame_starts, pts, rtol=0, atol=1e-6)
    assert info.duration == pytest.approx(ends.max(), abs=1e-6)
    # decode order is presentation order: decoded frame i is the i-th frame written
    assert decoded_identity(path, range(len(pts))) == list(range(len(pts)))


@pytest.mark.parametrize(
    "size",
    [
        pytest.param((17, 31), id="odd-17x31"),
        pytest.param((90, 160), id="portrait-90x160"),
        pytest.param((320, 100), id="wide-320x100"),
    ],
)
def test_unusual_sizes_decode(tmp_path: Path, size: tuple[int, int]) -> None:
    width, height = size
    path = synth.make_video(tmp_path / "v.mp4", width=width, height=height, fps=25, num_frames=6)
    reader = open_video(path)
    info = probe_video(reader, path)
    assert (info.width, info.height, info.num_frames) == (width, height, 6)
    chunks = list(iter_frame_chunks(reader, np.arange(6), chunk_frames=4, path=path))
    frames = np.concatenate([frames for _, frames in chunks])
    assert frames.shape == (6, height, width, 3) and frames.dtype == np.uint8
    assert [synth.closest_signature(f, range(6)) for f in frames] == list(range(6))


def test_one_frame_video(tmp_path: Path) -> None:
    path = synth.make_video(tmp_path / "one.mp4", fps=25, num_frames=1)
    info = probe(path)
    assert info.num_frames == 1
    assert info.frame_starts.tolist() == [0.0]
    # the only frame lasts one nominal frame interval
    assert info.duration == pytest.approx(1 / 25, abs=1e-6)
    assert plan_sampling(info, SamplingConfig(fps=1.0)).tolist() == [0]
    assert plan_sampling(info, SamplingConfig(fps=100.0)).tolist() == [0, 0, 0, 0]
    assert plan_sampling(info, SamplingConfig(fps=None, num_frames=3)).tolist() == [0, 0, 0]


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.mp4", "file not found"),
        (lambda d: d, "is a directory"),
        (lambda d: _file(d / "empty.mp4", b""), "empty"),
        (lambda d: _file(d / "junk.mp4", b"\x00not a video" * 200), "not a"),
    ],
    ids=["missing", "directory", "empty", "garbage"],
)
def test_open_video_errors_name_the_file(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(VideoDecodeError) as caught:
        open_video(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


# --- plan_sampling: fps mode ------------------------------------------------------------------
def test_fps_1_on_25fps_video_takes_every_25th_frame(cfr_video: Path) -> None:
    info = probe(cfr_video)
    picks = plan_sampling(info, SamplingConfig(fps=1.0))
    assert picks.dtype == np.int64
    assert picks.tolist() == [0, 25, 50, 75]
    assert decoded_identity(cfr_video, picks) == [0, 25, 50, 75]


@pytest.mark.parametrize(
    "video_fps, frames, fps, expected",
    [
        (25, 100, 0.5, [0, 50]),
        (25, 100, 2.0, [0, 12, 25, 37, 50, 62, 75, 87]),
        (25, 37, 2.0, [0, 12, 25]),  # 1.48 s: ceil(2.96) = 3 samples
        (24, 79, 2.5, [0, 9, 19, 28, 38, 48, 57, 67, 76]),  # 3.29 s: ceil(8.23) = 9 samples
        (25, 100, 3.0, [0, 8, 16, 25, 33, 41, 50, 58, 66, 75, 83, 91]),
        (10, 33, 0.7, [0, 14, 28]),
    ],
)
def test_fps_picks_frame_on_screen(tmp_path: Path, video_fps, frames, fps, expected) -> None:
    path = synth.make_video(tmp_path / "v.mp4", fps=video_fps, num_frames=frames)
    starts = cfr_starts(video_fps, frames)
    duration = Fraction(frames, video_fps)
    assert expected == expected_fps_picks(starts, duration, Fraction(fps).limit_denominator(1000))
    picks = plan_sampling(probe(path), SamplingConfig(fps=fps))
    assert picks.tolist() == expected
    assert decoded_identity(path, picks) == expected


@pytest.mark.parametrize(
    "video_fps, frames, fps",
    [(25, 100, 5.0), (10, 33, 2.5), (30, 60, 3.0)],
    ids=["25fps@5", "10fps-3.3s@2.5", "30fps@3"],
)
def test_fps_targets_exactly_on_frame_starts(tmp_path: Path, video_fps, frames, fps) -> None:
    path = synth.make_video(tmp_path / "v.mp4", fps=video_fps, num_frames=frames)
    starts = cfr_starts(video_fps, frames)
    expected = expected_fps_picks(starts, Fraction(frames, video_fps), Fraction(fps))
    if (video_fps, fps) == (25, 5.0):
        assert expected == list(range(0, 100, 5))
    if (video_fps, frames, fps) == (10, 33, 2.5):
        assert expected == [0, 4, 8, 12, 16, 20, 24, 28, 32]  # ceil(3.3 * 2.5) = 9 samples
    assert plan_sampling(probe(path), SamplingConfig(fps=fps)).tolist() == expected


def test_fps_sample_count_is_ceil_of_duration_times_fps(tmp_path: Path) -> None:
    # 10 fps, 33 frames = 3.3 s; at 2.5 samples/s: ceil(8.25) = 9 samples, times 0, 0.4, ... 3.2
    path = synth.make_video(tmp_path / "v.mp4", fps=10, num_frames=33)
    picks = plan_sampling(probe(path), SamplingConfig(fps=2.5))
    assert len(picks) == 9
    assert np.all(np.diff(picks) > 0)


@pytest.mark.parametrize("frames, fps", [(10, 1.0), (30, 0.5), (1, 0.1)])
def test_video_shorter_than_one_interval_gives_first_frame(tmp_path: Path, frames: int, fps: float) -> None:
    path = synth.make_video(tmp_path / "short.mp4", fps=25, num_frames=frames)
    assert plan_sampling(probe(path), SamplingConfig(fps=fps)).tolist() == [0]


# --- plan_sampling: num_frames mode -----------------------------------------------------------
@pytest.mark.parametrize(
    "n, expected",
    [(1, [50]), (3, [16, 50, 83]), (4, [12, 37, 62, 87]), (8, [6, 18, 31, 43, 56, 68, 81, 93])],
)
def test_num_frames_takes_span_centres(cfr_video: Path, n: int, expected: list[int]) -> None:
    assert expected == expected_centre_picks(cfr_starts(25, 100), Fraction(4), n)
    picks = plan_sampling(probe(cfr_video), SamplingConfig(fps=None, num_frames=n))
    assert picks.tolist() == expected
    assert decoded_identity(cfr_video, picks) == expected


def test_num_frames_more_than_the_video_has_repeats_frames(tmp_path: Path) -> None:
    path = synth.make_video(tmp_path / "five.mp4", fps=25, num_frames=5)
    expected = expected_centre_picks(cfr_starts(25, 5), Fraction(5, 25), 8)
    assert expected == [0, 0, 1, 2, 2, 3, 4, 4]
    assert plan_sampling(probe(path), SamplingConfig(fps=None, num_frames=8)).tolist() == expected


# --- plan_sampling: variable frame rate -------------------------------------------------------
VFR_PTS = ["0", "0.04", "0.1", "0.5", "0.52", "0.9", "1.5", "1.55", "2.0", "2.7", "2.72"]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize(
    "sampling, expected",
    [
        (SamplingConfig(fps=1.0), [0, 5, 8]),
        (SamplingConfig(fps=2.0), [0, 3, 5, 6, 8, 8]),
        (SamplingConfig(fps=None, num_frames=4), [2, 5, 7, 8]),
        (SamplingConfig(fps=None, num_frames=7), [2, 4, 5, 5, 7, 8, 8]),
    ],
    ids=["fps1", "fps2", "n4", "n7"],
)
def test_vfr_samples_by_time_not_index(tmp_path: Path, suffix: str, sampling: SamplingConfig, expected) -> None:
    starts = [Fraction(t) for t in VFR_PTS]
    path = synth.make_video(tmp_path / f"vfr{suffix}", fps=25, pts=[float(t) for t in starts])
    _, ends = synth.container_frame_spans(path)
    duration = Fraction(float(ends.max())).limit_denominator(1000)
    assert duration == Fraction("2.76")  # the last frame lasts one nominal interval (1/25 s)
    if sampling.num_frames is None:
        assert expected == expected_fps_picks(starts, duration, Fraction(sampling.fps))
    else:
        assert expected == expected_centre_picks(starts, duration, sampling.num_frames)
    picks = plan_sampling(probe(path), sampling)
    assert picks.tolist() == expected
    assert decoded_identity(path, picks) == expected


# --- iter_frame_chunks ------------------------------------------------------------------------
class SpyReader:
    """Wraps a decord reader and records which frame each ``next()`` returned (the frames that
    were decoded to RGB), tracking the position through seeks and skips."""

    def __init__(self, reader):
        self.reader = reader
        self.position = 0
        self.decoded: list[int] = []

    def __len__(self) -> int:
        return len(self.reader)

    def get_key_indices(self):
        return self.reader.get_key_indices()

    def seek_accurate(self, index):
        self.position = int(index)
        return self.reader.seek_accurate(index)

    def skip_frames(self, count):
        self.position += int(count)
        return self.reader.skip_frames(count)

    def next(self):
        self.decoded.append(self.position)
        self.position += 1
        return self.reader.next()


@pytest.mark.parametrize("chunk_frames", [1, 3, 4, 100])
def test_iter_frame_chunks_yields_each_request_once_in_order(cfr_video: Path, chunk_frames: int) -> None:
    requested = np.array([0, 0, 1, 5, 5, 5, 9, 10, 11, 12, 30, 30, 31, 99], dtype=np.int64)
    unique = sorted(set(requested.tolist()))
    spy = SpyReader(open_video(cfr_video))
    chunks = list(iter_frame_chunks(spy, requested, chunk_frames=chunk_frames, path=cfr_video))

    yielded = np.concatenate([indices for indices, _ in chunks])
    assert yielded.tolist() == requested.tolist()
    for indices, frames in chunks:
        assert frames.shape == (len(indices), 48, 64, 3) and frames.dtype == np.uint8
        assert len(set(indices.tolist())) <= chunk_frames
        assert [synth.closest_signature(f, range(100)) for f in frames] == indices.tolist()
    # every distinct frame decoded exactly once, in playback order, at most chunk_frames per chunk
    assert spy.decoded == unique
    assert all(1 <= len(set(indices.tolist())) <= chunk_frames for indices, _ in chunks)
    assert len(chunks) == math.ceil(len(unique) / chunk_frames)


def test_iter_frame_chunks_from_plan_with_repeats(tmp_path: Path) -> None:
    path = synth.make_video(tmp_path / "five.mp4", fps=25, num_frames=5)
    reader = open_video(path)
    plan = plan_sampling(probe_video(reader, path), SamplingConfig(fps=None, num_frames=8))
    chunks = list(iter_frame_chunks(reader, plan, chunk_frames=2, path=path))
    yielded = np.concatenate([i for i, _ in chunks]).tolist()
    frames = np.concatenate([f for _, f in chunks])
    assert yielded == [0, 0, 1, 2, 2, 3, 4, 4]
    assert [synth.closest_signature(f, range(5)) for f in frames] == yielded


def test_iter_frame_chunks_empty_and_unsorted(cfr_video: Path) -> None:
    reader = open_video(cfr_video)
    assert list(iter_frame_chunks(reader, np.zeros(0, dtype=np.int64))) == []
    with pytest.raises(ValueError, match="playback order"):
        list(iter_frame_chunks(reader, np.array([5, 3])))


def test_iter_frame_chunks_decode_failure_is_video_decode_error(cfr_video: Path) -> None:
    class Broken:
        def get_key_indices(self):
            return [0]

        def seek_accurate(self, index):
            raise RuntimeError("simulated decoder failure\nsecond line")

    with pytest.raises(VideoDecodeError) as caught:
        list(iter_frame_chunks(Broken(), np.array([3, 4]), path=cfr_video))
    message = str(caught.value)
    assert str(cfr_video) in message and "near frame 3" in message and "simulated decoder failure" in message
    assert "second line" not in message
