"""Which runtime executes a frame model: torch, or ONNX Runtime (the CPU default where it applies).

On the CPUs measured, ONNX Runtime runs the same fp32 graph several times faster than torch
(docs/benchmarks.md) with features equal to ~1e-5. A model is exported once per architecture,
weights and torch version, cached under the videobert cache, and checked against torch on a fixed
batch before it is used: where the export fails or disagrees, torch runs the model, with a warning.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:  # torch is imported where it runs: an ONNX Runtime run from a card needs none
    import torch
    from torch import nn

from videobert_cli.config import MODEL_RUNTIMES
from videobert_cli.errors import ConfigError
from videobert_cli.memory import release_freed_memory
from videobert_cli.store.atomic import write_cache_file

log = logging.getLogger(__name__)

AUTO, TORCH, ONNXRUNTIME = MODEL_RUNTIMES
ONNX_OPSET = 17
#: the agreement a session must show with torch on the check batch before it replaces it
MIN_COSINE = 0.9999
CHECK_FRAMES = 4
#: frames per ONNX Runtime call: on the CPU a larger batch only adds activation memory. Measured
#: (2-core EPYC, arena on), 8 / 16 / 32 frames: EfficientNet-Lite0 188 / 181 / 146 frames/s at
#: 195 / 273 / 444 MB peak; ResNet-50 24.9 / 25.0 / 21.4 at 395 / 520 / 723 MB
SESSION_FRAMES = 8


def cache_root() -> Path:
    """``$VIDEOBERT_CACHE``, else ``$XDG_CACHE_HOME/videobert``, else ``~/.cache/videobert``."""
    explicit = os.environ.get("VIDEOBERT_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "videobert"


def cache_entry(folder: str, facts: object, name: str = "{}") -> Path:
    """A cache file in ``folder`` named by a hash of ``facts`` (what decides its content);
    ``name`` formats the hash, e.g. ``"card-{}.npz"``."""
    digest = hashlib.sha256(repr(facts).encode()).hexdigest()[:32]
    return cache_root() / folder / name.format(digest)


def onnxruntime_version() -> str | None:
    """The installed ONNX Runtime's version (and that the ONNX exporter can run), or None."""
    if importlib.util.find_spec("onnx") is None:  # torch's exporter needs it (importing it costs ~1 s)
        return None
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def choose_runtime(asked: str, *, device: str, precision: str, kind: str) -> str:
    """The runtime for a model: ``auto`` means ONNX Runtime for fp32 frame models on the CPU
    wherever it is installed, torch otherwise. An explicit ``onnxruntime`` that cannot apply is
    refused, naming why."""
    if asked not in MODEL_RUNTIMES:
        raise ConfigError(f"unknown model runtime {asked!r}", field="model_runtime",
                          hint=f"use one of {', '.join(MODEL_RUNTIMES)}")
    why_not = ""
    if device != "cpu":
        why_not = f"it runs models on the CPU only, not on {device}"
    elif precision != "fp32":
        why_not = f"it runs fp32 only, not {precision}"
    elif kind != "frame":
        why_not = "clip models run in torch"
    elif onnxruntime_version() is None:
        why_not = "onnxruntime or onnx is not installed"
    if asked == TORCH or (asked == AUTO and why_not):
        return TORCH
    if why_not:
        raise ConfigError(f"model runtime onnxruntime: {why_not}", field="model_runtime",
                          hint="use --model-runtime torch (or auto)" if "installed" not in why_not
                          else "pip install onnxruntime onnx, or use --model-runtime torch")
    return ONNXRUNTIME


@dataclass(frozen=True)
class Runner:
    """A ready model: ``run(normalised NCHW float32 batch) -> (N, D) float32 numpy``."""

    name: str  # what the files and the manifest record, e.g. "onnxruntime 1.32.0"
    run: Callable[[torch.Tensor], np.ndarray]
    channels_last: bool = False  # whether the input should be channels-last (torch only)
    max_abs_diff: float | None = None  # vs torch on the check batch (ONNX Runtime only)
    in_torch: bool = False  # torch runs it: it takes tensors, and torch.set_num_threads applies


