"""Saving and loading fusion Transformer weights as safetensors (never pickle).

File layout: the tensors are the model's ``state_dict()`` (float32, CPU). The safetensors
header metadata (string -> string) holds

* ``format``: ``"videobert-cli/fusion"`` and ``format_version``: ``"1"``;
* ``config``: JSON of :meth:`FusionConfig.to_dict`;
* ``metadata``: JSON of a free dict describing the training run. By convention it holds
  ``video_model``, ``video_dim``, ``text_model``, ``text_dim`` (the feature extractors the
  weights were trained on) and ``trained_steps``; :func:`load_fusion_weights` checks
  inputs against ``video_model``/``text_model`` and the config's dims.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from videobert_cli.store.atomic import atomic_write
from videobert_cli.errors import ConfigError
from videobert_cli.fusion.model import FusionConfig, FusionTransformer

FORMAT_NAME = "videobert-cli/fusion"
FORMAT_VERSION = "1"

_HINT_BAD_FILE = "pass a fusion weights file written by videobert-cli (a .safetensors file)"


def save_fusion_weights(
    path: str | Path,
    model: FusionTransformer,
    config: FusionConfig,
    metadata: dict[str, Any],
) -> None:
    """Write ``model``'s weights, ``config`` and ``metadata`` to ``path`` atomically.

    ``metadata`` must be JSON-serialisable; ``video_dim``/``text_dim`` are filled in from
    ``config`` when absent and must agree with it when present. The file is written to a
    temporary file in the same directory, fsynced, then moved over ``path`` with
    ``os.replace`` (:func:`videobert_cli.store.atomic.atomic_write`), so readers never see a
    half-written checkpoint.
    """
    path = Path(path)
    if model.config != config:
        raise ConfigError(
            f"the config passed to save_fusion_weights ({config}) differs from the model's "
            f"({model.config})",
            path=path,
            hint="pass model.config",
        )
    meta = dict(metadata)
    for key, value in (("video_dim", config.video_dim), ("text_dim", config.text_dim)):
        if key in meta and meta[key] != value:
            raise ConfigError(
                f"metadata says {key}={meta[key]!r} but the fusion config has {value}",
                path=path,
                hint=f"drop {key} from the metadata or make it match the config",
            )
        meta[key] = value
    try:
        header = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "config": json.dumps(config.to_dict(), sort_keys=True, allow_nan=False),
            "metadata": json.dumps(meta, sort_keys=True, allow_nan=False),
        }
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"fusion checkpoint metadata is not JSON-serialisable: {exc}",
            path=path,
            hint="use only str, int, float, bool, list and dict values in the metadata",
        ) from exc

    # clone(): state_dict tensors may be views sharing storage, which safetensors refuses
    tensors = {
        name: t.detach().to("cpu", torch.float32).contiguous().clone()
        for name, t in model.state_dict().items()
    }
    blob = safetensors_save(tensors, metadata=header)

    atomic_write(path, blob, what="fusion weights")


def _describe(model_name: str | None, dim: int | None, *, recorded: bool) -> str:
    """Render "'resnet50' (2048-d)" style descriptions for mismatch messages."""
    if model_name is not None:
        text = f"'{model_name}'"
        return f"{text} ({dim}-d)" if dim is not None else text
    if recorded:
        return f"an unrecorded model ({dim}-d)" if dim is not None else "an unrecorded model"
    return f"{dim}-d features"


def _check_modality(
    path: Path,
    modality: str,
    trained_model: Any,
    trained_dim: int,
    expect_model: str | None,
    expect_dim: int | None,
) -> None:
    """Refuse inputs whose feature extractor or width differs from the training run's."""
    trained_model = None if trained_model is None else str(trained_model)
    dim_bad = expect_dim is not None and int(expect_dim) != trained_dim
    # an unrecorded training model cannot be vouched for, so it counts as a mismatch
    model_bad = expect_model is not None and expect_model != trained_model
    if not (dim_bad or model_bad):
        return
    trained = _describe(trained_model, trained_dim, recorded=True)
    given = _describe(
        expect_model, int(expect_dim) if expect_dim is not None else None, recorded=False
    )
    if trained_model is not None:
        hint = (
            f"extract {modality} features with '{trained_model}', or use fusion weights "
            f"trained on these {modality} features"
        )
    else:
        hint = f"use fusion weights trained on these {modality} features"
    raise ConfigError(
        f"fusion weights were trained on {modality} features from {trained} "
        f"but the input has {given}",
        path=path,
        hint=hint,
    )


def _check_weights(path: Path, modality: str, trained: Any, expect: str | None) -> None:
    """Refuse inputs made with other weights of the same model (e.g. ResNet-50's IMAGENET1K_V1
    and V2): the same name and width, another feature space. Unknown on either side: allowed."""
    trained = str(trained) if trained else None
    if trained and expect and trained != expect:
        raise ConfigError(
            f"fusion weights were trained on {modality} features of other weights of the same model "
            f"(sha256 {trained[:12]}) than the input's ({expect[:12]})",
            path=path,
            hint=f"extract {modality} features with the weights the fusion was trained on, or train on these",
        )


