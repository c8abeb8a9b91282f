"""The shared spaces a text query meets video moments in.

* **fusion** (fusion weights from ``videobert train``): a moment is the fusion's [CLS] of its
  window's frames alone, a query the [CLS] of its tokens alone (encoded by the text model the
  weights were trained on, untimed) - the space ``videobert eval`` ranks in
  (:func:`~videobert_cli.training.evaluate.single_modality_cls`), cosine similarity.
* **aligned** (an image-text encoder pair such as ``hf:`` CLIP/SigLIP for both video and text):
  the pooled frame features themselves, and the query through the pair's text tower
  (:func:`videobert_cli.aligned.embed_text_queries`).

Unrelated video and text features (e.g. EfficientNet-Lite0 frames, MiniLM text) share no space:
:func:`refuse_unrelated` says so and names both ways to get one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from videobert_cli.errors import ConfigError
from videobert_cli.search.files import FileModels, read_video
from videobert_cli.search.moments import Windows, normalise

#: windows per fusion forward pass
FUSION_BATCH = 64


@dataclass(frozen=True)
class FusionSpace:
    """Loaded fusion weights and what embedding in their space needs."""

    model: Any  # FusionTransformer, eval mode, on ``device``
    weights: Path
    sha256: str
    layout: str
    text_model: str
    text_weights: str | None
    video_dim: int
    text_dim: int
    device: str


def load_fusion_space(weights: str | Path, models: FileModels, *, device: str = "cpu") -> FusionSpace:
    """Load ``weights`` for files of ``models``; ConfigError when they were trained on other features."""
    from videobert_cli.fusion.checkpoint import load_fusion_weights, weights_sha256
    from videobert_cli.training.data import LAYOUTS

    weights = Path(weights)
    model, config, meta = load_fusion_weights(
        weights, expect_video_model=models.video_model, expect_video_dim=models.video_dim,
        expect_video_weights=models.video_weights, expect_text_model=models.text_model,
        expect_text_dim=models.text_dim,
    )
    text_model = models.text_model or meta.get("text_model")
    if not text_model:
        raise ConfigError("the fusion weights do not record the text model they were trained on", path=weights,
                          hint="use weights written by `videobert train`")
    pairs = str(meta.get("pairs", "video"))
    if pairs not in LAYOUTS:
        raise ConfigError(f"the fusion weights record unknown pairs {pairs!r}", path=weights,
                          hint="use weights written by `videobert train`")
    return FusionSpace(model.to(device).eval(), weights, weights_sha256(weights), LAYOUTS[pairs], str(text_model),
                       meta.get("text_weights_sha256"), config.video_dim, config.text_dim, device)


def _cls(space: FusionSpace, samples: list) -> tuple[np.ndarray, np.ndarray]:
    from videobert_cli.training.data import collate
    from videobert_cli.training.evaluate import single_modality_cls

    with torch.no_grad():
        v, t = single_modality_cls(space.model, collate(samples).to(space.device), space.layout)
    return v.float().cpu().numpy(), t.float().cpu().numpy()


def fusion_text(space: FusionSpace, texts: Sequence[str]) -> np.ndarray:
    """Each text's normalised text-only [CLS], (n, d): tokens of the weights' text model, no times."""
    from videobert_cli.config import TextModelConfig
    from videobert_cli.text.encoder import TextEncoder
    from videobert_cli.text.models import load_text_model
    from videobert_cli.text.transcripts import parse_text

    loaded = load_text_model(TextModelConfig(name=space.text_model))
    if space.text_weights and loaded.weights_sha256 and space.text_weights != loaded.weights_sha256:
        raise ConfigError(f"the text model {space.text_model!r} found here has other weights than the fusion "
                          "weights were trained on", path=space.weights,
                          hint="install the text model the weights were trained with")
    encoder = TextEncoder(loaded, device=space.device)
    samples = []
    for text in texts:
        tokens = encoder.encode(parse_text(text))
        if len(tokens) == 0:
            raise ConfigError(f"the query {text!r} has no tokens", hint="give a query with words")
        samples.append(token_sample(space, tokens.token_features, np.full(len(tokens), math.nan), tokens.token_ids))
    return fusion_text_cls(space, samples)


def fusion_text_cls(space: FusionSpace, samples: list) -> np.ndarray:
    """The normalised text-only [CLS] of text samples (:func:`token_sample`), (n, d)."""
    return normalise(_cls(space, samples)[1])


def token_sample(space: FusionSpace, features: np.ndarray, times: np.ndarray, token_ids: np.ndarray):
    """A text-only fusion sample of ``features`` (n, text_dim) at ``times``."""
    from videobert_cli.training.data import Sample

    return Sample(np.zeros((0, space.video_dim), np.float32), np.zeros(0), np.asarray(features, np.float32),
                  np.asarray(times, np.float64), np.asarray(token_ids, np.int64), None, 0, "text")


def fusion_video(space: FusionSpace, features: np.ndarray, times: np.ndarray, windows: Windows) -> np.ndarray:
    """Each window's normalised video-only [CLS] (frames at their times), (W, d)."""
    from videobert_cli.training.data import Sample

    out = []
    empty = np.zeros((0, space.text_dim), np.float32)
    for lo in range(0, len(windows), FUSION_BATCH):
        samples = [
            Sample(np.asarray(features[a:b], np.float32), np.asarray(times[a:b], np.float64), empty, np.zeros(0),
                   np.zeros(0, np.int64), None, 0, "window")
            for a, b in zip(windows.row_start[lo:lo + FUSION_BATCH].tolist(), windows.row_stop[lo:lo + FUSION_BATCH].tolist())
        ]
        out.append(_cls(space, samples)[0])
    return normalise(np.concatenate(out)) if out else np.zeros((0, space.model.config.d_model), np.float32)