def torch_runner(module: nn.Module, *, channels_last: bool) -> Runner:
    import torch

    def run(batch: torch.Tensor) -> np.ndarray:
        return module(batch).float().cpu().numpy()

    return Runner(name=f"torch {torch.__version__.split('+')[0]}", run=run, channels_last=channels_last,
                  in_torch=True)


def module_key(module: nn.Module, crop_size: int) -> str:
    """What the exported graph depends on: the architecture, every weight, the torch version."""
    import torch

    digest = hashlib.sha256()
    digest.update(f"{torch.__version__}|opset{ONNX_OPSET}|{crop_size}|{module!r}".encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def export_onnx(module: nn.Module, crop_size: int) -> bytes:
    """The model as ONNX (dynamic batch), from torch's TorchScript-based exporter."""
    import torch

    example = torch.zeros(1, 3, crop_size, crop_size)
    blob = io.BytesIO()
    with warnings.catch_warnings():
        # the legacy exporter announces its deprecation on every call; it is the one that
        # exports these convolutional classifiers without extra packages (onnxscript)
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), blob, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=ONNX_OPSET, dynamo=False)
    return blob.getvalue()


def check_batch(crop_size: int) -> np.ndarray:
    """A fixed, image-like normalised batch on which ONNX Runtime must agree with torch."""
    generator = np.random.default_rng(0)
    return (generator.random((CHECK_FRAMES, 3, crop_size, crop_size), dtype=np.float32) * 4.0 - 2.0)


