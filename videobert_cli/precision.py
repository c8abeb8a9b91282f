"""Mixed precision as one context manager, shared by the video, text and fusion encoders."""

from __future__ import annotations

import contextlib

import torch

from videobert_cli.errors import ConfigError

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: str) -> None:
    """Refuse combinations that cannot run well (fp16 autocast on CPU is slower than fp32)."""
    if precision == "fp16" and not device.startswith("cuda"):
        raise ConfigError(
            "--precision fp16 needs a CUDA device", hint="on CPU use --precision bf16 or fp32"
        )


def autocast(precision: str, device: str):
    """A context in which matmuls/convolutions run at ``precision`` (fp32: no autocast)."""
    if precision in ("fp32", "auto", None):
        return contextlib.nullcontext()
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(device_type, dtype=_AUTOCAST_DTYPES[precision])
