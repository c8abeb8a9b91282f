"""PyAV (``--decoder pyav`` and the default, ``auto``) gives decord's frames, pixel for pixel,
or hands the video to decord.

The reference is decord itself (the decoder every other test is written against): the same
sampled frames read through :func:`videobert_cli.decoders.decord.iter_frame_chunks`. Broken
inputs (truncated, not a video, ...) get the same outcome with either decoder:
``tests/test_batch.py::test_pyav_decoder_gives_every_input_the_same_outcome_and_features``.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import synth
from videobert_cli.config import PipelineConfig, RuntimeConfig, SamplingConfig
from videobert_cli.errors import ConfigError
from videobert_cli import decoders
from videobert_cli.decoders.decord import iter_frame_chunks
from videobert_cli.decoders.decord import open_reader as open_video
from videobert_cli.decoders.decord import probe as probe_video
from videobert_cli.decoders.sampling import plan_sampling
from videobert_cli.pipeline.decoding import decode_crops
from videobert_cli.video.models import Preprocessing

CROP = Preprocessing(resize_size=64, crop_size=56, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _write(path: Path, **kwargs) -> Path:
    """H.264 with B-frames and several GOPs (so sampling needs seeks and pts reordering)."""
    return synth.write_encoded(path, **kwargs)


def _decord_frames(path: Path, indices: np.ndarray) -> np.ndarray:
    reader = open_video(path, num_threads=1)
    return np.concatenate([frames for _, frames in iter_frame_chunks(reader, indices, chunk_frames=8)])


def _frames(path: Path, sampling: SamplingConfig, decoder: str, threads: int = 1) -> tuple[np.ndarray, np.ndarray, str]:
    """Sampled full frames (no crop) through the named decoder, as decode_crops drives it."""
    video = decoders.open_video(path, decoder, threads=threads)
    indices = plan_sampling(video.info, sampling)
    chunks = list(video.chunks(indices, chunk_frames=8))
    return np.concatenate([i for i, _ in chunks]), np.concatenate([f for _, f in chunks]), video.info.decoder


SAMPLINGS = [SamplingConfig(fps=5.0), SamplingConfig(fps=None, num_frames=7), SamplingConfig(fps=30.0)]


@pytest.mark.parametrize("threads", [1, 2], ids=["1-thread", "2-threads"])
@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["fps5", "7-frames", "every-frame"])
def test_pyav_gives_decords_pixels_for_h264_with_b_frames(tmp_path: Path, sampling: SamplingConfig,
                                                         threads: int) -> None:
    path = _write(tmp_path / "b_frames.mp4")
    indices, frames, used = _frames(path, sampling, "pyav", threads)
    assert used == "pyav"
    np.testing.assert_array_equal(indices, plan_sampling(probe_video(open_video(path), path), sampling))
    np.testing.assert_array_equal(frames, _decord_frames(path, indices))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("vp9.webm", {"codec": "libvpx-vp9", "options": {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8", "g": "20"}}),
        ("full_range.mp4", {"pix_fmt": "yuvj420p"}),
        ("yuv444.mkv", {"pix_fmt": "yuv444p"}),
        ("yuv422.mp4", {"pix_fmt": "yuv422p"}),
        ("odd_size.mp4", {"width": 98, "height": 66}),
    ],
)
def test_pyav_gives_decords_pixels_across_codecs_and_formats(tmp_path: Path, name: str, kwargs: dict) -> None:
    path = _write(tmp_path / name, frames=60, **kwargs)
    indices, frames, used = _frames(path, SamplingConfig(fps=4.0), "pyav")
    assert used == "pyav"
    np.testing.assert_array_equal(frames, _decord_frames(path, indices))


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_pyav_turns_rotated_videos_as_decord_does(tmp_path: Path, rotation: int) -> None:
    path = _write(tmp_path / f"rot{rotation}.mp4", frames=30, rotation=rotation)
    indices, frames, used = _frames(path, SamplingConfig(fps=10.0), "pyav")
    assert used == "pyav"
    expected = _decord_frames(path, indices)
    assert frames.shape == expected.shape
    if rotation != 180:
        assert frames.shape[1:3] == (96, 64)  # portrait, as decord shows it
    np.testing.assert_array_equal(frames, expected)


def test_pyav_variable_frame_rate_matches_decord(tmp_path: Path) -> None:
    times = np.cumsum([0.0] + [0.033, 0.050, 0.017, 0.100] * 12)[:-1]
    path = synth.make_video(tmp_path / "vfr.mkv", width=64, height=48, pts=np.round(times, 3))
    indices, frames, used = _frames(path, SamplingConfig(fps=7.0), "pyav")
    assert used == "pyav"
    np.testing.assert_array_equal(frames, _decord_frames(path, indices))


def test_ten_bit_video_is_decoded_by_decord(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the two FFmpeg versions convert 10-bit to 8-bit RGB differently: PyAV must not be used
    path = _write(tmp_path / "ten_bit.mp4", frames=30, pix_fmt="yuv420p10le",
                  options={"g": "10", "preset": "ultrafast", "crf": "18"})
    with caplog.at_level("WARNING"):
        indices, frames, used = _frames(path, SamplingConfig(fps=10.0), "pyav")
    assert used == "decord"
    assert "yuv420p10le" in caplog.text
    np.testing.assert_array_equal(frames, _decord_frames(path, indices))


def test_auto_uses_pyav_where_it_is_exact_and_decord_quietly_elsewhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert RuntimeConfig().decoder == "auto"
    eight_bit = _write(tmp_path / "eight_bit.mp4", frames=30)
    ten_bit = _write(tmp_path / "ten_bit.mp4", frames=30, pix_fmt="yuv420p10le",
                     options={"g": "10", "preset": "ultrafast", "crf": "18"})
    config = PipelineConfig(sampling=SamplingConfig(fps=10.0), runtime=RuntimeConfig(device="cpu"))
    with caplog.at_level("INFO"):
        infos = {path.name: decode_crops(path, config, CROP)[0] for path in (eight_bit, ten_bit)}
    assert (infos["eight_bit.mp4"].decoder, infos["ten_bit.mp4"].decoder) == ("pyav", "decord")
    # falling back is what auto means: the reason is logged, but not as a warning, and the run
    # report gets no warning (decoder_note stays empty)
    assert infos["ten_bit.mp4"].decoder_note == ""
    assert [r.levelname for r in caplog.records if "yuv420p10le" in r.getMessage()] == ["INFO"]


def test_auto_without_pyav_decodes_with_decord(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` meets when PyAV is missing
    path = _write(tmp_path / "clip.mp4", frames=30)
    config = PipelineConfig(sampling=SamplingConfig(fps=5.0), runtime=RuntimeConfig(device="cpu"))
    info, stream = decode_crops(path, config, CROP)
    assert (info.decoder, info.decoder_note) == ("decord", "")
    assert len(np.concatenate([chunk.frame_indices for chunk in stream])) == 5


def test_decode_crops_with_pyav_equals_decord(tmp_path: Path) -> None:
    path = _write(tmp_path / "crops.mp4", frames=75)
    crops = {}
    for decoder in ("decord", "pyav", "auto"):
        config = PipelineConfig(sampling=SamplingConfig(fps=6.0), runtime=RuntimeConfig(device="cpu", decoder=decoder))
        info, stream = decode_crops(path, config, CROP, chunk_frames=4)
        assert stream.decoder == ("pyav" if decoder == "auto" else decoder)
        chunks = list(stream)
        crops[decoder] = np.concatenate([chunk.crops for chunk in chunks])
        timestamps = np.concatenate([chunk.timestamps for chunk in chunks])
        np.testing.assert_array_equal(timestamps, info.frame_starts[np.concatenate([c.frame_indices for c in chunks])])
    np.testing.assert_array_equal(crops["pyav"], crops["decord"])
    np.testing.assert_array_equal(crops["auto"], crops["decord"])


PYRAMID = "bframes=3:b-adapt=0:b-pyramid=normal"


@pytest.mark.parametrize(
    "name, codec, options",
    [
        ("h264_pyramid.mp4", "libx264", {"g": "45", "preset": "ultrafast", "crf": "18", "x264-params": PYRAMID}),
        ("hevc.mp4", "libx265", {"g": "45", "preset": "ultrafast", "crf": "18",
                                 "x265-params": "bframes=3:b-adapt=0:b-pyramid=1:log-level=error"}),
        ("mpeg2.mkv", "mpeg2video", {"g": "45", "bf": "2", "qscale": "3"}),
        ("mpeg4.mkv", "mpeg4", {"g": "45", "bf": "2", "qscale": "3"}),
    ],
)
@pytest.mark.parametrize("threads", [1, 2], ids=["1-thread", "2-threads"])
def test_unsampled_frames_nothing_refers_to_are_skipped_and_the_sampled_ones_are_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, codec: str, options: dict, threads: int
) -> None:
    from av.video.frame import PictureType

    from videobert_cli.decoders import pyav as pyav_decode

    path = _write(tmp_path / name, frames=90, codec=codec, options=options)
    decoded: list[tuple[int, str]] = []
    real_decoded = pyav_decode._decoded

    def counting(*args):
        for frame in real_decoded(*args):
            decoded.append((frame.pts, PictureType(frame.pict_type).name))
            yield frame

    # the reference: decord decoding every frame in order (its skipping is off on open GOPs)
    every_index, every_frame, _ = _frames(path, SamplingConfig(fps=30.0), "decord")
    monkeypatch.setattr(pyav_decode, "_decoded", counting)
    counts = {}
    for skipping in (False, True):
        if not skipping:
            monkeypatch.setattr(pyav_decode, "SKIPPABLE_CODECS", frozenset())
        else:
            monkeypatch.undo()
            monkeypatch.setattr(pyav_decode, "_decoded", counting)
        decoded.clear()
        indices, frames, used = _frames(path, SamplingConfig(fps=3.0), "pyav", threads)  # every 10th frame
        assert used == "pyav"
        np.testing.assert_array_equal(frames, every_frame[np.searchsorted(every_index, indices)])
        counts[skipping] = len(decoded)
    sampled = dict(decoded)
    plan_pts = pyav_decode.pyav_plan(path, 90, probe_video(open_video(path), path).frame_starts, (96, 64))[0].pts
    assert any(sampled[int(plan_pts[i])] == "B" for i in indices)  # B-frames among the sampled ones
    assert counts[True] < 0.8 * counts[False]  # and many of the others were never decoded


def test_hevc_with_several_temporal_sub_layers_is_decoded_in_full(tmp_path: Path) -> None:
    """HEVC's "sub-layer non-reference" pictures may be references for higher sub-layers, so
    with more than one (hvcC's numTemporalLayers) nothing is skipped; the frames stay right."""
    from videobert_cli.decoders import pyav as pyav_decode

    options = {"g": "45", "preset": "ultrafast", "crf": "18",
               "x265-params": "bframes=3:b-adapt=0:b-pyramid=1:temporal-layers=3:log-level=error"}
    layered = _write(tmp_path / "layered.mp4", frames=60, codec="libx265", options=options)
    single = _write(tmp_path / "single.mp4", frames=10, codec="libx265",
                    options={**options, "x265-params": "bframes=3:log-level=error"})
    for path, layers in ((layered, 3), (single, 1)):
        with av.open(str(path)) as container:
            context = container.streams.video[0].codec_context
            assert pyav_decode.hevc_temporal_layers(context.extradata) == layers
            assert pyav_decode._skippable(context) == (layers == 1)
    assert pyav_decode.hevc_temporal_layers(b"\x00\x00\x00\x01" + bytes(40)) is None  # Annex B: unknown
    every_index, every_frame, _ = _frames(layered, SamplingConfig(fps=30.0), "decord")
    indices, frames, used = _frames(layered, SamplingConfig(fps=3.0), "pyav")
    assert used == "pyav"
    np.testing.assert_array_equal(frames, every_frame[np.searchsorted(every_index, indices)])


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_decoding_threads_give_the_same_crops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoder: str) -> None:
    from videobert_cli.decoders import decord as decord_backend
    from videobert_cli.decoders import pyav as pyav_decode

    path = _write(tmp_path / "threads.mp4", frames=90,
                  options={"g": "45", "preset": "ultrafast", "crf": "18", "x264-params": PYRAMID})
    used: list[int] = []  # the thread count each decoder was opened with
    real_pyav_frames, real_open_video = pyav_decode._pyav_frames, decord_backend.open_reader

    def pyav_frames(path, plan, unique, threads):
        used.append(threads)
        return real_pyav_frames(path, plan, unique, threads)

    def open_video_of_decord(path, num_threads=0, **kwargs):
        used.append(num_threads)
        return real_open_video(path, num_threads=num_threads, **kwargs)

    monkeypatch.setattr(pyav_decode, "_pyav_frames", pyav_frames)
    monkeypatch.setattr(decord_backend, "open_reader", open_video_of_decord)
    crops = {}
    for threads in (1, 2):
        config = PipelineConfig(sampling=SamplingConfig(fps=3.0),
                                runtime=RuntimeConfig(device="cpu", decoder=decoder, decode_threads=threads))
        used.clear()
        _, stream = decode_crops(path, config, CROP, chunk_frames=4)
        assert stream.decoder == decoder
        crops[threads] = np.concatenate([chunk.crops for chunk in stream])
        assert set(used) == {threads}, used  # decord's reader (both decoders open one) and PyAV's stream
    assert len(crops[1]) == 9
    np.testing.assert_array_equal(crops[2], crops[1])


