"""Frame preprocessing that follows the weights' metadata exactly.

Split in two so the cheap-to-ship part can run next to the decoder: :func:`resize_and_crop`
turns decoded uint8 frames into uint8 crops (aspect ratio kept, then centre crop; the same
operations, in the same order and dtype, as torchvision's ``ImageClassification`` preset, or as
transformers' processors for ``method="transformers"``, including their square resize), and
:func:`normalize` turns crops into the float input of the model on its device. The antialiased
resizes of the torchvision presets run in numpy, so a decode process never imports torch.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from videobert_cli.errors import ConfigError

#: output rows (or columns) per block of the banded resize; each block reads only the input
#: rows its filter taps reach, so the work follows the band instead of the whole matrix.
#: Smaller blocks multiply fewer zero weights but make more calls: per frame, bicubic for
#: EfficientNet-Lite0, 720p 2.96 / 1.95 / 2.51 ms with 32 / 16 / 8 rows, 1080p 5.62 / 4.23 / 5.03
_BLOCK = 16
#: resize modes: scale the short side to ``resize_size`` then centre-crop (torchvision presets,
#: CLIP), or resize to exactly ``crop_size`` x ``crop_size`` with no crop (SigLIP)
RESIZE_MODES = ("short_side", "square")
#: how the resize is computed: "torchvision" as torchvision's classification presets (v1 float
#: resize, crop offsets rounded), "transformers" as transformers' torchvision backend (v2 resize
#: of the uint8 frames, crop offsets rounded down)
RESIZE_METHODS = ("torchvision", "transformers")
#: fields added after models were first fingerprinted, with the default they had implicitly
_LATER_FIELDS = {"resize_mode": "short_side", "method": "torchvision"}
#: antialiased filters: (half-width of the kernel in input pixels at scale 1, kernel on float32
#: |x|); torch's ``interpolate(..., antialias=True)`` (and PIL) use these, bicubic with a = -0.5
_A = np.float32(-0.5)
_AA_FILTERS = {
    "bilinear": (1.0, lambda x: np.maximum(np.float32(1) - x, np.float32(0))),
    "bicubic": (2.0, lambda x: np.where(
        x < 1, ((_A + 2) * x - (_A + 3)) * x * x + 1,
        np.where(x < 2, ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A, np.float32(0)))),
}


@dataclass(frozen=True)
class Preprocessing:
    """Resize (short side + centre crop, or to an exact square), then normalise."""

    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # torchvision InterpolationMode value
    antialias: bool = True
    resize_mode: str = "short_side"
    method: str = "torchvision"

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.method not in RESIZE_METHODS:
            raise ConfigError(f"method must be one of {RESIZE_METHODS}, got {self.method!r}")

    def to_dict(self) -> dict:
        # Later fields are stored only when they differ from their default, so the identity
        # (and run fingerprints) of the models that existed before them stay byte-identical.
        values = asdict(self)
        for key, default in _LATER_FIELDS.items():
            if values[key] == default:
                del values[key]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        """The inverse of :meth:`to_dict` (JSON's lists back to tuples)."""
        return cls(**{**values, "mean": tuple(values["mean"]), "std": tuple(values["std"])})


def resize_and_crop(frames, preprocessing: Preprocessing) -> np.ndarray:
    """uint8 (N, H, W, 3) frames -> uint8 (N, 3, crop, crop) centre crops of the resized frames.

    The result equals torchvision's v1 ``resize`` (float round trip) followed by
    ``center_crop``, up to float rounding (at most one intensity level, on about 1e-5 of the
    pixels). Antialiased bilinear and bicubic (every torchvision preset) run as numpy matrix
    products; other interpolations, crops larger than the frame and ``method="transformers"``
    run torchvision's own kernels.
    """
    batch = np.asarray(frames)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) frames, got {tuple(batch.shape)}")
    if preprocessing.method == "transformers":
        return transformers_resize_and_crop(batch, preprocessing)
    if preprocessing.resize_mode != "short_side":
        raise ValueError(f"resize_mode {preprocessing.resize_mode!r} needs method 'transformers'")
    plan = _crop_plan(int(batch.shape[1]), int(batch.shape[2]), preprocessing)
    if plan is None:
        return _torchvision_resize_and_crop(batch, preprocessing)
    return plan.apply(batch)


