"""Cards of verified ONNX exports: a later run starts ONNX Runtime without building the torch model.

A card is written once an export has agreed with torch on the check batch. It holds the model's
facts (everything :class:`~videobert_cli.video.models.LoadedVideoModel` holds but the module),
the export's cache key, the weights file's size and modification time, and torch's features of
the check batch, against which the session is checked at every start instead of running torch
(ResNet-50: ~2.5 s of building and 100 MB of weights saved per start).
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videobert_cli.config import VideoModelConfig

log = logging.getLogger(__name__)

#: packages whose version decides what a model name builds (architecture, default weights) and
#: how it is exported: a new version of any gives a new card
CARD_PACKAGES = ("videobert-cli", "torch", "torchvision", "efficientnet-lite-pytorch")


@dataclass(frozen=True)
class ExportCard:
    """A verified export: the model's facts (``model.module`` is None), where its graph is, and
    torch's features of :func:`~videobert_cli.video.runtimes.check_batch`."""

    model: object  # LoadedVideoModel without its module
    export: Path
    reference: np.ndarray


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def card_path(config: VideoModelConfig) -> Path:
    """Where the card of the model ``config`` loads is kept."""
    from videobert_cli.video.models import is_weights_path
    from videobert_cli.video.runtimes import ONNX_OPSET, cache_entry

    # a weights file by its absolute path: the same relative path elsewhere is another file
    weights = str(Path(config.weights).resolve()) if is_weights_path(config.weights) else config.weights
    facts = (config.name, weights, config.seed, ONNX_OPSET, [_version(p) for p in CARD_PACKAGES])
    return cache_entry("onnx", facts, "card-{}.npz")


def _file_facts(path: str) -> list:
    stat = os.stat(path)
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def write_card(path: Path, model, export_key: str, reference: np.ndarray) -> None:
    """Remember that the export ``export_key`` of ``model`` (a LoadedVideoModel) agrees with torch,
    whose features of the check batch are ``reference``. Only for models that say which file
    their weights came from (``weights_file``: "" for a seeded random init)."""
    from videobert_cli.store.atomic import write_cache_file

    if model.weights_file is None:
        return
    facts = {
        "export_key": export_key,
        "sources": [_file_facts(model.weights_file)] if model.weights_file else [],
        "model": {
            "name": model.name, "feature_dim": model.feature_dim, "feature_layer": model.feature_layer,
            "preprocessing": model.preprocessing.to_dict(), "weights_name": model.weights_name,
            "weights_sha256": model.weights_sha256, "kind": model.kind, "clip_len": model.clip_len,
            "weights_file": model.weights_file,
        },
    }
    blob = io.BytesIO()
    np.savez(blob, facts=np.array(json.dumps(facts)), reference=np.asarray(reference, dtype=np.float32))
    write_cache_file(path, blob.getvalue(), what="ONNX export card")


def read_card(path: Path) -> ExportCard | None:
    """The card at ``path`` if it is whole, its weights file unchanged and its export cached."""
    from videobert_cli.video.models import LoadedVideoModel
    from videobert_cli.video.preprocess import Preprocessing
    from videobert_cli.video.runtimes import export_path

    try:
        with np.load(path, allow_pickle=False) as stored:
            facts = json.loads(str(stored["facts"]))
            reference = stored["reference"]
        for source in facts["sources"]:
            if _file_facts(source[0]) != source:
                log.info("export card %s: %s changed since it was written", path.name, source[0])
                return None
        export = export_path(facts["export_key"])
        if not export.is_file():
            return None
        model = LoadedVideoModel(module=None, **{**facts["model"],
                                                 "preprocessing": Preprocessing.from_dict(facts["model"]["preprocessing"])})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.info("export card %s unreadable: %s", path, error)
        return None
    return ExportCard(model=model, export=export, reference=reference)


def export_cards() -> dict:
    """The cached exports that start runs without torch (``videobert doctor``): the folder, and
    per card the model, its weights, the export's size and whether the card still applies."""
    from videobert_cli.video.runtimes import cache_root

    folder = cache_root() / "onnx"
    cards = []
    for path in sorted(folder.glob("card-*.npz")) if folder.is_dir() else []:
        card = read_card(path)
        if card is not None:
            cards.append({"model": card.model.name, "weights": card.model.weights_name,
                          "mb": round(card.export.stat().st_size / 1e6, 1), "usable": True})
        else:
            cards.append({"model": None, "weights": None, "mb": None, "usable": False, "card": path.name})
    return {"path": str(folder), "exists": folder.is_dir(), "cards": cards}