def test_decoding_threads_are_checked_and_leave_the_fingerprint_alone() -> None:
    with pytest.raises(ConfigError, match="decode_threads must be at least 1, got 0"):
        RuntimeConfig(decode_threads=0)
    assert PipelineConfig(runtime=RuntimeConfig(decode_threads=2)).fingerprint() == PipelineConfig().fingerprint()


def test_unknown_decoder_is_a_config_error_before_any_work(tmp_path: Path) -> None:
    from videobert_cli import extract_video, run
    from videobert_cli.pipeline.decoding import check_frame_decoder

    with pytest.raises(ConfigError, match="unknown decoder 'ffmpeg'") as raised:
        check_frame_decoder("ffmpeg")
    assert "decord" in raised.value.hint and "pyav" in raised.value.hint
    assert set(decoders.names()) >= {"auto", "decord", "pyav"}
    config = PipelineConfig(runtime=RuntimeConfig(device="cpu", decoder="ffmpeg"))
    path = _write(tmp_path / "clip.mp4", frames=10)
    for start in (lambda: run([str(path)], tmp_path / "out", config), lambda: extract_video(path, config)):
        with pytest.raises(ConfigError, match="unknown decoder 'ffmpeg'"):
            start()
    assert not (tmp_path / "out").exists()


def test_decoder_does_not_change_the_config_fingerprint() -> None:
    assert PipelineConfig(runtime=RuntimeConfig(decoder="pyav")).fingerprint() == PipelineConfig().fingerprint()


