"""A Matroska/WebM file cut short is reported truncated, not decoded as a shorter video."""

from __future__ import annotations

from pathlib import Path

import pytest

import synth
from videobert_cli import api
from videobert_cli.errors import VideoDecodeError
from videobert_cli.video.container import matroska_shortfall
from videobert_cli.video.decode import open_video

#: ffmpeg writes the Segment size as an 8-byte EBML size; this is its 'unknown size' value
_UNKNOWN_SIZE_8 = bytes([0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("containers")
    return {
        suffix: synth.make_video(root / f"whole{suffix}", width=64, height=48, fps=25, num_frames=100)
        for suffix in (".mkv", ".webm", ".mp4")
    }


def _cut(source: Path, fraction: float, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def _segment_size_field(data: bytes) -> int:
    """Offset of the Segment element's size field (right after its 4-byte ID)."""
    offset = data.index(bytes([0x18, 0x53, 0x80, 0x67]))
    return offset + 4


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_a_cut_matroska_file_is_seen_short(whole, tmp_path, suffix, fraction):
    cut = _cut(whole[suffix], fraction, tmp_path / f"cut{suffix}")
    declared, actual = matroska_shortfall(cut)
    assert actual == cut.stat().st_size
    assert declared == whole[suffix].stat().st_size  # ffmpeg's Segment runs to the end of the file
    # the reason it needs a check of its own: decord reads the rest as a shorter, complete video
    assert 0 < len(open_video(cut)) < len(open_video(whole[suffix]))


@pytest.mark.parametrize("suffix", [".mkv", ".webm", ".mp4"])
def test_complete_files_and_other_formats_are_not_flagged(whole, suffix):
    assert matroska_shortfall(whole[suffix]) is None


def test_cut_mp4_is_left_to_the_decoder(whole, tmp_path):
    assert matroska_shortfall(_cut(whole[".mp4"], 0.5, tmp_path / "cut.mp4")) is None


def test_a_streamed_file_cannot_be_judged_and_is_not_flagged(whole, tmp_path):
    # a file written to a pipe has an 'unknown' Segment size: a cut cannot be told from its end
    data = bytearray(whole[".mkv"].read_bytes())
    field = _segment_size_field(data)
    assert data[field] == 0x01  # 8-byte size, as ffmpeg writes it
    data[field : field + 8] = _UNKNOWN_SIZE_8
    streamed = tmp_path / "streamed.mkv"
    streamed.write_bytes(bytes(data[: len(data) // 2]))
    assert matroska_shortfall(streamed) is None


def test_hand_built_ebml_sizes(tmp_path):
    # EBML header with a 1-byte size of 0, then a Segment with a 1-byte size of 4
    head = bytes([0x1A, 0x45, 0xDF, 0xA3, 0x80, 0x18, 0x53, 0x80, 0x67, 0x84])
    exact = tmp_path / "exact.mkv"
    exact.write_bytes(head + b"abcd")
    assert matroska_shortfall(exact) is None
    short = tmp_path / "short.mkv"
    short.write_bytes(head + b"abc")
    assert matroska_shortfall(short) == (len(head) + 4, len(head) + 3)
    # a 2-byte size (0x4000 | 300) is read with its length marker removed
    two = tmp_path / "two.mkv"
    two.write_bytes(bytes([0x1A, 0x45, 0xDF, 0xA3, 0x80, 0x18, 0x53, 0x80, 0x67, 0x41, 0x2C]) + b"x" * 299)
    assert matroska_shortfall(two) == (11 + 300, 11 + 299)
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(bytes([0x1A, 0x45, 0xDF, 0xA3, 0x00]))  # an invalid size byte
    assert matroska_shortfall(garbage) is None


def test_extracting_a_cut_webm_fails_with_a_truncation_error(whole, tmp_path, fast_config):
    cut = _cut(whole[".webm"], 0.5, tmp_path / "cut.webm")
    with pytest.raises(VideoDecodeError) as caught:
        api.extract_video(cut, fast_config)
    error = caught.value
    assert error.reason == "truncated"
    assert "cut.webm" in str(error) and "truncated" in str(error)
    assert "ffmpeg" in (error.hint or "")  # how to keep the part that is there, on purpose
