"""The model runtime: ONNX Runtime by default for fp32 frame models on the CPU, torch elsewhere.

Features are held to eager torch fp32 in the default memory format (the peers' way) on the same
crops: per-frame cosine >= 0.9999 and a small max abs diff.
"""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from videobert_cli import RuntimeConfig, VideoModelConfig
from videobert_cli.cli.app import app
from videobert_cli.errors import EXIT_USAGE, ConfigError
from videobert_cli.video import runtimes
from videobert_cli.video.encoder import FrameEncoder
from videobert_cli.video.models import load_video_model
from videobert_cli.video.preprocess import normalize

pytest.importorskip("onnxruntime", reason="onnxruntime is a core dependency; its absence is a broken install")

@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    from synth import make_video

    return make_video(tmp_path_factory.mktemp("v") / "a.mp4", width=96, height=64, fps=4, num_frames=6)


TINY = VideoModelConfig(name="mobilenet_v3_small", weights="none", seed=5)


def crops(n: int = 5, size: int = 224) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).integers(0, 256, (n, 3, size, size), dtype=np.uint8))


def eager_reference(config: VideoModelConfig, batch: torch.Tensor) -> np.ndarray:
    """What a plain extractor computes: eager torch, default memory format, fp32."""
    model = load_video_model(config)
    with torch.inference_mode():
        return model.module.eval()(normalize(batch, model.preprocessing)).numpy()


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize(
    "asked, device, precision, kind, expected",
    [
        ("auto", "cpu", "fp32", "frame", "onnxruntime"),
        ("auto", "cpu", "bf16", "frame", "torch"),
        ("auto", "cuda:0", "fp16", "frame", "torch"),
        ("auto", "cpu", "fp32", "clip", "torch"),
        ("torch", "cpu", "fp32", "frame", "torch"),
        ("onnxruntime", "cpu", "fp32", "frame", "onnxruntime"),
    ],
)
def test_auto_takes_onnxruntime_only_for_fp32_frame_models_on_the_cpu(asked, device, precision, kind, expected):
    assert runtimes.choose_runtime(asked, device=device, precision=precision, kind=kind) == expected


@pytest.mark.parametrize(
    "device, precision, kind, reason",
    [("cuda", "fp16", "frame", "CPU only"), ("cpu", "bf16", "frame", "fp32 only"), ("cpu", "fp32", "clip", "clip")],
)
def test_an_explicit_onnxruntime_that_cannot_apply_is_refused_naming_why(device, precision, kind, reason):
    with pytest.raises(ConfigError, match=reason) as caught:
        runtimes.choose_runtime("onnxruntime", device=device, precision=precision, kind=kind)
    assert caught.value.field == "model_runtime"


def test_onnxruntime_runs_a_batch_in_bounded_calls_with_the_same_features(monkeypatch):
    # a batch of --batch-size frames goes to the session SESSION_FRAMES at a time (a larger call
    # only adds activation memory on the CPU); the features are the whole batch's
    seen = []
    real = runtimes.onnx_session

    class Recording:
        def __init__(self, session):
            self.session = session

        def run(self, outputs, feeds):
            seen.append(len(feeds["x"]))
            return self.session.run(outputs, feeds)

    monkeypatch.setattr(runtimes, "onnx_session", lambda model, threads: Recording(real(model, threads)))
    batch = crops(2 * runtimes.SESSION_FRAMES + 3)
    encoder = FrameEncoder(load_video_model(TINY), device="cpu", precision="fp32")
    assert encoder.runtime.startswith("onnxruntime ")
    seen.clear()  # the agreement check's call
    fast = encoder.encode(batch)
    assert seen == [runtimes.SESSION_FRAMES, runtimes.SESSION_FRAMES, 3]
    np.testing.assert_allclose(fast, eager_reference(TINY, batch), atol=1e-4, rtol=1e-4)


def test_without_onnxruntime_auto_is_torch_and_an_explicit_request_says_how_to_install(monkeypatch):
    monkeypatch.setattr(runtimes, "onnxruntime_version", lambda: None)
    assert runtimes.choose_runtime("auto", device="cpu", precision="fp32", kind="frame") == "torch"
    with pytest.raises(ConfigError) as caught:
        runtimes.choose_runtime("onnxruntime", device="cpu", precision="fp32", kind="frame")
    assert "pip install onnxruntime onnx" in str(caught.value.hint)


def test_an_unknown_runtime_is_refused_by_the_configuration():
    with pytest.raises(ConfigError) as caught:
        RuntimeConfig(model_runtime="tensorrt")
    assert caught.value.field == "model_runtime"