def test_pyav_in_a_process_that_loaded_decord_first(tmp_path: Path) -> None:
    # The decode worker imports decord (FFmpeg 4) before PyAV (FFmpeg 8); conftest imports PyAV
    # first in this process, so check the other order in a fresh interpreter.
    path = _write(tmp_path / "order.mp4", frames=60)
    script = (
        "import sys, numpy as np, decord, av\n"
        "from videobert_cli import decoders\n"
        "from videobert_cli.decoders.decord import open_reader, iter_frame_chunks\n"
        "from videobert_cli.decoders.sampling import plan_sampling\n"
        "from videobert_cli.config import SamplingConfig\n"
        "p = sys.argv[1]; video = decoders.open_video(p, 'pyav', threads=1)\n"
        "idx = plan_sampling(video.info, SamplingConfig(fps=5.0))\n"
        "a = np.concatenate([f for _, f in video.chunks(idx, chunk_frames=8)])\n"
        "b = np.concatenate([f for _, f in iter_frame_chunks(open_reader(p, num_threads=1), idx, chunk_frames=8)])\n"
        "assert video.info.decoder == 'pyav', video.info.decoder\n"
        "assert np.array_equal(a, b), 'frames differ'\n"
        "print('equal', len(a))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "equal 10"


def test_cli_refuses_an_unknown_decoder_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from videobert_cli.cli.app import app
    from videobert_cli.errors import EXIT_USAGE

    path = _write(tmp_path / "clip.mp4", frames=10)
    result = CliRunner().invoke(app, ["--decoder", "ffmpeg", "extract-video", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "unknown decoder 'ffmpeg'" in result.output and "pyav" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_pyav_without_pyav_installed_fails_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` meets when PyAV is missing
    from videobert_cli.pipeline.decoding import check_frame_decoder

    with pytest.raises(ConfigError, match="needs PyAV") as raised:
        check_frame_decoder("pyav")
    assert "videobert-cli[pyav]" in raised.value.hint


def test_a_registered_decoder_is_used_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from videobert_cli.decoders import base
    from videobert_cli.pipeline.decoding import check_frame_decoder

    monkeypatch.setattr(base, "_DECODERS", dict(base._DECODERS))
    jobs = []

    class Recording(decoders.Decoder):
        """decord's frames, with a record of the frames asked for: a decoder in one class."""

        name = "recording"
        available = True

        def check(self):
            if not self.available:
                raise ConfigError("the recording decoder is switched off", hint="use decord")

        def open(self, path, *, threads=1, like=None):
            video = decoders.get("decord").open(path, threads=threads)
            chunks = video.chunks

            def recorded(indices, **kwargs):
                jobs.append(indices.tolist())
                return chunks(indices, **kwargs)

            video.chunks = recorded
            return video

    recording = decoders.register(Recording())
    path = _write(tmp_path / "plug.mp4", frames=30)
    config = PipelineConfig(sampling=SamplingConfig(fps=5.0), runtime=RuntimeConfig(device="cpu", decoder="recording"))
    info, stream = decode_crops(path, config, CROP)
    assert stream.decoder == info.decoder == "recording"
    assert sum(len(chunk.frame_indices) for chunk in stream) == 5 and jobs == [[0, 6, 12, 18, 24]]

    recording.available = False
    with pytest.raises(ConfigError, match="switched off"):
        check_frame_decoder("recording")


def test_errors_of_either_decoder_library_are_the_files_fault() -> None:
    import decord

    from videobert_cli.decoders.base import raised_by_a_decoder

    assert raised_by_a_decoder(av.error.InvalidDataError(1094995529, "Invalid data found when processing input"))
    assert raised_by_a_decoder(decord.DECORDError("cannot find video stream"))
    assert not raised_by_a_decoder(ValueError("a bug of ours"))


def test_a_file_that_cannot_be_reopened_for_decoding_is_a_decode_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demux pass opened it, then it changed: a one-line VideoDecodeError, not a crash."""
    from videobert_cli.decoders import pyav as pyav_decode
    from videobert_cli.errors import VideoDecodeError

    path = _write(tmp_path / "clip.mp4", frames=30)
    reader = open_video(path, num_threads=1)
    info = probe_video(reader, path)
    plan, why_not = pyav_decode.pyav_plan(path, info.num_frames, info.frame_starts)
    assert plan is not None, why_not
    path.write_bytes(b"\x00" * 4096)  # overwritten between the plan and the decoding
    with pytest.raises(VideoDecodeError) as raised:
        list(pyav_decode.iter_frame_chunks_pyav(path, plan, np.array([0, 6]), chunk_frames=4))
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def _write_streams(path: Path, sizes: list[tuple[int, int]], default: int | None = None, frames: int = 20) -> Path:
    """One container, several H.264 video streams of different pictures (and maybe sizes)."""
    with av.open(str(path), "w") as container:
        streams = []
        for width, height in sizes:
            stream = container.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast"}
            streams.append(stream)
        if default is not None:
            for number, stream in enumerate(streams):
                stream.disposition = av.stream.Disposition.default if number == default else av.stream.Disposition(0)
        for index in range(frames):
            for number, stream in enumerate(streams):
                frame = av.VideoFrame.from_ndarray(synth.frame_pixels(index + 100 * number, stream.width, stream.height),
                                                   format="rgb24")
                frame.pts, frame.time_base = index, Fraction(1, 10)
                for packet in stream.encode(frame):
                    container.mux(packet)
        for stream in streams:
            for packet in stream.encode():
                container.mux(packet)
    return path


def _crops(path: Path, decoder: str) -> tuple[str, np.ndarray]:
    config = PipelineConfig(sampling=SamplingConfig(fps=5.0), runtime=RuntimeConfig(device="cpu", decoder=decoder))
    info, stream = decode_crops(path, config, CROP)
    return info.decoder, np.concatenate([chunk.crops for chunk in stream])


@pytest.mark.parametrize(
    "name, sizes, default",
    [("small_first.mkv", [(64, 48), (96, 64)], None), ("large_first.mp4", [(96, 64), (64, 48)], None),
     ("second_is_default.mkv", [(96, 64), (64, 48)], 1)],
)
def test_with_several_video_streams_pyav_decodes_the_one_decord_picks(tmp_path: Path, name: str, sizes: list,
                                                                     default: int | None) -> None:
    # FFmpeg 4.1 (decord) and 8.1 (PyAV) rank the streams differently for the last two files
    path = _write_streams(tmp_path / name, sizes, default)
    used, crops = _crops(path, "auto")
    assert used == "pyav"
    np.testing.assert_array_equal(crops, _crops(path, "decord")[1])


def test_video_streams_that_look_alike_are_left_to_decord(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write_streams(tmp_path / "two_angles.mkv", [(64, 48), (64, 48)])
    with caplog.at_level("WARNING"):
        used, crops = _crops(path, "pyav")
    assert used == "decord"
    assert "several video streams match" in caplog.text
    np.testing.assert_array_equal(crops, _crops(path, "decord")[1])


@pytest.mark.parametrize("name, codec, options", [
    ("open_gop.mp4", "libx264", {"g": "20", "bf": "3", "preset": "ultrafast",
                                 "x264-params": "open-gop=1:bframes=3:b-pyramid=normal"}),
    ("mpeg2.mkv", "mpeg2video", {"g": "12", "bf": "2"}),
])
def test_open_gop_streams_get_the_right_frames_by_default(tmp_path: Path, name: str, codec: str, options: dict) -> None:
    """On open-GOP streams, decord's skipping and seeking return wrong frames for sparse
    samples (from the first B-frame that leads a GOP on); PyAV, the default, returns the frames
    that decord itself gives when it decodes every frame in order."""
    path = _write(tmp_path / name, frames=90, codec=codec, options=options)
    every_index, every_frame, _ = _frames(path, SamplingConfig(fps=30.0), "decord")  # no skip, no seek
    in_order = dict(zip(every_index.tolist(), every_frame))
    for sampling in (SamplingConfig(fps=5.0), SamplingConfig(fps=None, num_frames=7)):
        indices, frames, used = _frames(path, sampling, "auto")
        assert used == "pyav"
        for index, frame in zip(indices.tolist(), frames):
            np.testing.assert_array_equal(frame, in_order[index], err_msg=f"{name} frame {index}")
    # what the default avoids: decord's own sparse path disagrees with its in-order decoding
    indices, frames, _ = _frames(path, SamplingConfig(fps=5.0), "decord")
    assert any(not np.array_equal(frame, in_order[index]) for index, frame in zip(indices.tolist(), frames))


@pytest.mark.parametrize("name, codec, options", [
    ("transport.ts", "libx264", {"g": "20", "bf": "2", "preset": "ultrafast"}),
    ("program.mpg", "mpeg2video", {"g": "12", "bf": "2"}),
])
def test_containers_where_pyav_seeking_is_unchecked_are_left_to_decord(tmp_path: Path, name: str, codec: str,
                                                                       options: dict) -> None:
    path = _write(tmp_path / name, frames=60, codec=codec, options=options)
    for sampling in (SamplingConfig(fps=5.0), SamplingConfig(fps=30.0)):
        indices, frames, used = _frames(path, sampling, "auto")
        assert used == "decord"
        reference_indices, reference, _ = _frames(path, sampling, "decord")
        np.testing.assert_array_equal(indices, reference_indices)
        np.testing.assert_array_equal(frames, reference)
    plan, why_not = _pyav_plan_of(path)
    assert plan is None and "container format" in why_not


def _pyav_plan_of(path: Path):
    from videobert_cli.decoders import pyav as pyav_decode

    reader = open_video(path, num_threads=1)
    info = probe_video(reader, path)
    return pyav_decode.pyav_plan(path, info.num_frames, info.frame_starts, (info.width, info.height))


def test_decord_on_an_open_gop_stream_says_its_frames_may_be_shifted(tmp_path: Path) -> None:
    from videobert_cli.decoders.decord import OPEN_GOP_WARNING

    open_gop = _write(tmp_path / "open_gop.mp4", frames=60, options={
        "g": "20", "bf": "3", "preset": "ultrafast", "x264-params": "open-gop=1:bframes=3:b-pyramid=normal"})
    closed_gop = _write(tmp_path / "closed_gop.mp4", frames=60)  # B-frames too, but closed GOPs
    notes = {}
    for path in (open_gop, closed_gop):
        for decoder in ("decord", "auto"):
            config = PipelineConfig(sampling=SamplingConfig(fps=5.0), runtime=RuntimeConfig(device="cpu", decoder=decoder))
            info, stream = decode_crops(path, config, CROP)
            list(stream)
            notes[path.name, decoder] = (info.decoder, info.decoder_note)
    assert notes["open_gop.mp4", "decord"] == ("decord", OPEN_GOP_WARNING)
    assert notes["open_gop.mp4", "auto"] == ("pyav", "")  # PyAV gets these frames right
    assert notes["closed_gop.mp4", "decord"] == ("decord", "")
    assert notes["closed_gop.mp4", "auto"] == ("pyav", "")