def load_fusion_weights(
    path: str | Path,
    *,
    expect_video_dim: int | None = None,
    expect_text_dim: int | None = None,
    expect_video_model: str | None = None,
    expect_text_model: str | None = None,
    expect_video_weights: str | None = None,
    expect_text_weights: str | None = None,
) -> tuple[FusionTransformer, FusionConfig, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_fusion_weights`; returns (model, config, metadata).

    Only safetensors is read (no pickle). Raises :class:`ConfigError` (with ``path`` and a
    hint) when the file is missing, is not a safetensors file, is not a videobert-cli fusion
    checkpoint, lacks or has extra/misshaped tensors, or was trained on other feature
    extractors/dimensions than the ``expect_*`` arguments say (``expect_*_weights``: the
    sha256 of the extractor's weights, as feature files record it). The model is on CPU, in
    eval mode.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise ConfigError(f"fusion weights file {what}", path=path, hint=_HINT_BAD_FILE)
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error type, OSError, ValueError...
        raise ConfigError(
            f"not a safetensors file ({exc})",
            path=path,
            hint=_HINT_BAD_FILE,
        ) from exc

    with handle as f:
        header = f.metadata() or {}
        if header.get("format") != FORMAT_NAME:
            raise ConfigError(
                "safetensors file is not a videobert-cli fusion checkpoint "
                f"(header format is {header.get('format')!r})",
                path=path,
                hint=_HINT_BAD_FILE,
            )
        if header.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"unsupported fusion checkpoint version {header.get('format_version')!r} "
                f"(this videobert-cli reads version {FORMAT_VERSION})",
                path=path,
                hint="use a videobert-cli version matching the one that wrote the weights",
            )
        try:
            config_dict = json.loads(header["config"])
            metadata = json.loads(header.get("metadata", "{}"))
        except (KeyError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"fusion checkpoint header is malformed: {exc!r}",
                path=path,
                hint=_HINT_BAD_FILE,
            ) from exc
        if not isinstance(metadata, dict):
            raise ConfigError(
                "fusion checkpoint metadata is not a JSON object",
                path=path,
                hint=_HINT_BAD_FILE,
            )
        try:
            config = FusionConfig.from_dict(config_dict)
        except ConfigError as exc:
            raise ConfigError(exc.message, path=path, hint=exc.hint) from exc
        except TypeError as exc:
            raise ConfigError(
                f"fusion checkpoint config is malformed: {exc}", path=path, hint=_HINT_BAD_FILE
            ) from exc

        # check the inputs before materialising any tensor: the cheap, common failure
        _check_modality(
            path, "video", metadata.get("video_model"), config.video_dim,
            expect_video_model, expect_video_dim,
        )
        _check_modality(
            path, "text", metadata.get("text_model"), config.text_dim,
            expect_text_model, expect_text_dim,
        )
        _check_weights(path, "video", metadata.get("video_weights_sha256"), expect_video_weights)
        _check_weights(path, "text", metadata.get("text_weights_sha256"), expect_text_weights)

        with torch.random.fork_rng(devices=[]):  # construction must not consume global RNG
            model = FusionTransformer(config)
        expected = model.state_dict()
        present = set(f.keys())
        missing = sorted(set(expected) - present)
        unexpected = sorted(present - set(expected))
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing tensors: {', '.join(missing[:5])}"
                             + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
            if unexpected:
                parts.append(f"unexpected tensors: {', '.join(unexpected[:5])}"
                             + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5
                                else ""))
            raise ConfigError(
                f"fusion checkpoint does not match its config: {'; '.join(parts)}",
                path=path,
                hint="the file is damaged or was written by an incompatible version",
            )
        state: dict[str, torch.Tensor] = {}
        for name, ref in expected.items():
            tensor = f.get_tensor(name)
            if tuple(tensor.shape) != tuple(ref.shape):
                raise ConfigError(
                    f"fusion checkpoint tensor {name} has shape {tuple(tensor.shape)}, "
                    f"expected {tuple(ref.shape)} from its config",
                    path=path,
                    hint="the file is damaged or was written by an incompatible version",
                )
            if not tensor.is_floating_point():
                raise ConfigError(
                    f"fusion checkpoint tensor {name} has dtype {tensor.dtype}, expected float",
                    path=path,
                    hint="the file is damaged or was written by an incompatible version",
                )
            state[name] = tensor.to(ref.dtype)

    model.load_state_dict(state, strict=True)
    return model.eval(), config, metadata


def weights_sha256(path: str | Path) -> str:
    """Return the hex SHA-256 of the file at ``path`` (to record which weights were used)."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ConfigError(
            f"cannot read fusion weights: {exc.strerror or exc}",
            path=path,
            hint=_HINT_BAD_FILE,
        ) from exc
    return digest.hexdigest()
