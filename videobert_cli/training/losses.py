"""Training objectives and masking, as plain functions of tensors (no model, no I/O).

* :func:`info_nce` - symmetric InfoNCE between two batches of vectors (CBT's video-text
  contrastive loss over pooled vectors).
* :func:`alignment_loss` - binary cross-entropy of the [CLS] alignment logit (VideoBERT's
  linguistic-visual alignment: matched pair = 1, video with another sample's text = 0).
* :func:`choose_masked` / :func:`apply_mask` - which positions are masked and how.
* :func:`feature_nce` - masked visual prediction without a vocabulary: the prediction at
  each masked position must pick out its own original feature among all masked features of
  the batch (InfoNCE, as CBT).
* :func:`reverse_in_time` / :func:`shuffle_in_time` / :func:`resample_in_time` - a video's
  own frames in another order or at another speed (times kept): the hard negatives of
  :func:`time_contrastive`.
* :func:`time_contrastive` - text-to-video InfoNCE whose candidates are the batch's videos
  plus, per text, its own video with the frames reversed and shuffled: only the order of
  events separates the positive from those.
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


def _valid_counts(mask: torch.Tensor) -> torch.Tensor:
    return mask.to(torch.bool).sum(dim=1)


def reverse_in_time(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sample's valid rows (the first ``n`` of its ``mask``) in reverse order; padding stays.

    Times are not touched by the caller, so frame ``j`` keeps time ``t_j`` but shows what was
    shown at ``t_{n-1-j}``: the same content, played backwards.
    """
    b, n = mask.shape
    counts = _valid_counts(mask)
    idx = torch.arange(n, device=features.device).expand(b, n)
    rev = torch.where(idx < counts[:, None], counts[:, None] - 1 - idx, idx)
    return torch.gather(features, 1, rev[..., None].expand_as(features))


def shuffle_in_time(features: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each sample's valid rows in a random order that differs from the original (n >= 2).

    The permutation is drawn from ``generator`` (CPU); when the draw is the identity, the
    rows are rotated by one instead, so the copy is never the original order.
    """
    b, n = mask.shape
    counts = _valid_counts(mask).tolist()
    rows = []
    for c in counts:
        perm = torch.randperm(c, generator=generator) if c else torch.zeros(0, dtype=torch.long)
        if c >= 2 and bool(torch.equal(perm, torch.arange(c))):
            perm = torch.roll(perm, 1)
        rows.append(torch.cat([perm, torch.arange(c, n)]))
    idx = torch.stack(rows).to(features.device) if rows else torch.zeros((0, n), dtype=torch.long)
    return torch.gather(features, 1, idx[..., None].expand_as(features))


def resample_in_time(features: torch.Tensor, mask: torch.Tensor, factor: float) -> torch.Tensor:
    """Each sample's valid rows played ``factor`` times as fast; padding stays.

    Row ``j`` of a sample with ``n`` valid rows shows old row ``floor(j * factor) mod n``:
    factor 2 skips every other frame and starts over when the clip ends (0 2 4 6 0 2 4 6),
    factor 0.5 shows each frame twice (0 0 1 1 2 2 3 3) and stops half-way.
    """
    b, n = mask.shape
    counts = _valid_counts(mask)
    idx = torch.arange(n, device=features.device).expand(b, n)
    src = torch.floor(idx.to(torch.float64) * float(factor)).to(torch.long) % counts.clamp(min=1)[:, None]
    src = torch.where(idx < counts[:, None], src, idx)
    return torch.gather(features, 1, src[..., None].expand_as(features))


def time_distortions(features: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    """The hard negatives of ``tnce``: reversed, shuffled, twice as fast, half as fast."""
    return [reverse_in_time(features, mask), shuffle_in_time(features, mask, generator),
            resample_in_time(features, mask, 2.0), resample_in_time(features, mask, 0.5)]


def time_contrastive(
    text: torch.Tensor,
    video: torch.Tensor,
    distorted: list[torch.Tensor],
    temperature: float,
    same: torch.Tensor | None = None,
) -> torch.Tensor:
    """Text-to-video InfoNCE with per-text hard negatives.

    Text ``i``'s candidates are every video ``j`` of the batch (videos whose transcript is
    token-identical, ``same``, are left out as negatives) and ``distorted[k][i]``: its own
    video in another frame order. All are cosine similarities over ``temperature``; the
    target is video ``i``. ``text``, ``video`` and each ``distorted[k]`` are (B, D).
    """
    t = F.normalize(text.float(), dim=-1)
    v = F.normalize(video.float(), dim=-1)
    n = t.shape[0]
    logits = t @ v.T
    if same is not None:
        off = same.to(torch.bool) & ~torch.eye(n, dtype=torch.bool, device=t.device)
        logits = logits.masked_fill(off, float("-inf"))
    extra = [(t * F.normalize(d.float(), dim=-1)).sum(dim=-1, keepdim=True) for d in distorted]
    logits = torch.cat([logits, *extra], dim=1) / float(temperature)
    return F.cross_entropy(logits, torch.arange(n, device=t.device))
