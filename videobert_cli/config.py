"""Frozen configuration dataclasses shared by the library and the CLI.

A :class:`PipelineConfig` fully determines the features a run produces; its
:meth:`~PipelineConfig.fingerprint` is stored in every output file so that a later run can tell
whether an existing output was made with the same settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, field, fields, replace

from videobert_cli.devices import is_multi_device, parse_device_list, resolve_precision, uses_gpu
from videobert_cli.errors import ConfigError

DEFAULT_FPS = 1.0
DEFAULT_VIDEO_MODEL = "efficientnet-lite0"
DEFAULT_TEXT_MODEL = "all-minilm-l6-v2"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: what executes a frame model (videobert_cli.video.runtimes); auto: ONNX Runtime for fp32 on the CPU
MODEL_RUNTIMES = ("auto", "torch", "onnxruntime")
FEATURE_DTYPES = ("float32", "float16")
ALIGN_MODES = ("none", "sentences")
COMPRESSIONS = (None, "lzf", "gzip")


def offline_mode() -> bool:
    """True when the user asked for no network access (our flag or the Hugging Face one)."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("VIDEOBERT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


#: clip sampling used when a clip model is chosen without --clip-len/--clip-fps
#: (torchvision's Kinetics recipe: 16 frames at 15 fps; VideoBERT used 30 frames at 20 fps)
DEFAULT_CLIP_LEN = 16
DEFAULT_CLIP_FPS = 15.0


