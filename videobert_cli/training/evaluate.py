"""Held-out evaluation: retrieval with the fusion [CLS], alignment accuracy, baselines.

Embeddings
    A pair's *video embedding* is the [CLS] output of the fusion model run on its video
    alone (no text positions), its *text embedding* the [CLS] of the text alone; similarity
    is the cosine. This is what the ``nce`` objective trains, and it needs no training head,
    so the trained and the untrained (seeded) fusion are measured the same way.

Ranks
    For a text query, videos are ranked by similarity; the query's *correct* videos are its
    own and those of every pair whose transcript is token-identical (templated captions make
    such duplicates common; one cannot tell them apart from the text). The rank is
    ``1 + #(wrong items scoring >= the best correct one)``: ties count against the model, so
    a collapsed model (all scores equal) gets the worst rank, never a lucky one. Video-to-text
    is symmetric. ``R@K`` is the fraction of queries with rank <= K; ``median_rank`` the median.

Chance
    The exact expectation for a random ranking: a query with ``k`` correct items among ``N``
    has ``P(rank <= K) = 1 - C(N-k, K) / C(N, K)``; without duplicates R@1 chance is ``1/N``.

Baselines
    * *untrained fusion*: the same architecture from the checkpoint's initialisation seed
      (what ``videobert fuse`` uses without ``--fusion-weights``), i.e. the starting point of
      training.
    * *unfused features*: video and text features live in different spaces of different
      widths (e.g. 1280-d EfficientNet vs 384-d MiniLM), so no learning-free similarity
      between them exists; the raw features are reported as "not comparable". As a linear,
      non-fusion baseline, CCA is fitted on the *training split's* mean-pooled features
      (ridge-regularised, see :func:`fit_cca`) and pairs are ranked by cosine in the CCA space.
      With ``all_files=True`` there is no training split: CCA is then fitted on the evaluated
      pairs themselves (transductive, optimistic) and flagged so.

Minimal pairs
    With a contrasts file (:mod:`videobert_cli.training.contrasts`), every model's entry also
    has ``contrasts``: per subset (e.g. motion, speed, order) the two-way choice accuracy
    between captions that differ only there (chance 0.5).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from videobert_cli.errors import ConfigError
from videobert_cli.training.data import (
    LAYOUTS,
    Batch,
    PairDataset,
    Sample,
    build_pairs,
    collate,
    common_space,
    scan_files,
    split_files,
)

RECALL_AT = (1, 5, 10)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def _ranks(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Rank of the best correct item per query row (pessimistic ties, see module doc)."""
    ranks = np.empty(scores.shape[0], dtype=np.int64)
    for q in range(scores.shape[0]):
        s, c = scores[q], correct[q]
        best = s[c].max()
        ranks[q] = 1 + int(np.sum(s[~c] >= best))
    return ranks


def _summary(ranks: np.ndarray) -> dict[str, float]:
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in RECALL_AT}
    out["median_rank"] = float(np.median(ranks))
    return out


def retrieval_metrics(
    video_emb: np.ndarray, text_emb: np.ndarray, keys: np.ndarray
) -> dict[str, dict[str, float]]:
    """Text-to-video and video-to-text R@1/5/10 and median rank over aligned pairs.

    ``video_emb`` (N, D), ``text_emb`` (N, D): row i of both is pair i; ``keys`` (N,) marks
    token-identical transcripts (equal keys = both correct).
    """
    v = np.asarray(video_emb, dtype=np.float64)
    t = np.asarray(text_emb, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    sim = v @ t.T  # sim[i, j] = cos(video i, text j)
    keys = np.asarray(keys)
    correct = keys[:, None] == keys[None, :]
    return {
        "t2v": _summary(_ranks(sim.T, correct.T)),
        "v2t": _summary(_ranks(sim, correct)),
    }


def chance_metrics(keys: np.ndarray) -> dict[str, dict[str, float]]:
    """Expected R@K and median rank of a uniformly random ranking (exact, see module doc)."""
    keys = np.asarray(keys)
    n = len(keys)
    counts = (keys[:, None] == keys[None, :]).sum(axis=1)
    out: dict[str, float] = {}
    for k_at in RECALL_AT:
        vals = [1.0 - math.comb(n - k, k_at) / math.comb(n, k_at) if k_at <= n else 1.0 for k in counts]
        out[f"R@{k_at}"] = float(np.mean(vals))
    medians = []
    for k in counts:
        # smallest r with P(first correct <= r) >= 0.5
        r = next(r for r in range(1, n + 1) if 1.0 - math.comb(n - k, r) / math.comb(n, r) >= 0.5)
        medians.append(r)
    out["median_rank"] = float(np.median(medians))
    # duplicates are symmetric, so both directions have the same chance level
    return {"t2v": dict(out), "v2t": dict(out)}


# --------------------------------------------------------------------------------------------
# model passes
# --------------------------------------------------------------------------------------------
def single_modality_cls(model, batch: Batch, layout: str = "video_text") -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] of each sample's video alone and of its text alone: (B, d), (B, d)."""
    b = len(batch)
    empty_v = batch.video[:, :0]
    empty_t = batch.text[:, :0]
    v = model(
        batch.video, batch.video_time, batch.video_mask,
        empty_t, batch.text_time[:, :0], batch.text_mask[:, :0], layout=layout,
    ).cls
    t = model(
        empty_v, batch.video_time[:, :0], batch.video_mask[:, :0],
        batch.text, batch.text_time, batch.text_mask, layout=layout,
    ).cls
    assert v.shape[0] == b and t.shape[0] == b
    return v, t


def _loader(dataset, batch_size: int, collate_fn=collate):
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn, num_workers=0
    )


@torch.no_grad()
def embed_pairs(
    model, dataset: PairDataset, *, device: str = "cpu", batch_size: int = 32, layout: str = "video_text"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Video and text [CLS] embeddings and text keys of every pair of ``dataset``."""
    was_training = model.training
    model.eval()
    vs, ts, keys = [], [], []
    try:
        for batch in _loader(dataset, batch_size):
            batch = batch.to(device)
            v, t = single_modality_cls(model, batch, layout)
            vs.append(v.float().cpu().numpy())
            ts.append(t.float().cpu().numpy())
            keys.append(batch.text_key.cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(vs), np.concatenate(ts), np.concatenate(keys)


class _SwappedDataset(torch.utils.data.Dataset):
    """Pair i's video with pair ``partner[i]``'s text (alignment negatives)."""

    def __init__(self, base: PairDataset, partner: Sequence[int]):
        self.base, self.partner = base, list(partner)

    def __len__(self) -> int:
        return len(self.partner)

    def __getitem__(self, i: int) -> Sample:
        a, b = self.base[i], self.base[self.partner[i]]
        return Sample(a.video, a.video_time, b.text, b.text_time, b.token_ids, a.word_ids,
                      b.text_key, f"{a.source}+{b.source}")


def mismatch_partners(keys: np.ndarray) -> list[int | None]:
    """For each pair the next pair (cyclically) whose transcript differs; None if none does."""
    n = len(keys)
    out: list[int | None] = []
    for i in range(n):
        out.append(next((j % n for j in range(i + 1, i + n) if keys[j % n] != keys[i]), None))
    return out


@torch.no_grad()
def alignment_accuracy(
    model, heads, dataset: PairDataset, keys: np.ndarray, *, device: str = "cpu", batch_size: int = 32,
    layout: str = "video_text",
) -> float | None:
    """Accuracy of the align head on every matched pair and one mismatched pair each.

    The mismatched partner of pair i is :func:`mismatch_partners`' choice, so the set is
    balanced (one positive, at most one negative per pair) and deterministic.
    """
    model.eval()
    heads.eval()
    correct, total = 0, 0

    def logits(ds) -> np.ndarray:
        out = []
        for batch in _loader(ds, batch_size):
            batch = batch.to(device)
            cls = model(batch.video, batch.video_time, batch.video_mask,
                        batch.text, batch.text_time, batch.text_mask, layout=layout).cls
            out.append(heads.align(cls).float().squeeze(-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    pos = logits(dataset)
    correct += int(np.sum(pos > 0))
    total += len(pos)
    partners = mismatch_partners(keys)
    rows = [i for i, p in enumerate(partners) if p is not None]
    if rows:
        filled = [p if p is not None else i for i, p in enumerate(partners)]
        neg = logits(torch.utils.data.Subset(_SwappedDataset(dataset, filled), rows))
        correct += int(np.sum(neg <= 0))
        total += len(neg)
    return correct / total if total else None


# --------------------------------------------------------------------------------------------
# CCA baseline on unfused features
# --------------------------------------------------------------------------------------------
def pooled_features(dataset: PairDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean video feature and mean token feature of every pair (float64), plus text keys."""
    vs, ts, keys = [], [], []
    for i in range(len(dataset)):
        s = dataset[i]
        vs.append(s.video.astype(np.float64).mean(axis=0))
        ts.append(s.text.astype(np.float64).mean(axis=0))
        keys.append(s.text_key)
    return np.stack(vs), np.stack(ts), np.asarray(keys)


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    w, u = np.linalg.eigh(c)
    return (u / np.sqrt(np.maximum(w, 1e-12))) @ u.T


def fit_cca(
    x: np.ndarray, y: np.ndarray, *, dims: int = 32, reg: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge-regularised CCA: returns (mean_x, A, mean_y, B); project with ``(x - mx) @ A``.

    Covariances get ``reg * trace(C) / dim`` added to the diagonal (the features are far
    wider than the number of training pairs), then ``A = Cxx^-1/2 U``, ``B = Cyy^-1/2 V``
    with ``U S V^T = svd(Cxx^-1/2 Cxy Cyy^-1/2)``, keeping the top ``dims`` directions
    (at most ``min(n - 1, dim_x, dim_y)``).
    """
    n = x.shape[0]
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    cxx = xc.T @ xc / max(n - 1, 1)
    cyy = yc.T @ yc / max(n - 1, 1)
    cxy = xc.T @ yc / max(n - 1, 1)
    cxx += np.eye(cxx.shape[0]) * (reg * np.trace(cxx) / cxx.shape[0] + 1e-8)
    cyy += np.eye(cyy.shape[0]) * (reg * np.trace(cyy) / cyy.shape[0] + 1e-8)
    wx, wy = _inv_sqrt(cxx), _inv_sqrt(cyy)
    u, _, vt = np.linalg.svd(wx @ cxy @ wy, full_matrices=False)
    k = max(1, min(dims, n - 1, x.shape[1], y.shape[1]))
    return mx, wx @ u[:, :k], my, wy @ vt.T[:, :k]


# --------------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------------
def evaluate(
    files: str | Path | Sequence[str | Path],
    weights: str | Path,
    *,
    all_files: bool = False,
    seed: int | None = None,
    val_fraction: float | None = None,
    pairs: str | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    cca: bool = True,
    cca_fit_files: Sequence[str | Path] | None = None,
    contrasts: str | Path | dict | None = None,
    on_message: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate fusion weights on held-out pairs; returns a JSON-safe dict (see module doc).

    ``seed``, ``val_fraction`` and ``pairs`` default to the values recorded in the
    checkpoint, so the held-out pairs are the training run's validation split; with
    ``all_files`` every given file is evaluated. ``cca_fit_files`` are the files the CCA
    baseline is fitted on (e.g. the training corpus when ``files`` is a separate test
    corpus); by default the training split of ``files`` (with ``all_files``: ``files``
    themselves, flagged as transductive). ``contrasts`` (a contrasts file or mapping) adds
    the minimal-pair subsets' two-way choice accuracies to every model.

    Raises:
        ConfigError: the files come from other feature extractors than the weights, they
            disagree among themselves, or no pair is left to evaluate.
    """
    from videobert_cli.devices import resolve_device
    from videobert_cli.fusion.checkpoint import load_fusion_weights
    from videobert_cli.fusion.model import build_fusion
    from videobert_cli.training.data import expand_feature_paths
    from videobert_cli.training.contrasts import contrast_report, load_contrasts, pair_captions
    from videobert_cli.training.heads import heads_path, load_heads

    # directories as train reads them (the same files, so the same validation split)
    skipped: list[str] = []
    files = expand_feature_paths(files, skipped=skipped)
    if cca_fit_files is not None:
        cca_fit_files = expand_feature_paths(cca_fit_files, skipped=skipped)
    for reason in skipped:
        if on_message is not None:
            on_message(f"skipped {reason}")

    say = on_message or (lambda message: None)
    minimal_pairs = None if contrasts is None else load_contrasts(contrasts)
    device = resolve_device(device)
    infos = scan_files(files)
    space = common_space(infos)
    model, fcfg, meta = load_fusion_weights(weights, **space.expectations())
    seed = int(meta.get("seed", 0)) if seed is None else int(seed)
    val_fraction = float(meta.get("val_fraction", 0.2)) if val_fraction is None else float(val_fraction)
    pairs = str(meta.get("pairs", "video")) if pairs is None else pairs
    max_frames, max_tokens = meta.get("max_frames"), meta.get("max_tokens")
    if pairs not in LAYOUTS:
        raise ConfigError(f"unknown --pairs {pairs!r}", hint=f"use one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[pairs]

    by_path = {info.path: info for info in infos}
    if all_files:
        eval_paths, fit_paths = [info.path for info in infos], [info.path for info in infos]
    else:
        fit_paths, eval_paths = split_files([i.path for i in infos], val_fraction, seed)
    eval_refs, skipped = build_pairs([by_path[p] for p in eval_paths], pairs)
    for reason in skipped:
        say(f"skipped {reason}")
    if len(eval_refs) < 2:
        if all_files:
            raise ConfigError(f"{len(eval_refs)} pair(s) to evaluate in {len(infos)} file(s); retrieval needs 2",
                              hint="give more files")
        raise ConfigError(
            f"{len(eval_refs)} held-out pair(s) to evaluate (val split: {len(eval_paths)} of "
            f"{len(infos)} files, --val-fraction {val_fraction}, --seed {seed})",
            hint="give more files, or use --all to evaluate every given file",
        )
    dataset = PairDataset(eval_refs, max_frames=max_frames, max_tokens=max_tokens)
    captions = pair_captions(eval_refs) if minimal_pairs is not None else []

    def add_contrasts(entry: dict[str, Any], video_emb: np.ndarray, text_emb: np.ndarray) -> None:
        if minimal_pairs is not None:
            entry["contrasts"] = contrast_report(video_emb, text_emb, captions, minimal_pairs)

    results: dict[str, Any] = {}
    model = model.to(device)
    v, t, keys = embed_pairs(model, dataset, device=device, batch_size=batch_size, layout=layout)
    trained = retrieval_metrics(v, t, keys)
    add_contrasts(trained, v, t)
    hp = heads_path(weights)
    align_weight = float((meta.get("loss_weights") or {}).get("align", 0.0))
    if hp.is_file() and align_weight > 0:
        heads, _ = load_heads(hp, fcfg.d_model, fcfg.video_dim)
        trained["align_accuracy"] = alignment_accuracy(
            model, heads.to(device), dataset, keys, device=device, batch_size=batch_size, layout=layout
        )
    else:
        trained["align_accuracy"] = None
        trained["note"] = (
            f"no training heads file ({hp.name}): alignment accuracy not measured"
            if not hp.is_file() else "the align objective had weight 0: its head is untrained"
        )
    results["trained"] = trained

    init_seed = int(meta.get("init_seed", 0))
    untrained_model = build_fusion(fcfg, seed=init_seed).to(device)
    v0, t0, _ = embed_pairs(untrained_model, dataset, device=device, batch_size=batch_size, layout=layout)
    untrained = retrieval_metrics(v0, t0, keys)
    add_contrasts(untrained, v0, t0)
    untrained["align_accuracy"] = None
    untrained["note"] = (
        f"seeded initialisation (seed {init_seed}) of the same architecture; it has no "
        "alignment head (a random head would score 0.5 in expectation)"
    )
    results["untrained_fusion"] = untrained

    results["unfused_raw"] = {
        "comparable": False,
        "reason": (
            f"video features ({space.video_model}, {space.video_dim}-d) and text features "
            f"({space.text_model}, {space.text_dim}-d) live in different spaces; a similarity "
            "between them needs a learned map (see unfused_cca)"
        ),
    }
    if cca:
        fit_kind = "evaluated pairs (transductive, optimistic)" if all_files else "training split"
        if cca_fit_files:
            fit_infos = scan_files(cca_fit_files)
            common_space(list(infos[:1]) + fit_infos)  # ConfigError unless the same feature models
            fit_kind = f"{len(fit_infos)} given files (--cca-fit)"
        else:
            fit_infos = [by_path[p] for p in fit_paths]
        fit_refs, _ = build_pairs(fit_infos, pairs)
        if len(fit_refs) >= 3:
            fit_ds = PairDataset(fit_refs, max_frames=max_frames, max_tokens=max_tokens)
            fx, fy, _ = pooled_features(fit_ds)
            mx, a, my, b = fit_cca(fx, fy)
            ex, ey, _ = pooled_features(dataset)
            cca_res: dict[str, Any] = retrieval_metrics((ex - mx) @ a, (ey - my) @ b, keys)
            add_contrasts(cca_res, (ex - mx) @ a, (ey - my) @ b)
            cca_res["align_accuracy"] = None
            cca_res["fit"] = fit_kind
            cca_res["fit_pairs"] = len(fit_refs)
            cca_res["dims"] = int(a.shape[1])
            cca_res["note"] = (
                "CCA (ridge 0.1) on mean-pooled unfused features, cosine in the CCA space: a "
                "linear baseline without fusion"
            )
            results["unfused_cca"] = cca_res
        else:
            results["unfused_cca"] = {"comparable": False, "reason": "fewer than 3 training pairs to fit CCA"}

    results["chance"] = chance_metrics(keys)
    return {
        "weights": str(weights),
        "split": {
            "mode": "all" if all_files else "validation",
            "seed": seed,
            "val_fraction": val_fraction,
            "pairs": pairs,
            "layout": layout,
            "files": len(eval_paths),
            "num_pairs": len(eval_refs),
            "unique_texts": int(len(np.unique(keys))),
            "chance_R@1_if_unique": 1.0 / len(eval_refs),
        },
        "feature_space": space.to_dict(),
        "checkpoint": {k: meta.get(k) for k in ("epochs", "trained_steps", "loss_weights", "seed")},
        "contrasts": None if minimal_pairs is None else {
            "source": str(contrasts) if not isinstance(contrasts, dict) else "mapping",
            "subsets": {name: len(p) for name, p in minimal_pairs.items()},
            "measure": "two-way choice accuracy: video closer to its own caption than to the other (tie = 0.5)",
            "chance": 0.5,
        },
        "results": results,
    }
