"""The `videobert` command, driven in-process with Typer's CliRunner.

Fast models throughout (random mobilenet_v3_small, the tiny BERT, a 32-wide fusion); the CLI's
files are read back with :func:`videobert_cli.load` and compared with the library's in-memory
results for the same configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import synth
from videobert_cli import __version__, extract_text, extract_video, load
from videobert_cli.cli.app import app
from videobert_cli.features import MODALITY_CLS, MODALITY_TEXT, MODALITY_VIDEO
from videobert_cli.video.models import get_video_model_entry

FAST_VIDEO = ["--video-model", "mobilenet_v3_small", "--video-weights", "none", "--device", "cpu", "--precision", "fp32"]
FAST_FUSION = ["--d-model", "32", "--layers", "1", "--heads", "2"]
COMMANDS = ["extract-video", "extract-text", "fuse", "run", "models", "inspect", "index", "search", "plot", "doctor"]


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """2 s, 10 fps, 96x64."""
    return synth.make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", width=96, height=64, fps=10, num_frames=20)


@pytest.fixture(scope="module")
def mobilenet_dim() -> int:
    return get_video_model_entry("mobilenet_v3_small").feature_dim()


# --- basics -------------------------------------------------------------------------------------------
def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"videobert-cli {__version__}"


def test_no_arguments_shows_help() -> None:
    result = invoke()
    assert result.exit_code in (0, 2)
    assert all(command in result.output for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_examples(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Examples" in result.stdout
    assert f"videobert {command}" in result.stdout


def test_models_json_lists_bundled_models_offline() -> None:
    result = invoke("models", "--json")
    assert result.exit_code == 0, result.output
    rows = {(row["kind"], row["name"]): row for row in json.loads(result.stdout)}
    assert rows[("video", "efficientnet-lite0")]["feature_dim"] == 1280
    assert rows[("video", "efficientnet-lite0")]["offline"] is True
    assert rows[("text", "all-minilm-l6-v2")]["feature_dim"] == 384
    assert rows[("text", "all-minilm-l6-v2")]["offline"] is True
    # torchvision models are listed with their real feature size; the test's torch cache is empty
    assert rows[("video", "resnet18")]["feature_dim"] == 512
    assert rows[("video", "resnet50")]["feature_dim"] == 2048
    assert rows[("video", "resnet18")]["offline"] is False


def test_models_lists_clip_models_and_every_model_with_all(monkeypatch) -> None:
    """`models --all` ended in an internal error on the first model that cannot be built on
    torch's meta device (regnet) or has no linear classifier (squeezenet)."""
    from videobert_cli import catalog

    rows = {row["name"]: row for row in json.loads(invoke("models", "--json").stdout)}
    assert rows["s3d"]["model_kind"] == "clip" and rows["s3d"]["feature_dim"] == 1024  # VideoBERT's
    monkeypatch.setattr(catalog, "torchvision_classification_models", lambda: ["regnet_y_400mf", "squeezenet1_0"])
    monkeypatch.setattr(catalog, "torchvision_video_models", lambda: ["r3d_18"])
    result = invoke("models", "--all", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["regnet_y_400mf"]["feature_dim"] == 440
    assert rows["squeezenet1_0"]["feature_dim"] is None and "not usable" in rows["squeezenet1_0"]["description"]
    assert rows["r3d_18"]["model_kind"] == "clip" and rows["r3d_18"]["feature_dim"] == 512
    table = invoke("models", "--all")
    assert table.exit_code == 0 and "squeezenet1_0" in table.stdout


def test_models_table() -> None:
    result = invoke("models")
    assert result.exit_code == 0
    rows = [line for line in result.stdout.splitlines() if "│ video │ resnet18 " in line]
    assert len(rows) == 1 and "512" in rows[0] and "no (downloads)" in rows[0]
    rows = [line for line in result.stdout.splitlines() if "1280" in line and "yes" in line]
    assert len(rows) == 1 and "efficientnet-lit" in rows[0]


def test_models_table_shows_full_names_at_80_columns() -> None:
    result = invoke("models")
    assert "efficientnet-lite0" in result.stdout and "all-minilm-l6-v2" in result.stdout


# --- extract-video --------------------------------------------------------------------------------------
def test_extract_video_writes_loadable_features(tmp_path: Path, clip: Path, fast_config, mobilenet_dim: int) -> None:
    out = tmp_path / "clip.h5"
    result = invoke("extract-video", clip, "-o", out, *FAST_VIDEO)
    assert result.exit_code == 0, result.output
    data = load(out)
    assert data.text is None and data.fused is None
    assert data.video.features.shape == (2, mobilenet_dim)  # 2 s at the default 1 frame/s
    assert data.video.frame_indices.tolist() == [0, 10]
    np.testing.assert_allclose(data.video.timestamps, [0.0, 1.0], atol=1e-6)
    # the same numbers as the library with the same configuration
    expected = extract_video(clip, fast_config)
    np.testing.assert_array_equal(data.video.features, expected.features)
    assert data.attrs["source_path"] == str(clip.resolve())


def test_extract_video_num_frames(tmp_path: Path, clip: Path, mobilenet_dim: int) -> None:
    out = tmp_path / "n3.h5"
    result = invoke("extract-video", clip, "-o", out, "--num-frames", "3", *FAST_VIDEO)
    assert result.exit_code == 0, result.output
    video = load(out).video
    assert video.features.shape == (3, mobilenet_dim)
    assert video.frame_indices.tolist() == [3, 10, 16]  # span centres 1/3, 1, 5/3 s at 10 fps
    assert video.attrs["sampling"] == {"mode": "num_frames", "num_frames": 3}


def test_extract_video_into_directory(tmp_path: Path, clip: Path) -> None:
    second = synth.make_video(tmp_path / "other.mkv", fps=10, num_frames=10)
    result = invoke("extract-video", clip, second, "-o", tmp_path / "out", *FAST_VIDEO)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.h5", "other.h5"]
    assert len(load(tmp_path / "out" / "other.h5").video) == 1


def test_out_of_memory_on_one_input_leaves_the_others_to_run(tmp_path: Path, clip: Path, monkeypatch) -> None:
    """A GPU that runs out of memory on one long video fails that video, not the command."""
    from videobert_cli.video.encoder import FrameEncoder

    second = synth.make_video(tmp_path / "second.mp4", fps=10, num_frames=10)
    real_encode = FrameEncoder.encode
    calls = []

    def encode(self, crops):
        calls.append(len(crops))
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_encode(self, crops)

    monkeypatch.setattr(FrameEncoder, "encode", encode)
    result = invoke("extract-video", clip, second, "-o", tmp_path / "out", *FAST_VIDEO)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    failed = [line for line in lines(result.stderr) if str(clip) in line]
    assert len(failed) == 1 and "out of memory" in failed[0] and "--batch-size" in failed[0], result.stderr
    assert "1 of 2" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["second.h5"]
    assert len(load(tmp_path / "out" / "second.h5").video) == 1


def test_an_unexpected_error_still_stops_a_file_command(tmp_path: Path, clip: Path, monkeypatch) -> None:
    from videobert_cli.video.encoder import FrameEncoder

    def encode(self, crops):
        raise RuntimeError("an index went wrong")

    monkeypatch.setattr(FrameEncoder, "encode", encode)
    result = invoke("extract-video", clip, "-o", tmp_path / "out", *FAST_VIDEO)
    assert result.exit_code == 70, result.output  # a bug: reported as one, not as a bad input
    assert "internal error: RuntimeError: an index went wrong" in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_frame_rate_that_is_not_positive_is_a_usage_error(tmp_path: Path, clip: Path, value: str) -> None:
    result = invoke("extract-video", clip, "-o", tmp_path / "x.h5", "--fps", value, *FAST_VIDEO)
    assert result.exit_code == 2, result.output
    assert "--fps must be a positive number" in result.stderr  # 0 is not taken as "the default"
    assert not (tmp_path / "x.h5").exists()


def test_fps_and_num_frames_together_is_usage_error(tmp_path: Path, clip: Path) -> None:
    result = invoke("extract-video", clip, "-o", tmp_path / "x.h5", "--fps", "2", "--num-frames", "3", *FAST_VIDEO)
    assert result.exit_code == 2
    assert lines(result.stderr) == [lines(result.stderr)[0]]
    assert "--fps" in result.stderr and "--num-frames" in result.stderr
    assert result.stderr.startswith("error:")
    assert not (tmp_path / "x.h5").exists()


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(bytes(range(256)) * 64)
    return path


@pytest.mark.parametrize("make", [lambda d: d / "missing.mp4", _garbage], ids=["missing", "garbage"])
def test_bad_video_is_one_line_without_traceback(tmp_path: Path, make) -> None:
    video = make(tmp_path)
    result = invoke("extract-video", video, "-o", tmp_path / "x.h5", *FAST_VIDEO)
    assert result.exit_code == 1
    naming = [line for line in lines(result.stderr) if str(video) in line]
    assert len(naming) == 1
    assert "Traceback" not in result.output
    assert "1 of 1" in result.stderr
    assert not (tmp_path / "x.h5").exists()


def test_bad_video_with_debug_shows_traceback(tmp_path: Path) -> None:
    result = invoke("--debug", "extract-video", tmp_path / "missing.mp4", "-o", tmp_path / "x.h5", *FAST_VIDEO)
    assert result.exit_code == 1
    assert "Traceback" in result.stderr


def test_usage_error_with_debug_shows_traceback(tmp_path: Path, clip: Path) -> None:
    args = ["extract-video", clip, "-o", tmp_path / "x.h5", "--video-model", "no-such-net"]
    plain = invoke(*args)
    debug = invoke("--debug", *args)
    assert plain.exit_code == debug.exit_code == 2
    assert "Traceback" not in plain.output
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr
    assert "no-such-net" in lines(plain.stderr)[0] and len(lines(plain.stderr)) == 1


def test_unavailable_weights_is_exit_2_naming_them(tmp_path: Path, clip: Path) -> None:
    result = invoke("extract-video", clip, "-o", tmp_path / "x.h5", "--video-model", "resnet50")
    assert result.exit_code == 2
    assert len(lines(result.stderr)) == 1
    assert "ResNet50_Weights.IMAGENET1K_V2" in result.stderr and "--video-weights" in result.stderr


# --- extract-text, fuse, inspect ------------------------------------------------------------------------
def test_extract_text_literal(tmp_path: Path, tiny_bert_dir: Path, fast_config) -> None:
    out = tmp_path / "onion.h5"
    text = "A person slices an onion. Then the pan sizzles!"
    result = invoke("extract-text", "--text", text, "-o", out, "--text-model", tiny_bert_dir)
    assert result.exit_code == 0, result.output
    data = load(out)
    assert data.video is None and data.fused is None
    expected = extract_text(text, fast_config, literal=True)
    assert data.text.tokens == expected.tokens
    assert data.text.tokens[:4] == ["a", "person", "slices", "an"]
    np.testing.assert_array_equal(data.text.token_features, expected.token_features)
    assert data.text.cue_text == [text]
    assert np.isnan(data.text.token_start).all()


def test_extract_text_without_input_is_usage_error(tmp_path: Path) -> None:
    result = invoke("extract-text", "-o", tmp_path / "x.h5")
    assert result.exit_code == 2
    assert "nothing to encode" in result.stderr


@pytest.fixture(scope="module")
def fused_file(tmp_path_factory, clip: Path, tiny_bert_dir: Path) -> Path:
    """extract-video + extract-text (different stems) + fuse into one file."""
    work = tmp_path_factory.mktemp("fuse")
    srt = synth.write_srt(work / "talk.srt", [(0.0, 1.0, "a square moves"), (1.0, 2.0, "colours change")])
    assert invoke("extract-video", clip, "-o", work / "vid.h5", *FAST_VIDEO).exit_code == 0
    assert invoke("extract-text", srt, "-o", work / "txt.h5", "--text-model", tiny_bert_dir).exit_code == 0
    result = invoke("fuse", work / "vid.h5", work / "txt.h5", "-o", work / "fused.h5", *FAST_FUSION, "--device", "cpu")
    assert result.exit_code == 0, result.output
    return work / "fused.h5"


def test_fuse_writes_all_three_groups(fused_file: Path, clip: Path, tiny_bert_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    data = load(fused_file)
    video, text, fused = data.video, data.text, data.fused
    source = load(fused_file.parent / "vid.h5").video
    np.testing.assert_array_equal(video.features, source.features)
    np.testing.assert_array_equal(text.token_features, load(fused_file.parent / "txt.h5").text.token_features)
    nv, nt = len(video), len(text)
    assert nv == 2  # 2 s at 1 frame/s
    assert text.tokens == tokenizer.tokenize("a square moves") + tokenizer.tokenize("colours change")
    assert fused.sequence.shape == (1 + nv + nt, 32)
    assert fused.modality.tolist() == [MODALITY_CLS] + [MODALITY_VIDEO] * nv + [MODALITY_TEXT] * nt
    assert fused.source_index.tolist() == [-1, *range(nv), *range(nt)]
    np.testing.assert_allclose(fused.time[1 : 1 + nv], video.timestamps)
    assert np.isnan(fused.time[0])
    np.testing.assert_array_equal(fused.cls, fused.sequence[0])
    assert data.attrs["source_path"] == str(clip.resolve())


def test_fuse_pairs_two_directories_by_name(fused_file: Path, tmp_path: Path) -> None:
    work = fused_file.parent
    (tmp_path / "vid").mkdir()
    (tmp_path / "txt").mkdir()
    (tmp_path / "vid" / "talk.h5").write_bytes((work / "vid.h5").read_bytes())
    (tmp_path / "txt" / "talk.h5").write_bytes((work / "txt.h5").read_bytes())
    result = invoke("fuse", tmp_path / "vid", tmp_path / "txt", "-o", tmp_path / "fused", *FAST_FUSION, "--device", "cpu")
    assert result.exit_code == 0, result.output
    fused = load(tmp_path / "fused" / "talk.h5")
    np.testing.assert_array_equal(fused.fused.sequence, load(fused_file).fused.sequence)
    # in directories only names pair: x's video is not fused with y's words
    (tmp_path / "txt" / "talk.h5").rename(tmp_path / "txt" / "other.h5")
    result = invoke("fuse", tmp_path / "vid", tmp_path / "txt", "-o", tmp_path / "apart", *FAST_FUSION, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert load(tmp_path / "apart" / "talk.h5").text is None and load(tmp_path / "apart" / "other.h5").video is None


def test_fusing_features_with_nan_or_mismatched_times_is_refused(fused_file: Path, fast_config) -> None:
    """fp16 can overflow to inf; NaN in gave an all-NaN fused sequence without a word."""
    import dataclasses

    from videobert_cli import fuse
    from videobert_cli.errors import InputError

    data = load(fused_file)
    broken = data.video.features.copy()
    broken[1, 3] = np.nan
    with pytest.raises(InputError, match="video features hold NaN or inf in 1 of 2 rows") as caught:
        fuse(dataclasses.replace(data.video, features=broken), data.text, fast_config)
    assert caught.value.reason == "non-finite"
    with pytest.raises(InputError, match="2 rows but 1 times"):
        fuse(dataclasses.replace(data.video, timestamps=data.video.timestamps[:1]), data.text, fast_config)


def test_a_fuse_failure_names_its_files(fused_file: Path, tmp_path: Path) -> None:
    import h5py

    broken = tmp_path / "vid.h5"
    broken.write_bytes((fused_file.parent / "vid.h5").read_bytes())
    with h5py.File(broken, "r+") as f:
        f["video/features"][0, 0] = np.nan
    result = invoke("fuse", broken, fused_file.parent / "txt.h5", "-o", tmp_path / "out", *FAST_FUSION, "--device", "cpu")
    assert result.exit_code == 1
    failed = [line for line in lines(result.stderr) if "NaN" in line]
    assert len(failed) == 1 and str(broken) in failed[0], result.stderr


def test_a_dry_run_shows_the_notes_about_its_inputs(tmp_path: Path, clip: Path, fast_cli_flags: list[str]) -> None:
    (tmp_path / "in" / "2024-01").mkdir(parents=True)
    (tmp_path / "in" / "2024-01" / "clip.mp4").write_bytes(clip.read_bytes())
    result = invoke("run", tmp_path / "in", "-o", tmp_path / "out", *fast_cli_flags, "--dry-run")
    assert result.exit_code == 0 and "searched only with --recursive" in " ".join(result.stderr.split())


def test_inspect_tree_and_json(fused_file: Path) -> None:
    result = invoke("inspect", fused_file)
    assert result.exit_code == 0, result.output
    for name in ("video/", "text/", "fused/", "features", "token_features", "sequence"):
        assert name in result.stdout

    result = invoke("inspect", fused_file, "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"/", "/video", "/text", "/fused"} <= set(rows)
    assert rows["/video"]["kind"] == "group"
    assert rows["/video/features"]["kind"] == "dataset"
    assert rows["/video/features"]["shape"][0] == 2
    data = load(fused_file)
    assert rows["/fused/sequence"]["shape"] == [1 + len(data.video) + len(data.text), 32]
    assert rows["/text/tokens"]["shape"] == [len(data.text)]
    assert rows["/"]["attrs"]["complete"] is True


def test_inspect_missing_file(tmp_path: Path) -> None:
    result = invoke("inspect", tmp_path / "nope.h5")
    assert result.exit_code == 1
    assert len(lines(result.stderr)) == 1 and str(tmp_path / "nope.h5") in result.stderr


def test_inspect_a_directory_points_to_index(tmp_path: Path) -> None:
    result = invoke("inspect", tmp_path)
    assert result.exit_code == 2
    assert len(lines(result.stderr)) == 1 and "is a directory" in result.stderr and "videobert index" in result.stderr


def test_extract_text_of_an_empty_text_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("extract-text", "--text", "  ", "-o", tmp_path / "t.h5")
    assert result.exit_code == 2 and "--text is empty" in result.stderr
    assert not (tmp_path / "t.h5").exists()


def test_a_lock_waited_for_in_vain_says_how_long() -> None:
    import tempfile

    from videobert_cli.errors import LockedError
    from videobert_cli.pipeline.lock import OutputLock

    with tempfile.TemporaryDirectory() as directory, OutputLock(directory):
        with pytest.raises(LockedError) as caught:
            OutputLock(directory, wait=0.3).acquire()
        assert "(waited 0.3 s)" in str(caught.value) and "wait longer with --wait-lock" in str(caught.value)
        with pytest.raises(LockedError, match="or pass --wait-lock SECONDS"):
            OutputLock(directory).acquire()


def test_run_json_is_json_even_when_the_run_cannot_start(tmp_path: Path, fast_cli_flags: list[str]) -> None:
    result = invoke("run", tmp_path, "-o", tmp_path / "out", *fast_cli_flags, "--fps", "0", "--json")
    assert result.exit_code == 2
    answer = json.loads(result.stdout)
    assert answer["exit_code"] == 2 and answer["reason"] == "config" and "--fps" in answer["error"]
    assert "--fps must be a positive number" in result.stderr  # the one line stays


def test_quiet_run_lists_only_the_failures(tmp_path: Path, clip: Path, fast_cli_flags: list[str]) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "good.mp4").write_bytes(clip.read_bytes())
    (videos / "bad.mp4").write_text("not a video\n" * 20)
    result = invoke("--quiet", "run", videos, "-o", tmp_path / "out", *fast_cli_flags)
    assert result.exit_code == 1
    assert "bad.mp4" in result.stderr and "good.mp4" not in result.stderr
    assert "1 ok, 0 skipped, 1 failed" in result.stderr


# --- run -------------------------------------------------------------------------------------------------
def test_run_folder_then_rerun_skips(tmp_path: Path, fast_cli_flags: list[str], mobilenet_dim: int, fast_config) -> None:
    from videobert_cli import fuse

    videos = tmp_path / "videos"
    clip_a = synth.make_video(videos / "a.mp4", fps=10, num_frames=25)  # 2.5 s -> 3 frames
    synth.make_video(videos / "b.mkv", width=80, height=48, fps=10, num_frames=12)  # 1.2 s -> 2 frames
    srt = synth.write_srt(videos / "a.srt", [(0.0, 1.5, "hello world"), (1.5, 2.5, "goodbye")])
    out = tmp_path / "out"

    result = invoke("--quiet", "run", videos, "-o", out, *fast_cli_flags, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["total"], summary["ok"], summary["skipped"], summary["failed"]) == (2, 2, 0, 0)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.h5", "b.h5", "manifest.jsonl"]

    a, b = load(out / "a.h5"), load(out / "b.h5")
    assert a.video.features.shape == (3, mobilenet_dim) and b.video.features.shape == (2, mobilenet_dim)
    assert a.text.tokens == ["hello", "world", "goodbye"]
    assert b.text is None
    assert a.fused.sequence.shape == (1 + 3 + 3, 32)
    assert b.fused.sequence.shape == (1 + 2, 32)
    # `run` (decoding in a worker process) gives the numbers of the in-memory API, same config
    video, text = extract_video(clip_a, fast_config), extract_text(srt, fast_config)
    scale = np.abs(video.features).max()
    np.testing.assert_allclose(a.video.features, video.features, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(a.text.token_features, text.token_features, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.fused.sequence, fuse(video, text, fast_config).sequence, rtol=0, atol=1e-5)

    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    inputs = {Path(r["input"]).name: r for r in records if r.get("type") == "input"}
    assert set(inputs) == {"a.mp4", "b.mkv"}
    assert inputs["a.mp4"]["status"] == "ok" and inputs["a.mp4"]["frames"] == 3 and inputs["a.mp4"]["tokens"] == 3
    assert inputs["b.mkv"]["transcript"] is None

    again = invoke("--quiet", "run", videos, "-o", out, *fast_cli_flags, "--json")
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert (summary["ok"], summary["skipped"], summary["failed"]) == (0, 2, 0)
    np.testing.assert_array_equal(load(out / "a.h5").fused.sequence, a.fused.sequence)


def test_unknown_video_model_is_exit_2(tmp_path: Path, clip: Path) -> None:
    result = invoke("extract-video", clip, "-o", tmp_path / "x.h5", "--video-model", "no-such-net")
    assert result.exit_code == 2
    assert "unknown video model 'no-such-net'" in result.stderr


def test_run_unknown_video_model_is_exit_2(tmp_path: Path, clip: Path) -> None:
    """A bad model is a configuration error of the whole run: exit 2, nothing written."""
    result = invoke("--quiet", "run", clip, "-o", tmp_path / "out", "--video-model", "no-such-net")
    assert result.exit_code == 2
    assert "unknown video model 'no-such-net'" in result.stderr
    assert len(lines(result.stderr)) == 1
    assert not list((tmp_path / "out").glob("*.h5"))
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


# --- the library's own checks ------------------------------------------------------------------------
def test_library_calls_with_wrong_types_are_usage_errors(tmp_path: Path, clip: Path, fast_config) -> None:
    """What the CLI's option parsing checks, the library checks too: a clear VideoBertError
    instead of a TypeError or AttributeError from deep inside."""
    import numpy as np

    from videobert_cli import PipelineConfig, RuntimeConfig, SamplingConfig, fuse, run
    from videobert_cli.errors import ConfigError, UsageError

    bad_configs = {
        lambda: SamplingConfig(fps="2"): "fps must be a number",
        lambda: SamplingConfig(fps=None, num_frames=2.5): "num_frames must be a whole number",
        lambda: RuntimeConfig(batch_size="8"): "batch_size must be a whole number",
        lambda: RuntimeConfig(num_threads=-1): "num_threads must be at least 1",
        lambda: SamplingConfig(fps=2.0, num_frames=8): "fps and num_frames exclude each other",
        lambda: SamplingConfig(fps=2.0, clip_len=16): "fps is for frame models",
        lambda: PipelineConfig(sampling={"fps": 2}): "PipelineConfig.sampling must be a SamplingConfig, got dict",
        lambda: PipelineConfig(runtime=None): "PipelineConfig.runtime must be a RuntimeConfig",
    }
    for make, words in bad_configs.items():
        with pytest.raises(ConfigError, match=words):
            make()
    assert RuntimeConfig(batch_size=np.int64(8)).batch_size == 8  # numpy numbers are numbers
    with pytest.raises(UsageError, match="video must be a file path"):
        extract_video(None, fast_config)
    with pytest.raises(UsageError, match="config must be a PipelineConfig, got dict"):
        extract_video(clip, {"fps": 2})
    video = extract_video(clip, fast_config)
    text = extract_text("a person slices an onion", fast_config, literal=True)
    with pytest.raises(UsageError, match="fuse: video must be VideoFeatures"):
        fuse(text, video, fast_config)
    with pytest.raises(UsageError, match="config must be a PipelineConfig, got RuntimeConfig"):
        run([str(clip)], tmp_path / "x", RuntimeConfig())
    # one path is one input, not a sequence of characters
    report = run(str(clip), tmp_path / "out", fast_config)
    assert [Path(r.input).name for r in report.records] == ["clip.mp4"] and report.exit_code == 0