def test_onnxruntime_features_equal_eager_torch_fp32():
    batch = crops()
    encoder = FrameEncoder(load_video_model(TINY), device="cpu", precision="fp32")
    assert encoder.runtime.startswith("onnxruntime ")
    fast = encoder.encode(batch)
    reference = eager_reference(TINY, batch)
    assert cosine_rows(fast, reference).min() >= 0.9999
    np.testing.assert_allclose(fast, reference, atol=1e-4, rtol=1e-4)
    assert encoder.runner.max_abs_diff is not None and encoder.runner.max_abs_diff < 1e-4


def test_the_bundled_default_model_agrees_with_eager_torch_on_image_like_crops():
    config = VideoModelConfig()
    size = load_video_model(config).preprocessing.crop_size
    # smooth, image-like crops rather than noise
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    image = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp[::-1], ramp) / 2, np.tile(ramp, (size, 1))])
    batch = torch.from_numpy(np.stack([np.roll(image, 17 * k, axis=2) for k in range(4)]).astype(np.uint8))
    encoder = FrameEncoder(load_video_model(config), device="cpu", precision="fp32", model_runtime="onnxruntime")
    fast = encoder.encode(batch)
    reference = eager_reference(config, batch)
    assert cosine_rows(fast, reference).min() >= 0.9999
    assert np.abs(fast - reference).max() < 1e-3


def test_the_export_is_cached_and_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))
    first = FrameEncoder(load_video_model(TINY), model_runtime="onnxruntime").encode(crops(3))
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(cached) == 1

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds the model")

    monkeypatch.setattr(runtimes, "export_onnx", no_export)
    second = FrameEncoder(load_video_model(TINY), model_runtime="onnxruntime").encode(crops(3))
    np.testing.assert_array_equal(first, second)


def test_other_weights_get_their_own_export(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))
    FrameEncoder(load_video_model(TINY), model_runtime="onnxruntime")
    other = VideoModelConfig(name=TINY.name, weights="none", seed=6)
    batch = crops(3)
    fast = FrameEncoder(load_video_model(other), model_runtime="onnxruntime").encode(batch)
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2
    assert cosine_rows(fast, eager_reference(other, batch)).min() >= 0.9999


def cache_holding_another_model(monkeypatch, tmp_path) -> None:
    """TINY's cache entry holding another model's graph (e.g. a cache copied between machines)."""
    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))
    FrameEncoder(load_video_model(TINY), model_runtime="onnxruntime")
    [entry] = (tmp_path / "cache" / "onnx").glob("*.onnx")
    other = load_video_model(VideoModelConfig(name=TINY.name, weights="none", seed=99)).module.eval()
    entry.write_bytes(runtimes.export_onnx(other, 224))


def test_a_wrong_model_in_the_cache_is_exported_again(monkeypatch, tmp_path):
    cache_holding_another_model(monkeypatch, tmp_path)
    batch = crops(3)
    fast = FrameEncoder(load_video_model(TINY), model_runtime="onnxruntime").encode(batch)
    assert cosine_rows(fast, eager_reference(TINY, batch)).min() >= 0.9999


def reload_counting(config: VideoModelConfig, calls: list):
    def reload():
        calls.append(1)
        return load_video_model(config).module.eval()

    return reload


def test_with_reload_the_session_is_built_after_torchs_weights_are_freed(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))
    FrameEncoder(load_video_model(TINY), model_runtime="onnxruntime")  # fills the cache
    model, calls, freed_at_build = load_video_model(TINY), [], []
    real = runtimes.onnx_session

    def session(source, threads):
        freed_at_build.append(not runtimes.has_weights(model.module))
        return real(source, threads)

    monkeypatch.setattr(runtimes, "onnx_session", session)
    batch = crops(3)
    fast = FrameEncoder(model, model_runtime="onnxruntime", reload=reload_counting(TINY, calls)).encode(batch)
    assert freed_at_build == [True] and calls == []  # both copies were never held at once
    assert cosine_rows(fast, eager_reference(TINY, batch)).min() >= 0.9999


def test_with_reload_a_wrong_cached_model_is_exported_again_from_reloaded_weights(monkeypatch, tmp_path):
    cache_holding_another_model(monkeypatch, tmp_path)
    calls, batch = [], crops(3)
    encoder = FrameEncoder(load_video_model(TINY), model_runtime="onnxruntime", reload=reload_counting(TINY, calls))
    assert calls == [1] and encoder.runtime.startswith("onnxruntime ")
    assert cosine_rows(encoder.encode(batch), eager_reference(TINY, batch)).min() >= 0.9999


