"""`videobert doctor` and its core, :func:`videobert_cli.system.doctor_report`.

The conftest points HOME, TORCH_HOME and HF_HOME at an empty per-test directory, so the caches
seen here are the test's own.
"""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from videobert_cli import devices, system
from videobert_cli.cli.app import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_report_is_a_json_ready_dict_with_every_section():
    report = system.doctor_report()
    json.dumps(report)  # library users get plain data
    cpu = report["cpu"]
    assert cpu["cores_available"] == len(os.sched_getaffinity(0))
    assert set(cpu["instruction_sets"]) == {"AVX2", "AVX-512F", "AVX-512 VNNI", "AVX-512 BF16", "AMX", "AMX BF16"}
    assert cpu["torch_capability"] and cpu["model"]
    assert cpu["precision_auto"] == "fp32"
    assert set(report["decoders"]) == {"PyAV", "decord", "torchcodec"}
    assert set(report["runtimes"]) == {"ONNX Runtime", "OpenVINO", "Ray"}
    assert report["decoders"]["PyAV"]["importable"] and report["decoders"]["PyAV"]["version"]
    assert report["offline"] is True  # the conftest's offline mode
    assert report["precision_auto"] in ("fp32", "fp16")
    assert report["model_runtime_auto"] == "onnxruntime"  # a core dependency


def test_caches_honour_the_environment_and_list_what_is_cached(tmp_path, monkeypatch):
    torch_home, hf_home = tmp_path / "torch", tmp_path / "hf"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    checkpoint = torch_home / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"\0" * 2_000_000)
    blob = hf_home / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2" / "blobs" / "abc"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"\0" * 1_000_000)
    weights = system.cached_weights()
    assert weights["torch_hub"]["path"] == str(torch_home / "hub")
    assert weights["torch_hub"]["checkpoints"] == [{"name": "resnet50-11ad3fa6.pth", "mb": 2.0}]
    assert weights["huggingface_hub"]["path"] == str(hf_home / "hub")
    assert weights["huggingface_hub"]["models"] == [
        {"name": "sentence-transformers/all-MiniLM-L6-v2", "kind": "model", "mb": 1.0}]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert system.cached_weights()["huggingface_hub"] == {"path": str(tmp_path / "elsewhere"), "exists": False,
                                                         "models": []}


def test_cli_text_names_the_sections():
    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    for word in ("CPU", "instruction sets", "torch capability", "GPU", "decoders", "PyAV", "runtimes",
                 "ONNX Runtime", "weights caches", "torch hub", "offline", "precision"):
        assert word in result.output, word


def test_cli_json_parses_and_matches_the_core():
    result = invoke("doctor", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["cpu"]["cores_available"] == system.cpus_available()
    assert report["weights"]["torch_hub"]["path"] == str(system.torch_hub_dir())


def test_a_cpu_without_bf16_units_says_so(monkeypatch):
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"fpu", "sse2", "avx", "avx2", "fma"})
    monkeypatch.setattr(system.platform, "machine", lambda: "x86_64")
    report = json.loads(invoke("doctor", "--json").output)
    cpu = report["cpu"]
    assert cpu["native_bf16"] is False and cpu["precisions_allowed"] == ["fp32"]
    assert cpu["instruction_sets"]["AVX2"] and not cpu["instruction_sets"]["AVX-512 BF16"]
    text = invoke("doctor").output
    assert "native bf16       no" in text and "refused" in text


def test_a_cpu_with_bf16_units_allows_bf16(monkeypatch):
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setattr(system.platform, "machine", lambda: "x86_64")
    report = json.loads(invoke("doctor", "--json").output)
    assert report["cpu"]["native_bf16"] is True and report["cpu"]["precisions_allowed"] == ["fp32", "bf16"]


def test_gpu_facts_come_from_torch_cuda(monkeypatch):
    import torch

    class Props:
        name = "NVIDIA Tesla T4"
        total_memory = 16 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (7, 5))
    assert system.gpus() == [{"device": "cuda:0", "name": "NVIDIA Tesla T4", "compute_capability": "7.5",
                              "memory_gb": 16.0}]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert system.gpus() == []
    assert "  none" in invoke("doctor").output


def test_doctor_lists_the_onnx_exports_that_start_runs_without_torch(tmp_path, monkeypatch):
    from videobert_cli import RuntimeConfig, VideoModelConfig
    from videobert_cli.config import PipelineConfig
    from videobert_cli.pipeline.stages import VideoStage

    monkeypatch.setenv("VIDEOBERT_CACHE", str(tmp_path / "cache"))
    assert system.cached_weights()["onnx_exports"] == {"path": str(tmp_path / "cache" / "onnx"), "exists": False,
                                                      "cards": []}
    config = PipelineConfig(video_model=VideoModelConfig(name="mobilenet_v3_small", weights="none", seed=3),
                            runtime=RuntimeConfig(device="cpu", precision="fp32"))
    VideoStage(config).ready()
    [card] = system.cached_weights()["onnx_exports"]["cards"]
    assert card["model"] == "mobilenet_v3_small" and card["weights"] == "none (random init, seed 3)"
    assert card["usable"] and card["mb"] > 0
    assert "mobilenet_v3_small none (random init, seed 3)" in invoke("doctor").output
    next((tmp_path / "cache" / "onnx").glob("*.onnx")).unlink()  # the export is gone: the card is stale
    assert system.cached_weights()["onnx_exports"]["cards"][0]["usable"] is False
    assert "(stale)" in invoke("doctor").output
