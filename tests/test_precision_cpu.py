"""Precision on the CPU tells the truth: bf16 only where the CPU has bf16 units, and fp32
runs channels-last with features equal to the default layout's.

The CPU's bf16 units are faked with ``monkeypatch`` (``videobert_cli.devices.cpu_has_native_bf16``
for the decision, ``videobert_cli.system.cpu_flags`` for the detection), so both branches are
tested on any machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from videobert_cli import devices, system
from videobert_cli.cli.app import app
from videobert_cli.config import VideoModelConfig
from videobert_cli.devices import check_precision, resolve_training_precision
from videobert_cli.errors import EXIT_USAGE, ConfigError


def without_bf16(monkeypatch):
    monkeypatch.setattr("videobert_cli.devices.cpu_has_native_bf16", lambda: False)


def with_bf16(monkeypatch):
    monkeypatch.setattr("videobert_cli.devices.cpu_has_native_bf16", lambda: True)


def test_bf16_is_refused_on_a_cpu_that_would_emulate_it(monkeypatch):
    without_bf16(monkeypatch)
    with pytest.raises(ConfigError) as caught:
        check_precision("bf16", "cpu")
    message = str(caught.value)
    assert "\n" not in message and "bf16 units" in message and "emulate" in message
    assert caught.value.field == "precision"
    assert "--precision fp32" in caught.value.hint
    check_precision("fp32", "cpu")
    with pytest.raises(ConfigError, match="bf16 units"):
        resolve_training_precision("bf16", "cpu")
    assert resolve_training_precision("auto", "cpu") == "fp32"
    # the fp16 refusal does not send the user to bf16 when bf16 is refused too
    with pytest.raises(ConfigError) as caught:
        check_precision("fp16", "cpu")
    assert "bf16" not in caught.value.hint


def test_bf16_is_kept_where_the_cpu_has_bf16_units(monkeypatch):
    with_bf16(monkeypatch)
    check_precision("bf16", "cpu")
    assert resolve_training_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ConfigError) as caught:
        check_precision("fp16", "cpu")
    assert "bf16" in caught.value.hint


@pytest.mark.parametrize(
    ("flags", "machine", "native"),
    [
        ("fpu sse avx2 fma", "x86_64", False),  # AVX2 only (the EPYC)
        ("avx2 avx512f avx512bw", "x86_64", False),  # AVX-512 without bf16 (Skylake-SP)
        ("avx2 avx512f avx512_bf16", "x86_64", True),  # Cooper Lake, Zen 4
        ("avx2 avx512f amx_tile amx_bf16", "x86_64", True),  # Sapphire Rapids
        ("fp asimd sve", "aarch64", False),
        ("fp asimd sve bf16", "aarch64", True),
    ],
)
def test_native_bf16_detection_reads_the_cpu_flags(monkeypatch, flags, machine, native):
    monkeypatch.setattr(devices, "cpu_flags", lambda: set(flags.split()))
    monkeypatch.setattr(system.platform, "machine", lambda: machine)
    assert devices.cpu_has_native_bf16() is native


def test_detection_falls_back_to_torch_without_proc_cpuinfo(monkeypatch):
    monkeypatch.setattr(devices, "cpu_flags", lambda: set())
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert devices.cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert devices.cpu_has_native_bf16() is True


def test_cpuinfo_parsing(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu avx2 fma\n\n"
                       "processor\t: 1\nmodel name\t: other\n")
    info = devices.cpuinfo(str(cpuinfo))
    assert info["model name"] == "AMD EPYC 7B12" and info["flags"] == "fpu avx2 fma"
    assert devices.cpuinfo(str(tmp_path / "missing")) == {}


def test_cli_refuses_bf16_on_such_a_cpu_in_one_line_before_any_work(monkeypatch, tmp_path):
    without_bf16(monkeypatch)
    from synth import make_video

    video = make_video(tmp_path / "a.mp4", width=64, height=48, fps=4, num_frames=4)
    result = CliRunner().invoke(app, ["--device", "cpu", "extract-video", str(video), "-o", str(tmp_path / "out"),
                                      "--video-model", "mobilenet_v3_small", "--video-weights", "none",
                                      "--precision", "bf16"])
    assert result.exit_code == EXIT_USAGE, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bf16 units" in errors[0] and "--precision fp32" in errors[0], result.output
    assert not list((tmp_path / "out").glob("*.h5")) if (tmp_path / "out").exists() else True


def test_fp32_on_cpu_in_torch_runs_channels_last_with_the_default_layouts_features():
    from videobert_cli.video.encoder import FrameEncoder
    from videobert_cli.video.models import load_video_model

    config = VideoModelConfig(name="mobilenet_v3_small", weights="none", seed=3)
    encoder = FrameEncoder(load_video_model(config), device="cpu", precision="fp32", model_runtime="torch")
    assert encoder.runner.channels_last
    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (6, 3, 224, 224), dtype=np.uint8))
    fast = encoder.encode(crops)

    from videobert_cli.video.preprocess import normalize

    plain = load_video_model(config)
    with torch.inference_mode():
        reference = plain.module.eval()(normalize(crops, plain.preprocessing)).numpy()
    cosine = (fast * reference).sum(1) / (np.linalg.norm(fast, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() >= 0.9999
    np.testing.assert_allclose(fast, reference, atol=1e-4, rtol=1e-4)