def test_with_reload_a_failing_session_falls_back_to_reloaded_torch(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))
    FrameEncoder(load_video_model(TINY), model_runtime="onnxruntime")

    def broken(*args, **kwargs):
        raise RuntimeError("no session here")

    monkeypatch.setattr(runtimes, "onnx_session", broken)
    calls, batch = [], crops(3)
    with caplog.at_level(logging.WARNING):
        encoder = FrameEncoder(load_video_model(TINY), model_runtime="auto", reload=reload_counting(TINY, calls))
    assert calls == [1] and encoder.runtime.startswith("torch ")
    assert any("no session here" in record.getMessage() for record in caplog.records)
    np.testing.assert_allclose(encoder.encode(batch), eager_reference(TINY, batch), atol=1e-4, rtol=1e-4)


def test_an_unwritable_cache_still_runs_onnxruntime(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("VIDEOBERT_CACHE", str(blocker / "cache"))
    encoder = FrameEncoder(load_video_model(TINY), model_runtime="onnxruntime")
    assert encoder.runtime.startswith("onnxruntime ")


def test_a_failed_export_falls_back_to_torch_under_auto_and_fails_when_asked(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(runtimes, "export_onnx", broken)
    with caplog.at_level(logging.WARNING):
        encoder = FrameEncoder(load_video_model(TINY), model_runtime="auto")
    assert encoder.runtime.startswith("torch ")
    assert any("unsupported operator" in record.getMessage() for record in caplog.records)
    with pytest.raises(ConfigError, match="unsupported operator"):
        FrameEncoder(load_video_model(TINY), model_runtime="onnxruntime")


def test_the_runtime_is_recorded_in_the_file_and_the_flag_turns_it_off(tmp_path, tiny_video):
    runner = CliRunner()
    for runtime, expected in (("auto", "onnxruntime "), ("torch", "torch ")):
        out = tmp_path / f"{runtime}.h5"
        result = runner.invoke(app, ["--model-runtime", runtime, "extract-video", str(tiny_video), "-o", str(out),
                                     "--video-model", "mobilenet_v3_small", "--video-weights", "none",
                                     "--device", "cpu", "--precision", "fp32"])
        assert result.exit_code == 0, result.output
        with h5py.File(out) as f:
            assert f["video"].attrs["model_runtime"].startswith(expected)
            features = f["video/features"][()]
        if runtime == "auto":
            fast = features
    assert cosine_rows(fast, features).min() >= 0.9999
    np.testing.assert_allclose(fast, features, atol=1e-4, rtol=1e-4)


def test_the_cli_refuses_an_unknown_runtime_in_one_line(tmp_path, tiny_video):
    result = CliRunner().invoke(app, ["--model-runtime", "tensorrt", "extract-video", str(tiny_video),
                                      "-o", str(tmp_path / "x.h5")])
    assert result.exit_code == EXIT_USAGE, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--model-runtime" in errors[0], result.output


def test_onnxruntime_frees_torchs_copy_of_the_weights_and_torch_keeps_it():
    model = load_video_model(TINY)
    FrameEncoder(model, model_runtime="onnxruntime")
    assert all(p.device.type == "meta" for p in model.module.parameters())
    kept = load_video_model(TINY)
    FrameEncoder(kept, model_runtime="torch")
    assert all(p.device.type == "cpu" for p in kept.module.parameters())


# --- export cards: a verified export starts later runs without the torch model ---------------
def video_stage(config: VideoModelConfig, **runtime):
    from videobert_cli.config import PipelineConfig
    from videobert_cli.pipeline.stages import VideoStage

    runtime = RuntimeConfig(**{"device": "cpu", "precision": "fp32", **runtime})
    return VideoStage(PipelineConfig(video_model=config, runtime=runtime)).ready()


def counting_loads(monkeypatch) -> list:
    """Counts the torch models the video stage builds (a first load and every reload)."""
    from videobert_cli.pipeline import stages

    calls, real = [], stages.load_video_model

    def load(config):
        calls.append(config)
        return real(config)

    monkeypatch.setattr(stages, "load_video_model", load)
    return calls


def test_a_verified_export_starts_the_next_run_without_building_the_torch_model(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))
    first = video_stage(TINY)
    assert len(list((tmp_path / "cache" / "onnx").glob("card-*.npz"))) == 1
    loads = counting_loads(monkeypatch)
    second = video_stage(TINY)
    assert loads == [] and second.model.module is None
    assert second.identity() == first.identity() and second.encoder.runtime == first.encoder.runtime
    batch = crops(3)
    np.testing.assert_array_equal(second.encoder.encode(batch), first.encoder.encode(batch))
    assert cosine_rows(second.encoder.encode(batch), eager_reference(TINY, batch)).min() >= 0.9999


def test_a_changed_weights_file_retires_its_card(monkeypatch, tmp_path):
    from safetensors.torch import save_file

    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "w.safetensors"

    def save(seed: int) -> None:
        from torchvision.models import get_model

        torch.manual_seed(seed)
        save_file(get_model(TINY.name, weights=None).state_dict(), str(weights))

    save(1)
    config = VideoModelConfig(name=TINY.name, weights=str(weights))
    video_stage(config)
    save(2)
    loads = counting_loads(monkeypatch)
    stage = video_stage(config)
    assert len(loads) == 1  # the card of the old file does not stand in
    batch = crops(3)
    assert cosine_rows(stage.encoder.encode(batch), eager_reference(config, batch)).min() >= 0.9999


def test_a_card_that_disagrees_with_the_session_is_checked_against_torch_again(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))
    video_stage(TINY)
    [card] = (tmp_path / "cache" / "onnx").glob("card-*.npz")
    with np.load(card) as stored:
        facts, reference = stored["facts"], stored["reference"]
    np.savez(card, facts=facts, reference=-reference)  # as if another runtime's numbers
    loads = counting_loads(monkeypatch)
    stage = video_stage(TINY)
    assert len(loads) == 1 and stage.encoder.runtime.startswith("onnxruntime ")
    batch = crops(3)
    assert cosine_rows(stage.encoder.encode(batch), eager_reference(TINY, batch)).min() >= 0.9999
    with np.load(card) as stored:
        np.testing.assert_array_equal(stored["reference"], reference)  # written again, from torch


