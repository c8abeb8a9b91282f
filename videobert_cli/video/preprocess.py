"""Frame preprocessing that follows the weights' metadata exactly.

Split in two so the cheap-to-ship part can run next to the decoder: :func:`resize_and_crop`
turns decoded uint8 frames into uint8 crops (aspect ratio kept, then centre crop; the same
operations, in the same order and dtype, as torchvision's ``ImageClassification`` preset, or as
transformers' processors for ``method="transformers"``, including their square resize), and
:func:`normalize` turns crops into the float input of the model on its device.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from torchvision.transforms.v2 import functional as TF2

from videobert_cli.video.models import Preprocessing

#: output rows (or columns) per block of the banded resize; each block reads only the input
#: rows its filter taps reach, so the work follows the band instead of the whole matrix.
#: Smaller blocks multiply fewer zero weights but make more calls: per frame, bicubic for
#: EfficientNet-Lite0, 720p 2.96 / 1.95 / 2.51 ms with 32 / 16 / 8 rows, 1080p 5.62 / 4.23 / 5.03
_BLOCK = 16
#: identity rows turned into filter weights at a time (bounds memory for 4K/8K frames)
_WEIGHT_ROWS = 512


def resize_and_crop(frames: np.ndarray | torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 (N, H, W, 3) frames -> uint8 (N, 3, crop, crop) centre crops of the resized frames.

    The result equals torchvision's v1 ``resize`` (float round trip) followed by
    ``center_crop``, up to float rounding (at most one intensity level, on about 1e-5 of the
    pixels), whatever the interpolation.
    """
    batch = torch.as_tensor(frames)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) frames, got {tuple(batch.shape)}")
    if preprocessing.method == "transformers":
        return transformers_resize_and_crop(batch, preprocessing)
    if preprocessing.resize_mode != "short_side":
        raise ValueError(f"resize_mode {preprocessing.resize_mode!r} needs method 'transformers'")
    if preprocessing.interpolation == "bilinear":
        # torchvision's v2 kernels resize uint8 natively (1.2 vs 28 ms per 720p frame against
        # the v1 float round trip), differing by rounding only: at most 1 level, features at
        # cosine 0.9999998. Their uint8 bicubic differs more (up to 8 levels, cosine 0.997
        # for EfficientNet-Lite0), hence the crop plan below for every other interpolation.
        resized = TF2.resize(
            batch.permute(0, 3, 1, 2),
            [preprocessing.resize_size],
            interpolation=InterpolationMode.BILINEAR,
            antialias=preprocessing.antialias,
        )
        return TF.center_crop(resized, [preprocessing.crop_size]).contiguous()
    plan = _crop_plan(int(batch.shape[1]), int(batch.shape[2]), preprocessing)
    if plan is None:
        # the crop is larger than the resized frame: torchvision pads, keep its exact path
        resized = TF.resize(
            batch.permute(0, 3, 1, 2),
            [preprocessing.resize_size],
            interpolation=InterpolationMode(preprocessing.interpolation),
            antialias=preprocessing.antialias,
        )
        return TF.center_crop(resized, [preprocessing.crop_size]).contiguous()
    return plan.apply(batch)