def fusion_moments(space: FusionSpace, paths: Sequence[Path], file: np.ndarray, row_start: np.ndarray,
                   row_stop: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The fusion embeddings (M, d) of a moment table, reading each file's frames once."""
    out = np.zeros((len(file), space.model.config.d_model), np.float32)
    for i in np.unique(file).tolist():
        rows = np.flatnonzero(file == i)
        _, features, times, _ = read_video(paths[i])
        windows = Windows(row_start[rows], row_stop[rows], start[rows], end[rows])
        if len(windows) and int(windows.row_stop.max()) > len(features):
            raise ConfigError("the file has fewer frames than indexed", path=paths[i], hint="write the index again")
        out[rows] = fusion_video(space, features, times, windows)
    return out


def aligned_models(models: FileModels) -> bool:
    """True when the files' video and text features come from one aligned image-text encoder."""
    from videobert_cli.aligned import is_aligned_pair

    return bool(models.video_model) and is_aligned_pair(models.video_model, models.text_model)


def aligned_text(models: FileModels, texts: Sequence[str], *, device: str = "cpu") -> np.ndarray:
    """The texts in the aligned pair's space, (n, D) normalised."""
    from videobert_cli.aligned import embed_text_queries

    return normalise(embed_text_queries(models.video_model, list(texts), device=device))


def refuse_unrelated(models: FileModels) -> ConfigError:
    """The one-line refusal of a text query over features in unrelated spaces."""
    text = f"text features from {models.text_model!r}" if models.text_model else "no text features"
    return ConfigError(
        f"a text query needs text and video in one space, and these files have video features from "
        f"{models.video_model!r} and {text}",
        hint="pass fusion weights trained on them (videobert train, then search --fusion-weights CKPT), or extract "
             "with an aligned encoder pair (--video-model hf:M --text-model hf:M, M e.g. "
             "google/siglip2-base-patch16-224)",
    )


def fusion_index_section(weights: str | Path, *, device: str = "cpu"):
    """A ``write_index`` section storing the moments in the space of ``weights`` under its sha256."""
    import h5py

    from videobert_cli.store.schema import attr_text

    def section(group: h5py.Group, root: Path) -> None:
        attrs = group.attrs
        models = FileModels("", attr_text(attrs.get("video_model")) or None, int(attrs["video_dim"]),
                            attr_text(attrs.get("video_weights")) or None, attr_text(attrs.get("text_model")) or None,
                            int(attrs.get("text_dim", 0)) or None)
        space = load_fusion_space(weights, models, device=device)
        paths = [root / p for p in group.file["table/path"].asstr()[()]]
        arrays = [group[name][()] for name in ("file", "row_start", "row_stop", "start", "end")]
        embeddings = fusion_moments(space, paths, *arrays)
        target = group.require_group("fusion").create_group(space.sha256)
        target.create_dataset("embeddings", data=embeddings.astype(np.float16))
        target.attrs["weights_path"] = str(Path(weights).resolve())
        target.attrs["layout"] = space.layout

    return section