def test_a_damaged_card_is_ignored_and_written_again(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))
    video_stage(TINY)
    [card] = (tmp_path / "cache" / "onnx").glob("card-*.npz")
    card.write_bytes(b"not a card")
    loads = counting_loads(monkeypatch)
    stage = video_stage(TINY)
    assert len(loads) == 1 and stage.encoder.runtime.startswith("onnxruntime ")
    assert np.load(card)["reference"].shape == (runtimes.CHECK_FRAMES, stage.feature_dim)


def test_without_onnxruntime_or_for_a_plugin_model_no_card_stands_in(monkeypatch, tmp_path):
    from videobert_cli.video.models import VideoModelEntry, register_video_model

    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))
    video_stage(TINY)
    loads = counting_loads(monkeypatch)
    assert video_stage(TINY, model_runtime="torch").model.module is not None and len(loads) == 1
    register_video_model(VideoModelEntry("card-plugin", "a plugin model", lambda config: load_video_model(TINY),
                                         lambda weights: True, lambda: 576))
    for _ in range(2):
        video_stage(VideoModelConfig(name="card-plugin", weights="none", seed=TINY.seed))
    assert len(loads) == 3  # built every time: what a plugin builds is not decided by its name
    assert len(list((tmp_path / "cache" / "onnx").glob("card-*.npz"))) == 1


def test_a_relative_weights_path_is_a_file_of_its_own_folder(monkeypatch, tmp_path):
    from videobert_cli.video.export_card import card_path

    config = VideoModelConfig(name=TINY.name, weights="w.safetensors")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    in_a = card_path(config)
    monkeypatch.chdir(tmp_path / "b")
    assert card_path(config) != in_a


NO_TORCH = r"""
import sys, importlib.abc
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "transformers"):
            raise ImportError(f"this run imported {name}")
sys.meta_path.insert(0, Refuse())
from videobert_cli.cli.app import main
sys.argv = ["videobert", *sys.argv[1:]]
main()
"""


def test_extract_video_from_a_card_runs_without_torch_in_the_process(tmp_path, tiny_video):
    import os
    import subprocess
    import sys

    env = {**os.environ, "VIDEOBERT_CACHE": str(tmp_path / "cache")}
    flags = ["--video-model", TINY.name, "--video-weights", "none", "--device", "cpu", "--precision", "fp32"]

    def extract(out: str, *prefix: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *prefix, "--debug", "extract-video", str(tiny_video), "-o",
                               str(tmp_path / out), *flags], env=env, capture_output=True, text=True)

    first = extract("first.h5", "-c", "from videobert_cli.cli.app import main; main()")
    assert first.returncode == 0, first.stderr
    second = extract("second.h5", "-c", NO_TORCH)  # torch, torchvision, transformers refused
    assert second.returncode == 0, second.stderr
    with h5py.File(tmp_path / "first.h5") as a, h5py.File(tmp_path / "second.h5") as b:
        np.testing.assert_array_equal(a["video/features"][()], b["video/features"][()])
        assert b["video"].attrs["model_runtime"].startswith("onnxruntime ")
        assert a["video"].attrs["weights_name"] == b["video"].attrs["weights_name"]


def test_normalize_array_gives_the_model_exactly_torchs_input():
    from videobert_cli.video.preprocess import normalize_array

    model = load_video_model(TINY)
    batch = crops(4)
    np.testing.assert_array_equal(normalize_array(batch.numpy(), model.preprocessing),
                                  normalize(batch, model.preprocessing).numpy())
