"""Runs a loaded frame model over batches of preprocessed crops."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from videobert_cli.memory import release_freed_memory
from videobert_cli.devices import autocast, check_precision
from videobert_cli.video.export_card import write_card
from videobert_cli.video.models import LoadedVideoModel
from videobert_cli.video.preprocess import normalize, normalize_array
from videobert_cli.video.runtimes import build_runner

if TYPE_CHECKING:  # torch is imported where it runs: ONNX Runtime from a card needs none
    import torch
    from torch import nn


class FrameEncoder:
    """Holds one video model on one device and turns uint8 crops into feature rows."""

    def __init__(self, model: LoadedVideoModel, *, device: str = "cpu", precision: str = "fp32",
                 model_runtime: str = "auto", reload: Callable[[], nn.Module] | None = None,
                 card=None, card_path: Path | None = None):
        """``reload`` builds ``model.module`` again: given, ONNX Runtime's session is built after
        torch's weights are freed (see :func:`videobert_cli.video.runtimes.onnx_runner`).
        ``card``: the :class:`~videobert_cli.video.export_card.ExportCard` that stands in for an
        unbuilt module (``model.module`` None); ``card_path``: where to write the card of a
        verified export."""
        check_precision(precision, device)
        self.model = model
        self.device = device
        self.precision = precision

        def remember(export_key: str, reference) -> None:
            if card_path is not None:
                write_card(card_path, model, export_key, reference)

        # channels-last (NHWC) for every frame model run by torch: oneDNN's and cuDNN's fastest
        # convolutions want it; on the CPU at fp32 too (the same arithmetic in another order).
        # On the CPU at fp32, ONNX Runtime by default (video/runtimes.py). Clip models (5-D
        # input) keep torch and the default layout.
        module = model.module.to(device).eval() if model.module is not None else None
        self.runner = build_runner(module, asked=model_runtime, device=device, precision=precision,
                                   kind=model.kind, crop_size=model.preprocessing.crop_size, reload=reload,
                                   card=card, remember=remember)
        if device.startswith("cuda"):
            import torch

            torch.backends.cudnn.benchmark = True

    @property
    def runtime(self) -> str:
        """What runs the model, e.g. ``onnxruntime 1.32.0`` or ``torch 2.14.1``."""
        return self.runner.name

    @property
    def feature_dim(self) -> int:
        return self.model.feature_dim

    def encode(self, crops: torch.Tensor | np.ndarray) -> np.ndarray:
        """uint8 crops -> float32 (N, feature_dim) features.

        Frame models take (N, 3, S, S); clip models take (N, T, 3, S, S) and see
        (N, 3, T, S, S), torchvision's video layout.
        """
        if len(crops) == 0:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        if self.runner.in_torch:
            features = self._encode_in_torch(crops)
        else:  # ONNX Runtime: frame models on the CPU, arrays in and out
            features = self.runner.run(normalize_array(crops, self.model.preprocessing))
        if self.device == "cpu":
            # the forward's activations (~0.45 GB for EfficientNet-Lite0 at batch 32) were
            # freed into glibc's heaps; left there, fragmentation made a long run's peak RSS
            # creep up with the number of batches
            release_freed_memory()
        return features

    def _encode_in_torch(self, crops) -> np.ndarray:
        import torch

        crops = torch.as_tensor(crops)
        if self.device.startswith("cuda"):
            crops = crops.pin_memory()  # lets the host-to-device copy run asynchronously
        with torch.inference_mode(), autocast(self.precision, self.device):
            if crops.ndim == 5:
                clips, frames = crops.shape[:2]
                batch = normalize(crops.flatten(0, 1), self.model.preprocessing, device=self.device)
                batch = batch.view(clips, frames, *batch.shape[1:]).permute(0, 2, 1, 3, 4)
            else:
                batch = normalize(
                    crops, self.model.preprocessing, device=self.device, channels_last=self.runner.channels_last
                )
            return self.runner.run(batch)
