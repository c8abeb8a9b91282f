"""Several devices in the local engine: one worker process per device (``--device cpu,cpu`` here,
``cuda:0,cuda:1`` or ``--devices all`` on GPUs).

The CPU stands in for the GPUs: ``cpu,cpu`` runs the same worker processes, dispatch, restarts
and records as a GPU list. GPU presence is faked with ``monkeypatch`` where a test is about
device checks, so no test needs (or is changed by) a GPU. Faults are injected with the engine's
``device_worker`` hook (:mod:`videobert_cli.engines.hooks`) and the hooks of ``tests/faults.py``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import faults
import videobert_cli
from synth import make_video, write_srt
from videobert_cli import RuntimeConfig, load
from videobert_cli.cli.app import app
from videobert_cli.devices import parse_device_list, resolve_devices, worker_threads
from videobert_cli.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    ConfigError,
    OutputError,
    UsageError,
)
from videobert_cli.engines import hooks
from videobert_cli.pipeline.report import MANIFEST_NAME
from videobert_cli.pipeline.signals import StopFlag
from videobert_cli.store.hdf5 import is_complete

GOOD = ("a.mp4", "b.mp4", "c.mkv", "d.mp4")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def on_devices(config, device: str):
    return config.with_(runtime=replace(config.runtime, device=device))


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]


def statuses(report) -> dict[str, tuple[str, str]]:
    return {Path(r.input).name: (r.status, r.reason) for r in report.records}


def no_gpu(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def two_gpus(monkeypatch) -> None:
    import torch

    from videobert_cli import devices

    monkeypatch.setattr(devices, "cuda_possible", lambda: True)  # a GPU driver is there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


class Messages:
    """A RunObserver that keeps the messages (and can stop the run after the first video)."""

    def __init__(self, stop: StopFlag | None = None):
        self.messages: list[str] = []
        self.started: list[str] = []
        self.stop = stop

    def on_start(self, total: int) -> None:
        pass

    def on_input_start(self, item) -> None:
        self.started.append(item.path.name)

    def on_input_done(self, record) -> None:
        if self.stop is not None:
            self.stop.set("test")

    def on_message(self, message: str) -> None:
        self.messages.append(message)


# --- device specifications -----------------------------------------------------------------------
def test_device_lists_are_parsed_and_bad_ones_explained():
    assert parse_device_list("cpu,cpu") == ("cpu", "cpu")
    assert parse_device_list(" CUDA:0 , cuda:01") == ("cuda:0", "cuda:1")
    assert parse_device_list("all") == ("all",)
    bad = {
        "cuda:0,cuda:0": "cuda:0 is listed twice",
        "cuda:1,cuda:01": "cuda:1 is listed twice",
        "cuda:0,,cuda:1": "empty entry",
        "cpu,": "empty entry",
        "cpu,gpu": "unknown device 'gpu'",
        "cuda,cuda:1": "does not say which GPU",
        "auto,cpu": "cannot be part of a device list",
        "cuda:0,all": "cannot be part of a device list",
        "cpu,cuda:0": "cannot be mixed",
        "cuda:x,cuda:1": "bad GPU 'cuda:x'",
    }
    for spec, words in bad.items():
        with pytest.raises(ConfigError) as caught:
            parse_device_list(spec)
        text = str(caught.value)
        assert words in text and "\n" not in text, (spec, text)
        assert caught.value.hint, spec
        assert caught.value.exit_code == EXIT_USAGE
    # a typo fails when the configuration is built, before anything runs
    with pytest.raises(ConfigError, match="listed twice"):
        RuntimeConfig(device="cuda:0,cuda:0")
    assert RuntimeConfig(device="cpu,cpu").device == "cpu,cpu"


def test_devices_are_checked_against_the_visible_gpus(monkeypatch):
    no_gpu(monkeypatch)
    assert resolve_devices("cpu,cpu,cpu") == ("cpu", "cpu", "cpu")
    assert resolve_devices("cpu") == ("cpu",)
    with pytest.raises(ConfigError) as caught:
        resolve_devices("all")
    assert str(caught.value).startswith("devices all: no CUDA GPU is visible - ")
    assert "--device cpu" in str(caught.value)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_devices("cuda:0,cuda:1")
    two_gpus(monkeypatch)
    assert resolve_devices("all") == ("cuda:0", "cuda:1")
    assert resolve_devices("cuda:1,cuda:0") == ("cuda:1", "cuda:0")
    with pytest.raises(ConfigError) as caught:
        resolve_devices("cuda:0,cuda:7")
    assert "no GPU cuda:7 (2 visible)" in str(caught.value) and "nvidia-smi" in str(caught.value)


def test_a_gpu_number_is_normalised_for_torch(monkeypatch):
    import torch

    from videobert_cli.devices import resolve_device

    two_gpus(monkeypatch)
    assert resolve_device("CUDA:01") == "cuda:1"  # torch.device("cuda:01") is an error
    assert resolve_devices("cuda:01") == ("cuda:1",)
    assert torch.device(resolve_device("cuda:01")) == torch.device("cuda", 1)
    assert resolve_device("cuda") == "cuda"


def test_auto_precision_is_hashed_as_the_precision_it_stands_for(fast_config, monkeypatch):
    """Features made at fp32 on a CPU and at fp16 on a GPU must not pass for each other when a
    run is resumed on the other kind of machine; the device itself changes nothing."""
    def hashed(device: str, precision: str) -> str:
        return fast_config.with_(runtime=replace(fast_config.runtime, device=device, precision=precision)).fingerprint()

    fp32, fp16, bf16 = (hashed("cpu", precision) for precision in ("fp32", "fp16", "bf16"))
    assert len({fp32, fp16, bf16}) == 3
    for device in ("cpu", "cpu,cpu"):
        assert hashed(device, "auto") == fp32, device
    for device in ("cuda", "cuda:3", "cuda:0,cuda:1", "all"):
        assert hashed(device, "auto") == fp16, device
        assert hashed(device, "bf16") == bf16, device
    no_gpu(monkeypatch)
    assert hashed("auto", "auto") == fp32
    two_gpus(monkeypatch)
    assert hashed("auto", "auto") == fp16


def test_single_device_code_refuses_a_list():
    from videobert_cli.devices import resolve_device

    with pytest.raises(UsageError, match="videobert run"):
        resolve_device("cpu,cpu")


def test_devices_do_not_change_the_fingerprint(fast_config):
    reference = fast_config.fingerprint()
    for device in ("cpu,cpu", "all", "cuda:0,cuda:1", "cuda:3"):
        assert on_devices(fast_config, device).fingerprint() == reference, device


def test_cpu_workers_split_the_cores():
    assert worker_threads(("cpu", "cpu"), None, 8) == (4, 4)
    assert worker_threads(("cpu", "cpu", "cpu"), None, 8) == (2, 2, 2)
    assert worker_threads(("cpu", "cpu", "cpu"), None, 2) == (1, 1, 1)  # never 0
    assert worker_threads(("cuda:0", "cuda:1"), None, 8) == (None, None)  # torch's default
    assert worker_threads(("cpu", "cpu"), 3, 2) == (3, 3)  # an explicit --threads is per worker


# --- the command line --------------------------------------------------------------------------------
def test_devices_all_without_a_gpu_is_a_clear_usage_error(monkeypatch, tmp_path):
    no_gpu(monkeypatch)
    video = make_video(tmp_path / "in" / "a.mp4", width=64, height=48, fps=10, num_frames=5)
    out = tmp_path / "out"
    result = invoke("--quiet", "run", video, "-o", out, "--devices", "all")
    assert result.exit_code == EXIT_USAGE, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "--devices all: no CUDA GPU is visible" in lines[0] and "--device cpu" in lines[0]
    assert not out.exists(), "nothing is written, not even the output directory"
    # an absent GPU in a list is the same kind of error
    two_gpus(monkeypatch)
    result = invoke("--quiet", "run", video, "-o", out, "--device", "cuda:0,cuda:7")
    assert result.exit_code == EXIT_USAGE and "no GPU cuda:7 (2 visible)" in result.stderr
    result = invoke("--quiet", "run", video, "-o", out, "--device", "cuda:0,cuda:0")
    assert result.exit_code == EXIT_USAGE and "cuda:0 is listed twice" in result.stderr
    result = invoke("--quiet", "run", video, "-o", out, "--device", "cpu", "--devices", "all")
    assert result.exit_code == EXIT_USAGE and "mutually exclusive" in result.stderr


def test_single_device_commands_say_to_use_run(tmp_path):
    video = make_video(tmp_path / "a.mp4", width=64, height=48, fps=10, num_frames=5)
    checks = [
        ("extract-video", video, "-o", tmp_path / "v.h5", "--device", "cpu,cpu"),
        ("--device", "cpu,cpu", "extract-text", "--text", "hello", "-o", tmp_path / "t.h5"),
        ("fuse", tmp_path / "missing.h5", "-o", tmp_path / "f.h5", "--device", "cuda:0,cuda:1"),
    ]
    for args in checks:
        result = invoke(*args)
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        assert "videobert run" in result.stderr and "names several" in result.stderr, result.stderr
        assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert not list(tmp_path.glob("*.h5"))


def test_the_ray_engine_decides_its_workers_device(fast_config):
    """Ray leaves every GPU visible to a model worker that asked for none: the driver decides the
    device (and so what --precision auto means) from --gpus-per-worker."""
    from videobert_cli.engines.ray_engine import RaySettings, config_for_workers

    def device(spec: str, gpus: float) -> str:
        return config_for_workers(on_devices(fast_config, spec), RaySettings(gpus_per_worker=gpus)).runtime.device

    assert device("auto", 0) == "cpu"
    assert device("auto", 0.5) == "cuda"  # Ray makes the worker's own GPU the only one it sees
    assert device("cpu", 1) == "cpu"
    assert device("cuda", 1) == "cuda"
    with pytest.raises(UsageError, match="--gpus-per-worker") as caught:
        device("cuda:0", 0)
    assert "\n" not in str(caught.value)


def test_ray_decode_tasks_decode_with_the_cpus_they_hold(fast_config):
    from videobert_cli.engines.ray_engine import RaySettings, config_for_workers

    def threads(given, cpus_per_decode: float, gpus: float = 1) -> int:
        config = fast_config.with_(runtime=replace(fast_config.runtime, device="auto", decode_threads=given))
        settings = RaySettings(gpus_per_worker=gpus, cpus_per_decode=cpus_per_decode)
        return config_for_workers(config, settings).runtime.decode_threads

    assert threads(None, 1) == 1  # not the node's 4 for a GPU model: Ray hands out the cores
    assert threads(None, 3) == 3
    assert threads(None, 0.5, gpus=0) == 1
    assert threads(2, 1) == 2  # --decode-threads wins


def test_decoding_threads_default_to_one_on_the_cpu_and_more_for_a_gpu_model():
    from videobert_cli.devices import default_decode_threads

    assert default_decode_threads("cpu", cpus=64, gpus=0) == 1
    assert default_decode_threads("cuda", cpus=16, gpus=1) == 4
    assert default_decode_threads("cuda:3", cpus=16, gpus=8) == 2  # the cores are shared by the GPUs
    assert default_decode_threads("cuda:0", cpus=4, gpus=8) == 1
    assert RuntimeConfig().decode_threads is None


def test_a_cpu_stage_decodes_with_one_thread_unless_told(fast_config, tmp_path, monkeypatch):
    from videobert_cli.decoders import decord
    from videobert_cli.pipeline.stages import VideoStage

    video = make_video(tmp_path / "a.mp4", width=64, height=48, fps=10, num_frames=5)
    opened = []
    real_open = decord.open_reader
    monkeypatch.setattr(decord, "open_reader", lambda path, num_threads: opened.append(num_threads)
                        or real_open(path, num_threads=num_threads))
    for given in (None, 3):
        stage = VideoStage(fast_config.with_(runtime=replace(fast_config.runtime, decode_threads=given)))
        assert stage.decode_config.runtime.decode_threads == (given or 1)
        assert len(stage.extract(video).features) == 1
    assert opened == [1, 3]


def test_the_ray_engine_refuses_a_device_list(fast_config, tmp_path):
    video = make_video(tmp_path / "a.mp4", width=64, height=48, fps=10, num_frames=5)
    with pytest.raises(UsageError, match="--gpus-per-worker"):
        videobert_cli.run([str(video)], tmp_path / "out", on_devices(fast_config, "cpu,cpu"), engine="ray",
                          stdin=io.StringIO())


# --- runs on two CPU workers -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("device-videos")
    make_video(root / "a.mp4", width=64, height=48, fps=10, num_frames=20)
    write_srt(root / "a.srt", [(0.0, 1.0, "A white square moves."), (1.0, 2.0, "Colours change.")])
    make_video(root / "b.mp4", width=80, height=64, fps=10, num_frames=15)
    write_srt(root / "b.srt", [(0.0, 1.5, "Another clip, a little larger.")])
    make_video(root / "c.mkv", width=64, height=48, fps=10, num_frames=10)  # no transcript: video only
    make_video(root / "d.mp4", width=64, height=112, fps=10, num_frames=25)
    (root / "zero.mp4").write_bytes(b"")  # fails in its worker; the batch goes on
    return root


@pytest.fixture(scope="module")
def runs(corpus, fast_config, tmp_path_factory):
    """The corpus on one device (run_batch) and on two CPU workers, through the library API."""
    one, two = tmp_path_factory.mktemp("one-device"), tmp_path_factory.mktemp("two-devices")
    single = videobert_cli.run([str(corpus)], one, fast_config, stdin=io.StringIO())
    observer = Messages()
    double = videobert_cli.run([str(corpus)], two, on_devices(fast_config, "cpu,cpu"), observer=observer,
                               stdin=io.StringIO())
    return one, single, two, double, observer


def test_two_workers_write_the_features_of_one_device(runs):
    one, single, two, double, observer = runs
    expected = {name: ("ok", "") for name in GOOD} | {"zero.mp4": ("failed", "empty")}
    assert statuses(single) == expected and statuses(double) == expected
    assert double.exit_code == single.exit_code == EXIT_SOME_FAILED
    assert any("starting 2 worker(s) on cpu, cpu" in m for m in observer.messages)
    by_name = {Path(r.input).name: r for r in double.records}
    assert by_name["a.mp4"].tokens > 0 and by_name["c.mkv"].tokens == 0
    assert "decode" in by_name["a.mp4"].timings and "encode" in by_name["a.mp4"].timings
    assert any("no transcript" in w for w in by_name["c.mkv"].warnings)
    for name in GOOD:
        stem = Path(name).stem
        ours, theirs = load(two / f"{stem}.h5"), load(one / f"{stem}.h5")
        assert is_complete(two / f"{stem}.h5")
        pairs = {
            "video.features": (ours.video.features, theirs.video.features),
            "video.timestamps": (ours.video.timestamps, theirs.video.timestamps),
            "video.frame_indices": (ours.video.frame_indices, theirs.video.frame_indices),
            "fused.sequence": (ours.fused.sequence, theirs.fused.sequence),
            "fused.cls": (ours.fused.cls, theirs.fused.cls),
        }
        assert (ours.text is None) == (theirs.text is None)
        if ours.text is not None:
            pairs["text.token_features"] = (ours.text.token_features, theirs.text.token_features)
            pairs["text.cue_features"] = (ours.text.cue_features, theirs.text.cue_features)
        for label, (x, y) in pairs.items():
            assert x.shape == y.shape and x.size, (name, label)
            # one torch thread per worker against the main process's threads: same numbers up to
            # the summation order
            scale = max(float(np.abs(y).max()), 1.0)
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{name} {label}")
        assert ours.attrs["config_hash"] == theirs.attrs["config_hash"]


def test_every_video_lands_once_in_the_manifest(runs, corpus):
    _, _, two, double, _ = runs
    lines = manifest(two)
    assert lines[0]["type"] == "run" and lines[-1]["type"] == "summary"
    assert lines[0]["devices"] == ["cpu", "cpu"] and lines[0]["pid"] == os.getpid()
    inputs = [Path(line["input"]).name for line in lines if line["type"] == "input"]
    assert sorted(inputs) == sorted([*GOOD, "zero.mp4"])
    assert (lines[-1]["ok"], lines[-1]["failed"], lines[-1]["exit_code"]) == (4, 1, EXIT_SOME_FAILED)
    assert not [p.name for p in two.iterdir() if ".tmp-" in p.name]
    assert not (two / "zero.h5").exists()


def test_resume_skips_done_videos(runs, corpus, fast_cli_flags, tmp_path):
    _, _, two, _, _ = runs
    resumed = tmp_path / "resumed"
    shutil.copytree(two, resumed)
    (resumed / "b.h5").unlink()
    untouched = (resumed / "a.h5").stat().st_mtime_ns
    flags = [flag if flag != "cpu" else "cpu,cpu" for flag in fast_cli_flags]
    assert "cpu,cpu" in flags
    result = invoke("--quiet", "run", corpus, "-o", resumed, *flags, "--json")
    assert result.exit_code == EXIT_SOME_FAILED, result.output  # zero.mp4 fails again
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["skipped"], summary["failed"]) == (1, 3, 1)
    assert (resumed / "a.h5").stat().st_mtime_ns == untouched
    np.testing.assert_allclose(load(resumed / "b.h5").fused.sequence, load(two / "b.h5").fused.sequence,
                               rtol=1e-5, atol=1e-5)
    records = [line for line in manifest(resumed) if line["type"] == "input"]
    assert sorted(Path(r["input"]).name for r in records) == sorted([*GOOD, "zero.mp4"])
    # one device resumes a run of two: all up to date
    result = invoke("--quiet", "run", *(corpus / name for name in GOOD), "-o", resumed, *fast_cli_flags, "--json")
    assert result.exit_code == EXIT_OK and json.loads(result.stdout)["skipped"] == 4


# --- faults ----------------------------------------------------------------------------------------
def test_a_worker_that_dies_fails_only_its_video_and_is_restarted(fast_config, tmp_path):
    # three deaths on two workers: without restarts, the last videos would have no worker left
    names = ["a_die.mp4", "b_die.mp4", "c_die.mp4", "d.mp4", "e.mp4"]
    for name in names:
        make_video(tmp_path / "in" / name, width=64, height=48, fps=10, num_frames=10)
    out = tmp_path / "out"
    observer = Messages()
    with hooks.installed(device_worker=faults.die_in_worker):
        report = videobert_cli.run([str(tmp_path / "in")], out, on_devices(fast_config, "cpu,cpu"), observer=observer,
                                   stdin=io.StringIO())
    assert statuses(report) == {"a_die.mp4": ("failed", "worker-lost"), "b_die.mp4": ("failed", "worker-lost"),
                                "c_die.mp4": ("failed", "worker-lost"), "d.mp4": ("ok", ""), "e.mp4": ("ok", "")}
    assert report.exit_code == EXIT_SOME_FAILED
    for record in report.records:
        if record.status == "failed":
            assert "died (signal 9)" in record.message and record.input in record.message
    assert sum("starting a new one" in m for m in observer.messages) == 3
    lines = manifest(out)
    assert sorted(Path(l["input"]).name for l in lines if l["type"] == "input") == names
    assert lines[-1]["type"] == "summary" and lines[-1]["failed"] == 3
    assert sorted(p.name for p in out.glob("*.h5")) == ["d.h5", "e.h5"]
    assert all(is_complete(p) for p in out.glob("*.h5"))
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name], "a dead worker's temp file remains"


def test_each_device_workers_decoder_runs_at_lower_priority_for_a_cpu_model(fast_config, tmp_path):
    from videobert_cli.engines import run_engine
    from videobert_cli.pipeline.inputs import plan_inputs

    for name in ("a.mp4", "b.mp4", "c.mp4"):
        make_video(tmp_path / "in" / name, width=64, height=48, fps=10, num_frames=20)
    with hooks.installed(decode=faults.record_thread_niceness):
        report = run_engine("local", plan_inputs([str(tmp_path / "in")]), tmp_path / "out",
                            on_devices(fast_config, "cpu,cpu"))
    assert set(statuses(report).values()) == {("ok", "")}
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        assert set(faults.recorded_niceness(tmp_path / "in" / name)) == {faults.lowered_niceness()}


def test_a_full_disk_stops_the_run_with_a_consistent_manifest(fast_config, tmp_path):
    names = ["v1.mp4", "v2_full.mp4", "v3.mp4", "v4.mp4"]
    for name in names:
        make_video(tmp_path / "in" / name, width=64, height=48, fps=10, num_frames=10)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="no space left"):
        with hooks.installed(device_worker=faults.disk_full_in_worker):
            videobert_cli.run([str(tmp_path / "in")], out, on_devices(fast_config, "cpu,cpu"), stdin=io.StringIO())
    lines = manifest(out)
    assert lines[-1]["type"] == "summary"
    records = {Path(l["input"]).name: l for l in lines if l["type"] == "input"}
    assert records["v2_full.mp4"]["status"] == "failed" and records["v2_full.mp4"]["reason"] == "output"
    assert len(records) == len([l for l in lines if l["type"] == "input"]), "a video recorded twice"
    assert all(is_complete(p) for p in out.glob("*.h5"))
    assert not (out / "v2_full.h5").exists()


def test_a_stop_finishes_the_videos_in_progress_and_starts_no_more(fast_config, tmp_path):
    for index in range(6):
        make_video(tmp_path / "in" / f"v{index}.mp4", width=64, height=48, fps=10, num_frames=10)
    out = tmp_path / "out"
    stop = StopFlag()
    observer = Messages(stop)  # stops the run when the first video is done
    report = videobert_cli.run([str(tmp_path / "in")], out, on_devices(fast_config, "cpu,cpu"),
                               observer=observer, stop=stop, stdin=io.StringIO())
    assert report.interrupted and report.exit_code == EXIT_INTERRUPTED
    ok = report.summary()["ok"]
    assert 1 <= ok <= 2 and report.summary()["failed"] == 0  # at most one video per worker
    assert len(observer.started) == ok, "a video was started after the stop"
    done = sorted(p.name for p in out.glob("*.h5"))
    assert len(done) == ok and all(is_complete(out / name) for name in done)
    lines = manifest(out)
    assert lines[-1]["type"] == "summary" and lines[-1]["interrupted"]
    assert (lines[-1]["total"], lines[-1]["pending"]) == (6, 6 - ok)  # the videos left are counted


def test_a_model_that_cannot_load_fails_the_run_before_anything_is_written(tmp_path):
    video = make_video(tmp_path / "in" / "a.mp4", width=64, height=48, fps=10, num_frames=5)
    make_video(tmp_path / "in" / "b.mp4", width=64, height=48, fps=10, num_frames=5)
    out = tmp_path / "out"
    result = invoke("--quiet", "run", video.parent, "-o", out, "--device", "cpu,cpu", "--video-model", "no-such-net")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "unknown video model 'no-such-net'" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert not list(out.glob("*.h5")) and not (out / MANIFEST_NAME).exists()


# --- signals, as cron and systemd send them ----------------------------------------------------------
def test_ctrl_c_finishes_the_videos_in_progress_and_leaves_nothing_running(fast_cli_flags, tmp_path):
    """Ctrl-C signals every process of the terminal's group: the workers must leave the stopping
    to the parent, and no worker may be left running afterwards."""
    for index in range(8):
        make_video(tmp_path / "in" / f"v{index}.mp4", width=64, height=48, fps=10, num_frames=12)
    out = tmp_path / "out"
    flags = [flag if flag != "cpu" else "cpu,cpu" for flag in fast_cli_flags]
    assert flags[:4] == ["--video-model", "mobilenet_v3_small", "--video-weights", "none"]
    # resnet18 at 10 fps: slow enough on two cores that the run is still going when signalled
    command = [sys.executable, "-m", "videobert_cli.cli", "--quiet", "run", str(tmp_path / "in"), "-o", str(out),
               "--video-model", "resnet18", *flags[2:], "--fps", "10", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert faults.wait_for(lambda: len(list(out.glob("*.h5"))) >= 1), "run produced no output"
        helpers = faults.descendants(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == EXIT_INTERRUPTED, stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] and summary["failed"] == 0 and 1 <= summary["ok"] < 8
    done = sorted(p.name for p in out.glob("*.h5"))
    assert len(done) == summary["ok"] and all(is_complete(out / name) for name in done)
    lines = manifest(out)
    assert lines[-1]["type"] == "summary" and lines[-1]["interrupted"]
    assert faults.wait_for(lambda: not [pid for pid in helpers if faults.running(pid)], timeout=30), "workers left behind"


# --- GPU settings, checked without a GPU ---------------------------------------------------------------
def test_bf16_is_refused_on_gpus_that_only_emulate_it(monkeypatch):
    """torch.cuda.is_bf16_supported() says yes on a V100 or T4 (emulation); cuDNN has no bf16
    convolutions there. Explicit bf16 is a usage error, and training's auto picks fp16."""
    import torch

    from videobert_cli.devices import check_precision
    from videobert_cli.devices import resolve_training_precision as training_precision

    asked = []
    capabilities = {0: (7, 0), 1: (8, 0)}  # a V100 and an A100

    def capability(device):
        asked.append(device)
        return capabilities[device.index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.version, "hip", None)
    with pytest.raises(ConfigError) as caught:
        check_precision("bf16", "cuda:0")
    assert "compute capability 8.0+" in str(caught.value) and "cuda:0 has 7.0" in str(caught.value)
    assert "--precision fp16" in caught.value.hint
    check_precision("bf16", "cuda:1")
    check_precision("fp16", "cuda:0")
    monkeypatch.setattr("videobert_cli.devices.cpu_has_native_bf16", lambda: True)  # (tests/test_precision_cpu.py)
    check_precision("bf16", "cpu")
    assert training_precision("auto", "cuda:0") == "fp16"
    assert training_precision("auto", "cuda:1") == "bf16"
    assert training_precision("auto", "cpu") == "fp32"
    with pytest.raises(ConfigError, match="compute capability"):
        training_precision("bf16", "cuda:0")
    assert {device.index for device in asked} == {0, 1}  # the GPU asked about, not the current one



def test_auto_means_the_cpu_without_asking_torch_where_no_gpu_driver_is_present(monkeypatch):
    import torch

    from videobert_cli import devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # torch is not asked
    monkeypatch.setattr(devices, "cuda_possible", lambda: False)
    assert devices.resolve_device("auto") == "cpu" and devices.uses_gpu("auto") is False
    monkeypatch.setattr(devices, "cuda_possible", lambda: True)
    assert devices.resolve_device("auto") == "cuda"


def test_physical_cores_counts_cores_not_hyperthreads(tmp_path):
    import os

    from videobert_cli.devices import physical_cores

    allowed = sorted(os.sched_getaffinity(0))
    blocks = [f"processor\t: {cpu}\nphysical id\t: 0\ncore id\t\t: {index // 2}\n"
              for index, cpu in enumerate(allowed)]
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("\n".join(blocks))
    assert physical_cores(str(cpuinfo)) == (len(allowed) + 1) // 2
    assert physical_cores(str(tmp_path / "missing")) == len(allowed)