def _torchvision_resize_and_crop(batch: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """torchvision's v1 resize and centre crop (it pads a crop larger than the resized frame)."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    resized = TF.resize(
        torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2),
        [preprocessing.resize_size],
        interpolation=InterpolationMode(preprocessing.interpolation),
        antialias=preprocessing.antialias,
    )
    return TF.center_crop(resized, [preprocessing.crop_size]).contiguous().numpy()


def transformers_resize_and_crop(batch: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, 3, S, S) as transformers' torchvision-backend processors.

    Those processors (every ``*ImageProcessor`` and ``*VideoProcessor`` of transformers 5 by
    default) call torchvision's v2 ``resize`` on the uint8 images with ``antialias=True`` (the
    short side, or an exact height and width), then crop at offsets ``int((size - crop) / 2)``
    (rounded down, where torchvision's own ``center_crop`` rounds to nearest), padding with
    zeros when the crop is larger. The same kernel on the same uint8 input gives the same
    pixels (tests/test_hf_models.py holds it to the processor).
    """
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF2

    images = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
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
        return resized.contiguous().numpy()
    out_height, out_width = int(resized.shape[-2]), int(resized.shape[-1])
    if crop > out_height or crop > out_width:
        pad_w, pad_h = max(crop - out_width, 0), max(crop - out_height, 0)
        resized = TF2.pad(resized, [pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2], fill=0)
        out_height, out_width = int(resized.shape[-2]), int(resized.shape[-1])
    top, left = int((out_height - crop) / 2.0), int((out_width - crop) / 2.0)
    return resized[..., top : top + crop, left : left + crop].contiguous().numpy()


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after scaling the short side to ``short_side``, as torchvision computes it."""
    if width <= height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def antialias_weights(in_size: int, out_size: int, interpolation: str) -> np.ndarray:
    """(out_size, in_size) float32 weights of torch's antialiased 1-D resize (``align_corners=False``).

    As ``interpolate(..., antialias=True)`` computes them, in float32 where it does: output ``i``
    is centred on input ``scale * (i + 0.5)`` with ``scale = in / out``; when shrinking, the
    kernel is stretched by ``scale`` (that is the antialiasing); its taps are cut to the frame
    and renormalised.
    """
    f32 = np.float32
    half_width, kernel = _AA_FILTERS[interpolation]
    scale = f32(in_size) / f32(out_size)
    support = f32(half_width * float(scale)) if scale >= 1 else f32(half_width)
    inverse = f32(1.0 / float(scale)) if scale >= 1 else f32(1)
    weights = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        center = f32(float(scale) * (i + 0.5))
        first = max(int(float(center - support) + 0.5), 0)
        stop = min(int(float(center + support) + 0.5), in_size)
        offsets = np.arange(first, stop, dtype=np.float32) - center  # float32, as torch's
        taps = kernel(np.abs(((offsets.astype(np.float64) + 0.5) * float(inverse)).astype(np.float32)))
        total = f32(0)
        for tap in taps:  # torch sums in order
            total = f32(total + tap)
        weights[i, first:stop] = taps / total if total != 0 else taps
    return weights


@dataclass(frozen=True)
class _Band:
    """Output positions ``[out_start, out_stop)`` of the crop read inputs ``[in_start, in_stop)``."""

    out_start: int
    out_stop: int
    in_start: int
    in_stop: int
    weights: np.ndarray  # (out_stop - out_start, in_stop - in_start), float32


def _axis_bands(in_size: int, out_size: int, crop_start: int, crop_size: int, interpolation: str) -> list[_Band]:
    """Filter weights of one axis, restricted to the cropped outputs, split into bands."""
    matrix = antialias_weights(in_size, out_size, interpolation)[crop_start : crop_start + crop_size]
    bands = []
    for out_start in range(0, crop_size, _BLOCK):
        out_stop = min(out_start + _BLOCK, crop_size)
        block = matrix[out_start:out_stop]
        used = np.flatnonzero(np.abs(block).sum(0))
        in_start, in_stop = int(used.min()), int(used.max()) + 1
        bands.append(_Band(out_start, out_stop, in_start, in_stop, np.ascontiguousarray(block[:, in_start:in_stop])))
    return bands


class _CropPlan:
    """Resize + centre crop of (H, W) frames as two banded matrix products, in float32."""

    def __init__(self, height: int, width: int, preprocessing: Preprocessing):
        crop = preprocessing.crop_size
        out_height, out_width = resized_size(height, width, preprocessing.resize_size)
        top = int(round((out_height - crop) / 2.0))
        left = int(round((out_width - crop) / 2.0))
        self.crop = crop
        rows = _axis_bands(height, out_height, top, crop, preprocessing.interpolation)
        cols = _axis_bands(width, out_width, left, crop, preprocessing.interpolation)
        # only this window of the frame reaches the crop
        self.row_start, self.row_stop = min(b.in_start for b in rows), max(b.in_stop for b in rows)
        self.col_start, self.col_stop = min(b.in_start for b in cols), max(b.in_stop for b in cols)
        self.row_bands = [(b.out_start, b.out_stop, b.in_start - self.row_start, b.in_stop - self.row_start, b.weights)
                          for b in rows]
        self.col_bands = [(b.out_start, b.out_stop, b.in_start - self.col_start, b.in_stop - self.col_start, b.weights)
                          for b in cols]

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> uint8 (N, 3, crop, crop)."""
        crop = self.crop
        height = self.row_stop - self.row_start
        width = self.col_stop - self.col_start
        # one frame at a time through reused buffers: the window of a 1080p frame in float is
        # 12 MB, a batch of them would be hundreds of fresh (page-faulting) megabytes
        window = np.empty((height, width, 3), np.float32)
        flat_window = window.reshape(height, width * 3)
        vertical = np.empty((crop, width, 3), np.float32)
        flat_vertical = vertical.reshape(crop, width * 3)
        columns = np.empty((width, crop, 3), np.float32)  # the vertical pass, columns first
        flat_columns = columns.reshape(width, crop * 3)
        horizontal = np.empty((crop, crop, 3), np.float32)  # (x, y, channel)
        flat_horizontal = horizontal.reshape(crop, crop * 3)
        out = np.empty((frames.shape[0], 3, crop, crop), np.uint8)
        for index in range(frames.shape[0]):
            np.copyto(window, frames[index, self.row_start : self.row_stop, self.col_start : self.col_stop],
                      casting="unsafe")
            for out_start, out_stop, in_start, in_stop, weights in self.row_bands:
                np.matmul(weights, flat_window[in_start:in_stop], out=flat_vertical[out_start:out_stop])
            np.copyto(columns, vertical.transpose(1, 0, 2))
            for out_start, out_stop, in_start, in_stop, weights in self.col_bands:
                np.matmul(weights, flat_columns[in_start:in_stop], out=flat_horizontal[out_start:out_stop])
            # bicubic overshoots past 0 and 255; torchvision clamps before the uint8 cast too
            np.rint(horizontal, out=horizontal)
            np.clip(horizontal, 0, 255, out=horizontal)
            np.copyto(out[index], horizontal.transpose(2, 1, 0), casting="unsafe")
        return out


@functools.lru_cache(maxsize=16)
def _crop_plan(height: int, width: int, preprocessing: Preprocessing) -> _CropPlan | None:
    """The numpy plan, or None where torchvision's own kernels are needed: another
    interpolation, no antialiasing, or a crop larger than the resized frame (torchvision pads)."""
    if preprocessing.interpolation not in _AA_FILTERS or not preprocessing.antialias:
        return None
    out_height, out_width = resized_size(height, width, preprocessing.resize_size)
    if preprocessing.crop_size > min(out_height, out_width):
        return None
    return _CropPlan(height, width, preprocessing)


def normalize(crops, preprocessing: Preprocessing, *, device="cpu", channels_last: bool = False):
    """uint8 (N, 3, S, S) crops (array or tensor) -> float32 normalised model input (a tensor) on ``device``."""
    import torch

    crops = torch.as_tensor(crops)
    non_blocking = crops.is_pinned()
    batch = crops.to(device, non_blocking=non_blocking).float().div_(255.0)
    mean = torch.tensor(preprocessing.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, device=batch.device).view(1, 3, 1, 1)
    batch = batch.sub_(mean).div_(std)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def normalize_array(crops, preprocessing: Preprocessing) -> np.ndarray:
    """:func:`normalize` in numpy, for a runtime that takes arrays: the same float32 operations
    in the same order, so the same input to the model."""
    batch = np.asarray(crops).astype(np.float32)
    batch /= np.float32(255.0)
    batch -= np.asarray(preprocessing.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    batch /= np.asarray(preprocessing.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return batch