@dataclass(frozen=True)
class SamplingConfig:
    """Which frames of a video are encoded.

    Frame models: ``fps`` frames per second (default :data:`DEFAULT_FPS`), or ``num_frames`` in
    all, not both. Clip models: frames are
    taken at ``clip_fps`` and grouped into clips of ``clip_len`` frames starting every
    ``clip_stride`` frames (default: ``clip_len``, no overlap); a last clip shorter than
    ``clip_len`` is padded by repeating its last frame, or dropped with ``drop_tail``.
    """

    fps: float | None = None  # None: DEFAULT_FPS, unless num_frames or clips are asked for
    num_frames: int | None = None
    clip_len: int | None = None
    clip_fps: float | None = None
    clip_stride: int | None = None
    drop_tail: bool = False

    @property
    def is_clip(self) -> bool:
        return self.clip_len is not None

    @property
    def asks_for_clips(self) -> bool:
        """Whether any clip setting is given (only a clip model can honour it)."""
        return self.is_clip or self.clip_fps is not None or self.clip_stride is not None or self.drop_tail

    def for_clips(self) -> "SamplingConfig":
        """This sampling with clip defaults filled in (for clip models)."""
        clip_len = self.clip_len or DEFAULT_CLIP_LEN
        return SamplingConfig(
            fps=None,
            num_frames=None,
            clip_len=clip_len,
            clip_fps=self.clip_fps or DEFAULT_CLIP_FPS,
            clip_stride=self.clip_stride or clip_len,
            drop_tail=self.drop_tail,
        )

    def __post_init__(self) -> None:
        for name in ("fps", "clip_fps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ConfigError(f"{name} must be a number, got {value!r}", field=name)
        for name in ("num_frames", "clip_len", "clip_stride"):
            if getattr(self, name) is not None:
                _require_int(name, getattr(self, name))
        if self.fps is not None and self.num_frames is not None:
            raise ConfigError("fps and num_frames exclude each other", field="fps", hint="give one of them")
        if self.asks_for_clips:
            if self.fps is not None or self.num_frames is not None:
                frame_field = "fps" if self.fps is not None else "num_frames"
                raise ConfigError(f"{frame_field} is for frame models; clip sampling uses clip_fps and clip_len",
                                  field=frame_field)
            for name in ("clip_len", "clip_stride"):
                value = getattr(self, name)
                if value is not None and value < 1:
                    raise ConfigError(f"{name} must be at least 1, got {value}", field=name)
            if self.clip_fps is not None and (not math.isfinite(self.clip_fps) or self.clip_fps <= 0):
                raise ConfigError(f"clip_fps must be a positive number, got {self.clip_fps}", field="clip_fps")
            return
        if self.num_frames is not None:
            if self.num_frames < 1:
                raise ConfigError(f"num_frames must be at least 1, got {self.num_frames}", field="num_frames")
            return
        if self.fps is None:
            object.__setattr__(self, "fps", DEFAULT_FPS)
        if not math.isfinite(self.fps) or self.fps <= 0:
            raise ConfigError(f"fps must be a positive number, got {self.fps}", field="fps")

    @property
    def mode(self) -> str:
        if self.is_clip:
            return "clips"
        return "num_frames" if self.num_frames is not None else "fps"

    def to_dict(self) -> dict:
        if self.is_clip:
            return {"mode": "clips", "clip_len": self.clip_len, "clip_fps": self.clip_fps,
                    "clip_stride": self.clip_stride, "drop_tail": self.drop_tail}
        if self.num_frames is not None:
            return {"mode": "num_frames", "num_frames": self.num_frames}
        return {"mode": "fps", "fps": self.fps}


@dataclass(frozen=True)
class VideoModelConfig:
    """The frame encoder: a registry name and which weights to load.

    ``weights``: ``"default"`` (the model's default pretrained weights), a torchvision weights
    enum member name such as ``"IMAGENET1K_V1"``, ``"none"`` (random initialisation seeded by
    ``seed``; for tests and timing), or a path to a local ``.safetensors``/``.pth`` state dict.
    """

    name: str = DEFAULT_VIDEO_MODEL
    weights: str = "default"
    seed: int = 0


@dataclass(frozen=True)
class TextModelConfig:
    """The text encoder: a Hugging Face name or local directory, and the window length."""

    name: str = DEFAULT_TEXT_MODEL
    max_length: int | None = None  # tokens per window including [CLS]/[SEP]; None = model maximum

    def __post_init__(self) -> None:
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError(f"max_length must be at least 8 tokens, got {self.max_length}", field="max_length")


@dataclass(frozen=True)
class FusionConfigOptions:
    """How fusion weights are obtained: a checkpoint, or a seeded initialisation of this shape."""

    weights_path: str | None = None
    seed: int = 0
    d_model: int = 256
    num_layers: int = 2
    num_heads: int = 4
    ff_dim: int = 1024
    #: "none", or "sentences": also write one VideoBERT segment per transcript cue
    align: str = "none"

    def __post_init__(self) -> None:
        if self.align not in ALIGN_MODES:
            raise ConfigError(f"align: unknown mode {self.align!r}", field="align",
                              hint=f"use one of {', '.join(ALIGN_MODES)}")


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how models run. None of this changes the features beyond numerical precision.

    ``decoder``: ``auto`` (default), ``pyav`` or ``decord``; all give decord's pixels. PyAV
    decodes in the calling thread and converts only the sampled frames, so memory stays flat
    (see :mod:`videobert_cli.decoders.pyav`); ``auto`` uses it wherever it is shown to
    give decord's pixels and decord elsewhere, ``pyav`` also but warns when it falls back.

    ``device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N``; for ``run`` also several devices, one
    worker process each: a list (``cuda:0,cuda:1``, ``cpu,cpu``) or ``all`` (every visible GPU).
    See :mod:`videobert_cli.devices`.

    ``decode_threads``: FFmpeg's decoding threads per video (the same pixels at any number).
    More than one lets a decoder that is the bottleneck, as for 1080p at ``--fps 1`` or for a
    GPU model, use the cores the model leaves idle; where the model is the bottleneck the
    extra thread only competes with it (docs/benchmarks.md). ``None`` (default): 1 when the
    model runs on the CPU, more for a GPU model (:func:`default_decode_threads`).

    ``decode_workers``: decode worker processes feeding the model, each on its own video (the
    same features at any number). ``None`` (default): 1 for a CPU model; for a GPU model the
    cores it has, as memory allows (:func:`default_decode_workers`), with one thread each.

    ``model_runtime``: what executes the frame model. ``auto`` (default): ONNX Runtime for fp32
    frame models on the CPU where it is installed (several times faster; features equal to
    ~1e-5, checked before use), torch elsewhere; ``torch`` turns it off
    (:mod:`videobert_cli.video.runtimes`).
    """

    device: str = "auto"
    batch_size: int = 32
    precision: str = "auto"
    num_threads: int | None = None
    decoder: str = "auto"
    decode_threads: int | None = None
    decode_workers: int | None = None
    model_runtime: str = "auto"

    def __post_init__(self) -> None:
        _require_int("batch_size", self.batch_size)
        for name in ("num_threads", "decode_threads", "decode_workers"):
            if getattr(self, name) is not None:
                _require_int(name, getattr(self, name))
        for name in ("batch_size", "num_threads", "decode_threads", "decode_workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}", field=name)
        if not isinstance(self.decoder, str) or not self.decoder:
            raise ConfigError(f"decoder must be a decoder's name, got {self.decoder!r}", field="decoder")
        if is_multi_device(self.device):
            parse_device_list(self.device)  # a typo fails when the configuration is built
        if self.model_runtime not in MODEL_RUNTIMES:
            raise ConfigError(f"model_runtime: unknown value {self.model_runtime!r}", field="model_runtime",
                              hint=f"use one of {', '.join(MODEL_RUNTIMES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: unknown value {self.precision!r}", field="precision",
                              hint=f"use one of {', '.join(PRECISIONS)}")

    def resolved_precision(self) -> str:
        """The precision the models run at: ``auto`` is fp32 on the CPU and fp16 on CUDA."""
        if self.precision != "auto":
            return self.precision
        return resolve_precision("auto", "cuda" if uses_gpu(self.device) else "cpu")


@dataclass(frozen=True)
class OutputConfig:
    """How features are stored in HDF5."""

    dtype: str = "float32"
    compression: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in FEATURE_DTYPES:
            raise ConfigError(f"dtype: unknown feature dtype {self.dtype!r}", field="dtype",
                              hint="use float32 or float16")
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"unknown compression {self.compression!r}", hint="use lzf, gzip, or leave it out"
            )


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that determines the features of a run."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    video_model: VideoModelConfig = field(default_factory=VideoModelConfig)
    text_model: TextModelConfig = field(default_factory=TextModelConfig)
    fusion: FusionConfigOptions = field(default_factory=FusionConfigOptions)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        for section in fields(self):
            value = getattr(self, section.name)
            if not isinstance(value, _SECTION_TYPES[section.name]):
                expected = _SECTION_TYPES[section.name].__name__
                raise ConfigError(f"PipelineConfig.{section.name} must be a {expected}, got {type(value).__name__}",
                                  hint=f"e.g. PipelineConfig({section.name}={expected}(...))")

    def with_(self, **changes) -> "PipelineConfig":
        """A copy with some sections replaced."""
        return replace(self, **changes)

    def fingerprint(self, *, identities: dict | None = None) -> str:
        """A short hash of every setting that changes the stored features.

        ``identities`` adds facts known only after loading (e.g. the weights' sha256), so that
        swapping a weights file under the same path also invalidates earlier outputs. The
        runtime section is left out on purpose: device and batch size do not change features.
        """
        from videobert_cli.hashing import cached_file_sha256

        identities = dict(identities or {})
        # a weights file replaced under the same name must invalidate earlier outputs
        for key, candidate in (("video_weights_file", self.video_model.weights), ("fusion_weights_file", self.fusion.weights_path)):
            if candidate and os.path.isfile(candidate):
                identities[key] = cached_file_sha256(candidate)
        for weights_name in ("model.safetensors", "pytorch_model.bin"):
            candidate = os.path.join(self.text_model.name, weights_name)
            if os.path.isfile(candidate):
                identities["text_weights_file"] = cached_file_sha256(candidate)
                break
        payload = {
            "sampling": self.sampling.to_dict(),
            "video_model": asdict(self.video_model),
            "text_model": asdict(self.text_model),
            "fusion": asdict(self.fusion),
            "output": asdict(self.output),
            # what the models run at, not the word "auto": features made at fp32 on a CPU and
            # at fp16 on a GPU must not pass for each other when a run is resumed elsewhere
            "precision": self.runtime.resolved_precision(),
            "identities": identities,
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_SECTION_TYPES = {
    "sampling": SamplingConfig, "video_model": VideoModelConfig, "text_model": TextModelConfig,
    "fusion": FusionConfigOptions, "runtime": RuntimeConfig, "output": OutputConfig,
}


def _require_int(name: str, value) -> None:
    """A whole number (not a bool, not 2.5): the library's callers get what the CLI checks."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be a whole number, got {value!r}", field=name)
