"""Runs a loaded frame model over batches of preprocessed crops."""

from __future__ import annotations

import numpy as np
import torch

from videobert_cli.memory import release_freed_memory
from videobert_cli.devices import autocast, check_precision
from videobert_cli.video.models import LoadedVideoModel
from videobert_cli.video.preprocess import normalize


class FrameEncoder:
    """Holds one video model on one device and turns uint8 crops into feature rows."""

    def __init__(self, model: LoadedVideoModel, *, device: str = "cpu", precision: str = "fp32"):
        check_precision(precision, device)
        self.model = model
        self.device = device
        self.precision = precision
        # channels-last (NHWC) for every frame model: oneDNN's and cuDNN's fastest convolutions
        # want it. On the CPU at fp32 too: the same arithmetic in another order (features equal
        # to the default layout's to ~1e-5; ResNet-50 1.36x, EfficientNet-Lite0 1.26x faster on
        # an AVX2 EPYC, docs/benchmarks.md). Clip models (5-D input) keep the default layout.
        self.channels_last = model.kind == "frame"
        module = model.module.to(device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module.eval()
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True

    @property
    def feature_dim(self) -> int:
        return self.model.feature_dim

    def encode(self, crops: torch.Tensor) -> np.ndarray:
        """uint8 crops -> float32 (N, feature_dim) features.

        Frame models take (N, 3, S, S); clip models take (N, T, 3, S, S) and see
        (N, 3, T, S, S), torchvision's video layout.
        """
        if crops.shape[0] == 0:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        if self.device.startswith("cuda"):
            crops = crops.pin_memory()  # lets the host-to-device copy run asynchronously
        with torch.inference_mode(), autocast(self.precision, self.device):
            if crops.ndim == 5:
                clips, frames = crops.shape[:2]
                batch = normalize(crops.flatten(0, 1), self.model.preprocessing, device=self.device)
                batch = batch.view(clips, frames, *batch.shape[1:]).permute(0, 2, 1, 3, 4)
            else:
                batch = normalize(
                    crops, self.model.preprocessing, device=self.device, channels_last=self.channels_last
                )
            features = self.module(batch)
        features = features.float().cpu().numpy()
        del batch
        if self.device == "cpu":
            # the forward's activations (~0.45 GB for EfficientNet-Lite0 at batch 32) were
            # freed into glibc's heaps; left there, fragmentation made a long run's peak RSS
            # creep up with the number of batches
            release_freed_memory()
        return features
