"""Several decode workers feed one model: the same features and records as one worker.

(How decode throughput scales with workers is measured by ``python -m bench.decode_workers``,
not here.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from synth import make_video
from videobert_cli import load
from videobert_cli.cli.app import app
from videobert_cli.config import RuntimeConfig, SamplingConfig
from videobert_cli.devices import DECODE_WORKER_MEMORY, default_decode_threads, default_decode_workers
from videobert_cli.engines import hooks, run_batch
from videobert_cli.errors import ConfigError
from videobert_cli.pipeline.inputs import plan_inputs


def record_decoder_pid(job, emit) -> None:
    """Decode normally; write the decoding process's pid to ``<video>.pid``."""
    from videobert_cli.pipeline.decode_worker import default_decode

    Path(job.path + ".pid").write_text(str(os.getpid()))
    default_decode(job, emit)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Five short videos of different lengths and sizes, and a corrupt file among them."""
    root = tmp_path_factory.mktemp("in")
    for index, (frames, size) in enumerate([(23, (64, 48)), (7, (96, 64)), (41, (64, 48)), (3, (80, 60)),
                                            (30, (64, 48))]):
        make_video(root / f"v{index}.mp4", width=size[0], height=size[1], fps=10, num_frames=frames)
    (root / "v2b_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return root


def run_with(folder: Path, out: Path, config, workers: int):
    config = config.with_(sampling=SamplingConfig(fps=4.0),
                          runtime=RuntimeConfig(device="cpu", precision="fp32", decode_workers=workers))
    return run_batch(plan_inputs([str(folder)]), out, config)


@pytest.mark.parametrize("workers", [2, 3])
def test_several_workers_give_one_workers_features_and_records(folder, tmp_path, fast_config, workers):
    one = run_with(folder, tmp_path / "one", fast_config, 1)
    many = run_with(folder, tmp_path / "many", fast_config, workers)
    assert [(r.status, r.reason) for r in many.records] == [(r.status, r.reason) for r in one.records]
    assert [r.status for r in one.records].count("failed") == 1
    for record in one.records:
        if record.status != "ok":
            continue
        name = Path(record.output).name
        a, b = load(tmp_path / "one" / name), load(tmp_path / "many" / name)
        np.testing.assert_array_equal(a.video.frame_indices, b.video.frame_indices)
        np.testing.assert_array_equal(a.video.timestamps, b.video.timestamps)
        np.testing.assert_allclose(a.video.features, b.video.features, rtol=0, atol=1e-6)


def test_two_workers_are_two_processes_sharing_the_videos(tmp_path, fast_config):
    for index in range(4):
        make_video(tmp_path / "in" / f"v{index}.mp4", width=64, height=48, fps=10, num_frames=12)
    with hooks.installed(decode=record_decoder_pid):
        report = run_with(tmp_path / "in", tmp_path / "out", fast_config, 2)
    assert [r.status for r in report.records] == ["ok"] * 4
    pids = [(tmp_path / "in" / f"v{index}.mp4.pid").read_text() for index in range(4)]
    assert len(set(pids)) == 2, pids
    assert pids[0] == pids[2] != pids[1] == pids[3]  # video p goes to worker p mod 2


def test_the_cli_takes_decode_workers_and_refuses_zero(folder, tmp_path, fast_cli_flags):
    runner = CliRunner()
    result = runner.invoke(app, ["--decode-workers", "2", "run", str(folder), "-o", str(tmp_path / "out"),
                                 *fast_cli_flags, "--fps", "2"])
    assert result.exit_code == 1, result.output  # the corrupt file fails; the others are written
    assert len(list((tmp_path / "out").glob("*.h5"))) == 5
    result = runner.invoke(app, ["--decode-workers", "0", "run", str(folder), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--decode-workers" in result.output


def test_decode_workers_must_be_a_positive_integer():
    with pytest.raises(ConfigError) as caught:
        RuntimeConfig(decode_workers=0)
    assert caught.value.field == "decode_workers"


@pytest.mark.parametrize(
    "device, cpus, gpus, memory, expected",
    [
        ("cpu", 16, 0, 64 << 30, 1),  # a CPU model needs the cores itself
        ("cuda:0", 16, 1, 64 << 30, 16),  # one worker per core the GPU has
        ("cuda:0", 16, 2, 64 << 30, 8),  # cores shared by the GPUs in use
        ("cuda:0", 16, 1, 3 * DECODE_WORKER_MEMORY + 1, 3),  # as many as memory holds
        ("cuda:0", 16, 1, 100, 1),
        ("cuda", 1, 1, None, 1),
    ],
)
def test_default_decode_workers(device, cpus, gpus, memory, expected):
    if memory is None:
        assert default_decode_workers(device, cpus, gpus) >= 1
    else:
        assert default_decode_workers(device, cpus, gpus, memory) == expected


def test_workers_share_the_decoding_threads_of_a_gpu():
    # 16 cores for one GPU: 16 workers of one thread, not 16 workers of 4 threads
    workers = default_decode_workers("cuda:0", 16, 1, 64 << 30)
    assert default_decode_threads("cuda:0", 16 // workers, 1) == 1
    assert default_decode_threads("cuda:0", 16, 1) == 4  # one worker: FFmpeg's threads instead


# --- decoding starts before the model is loaded ---------------------------------------------------
def record_decode_start(job, emit) -> None:
    """Decode normally, after writing ``<video>.started``."""
    from videobert_cli.pipeline.decode_worker import default_decode

    Path(job.path + ".started").write_text("")
    default_decode(job, emit)


def decoded_indices(feed, count: int) -> list[list[int]]:
    indices = []
    for position in range(count):
        _, chunks = feed.open(position)
        indices.append([int(i) for chunk in chunks for i in chunk.frame_indices])
    return indices


def stage_of(fast_config, tmp_path, monkeypatch, videos: list[str]):
    """(config, its loaded VideoStage, each video's frame indices) with a fresh cache."""
    from videobert_cli.pipeline.stages import VideoStage

    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))
    config = fast_config.with_(sampling=SamplingConfig(fps=4.0), runtime=RuntimeConfig(device="cpu", precision="fp32"))
    stage = VideoStage(config)
    return config, stage, [stage.extract(path).frame_indices.tolist() for path in videos]


