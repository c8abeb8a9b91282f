"""Mixed precision as one context manager, shared by the video, text and fusion encoders."""

from __future__ import annotations

import contextlib

import torch

from videobert_cli.errors import ConfigError

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cuda_has_native_bf16(device: str) -> bool:
    """Whether the GPU ``device`` computes in bf16 (compute capability 8.0 or later).

    ``torch.cuda.is_bf16_supported()`` also says yes for older GPUs, which only emulate bf16:
    slowly, and cuDNN has no bf16 convolutions for them; it also asks the current GPU, not
    ``device``.
    """
    if torch.version.hip:
        return True  # every AMD GPU that torch supports has bf16
    return torch.cuda.get_device_capability(torch.device(device)) >= (8, 0)


def check_precision(precision: str, device: str) -> None:
    """Refuse combinations that cannot run well (fp16 autocast on CPU is slower than fp32,
    bf16 on a GPU older than Ampere is emulated)."""
    if precision == "fp16" and not device.startswith("cuda"):
        raise ConfigError(
            "--precision fp16 needs a CUDA device", hint="on CPU use --precision bf16 or fp32"
        )
    if precision == "bf16" and device.startswith("cuda") and not cuda_has_native_bf16(device):
        major, minor = torch.cuda.get_device_capability(torch.device(device))
        raise ConfigError(
            f"--precision bf16 needs a GPU with bf16 units (compute capability 8.0+); "
            f"{device} has {major}.{minor}",
            hint="use --precision fp16 (the default on CUDA) or fp32",
        )


def autocast(precision: str, device: str):
    """A context in which matmuls/convolutions run at ``precision`` (fp32: no autocast)."""
    if precision in ("fp32", "auto", None):
        return contextlib.nullcontext()
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(device_type, dtype=_AUTOCAST_DTYPES[precision])
