"""Engines: the same run on the local engine and on Ray gives the same files, and Ray survives
lost and stuck workers.

One Ray instance (2 CPUs, started in this process) serves the whole module. Fault hooks are
module-level functions of this test module, shipped to the Ray workers by value; they are
installed with :mod:`videobert_cli.engines.hooks` (``ray_actor``, ``ray_decode``), never flags.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from synth import make_video, write_srt
from videobert_cli import load
from videobert_cli.api import run
from videobert_cli.cli.app import app
from videobert_cli.errors import EXIT_SOME_FAILED, EXIT_USAGE, UsageError
from videobert_cli.store.index import read_index
from videobert_cli.engines import hooks
from videobert_cli.pipeline.report import MANIFEST_NAME, RunOptions
from videobert_cli.store.hdf5 import is_complete

#: Ray on a 2-CPU machine: one model worker (1 CPU) and one decode task (1 CPU) at a time
ONE_WORKER = {"workers": 1}
#: two model workers and two decode tasks at a time
TWO_WORKERS = {"workers": 2, "cpus_per_worker": 0.5, "cpus_per_decode": 0.5}
GOOD = ("a.mp4", "b.mp4", "c.mkv")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]


def statuses(report) -> dict[str, tuple[str, str]]:
    return {Path(r.input).name: (r.status, r.reason) for r in report.records}


@pytest.fixture(scope="module")
def ray_session():
    import ray  # part of the dev extra: these tests must run, never skip
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fault hooks below
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("engine-videos")
    make_video(root / "a.mp4", width=64, height=48, fps=10, num_frames=20)
    write_srt(root / "a.srt", [(0.0, 1.0, "A white square moves."), (1.0, 2.0, "Colours change.")])
    make_video(root / "b.mp4", width=80, height=64, fps=10, num_frames=15)
    write_srt(root / "b.srt", [(0.0, 1.5, "Another clip, a little larger.")])
    make_video(root / "c.mkv", width=64, height=48, fps=10, num_frames=10)  # no transcript: video only
    (root / "zero.mp4").write_bytes(b"")  # fails the same way on both engines
    return root


def assert_same_features(ours: Path, theirs: Path, label: str) -> None:
    a, b = load(ours), load(theirs)
    pairs = {
        "video.features": (a.video.features, b.video.features),
        "video.timestamps": (a.video.timestamps, b.video.timestamps),
        "video.frame_indices": (a.video.frame_indices, b.video.frame_indices),
        "fused.sequence": (a.fused.sequence, b.fused.sequence),
        "fused.cls": (a.fused.cls, b.fused.cls),
    }
    assert (a.text is None) == (b.text is None), label
    if a.text is not None:
        pairs["text.token_features"] = (a.text.token_features, b.text.token_features)
        pairs["text.cue_features"] = (a.text.cue_features, b.text.cue_features)
    for name, (x, y) in pairs.items():
        assert x.shape == y.shape, f"{label} {name}"
        np.testing.assert_allclose(x, y, atol=1e-5, err_msg=f"{label} {name}")
    assert a.attrs["config_hash"] == b.attrs["config_hash"]
    assert a.video.attrs["source_path"] == b.video.attrs["source_path"]


_RUNS: dict[str, tuple] = {}


def engine_run(engine: str, corpus: Path, config, tmp_path_factory, request):
    if engine not in _RUNS:
        options = {}
        if engine == "ray":
            request.getfixturevalue("ray_session")
            options = ONE_WORKER
        out = tmp_path_factory.mktemp(f"out-{engine}")
        report = run([str(corpus)], out, config, RunOptions(), engine=engine, engine_options=options, index=True,
                     stdin=io.StringIO())
        _RUNS[engine] = (out, report)
    return _RUNS[engine]


# --- the same end-to-end run on both engines ---------------------------------------------------------
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_end_to_end_on_each_engine(engine, corpus, fast_config, tmp_path_factory, request):
    out, report = engine_run(engine, corpus, fast_config, tmp_path_factory, request)
    other = "ray" if engine == "local" else "local"
    reference = engine_run(other, corpus, fast_config, tmp_path_factory, request)[0]
    assert report.exit_code == EXIT_SOME_FAILED
    assert statuses(report) == {"a.mp4": ("ok", ""), "b.mp4": ("ok", ""), "c.mkv": ("ok", ""),
                                "zero.mp4": ("failed", "empty")}
    by_name = {Path(r.input).name: r for r in report.records}
    assert (by_name["a.mp4"].frames, by_name["b.mp4"].frames, by_name["c.mkv"].frames) == (2, 2, 1)
    assert by_name["a.mp4"].tokens > 0 and by_name["c.mkv"].tokens == 0
    assert "decode" in by_name["a.mp4"].timings and "encode" in by_name["a.mp4"].timings
    lines = manifest(out)
    assert lines[0]["type"] == "run" and lines[-1]["type"] == "summary"
    assert sorted(Path(l["input"]).name for l in lines if l["type"] == "input") == sorted([*GOOD, "zero.mp4"])
    assert (lines[-1]["ok"], lines[-1]["failed"], lines[-1]["exit_code"]) == (3, 1, EXIT_SOME_FAILED)
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    for name in GOOD:
        output = out / (Path(name).stem + ".h5")
        assert is_complete(output), name
        assert_same_features(output, reference / output.name, f"{engine} vs {other}: {name}")
    # the index was written at the end of the run
    assert sorted(row["path"] for row in read_index(out)) == ["a.h5", "b.h5", "c.h5"]
    with h5py.File(out / "index.h5", "r") as index:
        np.testing.assert_array_equal(index["videos/a/video/features"][()], load(out / "a.h5").video.features)


def test_each_engine_resumes_the_others_run(corpus, fast_config, fast_cli_flags, tmp_path,
                                                            tmp_path_factory, request):
    local_out, _ = engine_run("local", corpus, fast_config, tmp_path_factory, request)
    ray_out, _ = engine_run("ray", corpus, fast_config, tmp_path_factory, request)
    inputs = [str(corpus / name) for name in GOOD]
    # a local run, one of its files lost: Ray (from the command line) redoes that one only
    resumed = tmp_path / "local-then-ray"
    shutil.copytree(local_out, resumed)
    (resumed / "b.h5").unlink()
    untouched = (resumed / "a.h5").stat().st_mtime_ns
    result = invoke("--quiet", "run", *inputs, "-o", str(resumed), *fast_cli_flags, "--engine", "ray",
                    "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["skipped"], summary["failed"]) == (1, 2, 0)
    assert (resumed / "a.h5").stat().st_mtime_ns == untouched
    assert_same_features(resumed / "b.h5", local_out / "b.h5", "b redone by ray")
    assert manifest(resumed)[0]["engine"] == "ray"
    assert sorted(row["id"] for row in read_index(resumed)) == ["a", "b", "c"], "ray run did not refresh the index"
    # a Ray run is up to date for the local engine
    result = invoke("--quiet", "run", *inputs, "-o", str(ray_out), *fast_cli_flags, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"] == 3


# --- failures on the cluster ---------------------------------------------------------------------------
def actor_faults(item) -> None:
    """In the model actor: die on crash_* videos (crash_once: first attempt only); hang on stuck_*."""
    name = Path(item.path).name
    if name.startswith("crash_"):
        marker = Path(str(item.path) + ".attempted")
        if name.startswith("crash_always") or not marker.exists():
            marker.touch()
            os._exit(1)
    if name.startswith("stuck_"):
        while True:
            time.sleep(1)


def decode_faults(path: str) -> None:
    """In the decode task: hang forever (as decord does on some files) on hang_* videos."""
    if Path(path).name.startswith("hang_"):
        while True:
            time.sleep(1)


def test_lost_stuck_and_hanging_workers_are_retried_or_reported(ray_session, fast_config, tmp_path):
    names = ["crash_once.mp4", "crash_always.mp4", "good.mp4", "hang_decoder.mp4", "stuck_worker.mp4"]
    for name in names:
        make_video(tmp_path / "in" / name, width=64, height=48, fps=10, num_frames=10)
    out = tmp_path / "out"
    started = time.monotonic()
    with hooks.installed(ray_actor=actor_faults, ray_decode=decode_faults):
        report = run([str(tmp_path / "in")], out, fast_config, RunOptions(timeout=4), engine="ray",
                     engine_options={**TWO_WORKERS, "retries": 1, "watchdog": 8, "heartbeat": 0.5},
                     stdin=io.StringIO())
    assert time.monotonic() - started < 150
    assert statuses(report) == {
        "crash_once.mp4": ("ok", ""),
        "crash_always.mp4": ("failed", "worker-lost"),
        "good.mp4": ("ok", ""),
        "hang_decoder.mp4": ("failed", "timeout"),
        "stuck_worker.mp4": ("failed", "timeout"),
    }
    assert report.exit_code == EXIT_SOME_FAILED
    by_name = {Path(r.input).name: r for r in report.records}
    assert "lost 2 time(s)" in by_name["crash_always.mp4"].message
    assert any("worker lost" in w for w in by_name["crash_once.mp4"].warnings)
    assert "decoder made no progress for 4 s" in by_name["hang_decoder.mp4"].message
    assert "model worker made no progress for 8 s" in by_name["stuck_worker.mp4"].message
    inputs = [Path(l["input"]).name for l in manifest(out) if l["type"] == "input"]
    assert sorted(inputs) == sorted(names), "every video is recorded exactly once"
    assert sorted(p.name for p in out.glob("*.h5")) == ["crash_once.h5", "good.h5"]
    assert all(is_complete(p) for p in out.glob("*.h5"))


class StopAfterFirst:
    """An observer that asks the run to stop (as the first Ctrl-C does) once a video is done."""

    def __init__(self, stop):
        self.stop = stop
        self.events: list[str] = []

    def on_start(self, total):
        self.events.append(f"start {total}")

    def on_input_start(self, item):
        self.events.append(f"begin {Path(item.path).name}")

    def on_input_done(self, record):
        self.events.append(f"done {Path(record.input).name}")
        self.stop.set("SIGINT")

    def on_message(self, message):
        pass


def test_a_stop_request_finishes_the_videos_in_progress(ray_session, corpus, fast_config, tmp_path):
    from videobert_cli.errors import EXIT_INTERRUPTED
    from videobert_cli.pipeline.signals import StopFlag

    stop = StopFlag()
    observer = StopAfterFirst(stop)
    out = tmp_path / "out"
    report = run([str(corpus / name) for name in GOOD], out, fast_config, RunOptions(), engine="ray",
                 engine_options=ONE_WORKER, observer=observer, stop=stop, stdin=io.StringIO())
    assert report.interrupted and report.exit_code == EXIT_INTERRUPTED
    # one worker: a.mp4 was in progress (b.mp4 already decoding ahead), then nothing else started
    assert [(Path(r.input).name, r.status) for r in report.records] == [
        ("a.mp4", "ok"), ("b.mp4", "pending"), ("c.mkv", "pending")]  # the ones left are counted
    assert observer.events == ["start 3", "begin a.mp4", "done a.mp4"]
    assert [p.name for p in out.glob("*.h5")] == ["a.h5"] and is_complete(out / "a.h5")
    last = manifest(out)[-1]
    assert last["type"] == "summary" and last["interrupted"]
    assert (last["ok"], last["pending"], last["total"]) == (1, 2, 3)


# --- Ray is optional ---------------------------------------------------------------------------------
def test_ray_engine_without_ray_is_a_one_line_usage_error(corpus, fast_config, fast_cli_flags, tmp_path,
                                                           monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    out = tmp_path / "out"
    with pytest.raises(UsageError) as caught:
        run([str(corpus)], out, fast_config, engine="ray", stdin=io.StringIO())
    assert str(caught.value) == "--engine ray needs Ray, which is not installed - pip install 'videobert-cli[ray]'"
    result = invoke("run", str(corpus), "-o", str(out), *fast_cli_flags, "--engine", "ray")
    assert result.exit_code == EXIT_USAGE, result.output
    error = [line for line in result.output.splitlines() if line.strip()]
    assert len(error) == 1 and error[0].startswith("error:"), result.output
    assert "pip install 'videobert-cli[ray]'" in error[0]
    assert not out.exists(), "nothing may be written when the engine cannot start"


def test_connecting_to_a_missing_cluster_is_a_usage_error():
    from videobert_cli.engines.ray_engine import RaySettings, connect
    from videobert_cli.pipeline.report import SilentObserver

    class NoCluster:
        calls: list = []

        def is_initialized(self):
            return False

        def init(self, **kwargs):
            self.calls.append(kwargs)
            raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")

    fake = NoCluster()
    with pytest.raises(UsageError, match=r"cannot connect to Ray at auto: Could not find any running Ray instance"):
        connect(fake, RaySettings(address="auto"), SilentObserver())
    assert fake.calls[0]["address"] == "auto" and "include_dashboard" not in fake.calls[0]


def test_engine_flags_are_checked(corpus, fast_config, fast_cli_flags, tmp_path):
    with pytest.raises(UsageError, match="unknown option of the ray engine: 'bogus'"):
        run([str(corpus)], tmp_path / "o0", fast_config, engine="ray", engine_options={"bogus": 1},
            stdin=io.StringIO())
    result = invoke("run", str(corpus), "-o", str(tmp_path / "o1"), *fast_cli_flags, "--workers", "2")
    assert result.exit_code == EXIT_USAGE and "--workers: only for --engine ray" in result.output
    result = invoke("run", str(corpus), "-o", str(tmp_path / "o2"), *fast_cli_flags, "--engine", "spark")
    assert result.exit_code == EXIT_USAGE and "unknown engine 'spark'" in result.output
    assert not any((tmp_path / name).exists() for name in ("o0", "o1", "o2"))
