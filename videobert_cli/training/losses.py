"""Training objectives and masking, as plain functions of tensors (no model, no I/O).

* :func:`info_nce` - symmetric InfoNCE between two batches of vectors (CBT's video-text
  contrastive loss over pooled vectors).
* :func:`alignment_loss` - binary cross-entropy of the [CLS] alignment logit (VideoBERT's
  linguistic-visual alignment: matched pair = 1, video with another sample's text = 0).
* :func:`choose_masked` / :func:`apply_mask` - which positions are masked and how.
* :func:`feature_nce` - masked visual prediction without a vocabulary: the prediction at
  each masked position must pick out its own original feature among all masked features of
  the batch (InfoNCE, as CBT).
* :func:`masked_cross_entropy` - prediction of a class (token id, video word id) at masked
  positions; positions labelled :data:`~videobert_cli.training.data.IGNORE` do not count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from videobert_cli.training.data import IGNORE


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float,
    same: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE: row ``i`` of ``a`` must match row ``i`` of ``b`` among all rows.

    ``logits = normalize(a) @ normalize(b).T / temperature``; the loss is the mean of the
    cross-entropy over rows (a -> b) and over columns (b -> a) with the diagonal as target.
    ``same`` (B, B) bool marks off-diagonal pairs that are *also* positives (e.g. two videos
    with token-identical transcripts); they are removed from the negatives (logit -inf)
    instead of being pushed apart.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"info_nce needs two (B, D) tensors of one shape, got {a.shape}, {b.shape}")
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = a @ b.T / float(temperature)
    n = a.shape[0]
    target = torch.arange(n, device=a.device)
    if same is not None:
        off = same.to(torch.bool) & ~torch.eye(n, dtype=torch.bool, device=a.device)
        logits = logits.masked_fill(off, float("-inf"))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def alignment_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of alignment ``logits`` (N,) against 0/1 ``labels`` (N,)."""
    return F.binary_cross_entropy_with_logits(logits.float().reshape(-1), labels.float().reshape(-1))


def choose_masked(valid: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
    """Pick positions to mask: each valid position independently with probability ``prob``.

    Every sample with at least one valid position gets at least one masked position (a
    uniformly chosen valid one when the draw picked none), so every sample carries a
    prediction target. Padding (``valid`` False) is never masked. Draws come from
    ``generator`` only (CPU), so masks are reproducible.
    """
    valid = valid.to(torch.bool)
    b, n = valid.shape
    if n == 0:
        return valid.clone()
    u = torch.rand((b, n), generator=generator).to(valid.device)
    masked = (u < float(prob)) & valid
    need = valid.any(dim=1) & ~masked.any(dim=1)
    if bool(need.any()):
        # one extra uniform draw per row, restricted to valid positions
        scores = torch.rand((b, n), generator=generator).to(valid.device).masked_fill(~valid, -1.0)
        pick = scores.argmax(dim=1)
        extra = torch.zeros_like(masked)
        extra[torch.arange(b, device=valid.device), pick] = True
        masked = masked | (extra & need[:, None])
    return masked


def apply_mask(features: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Replace the input features of masked positions by zeros.

    The fusion model then sees only ``proj``'s bias + modality + time embedding there: the
    position's time (which frame / where in the sentence) stays visible, its content does not.
    """
    return torch.where(masked[..., None], torch.zeros((), dtype=features.dtype, device=features.device), features)


def masked_labels(labels: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """``labels`` at masked positions, :data:`IGNORE` elsewhere."""
    return torch.where(masked, labels, torch.full_like(labels, IGNORE))


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over positions whose label is not :data:`IGNORE`.

    ``logits`` (..., C), ``labels`` (...). Returns 0 (with a gradient path) when no position
    carries a label.
    """
    logits = logits.float().reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1)
    if not bool((labels != IGNORE).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE)


def feature_nce(predicted: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of predicted vs. original features over the M masked positions of a batch.

    ``predicted`` and ``target`` are (M, D); row i of ``predicted`` must be closest (cosine)
    to row i of ``target`` among all M targets. One direction only (prediction -> targets).
    """
    if predicted.shape[0] == 0:
        return predicted.sum() * 0.0
    p = F.normalize(predicted.float(), dim=-1)
    t = F.normalize(target.float(), dim=-1)
    logits = p @ t.T / float(temperature)
    return F.cross_entropy(logits, torch.arange(p.shape[0], device=p.device))