def agreement(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(lowest per-row cosine, max abs diff) of two feature batches."""
    diff = float(np.abs(reference - other).max()) if reference.size else 0.0
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    dots = (reference * other).sum(axis=1)
    cosine = np.where(norms > 0, dots / np.maximum(norms, 1e-30), np.where(np.abs(reference - other).max(axis=1) < 1e-6, 1.0, 0.0))
    return float(cosine.min()) if cosine.size else 1.0, diff


def intra_op_threads() -> int:
    """The session's threads: torch's intra-op threads where torch is loaded (``--threads`` sets
    them), else torch's default, one per physical core (:func:`~videobert_cli.devices.physical_cores`)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    from videobert_cli.devices import physical_cores

    return physical_cores()


def onnx_session(model: str | bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # the arena keeps the activation buffers between calls: without it every call maps and
    # page-faults them afresh (EfficientNet-Lite0 113 instead of 188 frames/s); bounded by
    # SESSION_FRAMES (peak 195 MB for Lite0 with the arena, 386 MB at 32 frames without)
    options.enable_cpu_mem_arena = True
    # no busy-waiting between batches: the decoder shares these cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    # building parses the file and rewrites the graph, freeing as much again as the model holds
    # (ResNet-50: ~150 MB) into malloc's heaps, where it stayed until the first batch
    release_freed_memory()
    return session


def export_path(key: str) -> Path:
    """Where the export of the module with :func:`module_key` ``key`` is cached."""
    return cache_root() / "onnx" / f"{key}.onnx"


def cached_export(module: nn.Module, crop_size: int, *, key: str, fresh: bool = False) -> str | bytes:
    """The exported model: its path in the cache (unless ``fresh``), which ONNX Runtime reads
    without a Python copy of it (94 MB for ResNet-50); the bytes where the cache is unwritable,
    which only costs the export next time."""
    path = export_path(key)
    if not fresh and path.is_file():
        return str(path)
    blob = export_onnx(module, crop_size)
    return str(path) if write_cache_file(path, blob, what="ONNX model cache") else blob


def has_weights(module: nn.Module) -> bool:
    return not any(tensor.is_meta for tensor in module.state_dict().values())


def onnx_runner(module: nn.Module | None, crop_size: int, reload: Callable[[], nn.Module] | None = None, *,
                card=None, remember: Callable[[str, np.ndarray], None] | None = None) -> Runner:
    """An ONNX Runtime session for ``module``, checked on :func:`check_batch`. Raises
    ``RuntimeError`` where it cannot be used.

    With a ``card`` (:class:`~videobert_cli.video.export_card.ExportCard`), its export is checked
    against the card's reference features and ``module`` may be None: torch is needed only if
    they disagree. Otherwise the export is taken from the cache (or made), checked against
    torch's own features, and ``remember(export key, torch's features)`` is called. With
    ``reload`` (which builds the module again), torch's weights are freed before a cached
    export's session is built, so both copies are never held at once (100 MB less at the peak
    for ResNet-50); a re-export reloads them.
    """
    import onnxruntime

    batch = check_batch(crop_size)
    threads = intra_op_threads()

    def runner(session, diff: float) -> Runner:
        def run(batch: torch.Tensor | np.ndarray, session=session) -> np.ndarray:
            array = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
            parts = [session.run(None, {"x": array[start:start + SESSION_FRAMES]})[0]
                     for start in range(0, len(array), SESSION_FRAMES)]
            return np.concatenate(parts).astype(np.float32, copy=False)

        return Runner(name=f"onnxruntime {onnxruntime.__version__}", run=run, max_abs_diff=diff)

    if card is not None:
        session = onnx_session(str(card.export), threads)
        cosine, diff = agreement(card.reference, session.run(None, {"x": batch})[0])
        if cosine >= MIN_COSINE:
            return runner(session, diff)
        log.info("ONNX Runtime disagrees with the export card (lowest cosine %.6f): checking against torch", cosine)
        del session
        module = module if module is not None else reload()
    import torch

    with torch.inference_mode():
        reference = module(torch.from_numpy(batch)).float().numpy()
    key = module_key(module, crop_size)
    if reload is not None and export_path(key).is_file():
        module.to("meta")
    for fresh in (False, True):  # a stale or damaged cache entry is exported again once
        if fresh and not has_weights(module):
            module = reload()
        session = onnx_session(cached_export(module, crop_size, key=key, fresh=fresh), threads)
        cosine, diff = agreement(reference, session.run(None, {"x": batch})[0])
        if cosine >= MIN_COSINE:
            break
        log.info("ONNX Runtime disagrees with torch (lowest cosine %.6f)", cosine)
    else:
        raise RuntimeError(f"ONNX Runtime's features disagree with torch's (lowest cosine {cosine:.6f})")
    if remember is not None and export_path(key).is_file():
        remember(key, reference)
    return runner(session, diff)


def build_runner(module: nn.Module | None, *, asked: str, device: str, precision: str, kind: str,
                 crop_size: int, reload: Callable[[], nn.Module] | None = None, card=None,
                 remember: Callable[[str, np.ndarray], None] | None = None) -> Runner:
    """The runner for ``module`` (on ``device``, in eval mode; None where ``card`` stands in for
    it); ``reload`` builds it again (see :func:`onnx_runner`)."""
    channels_last = kind == "frame"
    runtime = choose_runtime(asked, device=device, precision=precision, kind=kind)
    if runtime == ONNXRUNTIME:
        try:
            runner = onnx_runner(module, crop_size, reload, card=card, remember=remember)
            # the session holds its own copy of the weights: free torch's (100 MB for ResNet-50);
            # a later forward of this module fails loudly on its meta tensors
            if module is not None:
                module.to("meta")
            return runner
        except Exception as error:  # any exporter or session failure: torch still gives the features
            message = f"{error.__class__.__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            if asked == ONNXRUNTIME:
                raise ConfigError(f"model runtime onnxruntime failed for this model: {message}",
                                  field="model_runtime", hint="use --model-runtime torch") from error
            log.warning("running the model in torch: ONNX Runtime could not be used (%s)", message)
            if module is None or not has_weights(module):
                module = reload().to(device).eval()
    elif module is None:
        module = reload().to(device).eval()
    if channels_last:
        import torch

        module.to(memory_format=torch.channels_last)
    return torch_runner(module, channels_last=channels_last)
