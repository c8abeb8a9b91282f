"""Hugging Face models named ``hf:<hub name or local directory>``: location, config, loading.

Shared by the video backend (:mod:`videobert_cli.video.hf`), the text tower
(:mod:`videobert_cli.text.hf`) and :mod:`videobert_cli.aligned`. Everything here follows the
project's offline rules: a local directory or offline mode (``offline_mode()``) loads with
``local_files_only``, and a model that is not on this machine then fails at once with one
line. Remote code is never trusted. transformers is imported only when a model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from videobert_cli.config import offline_mode
from videobert_cli.errors import ConfigError, ModelUnavailableError
from videobert_cli.hashing import cached_file_sha256

HF_PREFIX = "hf:"
#: ``model_type`` values whose ``get_image_features`` and ``get_text_features`` share one space.
#: Fixed-resolution SigLIP2 checkpoints (google/siglip2-base-patch16-224, ...) are "siglip".
IMAGE_TEXT_TYPES = ("clip", "siglip")
#: ``model_type`` values of video (clip) models taking (B, T, 3, S, S)
VIDEO_TYPES = ("videomae",)
#: weight files in the order transformers prefers them; an index stands for sharded weights
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def is_hf_name(name: str | None) -> bool:
    """Whether ``name`` is an ``hf:`` model name."""
    return bool(name) and str(name).startswith(HF_PREFIX)


def hf_location(name: str) -> str:
    """The hub name or directory of an ``hf:`` name."""
    if not is_hf_name(name) or not name[len(HF_PREFIX):].strip():
        raise ConfigError(f"not a Hugging Face model name: {name!r}",
                          hint="write hf:<hub name or local directory>, e.g. hf:google/siglip2-base-patch16-224")
    return name[len(HF_PREFIX):].strip()


def is_local_dir(location: str) -> bool:
    return Path(location).expanduser().is_dir()


def local_files_only(location: str) -> bool:
    """Load without the network: a local directory, or offline mode."""
    return offline_mode() or is_local_dir(location)


def cached_file(location: str, filename: str) -> Path | None:
    """``filename`` of the model from its directory or the Hugging Face cache; never downloads."""
    if is_local_dir(location):
        path = Path(location).expanduser() / filename
        return path if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(location, filename)
    except Exception:  # a malformed repo id is "not cached", not a crash
        return None
    return Path(found) if isinstance(found, str) else None


def local_config(location: str) -> dict | None:
    """The model's config.json if it is on this machine (directory or cache), else None."""
    path = cached_file(location, "config.json")
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def weights_available(location: str) -> bool:
    """Whether config and weights are on this machine (never downloads)."""
    return local_config(location) is not None and any(cached_file(location, f) for f in WEIGHT_FILES)


def unavailable(name: str, location: str, detail: str = "") -> ModelUnavailableError:
    """The one-line error for a model that cannot be loaded."""
    if is_local_dir(location):
        return ModelUnavailableError(
            f"model {name!r}: the directory holds no loadable model{': ' + detail if detail else ''}",
            hint="give a directory written by save_pretrained (config.json, weights, processor files)",
        )
    where = "is not in the Hugging Face cache and offline mode is on" if offline_mode() else "could not be loaded"
    return ModelUnavailableError(
        f"model {name!r} {where}{': ' + detail if detail else ''}",
        hint="run once with network access (unset VIDEOBERT_OFFLINE/HF_HUB_OFFLINE) to cache it, "
        "or pass hf:<local directory>",
    )


def require_config(name: str) -> tuple[str, dict]:
    """(location, full config dict, defaults included) of ``name``.

    Fails at once when the config is not on this machine and may not be fetched.
    """
    location = hf_location(name)
    if local_config(location) is None and local_files_only(location):
        raise unavailable(name, location, "no config.json")
    from transformers import AutoConfig

    return location, from_pretrained(AutoConfig, name).to_dict()


def model_type(name: str) -> str | None:
    """The ``model_type`` of ``name``'s local config (None when not on this machine)."""
    config = local_config(hf_location(name))
    return None if config is None else config.get("model_type")


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def from_pretrained(loader, name: str, **kwargs):
    """``loader.from_pretrained`` for ``name`` under the offline rules, errors as one line."""
    location = hf_location(name)
    quiet_transformers()
    try:
        return loader.from_pretrained(location, local_files_only=local_files_only(location),
                                      trust_remote_code=False, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise unavailable(name, location, f"{loader.__name__}: {str(exc).splitlines()[0][:160]}") from exc


def weights_identity(name: str, model) -> tuple[str, str]:
    """(weights name, sha256) of a loaded model: hub name and commit, or the directory.

    The sha256 is the weight file's (the index file's for sharded weights).
    """
    location = hf_location(name)
    if is_local_dir(location):
        weights_name = f"dir:{Path(location).expanduser().resolve()}"
    else:
        commit = getattr(model.config, "_commit_hash", None)
        weights_name = f"hub:{location}@{commit}" if commit else f"hub:{location}"
    for filename in WEIGHT_FILES:
        path = cached_file(location, filename)
        if path is not None:
            return weights_name, cached_file_sha256(path)
    return weights_name, ""


def freeze(model):
    """Eval mode, no gradients; returns the model."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def pooled(output):
    """The embedding tensor of a ``get_*_features`` result (a tensor, or an output with pooler_output)."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output
