"""A Matroska/WebM or MP4/MOV file cut short is reported truncated, not decoded as a shorter video."""

from __future__ import annotations

from pathlib import Path

import pytest

import synth
from videobert_cli import api
from videobert_cli.errors import VideoDecodeError
from videobert_cli.video.container import matroska_shortfall, mp4_defect
from videobert_cli.decoders.decord import open_reader as open_video

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


def test_the_matroska_check_leaves_a_cut_mp4_alone(whole, tmp_path):
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


# --- MP4/MOV -------------------------------------------------------------------------------------------
def _faststart(source: Path, target: Path) -> Path:
    """``source`` remuxed with its index (moov) before the frames, as web videos are."""
    import av

    with av.open(str(source)) as given, av.open(str(target), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(given.streams.video[0])
        for packet in given.demux(given.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return target


def _top_level_boxes(path: Path) -> list[bytes]:
    data, offset, kinds = path.read_bytes(), 0, []
    while offset + 8 <= len(data):
        kinds.append(data[offset + 4 : offset + 8])
        offset += int.from_bytes(data[offset : offset + 4], "big")
    return kinds


@pytest.fixture(scope="module")
def faststart(whole, tmp_path_factory) -> Path:
    path = _faststart(whole[".mp4"], tmp_path_factory.mktemp("faststart") / "faststart.mp4")
    kinds = _top_level_boxes(path)
    assert kinds.index(b"moov") < kinds.index(b"mdat"), kinds
    return path


def test_cut_mp4_files_are_seen_short(whole, faststart, tmp_path):
    assert mp4_defect(whole[".mp4"]) is None and mp4_defect(faststart) is None
    for suffix in (".mkv", ".webm"):
        assert mp4_defect(whole[suffix]) is None
    # cut right after the index, or inside the media box's header: no media left at all
    data = faststart.read_bytes()
    media = data.index(b"mdat") - 4
    for name, end in (("after_index", media), ("in_media_header", media + 4)):
        cut = tmp_path / f"{name}.mp4"
        cut.write_bytes(data[:end])
        assert mp4_defect(cut) == "truncated MP4/MOV file: it ends before its media data (no mdat box)", name
    # a faststart file cut in half still has its index: decord opens it
    text = mp4_defect(_cut(faststart, 0.5, tmp_path / "fast_cut.mp4"))
    assert text.startswith("truncated MP4/MOV file: its 'mdat' box declares") and "missing" in text
    # index at the end: a cut loses it
    assert "'mdat' box declares" in mp4_defect(_cut(whole[".mp4"], 0.5, tmp_path / "cut.mp4"))
    # a recording never finalised: media data to the end of the file, no index
    data = whole[".mp4"].read_bytes()
    moov = data.index(b"moov") - 4
    unfinished = tmp_path / "unfinished.mp4"
    unfinished.write_bytes(data[:moov])
    assert mp4_defect(unfinished) == "truncated or incomplete MP4 (its index, the moov atom, is missing)"


def test_a_cut_trailing_metadata_box_is_not_a_defect(whole, tmp_path):
    """Only boxes that hold frames or the index matter; a cut 'free' box at the end loses neither."""
    padded = tmp_path / "padded.mp4"
    padded.write_bytes(whole[".mp4"].read_bytes() + (1000).to_bytes(4, "big") + b"free" + bytes(100))
    assert mp4_defect(padded) is None
    assert len(api.extract_video(padded, _fast_video_config()).features) == 4


def _fast_video_config():
    from videobert_cli.config import PipelineConfig, RuntimeConfig, VideoModelConfig

    return PipelineConfig(video_model=VideoModelConfig(name="mobilenet_v3_small", weights="none", seed=0),
                          runtime=RuntimeConfig(device="cpu", precision="fp32"))


def test_a_cut_faststart_mp4_fails_as_truncated_in_run_and_extract_video(faststart, tmp_path):
    """Both ways of decoding (a worker process for run, the calling process for extract-video)
    give the same reason."""
    from typer.testing import CliRunner

    from videobert_cli.cli.app import app

    videos = tmp_path / "in"
    videos.mkdir()
    _cut(faststart, 0.5, videos / "fast_cut.mp4")
    flags = ["--video-model", "mobilenet_v3_small", "--video-weights", "none", "--device", "cpu"]
    extracted = CliRunner().invoke(app, ["extract-video", str(videos / "fast_cut.mp4"), "-o",
                                         str(tmp_path / "x.h5"), *flags])
    assert extracted.exit_code == 1
    assert extracted.stderr.splitlines()[0].startswith(f"failed {videos / 'fast_cut.mp4'}: truncated MP4/MOV file")
    result = api.run([str(videos)], tmp_path / "out", _fast_video_config())
    (record,) = result.records
    assert (record.status, record.reason) == ("failed", "truncated")
    assert record.message.startswith(f"{videos / 'fast_cut.mp4'}: truncated MP4/MOV file: its 'mdat' box")
