"""Video models from transformers: ``--video-model hf:<hub name or local directory>``.

Image-text models (CLIP, SigLIP, fixed-resolution SigLIP2) are frame models whose feature is
``get_image_features``: the projected embedding in the space their text tower shares
(:mod:`videobert_cli.aligned`). Video models (VideoMAE) are clip models taking clips of as many
frames as their config's ``num_frames``; their feature is the pooled activation before the
classifier (fine-tuned checkpoints) or the mean of the last hidden states (pretrained ones).

Preprocessing is read from the model's own image or video processor configuration (size, crop,
resample, rescale, mean/std) and computed as transformers' torchvision backend computes it
(``method="transformers"`` in :func:`videobert_cli.video.preprocess.resize_and_crop`).
"""

from __future__ import annotations

import torch
from torch import nn

from videobert_cli.config import VideoModelConfig
from videobert_cli.errors import ConfigError
from videobert_cli.hf_hub import (
    HF_PREFIX,
    IMAGE_TEXT_TYPES,
    VIDEO_TYPES,
    freeze,
    from_pretrained,
    hf_location,
    local_config,
    pooled,
    require_config,
    weights_available,
    weights_identity,
)
from videobert_cli.video.models import (
    LoadedVideoModel,
    Preprocessing,
    VideoModelEntry,
    register_video_model_prefix,
)