def transformers_resize_and_crop(batch: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, 3, S, S) as transformers' torchvision-backend processors.

    Those processors (every ``*ImageProcessor`` and ``*VideoProcessor`` of transformers 5 by
    default) call torchvision's v2 ``resize`` on the uint8 images with ``antialias=True`` (the
    short side, or an exact height and width), then crop at offsets ``int((size - crop) / 2)``
    (rounded down, where torchvision's own ``center_crop`` rounds to nearest), padding with
    zeros when the crop is larger. The same kernel on the same uint8 input gives the same
    pixels (tests/test_hf_models.py holds it to the processor).
    """
    images = batch.permute(0, 3, 1, 2)
    height, width = int(images.shape[-2]), int(images.shape[-1])
    crop = preprocessing.crop_size
    if preprocessing.resize_mode == "square":
        size = [crop, crop]
    else:
        size = list(resized_size(height, width, preprocessing.resize_size))
    resized = TF2.resize(
        images, size, interpolation=InterpolationMode(preprocessing.interpolation),
        antialias=preprocessing.antialias,
    )
    if preprocessing.resize_mode == "square":
        return resized.contiguous()
    out_height, out_width = int(resized.shape[-2]), int(resized.shape[-1])
    if crop > out_height or crop > out_width:
        pad_w, pad_h = max(crop - out_width, 0), max(crop - out_height, 0)
        resized = TF2.pad(resized, [pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2], fill=0)
        out_height, out_width = int(resized.shape[-2]), int(resized.shape[-1])
    top, left = int((out_height - crop) / 2.0), int((out_width - crop) / 2.0)
    return resized[..., top : top + crop, left : left + crop].contiguous()


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after scaling the short side to ``short_side``, as torchvision computes it."""
    if width <= height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


@dataclass(frozen=True)
class _Band:
    """Output positions ``[out_start, out_stop)`` of the crop read inputs ``[in_start, in_stop)``."""

    out_start: int
    out_stop: int
    in_start: int
    in_stop: int
    weights: torch.Tensor  # (out_stop - out_start, in_stop - in_start), float32


def _axis_bands(in_size: int, out_size: int, crop_start: int, crop_size: int, preprocessing: Preprocessing) -> list[_Band]:
    """Filter weights of one axis, restricted to the cropped outputs, split into bands.

    The weights are torch's own: interpolating identity rows along this axis gives, row by
    row, the weight of each input position in every output (the other axis keeps its size,
    where every interpolation is the identity). So the separable matrix product below
    computes what ``interpolate`` computes, without resizing the parts the crop drops.
    """
    mode = preprocessing.interpolation
    antialias = preprocessing.antialias and mode in ("bilinear", "bicubic")
    columns = []
    for start in range(0, in_size, _WEIGHT_ROWS):
        stop = min(start + _WEIGHT_ROWS, in_size)
        rows = torch.zeros(1, 1, stop - start, in_size)
        rows[0, 0, torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        if antialias:
            kwargs["antialias"] = True
        weights = torch.nn.functional.interpolate(rows, size=(stop - start, out_size), mode=mode, **kwargs)
        columns.append(weights[0, 0, :, crop_start : crop_start + crop_size].T)
    matrix = torch.cat(columns, dim=1)  # (crop_size, in_size)
    bands = []
    for out_start in range(0, crop_size, _BLOCK):
        out_stop = min(out_start + _BLOCK, crop_size)
        block = matrix[out_start:out_stop]
        used = torch.nonzero(block.abs().sum(0)).flatten()
        in_start, in_stop = int(used.min()), int(used.max()) + 1
        bands.append(_Band(out_start, out_stop, in_start, in_stop, block[:, in_start:in_stop].contiguous()))
    return bands


class _CropPlan:
    """Resize + centre crop of (H, W) frames as two banded matrix products, in float32."""

    def __init__(self, height: int, width: int, preprocessing: Preprocessing):
        crop = preprocessing.crop_size
        out_height, out_width = resized_size(height, width, preprocessing.resize_size)
        top = int(round((out_height - crop) / 2.0))
        left = int(round((out_width - crop) / 2.0))
        self.crop = crop
        rows = _axis_bands(height, out_height, top, crop, preprocessing)
        cols = _axis_bands(width, out_width, left, crop, preprocessing)
        # only this window of the frame reaches the crop
        self.row_start, self.row_stop = min(b.in_start for b in rows), max(b.in_stop for b in rows)
        self.col_start, self.col_stop = min(b.in_start for b in cols), max(b.in_stop for b in cols)
        self.row_bands = [(b.out_start, b.out_stop, b.in_start - self.row_start, b.in_stop - self.row_start, b.weights)
                          for b in rows]
        self.col_bands = [(b.out_start, b.out_stop, b.in_start - self.col_start, b.in_stop - self.col_start,
                           b.weights.T.contiguous()) for b in cols]

    def apply(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> uint8 (N, 3, crop, crop)."""
        crop = self.crop
        height = self.row_stop - self.row_start
        width = self.col_stop - self.col_start
        # one frame at a time through reused buffers: the window of a 1080p frame in float is
        # 12 MB, a batch of them would be hundreds of fresh (page-faulting) megabytes
        window = torch.empty(height, width, 3)
        vertical = torch.empty(crop, width * 3)
        transposed = torch.empty(crop, 3, width)
        horizontal = torch.empty(crop, 3, crop)
        out = torch.empty(frames.shape[0], 3, crop, crop, dtype=torch.uint8)
        for index in range(frames.shape[0]):
            window.copy_(frames[index, self.row_start : self.row_stop, self.col_start : self.col_stop])
            flat_window = window.view(height, width * 3)
            for out_start, out_stop, in_start, in_stop, weights in self.row_bands:
                torch.matmul(weights, flat_window[in_start:in_stop], out=vertical[out_start:out_stop])
            transposed.copy_(vertical.view(crop, width, 3).permute(0, 2, 1))
            flat = transposed.view(crop * 3, width)
            flat_out = horizontal.view(crop * 3, crop)
            for out_start, out_stop, in_start, in_stop, weights in self.col_bands:
                torch.matmul(flat[:, in_start:in_stop], weights, out=flat_out[:, out_start:out_stop])
            # bicubic overshoots past 0 and 255; torchvision clamps before the uint8 cast too
            out[index].copy_(horizontal.round_().clamp_(0, 255).permute(1, 0, 2))
        return out


@functools.lru_cache(maxsize=16)
def _crop_plan(height: int, width: int, preprocessing: Preprocessing) -> _CropPlan | None:
    out_height, out_width = resized_size(height, width, preprocessing.resize_size)
    if preprocessing.crop_size > min(out_height, out_width):
        return None
    return _CropPlan(height, width, preprocessing)


def normalize(
    crops: torch.Tensor,
    preprocessing: Preprocessing,
    *,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 (N, 3, S, S) crops -> float32 normalised model input on ``device``."""
    non_blocking = crops.is_pinned()
    batch = crops.to(device, non_blocking=non_blocking).float().div_(255.0)
    mean = torch.tensor(preprocessing.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, device=batch.device).view(1, 3, 1, 1)
    batch = batch.sub_(mean).div_(std)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch
