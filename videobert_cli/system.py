"""What this machine offers: CPU instruction sets, GPUs, decoders, runtimes, weights caches.

:func:`cpu_has_native_bf16` decides whether ``--precision bf16`` is allowed on the CPU
(:func:`videobert_cli.devices.check_precision`); :func:`doctor_report` gathers everything
``videobert doctor`` prints, as a plain dict (library use: ``videobert_cli.system.doctor_report()``).

Nothing here imports torch at module level, and nothing downloads or starts a device beyond
asking torch what it sees.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
from pathlib import Path

import videobert_cli.devices as devices

#: /proc/cpuinfo flags that matter to the models, in the order doctor prints them
CPU_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512F",
    "avx512_vnni": "AVX-512 VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX BF16",
}
#: optional importable modules doctor reports: (module, distribution, role)
DECODERS = (("av", "av", "PyAV"), ("decord", "decord", "decord"), ("torchcodec", "torchcodec", "torchcodec"))
RUNTIMES = (("onnxruntime", "onnxruntime", "ONNX Runtime"), ("openvino", "openvino", "OpenVINO"),
            ("ray", "ray", "Ray"))


# --- CPU ------------------------------------------------------------------------------------
def cpu_model_name() -> str:
    info = devices.cpuinfo()
    return info.get("model name") or info.get("hardware") or platform.processor() or platform.machine() or "unknown"


def cpus_available() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    return len(devices.allowed_cpus())


def torch_cpu_capability() -> str:
    """The vector kernels torch dispatches to here (``AVX2``, ``AVX512``, ``DEFAULT``, ...)."""
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # an old torch without the call
        return "unknown"


def cpu_instruction_sets() -> dict[str, bool]:
    """{readable name: present} for the instruction sets in :data:`CPU_FLAGS`."""
    flags = devices.cpu_flags()
    return {name: flag in flags for flag, name in CPU_FLAGS.items()}


# --- GPUs -----------------------------------------------------------------------------------
def gpus() -> list[dict]:
    """Visible CUDA (or ROCm) GPUs: index, name, compute capability, memory; [] when none."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        found = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            major, minor = torch.cuda.get_device_capability(index)
            found.append({"device": f"cuda:{index}", "name": props.name, "compute_capability": f"{major}.{minor}",
                          "memory_gb": round(props.total_memory / 2**30, 1)})
        return found
    except Exception as error:  # a broken driver: say so instead of failing
        return [{"device": "cuda", "error": f"{error.__class__.__name__}: {str(error)[:160]}"}]


# --- packages -------------------------------------------------------------------------------
def package_status(module: str, distribution: str) -> dict:
    """Whether ``module`` imports, and the installed version of ``distribution``."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = None
    try:
        importlib.import_module(module)
        importable, error = True, None
    except Exception as exc:  # ImportError, or a broken native library
        importable, error = False, f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    status = {"importable": importable, "version": version}
    if error and version:
        status["error"] = error  # installed but broken: worth saying
    return status


# --- weights caches -------------------------------------------------------------------------
def torch_hub_dir() -> Path:
    """torch.hub's directory (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(torch_home) / "hub"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(hf_home) / "hub"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink():  # HF snapshots link into blobs/: count the blobs once
                try:
                    total += file.stat().st_size
                except OSError:
                    pass
    return total


def cached_weights() -> dict:
    """The weights caches and what is in them: torch hub checkpoints, Hugging Face models, and
    the verified ONNX exports that start CPU runs without torch."""
    hub = torch_hub_dir()
    checkpoints = hub / "checkpoints"
    torch_items = sorted(
        ({"name": p.name, "mb": round(p.stat().st_size / 1e6, 1)} for p in checkpoints.iterdir() if p.is_file()),
        key=lambda item: item["name"]) if checkpoints.is_dir() else []
    hf = hf_hub_cache()
    hf_items = []
    if hf.is_dir():
        for entry in sorted(hf.iterdir()):
            if entry.is_dir() and entry.name.startswith(("models--", "datasets--")):
                kind, _, name = entry.name.partition("--")
                hf_items.append({"name": name.replace("--", "/"), "kind": kind[:-1],
                                 "mb": round(_size(entry) / 1e6, 1)})
    bundled = None
    try:
        from videobert_cli.video.models import lite0_weights_file

        lite0 = lite0_weights_file()
        bundled = {"efficientnet-lite0": str(lite0) if lite0 else None}
    except Exception:
        pass
    from videobert_cli.video.export_card import export_cards

    return {
        "torch_hub": {"path": str(hub), "exists": hub.is_dir(), "checkpoints": torch_items},
        "huggingface_hub": {"path": str(hf), "exists": hf.is_dir(), "models": hf_items},
        "bundled": bundled,
        "onnx_exports": export_cards(),
    }


# --- everything ---------------------------------------------------------------------------
def auto_precision(device: str) -> str:
    """What ``--precision auto`` runs at on ``device`` (``cpu`` or ``cuda[:N]``)."""
    return devices.resolve_precision("auto", device)


def doctor_report() -> dict:
    """Everything ``videobert doctor`` shows, as JSON-ready data."""
    from videobert_cli.version import __version__
    from videobert_cli.config import offline_mode

    report: dict = {"videobert_cli": __version__, "python": platform.python_version(),
                    "platform": platform.platform()}
    try:
        import torch

        report["torch"] = torch.__version__
        report["torch_threads"] = torch.get_num_threads()
    except ImportError:
        report["torch"] = None
    native_bf16 = devices.cpu_has_native_bf16()
    report["cpu"] = {
        "model": cpu_model_name(),
        "arch": platform.machine(),
        "cores_available": cpus_available(),
        "cores_total": os.cpu_count(),
        "instruction_sets": cpu_instruction_sets(),
        "torch_capability": torch_cpu_capability(),
        "native_bf16": native_bf16,
        "precision_auto": auto_precision("cpu"),
        "precisions_allowed": ["fp32", "bf16"] if native_bf16 else ["fp32"],
    }
    found_gpus = gpus()
    report["gpus"] = found_gpus
    usable = [gpu for gpu in found_gpus if "error" not in gpu]
    report["device_auto"] = "cuda" if usable else "cpu"
    report["precision_auto"] = auto_precision(report["device_auto"])
    report["decoders"] = {label: package_status(module, dist) for module, dist, label in DECODERS}
    report["runtimes"] = {label: package_status(module, dist) for module, dist, label in RUNTIMES}
    from videobert_cli.video.runtimes import choose_runtime

    # what --model-runtime auto runs an fp32 frame model in on this machine's CPU
    report["model_runtime_auto"] = choose_runtime("auto", device="cpu", precision="fp32", kind="frame")
    report["weights"] = cached_weights()
    report["offline"] = offline_mode()
    return report