class ImageFeatures(nn.Module):
    """(B, 3, S, S) normalised frames -> (B, D) ``get_image_features`` of an image-text model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pooled(self.model.get_image_features(pixel_values=pixel_values))


class ClipFeatures(nn.Module):
    """(B, 3, T, S, S) clips (torchvision's layout) -> (B, D) pooled video-model features."""

    def __init__(self, model: nn.Module, num_frames: int, name: str, pool_mean: bool):
        super().__init__()
        self.model = model
        self.num_frames = num_frames
        self.name = name
        self.pool_mean = pool_mean  # a pretrained backbone: mean of the last hidden states

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.shape[2] != self.num_frames:
            raise ConfigError(
                f"{self.name} takes clips of {self.num_frames} frames (as its config sets), "
                f"got {clips.shape[2]}",
                field="clip_len",
                hint=f"set clip_len to {self.num_frames}",
            )
        pixel_values = clips.permute(0, 2, 1, 3, 4)  # transformers' video layout: (B, T, 3, S, S)
        output = self.model(pixel_values=pixel_values)
        if self.pool_mean:
            return output.last_hidden_state.mean(dim=1)
        return output.logits  # the classifier was replaced by the identity


def _size_value(size, key: str):
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def preprocessing_from_processor(processor, name: str) -> Preprocessing:
    """The :class:`Preprocessing` that reproduces ``processor`` (an image or video processor)."""
    from transformers.image_processing_backends import TorchvisionBackend
    from torchvision.transforms import InterpolationMode
    from transformers.image_utils import PILImageResampling, pil_torch_interpolation_mapping

    if not isinstance(processor, TorchvisionBackend):
        raise ConfigError(f"{name}: processor {type(processor).__name__} is not a torchvision-backend processor",
                          hint="save the model with transformers' default (torchvision) processor")
    if not getattr(processor, "do_resize", True):
        raise ConfigError(f"{name}: its processor does not resize; frames need one fixed size")
    size, crop = processor.size, getattr(processor, "crop_size", None)
    shortest, longest = _size_value(size, "shortest_edge"), _size_value(size, "longest_edge")
    height, width = _size_value(size, "height"), _size_value(size, "width")
    do_crop = bool(getattr(processor, "do_center_crop", False))
    crop_height = _size_value(crop, "height") if crop is not None else None
    crop_width = _size_value(crop, "width") if crop is not None else None
    if shortest and not longest and do_crop and crop_height and crop_height == crop_width:
        mode, resize_size, crop_size = "short_side", shortest, crop_height
    elif height and height == width and (not do_crop or (crop_height, crop_width) == (height, width)):
        mode, resize_size, crop_size = "square", height, height
    else:
        raise ConfigError(f"{name}: processor size {dict(size)} with crop {crop} is not supported",
                          hint="supported: shortest_edge + square centre crop (CLIP), or a square size (SigLIP)")
    factor = float(getattr(processor, "rescale_factor", 1 / 255))
    if not processor.do_rescale or abs(factor - 1 / 255) > 1e-12:
        raise ConfigError(f"{name}: processor rescales by {factor if processor.do_rescale else 1}, not 1/255")
    if processor.do_normalize:
        mean = tuple(float(v) for v in processor.image_mean)
        std = tuple(float(v) for v in processor.image_std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    resample = processor.resample
    if not isinstance(resample, InterpolationMode):
        resample = pil_torch_interpolation_mapping[PILImageResampling(resample)]
    interpolation = resample
    return Preprocessing(
        resize_size=resize_size, crop_size=crop_size, mean=mean, std=std,
        interpolation=interpolation.value, antialias=True,  # transformers' resize default
        resize_mode=mode, method="transformers",
    )


def _kind_of(model_type: str | None, name: str) -> str:
    if model_type in IMAGE_TEXT_TYPES:
        return "frame"
    if model_type in VIDEO_TYPES:
        return "clip"
    if model_type == "siglip2":
        raise ConfigError(f"{name} is a NaFlex SigLIP2 checkpoint (patch sequences, not fixed-size frames)",
                          hint="use a fixed-resolution one, e.g. hf:google/siglip2-base-patch16-224")
    raise ConfigError(f"{name}: model_type {model_type!r} is not supported as a video model",
                      hint=f"supported: {', '.join(IMAGE_TEXT_TYPES + VIDEO_TYPES)}")


def feature_dim_of(config: dict, model_type: str) -> int:
    """Feature size from a config dict: CLIP's projection, SigLIP's vision width, VideoMAE's width."""
    if model_type == "clip":
        return int(config.get("projection_dim", 512))
    if model_type == "siglip":
        return int(config.get("vision_config", {}).get("hidden_size", 768))
    return int(config.get("hidden_size", 768))


def _random_or_pretrained(loader, name: str, config: VideoModelConfig):
    if config.weights == "none":
        from transformers import AutoConfig

        model_config = from_pretrained(AutoConfig, name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return loader.from_config(model_config), f"none (random init, seed {config.seed})", ""
    if config.weights != "default":
        raise ConfigError(f"{name} takes weights default or none, got {config.weights!r}", field="weights",
                          hint="name another checkpoint as hf:<name or directory> instead")
    model = from_pretrained(loader, name)
    return (model, *weights_identity(name, model))


def load_image_text_processor_and_model(name: str, config: VideoModelConfig | None = None):
    """(model, preprocessing, weights name, sha256) of an image-text ``hf:`` model."""
    from transformers import AutoImageProcessor, AutoModel

    config = config or VideoModelConfig(name=name)
    processor = from_pretrained(AutoImageProcessor, name)
    preprocessing = preprocessing_from_processor(processor, name)
    model, weights_name, sha256 = _random_or_pretrained(AutoModel, name, config)
    return freeze(model), preprocessing, weights_name, sha256


def _load(config: VideoModelConfig) -> LoadedVideoModel:
    name = config.name
    _, model_config = require_config(name)
    model_type = model_config.get("model_type")
    kind = _kind_of(model_type, name)
    if kind == "frame":
        model, preprocessing, weights_name, sha256 = load_image_text_processor_and_model(name, config)
        return LoadedVideoModel(
            name=name, module=ImageFeatures(model), feature_dim=feature_dim_of(model_config, model_type),
            feature_layer="get_image_features (projected image embedding, image-text space)",
            preprocessing=preprocessing, weights_name=weights_name, weights_sha256=sha256, kind="frame",
        )
    from transformers import AutoModel, AutoVideoProcessor, VideoMAEForVideoClassification

    preprocessing = preprocessing_from_processor(from_pretrained(AutoVideoProcessor, name), name)
    classifier = "VideoMAEForVideoClassification" in (model_config.get("architectures") or [])
    loader = VideoMAEForVideoClassification if classifier else AutoModel
    model, weights_name, sha256 = _random_or_pretrained(loader, name, config)
    if classifier:
        model.classifier = nn.Identity()
        layer = "input of classifier (fc_norm of the mean token; penultimate, pooled)"
    else:
        layer = "mean of last_hidden_state over tokens"
    num_frames = int(model_config.get("num_frames", 16))
    return LoadedVideoModel(
        name=name, module=ClipFeatures(freeze(model), num_frames, name, pool_mean=not classifier),
        feature_dim=feature_dim_of(model_config, model_type), feature_layer=layer,
        preprocessing=preprocessing, weights_name=weights_name, weights_sha256=sha256, kind="clip",
        clip_len=num_frames,
    )


def hf_video_entry(name: str) -> VideoModelEntry:
    """The registry entry of ``hf:<name>`` (kind and size from the local config, if any)."""
    location = hf_location(name)
    config = local_config(location)
    model_type = None if config is None else config.get("model_type")
    kind = _kind_of(model_type, name) if model_type is not None else "frame"

    def feature_dim() -> int:
        _, loaded_config = require_config(name)
        _kind_of(loaded_config.get("model_type"), name)  # refuses unsupported types
        return feature_dim_of(loaded_config, loaded_config.get("model_type"))

    return VideoModelEntry(
        name=name,
        description=f"transformers {model_type or 'model'} from {location}",
        load=_load,
        weights_available=lambda weights: weights_available(location),
        feature_dim=feature_dim,
        kind=kind,
    )


register_video_model_prefix(HF_PREFIX, hf_video_entry)
