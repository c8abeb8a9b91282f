"""Aligned image-text encoders: text queries and images in the space of ``hf:`` frame features.

Frame features written with ``--video-model hf:<CLIP or SigLIP>`` are ``get_image_features``
(unnormalised). :func:`embed_text_queries` gives ``get_text_features`` of the same model and
:func:`embed_images` the image side again, both L2-normalised, so a cosine score between a
query and stored frames is a dot product after normalising the frames.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from videobert_cli.errors import ConfigError
from videobert_cli.hf_hub import (
    IMAGE_TEXT_TYPES,
    hf_location,
    is_hf_name,
    is_local_dir,
    local_config,
    pooled,
    require_config,
)
from videobert_cli.text.hf import load_text_tower, padding_rule, text_max_length
from videobert_cli.video.hf import load_image_text_processor_and_model
from videobert_cli.video.preprocess import normalize, resize_and_crop

__all__ = ["is_aligned_pair", "embed_text_queries", "embed_images"]


def _same_location(first: str, second: str) -> bool:
    if is_local_dir(first) and is_local_dir(second):
        return Path(first).expanduser().resolve() == Path(second).expanduser().resolve()
    return first.rstrip("/") == second.rstrip("/")


def is_aligned_pair(video_model_name: str, text_model_name: str | None) -> bool:
    """Whether both names are the same ``hf:`` image-text model (CLIP/SigLIP family).

    Decided from the names and the model's local config only; never downloads (a model whose
    config is not on this machine is not known to be aligned: False).
    """
    if not (is_hf_name(video_model_name) and is_hf_name(text_model_name)):
        return False
    video_location, text_location = hf_location(video_model_name), hf_location(str(text_model_name))
    if not _same_location(video_location, text_location):
        return False
    config = local_config(video_location)
    return config is not None and config.get("model_type") in IMAGE_TEXT_TYPES


def _require_image_text(model_name: str) -> str:
    if not is_hf_name(model_name):
        raise ConfigError(f"{model_name!r} is not an aligned image-text model",
                          hint="aligned encoders are named hf:<CLIP or SigLIP model>")
    _, config = require_config(model_name)  # ModelUnavailableError when not here and offline
    model_type = config.get("model_type")
    if model_type not in IMAGE_TEXT_TYPES:
        raise ConfigError(f"{model_name!r} ({model_type}) is not an aligned image-text model",
                          hint=f"aligned model types: {', '.join(IMAGE_TEXT_TYPES)}")
    return model_type


@functools.lru_cache(maxsize=2)
def _text_side(model_name: str, device: str):
    model, tokenizer, config = load_text_tower(model_name)
    return model.to(device), tokenizer, config


@functools.lru_cache(maxsize=2)
def _image_side(model_name: str, device: str):
    model, preprocessing, _, _ = load_image_text_processor_and_model(model_name)
    return model.to(device), preprocessing


def _unit_rows(features: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32)


def embed_text_queries(model_name: str, texts: Sequence[str], *, device: str = "cpu") -> np.ndarray:
    """float32 (len(texts), D) L2-normalised ``get_text_features`` of ``model_name`` (``hf:...``).

    Tokenised as the model's processor does (truncated to the tower's window; SigLIP padded to
    it). Raises ConfigError for a model that is not an image-text model, ModelUnavailableError
    when it is not on this machine in offline mode.
    """
    model_type = _require_image_text(model_name)
    model, tokenizer, config = _text_side(model_name, device)
    texts = [str(text) for text in texts]
    if not texts:
        return np.zeros((0, _embedding_dim(config)), dtype=np.float32)
    inputs = tokenizer(texts, padding=padding_rule(model_type), truncation=True,
                       max_length=text_max_length(config, tokenizer), return_tensors="pt")
    inputs = {name: value.to(device) for name, value in inputs.items() if name in tokenizer.model_input_names}
    with torch.inference_mode():
        return _unit_rows(pooled(model.get_text_features(**inputs)))


def embed_images(model_name: str, frames_uint8_rgb: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """float32 (N, D) L2-normalised ``get_image_features`` of uint8 RGB (N, H, W, 3) frames,
    preprocessed exactly as extraction does."""
    _require_image_text(model_name)
    model, preprocessing = _image_side(model_name, device)
    frames = np.asarray(frames_uint8_rgb)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError(f"images must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        return np.zeros((0, int(model.config.projection_dim if hasattr(model.config, "projection_dim")
                                else model.config.vision_config.hidden_size)), dtype=np.float32)
    crops = resize_and_crop(frames, preprocessing)
    with torch.inference_mode():
        batch = normalize(crops, preprocessing, device=device)
        return _unit_rows(pooled(model.get_image_features(pixel_values=batch)))


def _embedding_dim(config: dict) -> int:
    if config.get("model_type") == "clip":
        return int(config["projection_dim"])
    text_config = config["text_config"]
    return int(text_config.get("projection_size") or text_config["hidden_size"])  # SigLIP's text head