def test_a_remembered_plan_starts_decoding_before_the_model_loads(folder, tmp_path, fast_config, monkeypatch):
    import time

    from videobert_cli.pipeline import overlap

    videos = [str(folder / "v0.mp4"), str(folder / "v2.mp4")]
    config, stage, expected = stage_of(fast_config, tmp_path, monkeypatch, videos)
    assert overlap.remembered_plan(config, 16) is None
    first = overlap.open_feed(config, videos, lambda: stage, timeout=60, chunk_frames=16)  # the first run
    try:
        assert decoded_indices(first, 2) == expected
    finally:
        first.close()
    assert overlap.remembered_plan(config, 16) == stage.decode_plan(16)

    started = Path(videos[0] + ".started")
    started.unlink(missing_ok=True)
    seen_while_loading = []

    def load_stage():  # the model "loads" until the first video's decoding has started
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen_while_loading.append(started.exists())
        return stage

    feed = overlap.open_feed(config, videos, load_stage, timeout=60, chunk_frames=16, decode=record_decode_start)
    try:
        assert seen_while_loading == [True]
        assert feed.plan == stage.decode_plan(16)
        assert decoded_indices(feed, 2) == expected
    finally:
        feed.close()


def test_a_stale_remembered_plan_is_dropped_for_the_stages_own(folder, tmp_path, fast_config, monkeypatch):
    from dataclasses import replace

    from videobert_cli.pipeline import overlap

    videos = [str(folder / "v0.mp4"), str(folder / "v4.mp4")]
    config, stage, expected = stage_of(fast_config, tmp_path, monkeypatch, videos)
    real = stage.decode_plan(16)
    # e.g. new weights with another preprocessing since the last run
    stale = replace(real, request=replace(real.request, sampling=SamplingConfig(fps=1.0)))
    overlap.remember_plan(config, 16, stale)
    feed = overlap.open_feed(config, videos, lambda: stage, timeout=60, chunk_frames=16)
    try:
        assert feed.plan == real
        assert decoded_indices(feed, 2) == expected
    finally:
        feed.close()
    assert overlap.remembered_plan(config, 16) == real
    overlap.plan_path(config, 16).write_text("{not json")  # a damaged entry is no plan
    assert overlap.remembered_plan(config, 16) is None


def test_an_early_feed_that_cannot_start_leaves_the_run_its_own(folder, tmp_path, fast_config, monkeypatch):
    from videobert_cli.pipeline import overlap

    videos = [str(folder / "v0.mp4")]
    config, stage, expected = stage_of(fast_config, tmp_path, monkeypatch, videos)
    overlap.remember_plan(config, 16, stage.decode_plan(16))
    real, built = overlap.DecodeFeed, []

    def feed_failing_first(*args, **kwargs):
        built.append(1)
        if len(built) == 1:  # the early one, in its thread
            raise OSError("no fork server")
        return real(*args, **kwargs)

    monkeypatch.setattr(overlap, "DecodeFeed", feed_failing_first)
    feed = overlap.open_feed(config, videos, lambda: stage, timeout=60, chunk_frames=16)
    try:
        assert len(built) == 2 and decoded_indices(feed, 1) == expected
    finally:
        feed.close()
