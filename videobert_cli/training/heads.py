"""Training heads and the files a training run writes next to the fusion weights.

For ``-o fusion.safetensors`` a run writes

* ``fusion.safetensors`` - the fusion model only, with :func:`save_fusion_weights`, so that
  ``load_fusion_weights`` and ``videobert fuse --fusion-weights`` read it unchanged;
* ``fusion.heads.safetensors`` - the training heads (:class:`TrainingHeads`), safetensors
  with header ``format = "videobert-cli/fusion-heads"``; ``videobert eval`` uses the
  alignment head from it;
* ``fusion.safetensors.state.pt`` - what ``--resume`` needs besides weights: optimizer and
  grad-scaler state, epoch, step, RNG states, loss history. Only tensors, numbers, strings,
  lists, dicts and None, so it loads with ``torch.load(weights_only=True)``.

Every file is written atomically (temporary file in the same directory, fsync, rename: see
:func:`videobert_cli.store.atomic.atomic_write`) and
carries the epoch it belongs to; a resume refuses a set of files from different epochs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from videobert_cli.store.atomic import atomic_write
from videobert_cli.errors import ConfigError

HEADS_FORMAT = "videobert-cli/fusion-heads"
HEADS_VERSION = "1"


class TrainingHeads(nn.Module):
    """Small heads on top of the fusion output, used only while training (and by eval).

    * ``align``: Linear(d_model, 1) on [CLS] - matched (1) vs. mismatched (0) video/text;
    * ``mvm``: Linear(d_model, video_vocab) when the files have ``video/word_ids`` (predict
      the id), else Linear(d_model, video_dim) (predict the feature, scored by InfoNCE);
    * ``mlm``: Linear(d_model, 1 + len(text_vocab)) - class 0 is "a token id not seen in
      training", class ``k`` is ``text_vocab[k - 1]`` (``text_vocab`` = sorted ids seen in
      the training files, a buffer saved with the heads).
    """

    def __init__(
        self,
        d_model: int,
        video_dim: int,
        text_vocab: np.ndarray | torch.Tensor,
        video_vocab: int | None,
    ):
        super().__init__()
        vocab = torch.as_tensor(np.asarray(text_vocab, dtype=np.int64))
        self.video_vocab = None if video_vocab is None else int(video_vocab)
        self.align = nn.Linear(d_model, 1)
        self.mvm = nn.Linear(d_model, self.video_vocab if self.video_vocab else video_dim)
        self.mlm = nn.Linear(d_model, 1 + int(vocab.numel()))
        self.register_buffer("text_vocab", vocab)

    @property
    def mvm_mode(self) -> str:
        return "word_ids" if self.video_vocab else "features"

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        for module in (self.align, self.mvm, self.mlm):
            module.weight.normal_(0.0, 0.02, generator=generator)
            module.bias.zero_()

    def token_classes(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Map token ids to mlm classes (0 = unseen id, k = text_vocab[k-1])."""
        vocab = self.text_vocab.to(token_ids.device)
        if vocab.numel() == 0:
            return torch.zeros_like(token_ids)
        pos = torch.searchsorted(vocab, token_ids.clamp(min=0))
        pos_c = pos.clamp(max=vocab.numel() - 1)
        found = vocab[pos_c] == token_ids
        return torch.where(found, pos_c + 1, torch.zeros_like(pos_c))


# --------------------------------------------------------------------------------------------
# file names
# --------------------------------------------------------------------------------------------
def heads_path(weights: str | Path) -> Path:
    """``fusion.safetensors`` -> ``fusion.heads.safetensors`` (same directory)."""
    weights = Path(weights)
    stem = weights.name[: -len(".safetensors")] if weights.name.endswith(".safetensors") else weights.name
    return weights.with_name(f"{stem}.heads.safetensors")


def state_path(weights: str | Path) -> Path:
    """``fusion.safetensors`` -> ``fusion.safetensors.state.pt``."""
    weights = Path(weights)
    return weights.with_name(weights.name + ".state.pt")


def save_heads(path: str | Path, heads: TrainingHeads, metadata: dict[str, Any]) -> None:
    """Save ``heads`` (float32 weights + the int64 text vocabulary) atomically as safetensors."""
    from safetensors.torch import save as safetensors_save

    header = {
        "format": HEADS_FORMAT,
        "format_version": HEADS_VERSION,
        "video_vocab": json.dumps(heads.video_vocab),
        "metadata": json.dumps(metadata, sort_keys=True, allow_nan=False),
    }
    tensors = {}
    for name, t in heads.state_dict().items():
        t = t.detach().to("cpu").contiguous().clone()
        tensors[name] = t if name == "text_vocab" else t.to(torch.float32)
    atomic_write(Path(path), safetensors_save(tensors, metadata=header))


def load_heads(path: str | Path, d_model: int, video_dim: int) -> tuple[TrainingHeads, dict[str, Any]]:
    """Load heads written by :func:`save_heads`; ConfigError when missing or not matching."""
    from safetensors import safe_open

    path = Path(path)
    hint = "pass the fusion weights written by `videobert train` (the heads file sits next to them)"
    if not path.is_file():
        raise ConfigError("training heads file not found", path=path, hint=hint)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            if header.get("format") != HEADS_FORMAT or header.get("format_version") != HEADS_VERSION:
                raise ConfigError("not a videobert-cli training heads file", path=path, hint=hint)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = json.loads(header.get("metadata", "{}"))
            video_vocab = json.loads(header.get("video_vocab", "null"))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot read training heads: {exc}", path=path, hint=hint) from exc
    if "text_vocab" not in tensors:
        raise ConfigError("training heads file lacks text_vocab", path=path, hint=hint)
    heads = TrainingHeads(d_model, video_dim, tensors["text_vocab"].numpy(), video_vocab)
    try:
        heads.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"training heads do not fit the fusion model: {str(exc).splitlines()[0]}",
            path=path,
            hint="the heads file belongs to another checkpoint",
        ) from exc
    return heads, metadata


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` atomically (plain containers of tensors and numbers only)."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(Path(path), buffer.getvalue())


def load_state(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a state file; ConfigError when unusable."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            "training state file not found (needed to resume)",
            path=path,
            hint="resume from a checkpoint written by `videobert train`; its .state.pt sits next to it",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"cannot read training state: {str(exc).splitlines()[0] if str(exc) else exc!r}",
            path=path,
            hint="the file is damaged; resume from another checkpoint or train from scratch",
        ) from exc
    if not isinstance(state, dict) or "epoch" not in state:
        raise ConfigError("not a videobert-cli training state file", path=path)
    return state


def check_output_paths(output: Path, files) -> None:
    """Before any training: the checkpoint files must not overwrite an input, and their folder
    must exist (it is created) and take files - not found out after the first epoch."""
    import os

    from videobert_cli.errors import OutputError, UsageError

    inputs = {Path(f).resolve() for f in files}
    for path in (output, heads_path(output), state_path(output)):
        if path.resolve() in inputs:
            raise UsageError("-o would overwrite one of the feature files trained on", path=path,
                             hint="write the weights elsewhere, e.g. -o fusion.safetensors")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder for the weights: {exc.strerror}", path=output.parent) from exc
    if not os.access(output.parent, os.W_OK):
        raise OutputError("cannot write the weights here: the folder is not writable", path=output.parent,
                          hint="give -o a writable place")
