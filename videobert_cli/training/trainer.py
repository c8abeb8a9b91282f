"""Training the fusion Transformer on features read from HDF5 (the encoders stay frozen).

One optimisation step on a batch of B pairs computes the enabled objectives (weight > 0):

``nce``
    Fuse each video alone and each text alone; symmetric InfoNCE (temperature ``tau``) over
    the B x B cosine similarities of their [CLS] vectors (CBT). Pairs with token-identical
    transcripts are not used as each other's negatives.
``align``
    Fuse the B matched pairs and B mismatched ones (video i with the text of sample
    ``(i + k) mod B``, ``k`` drawn uniformly from 1..B-1; mismatches whose text is
    token-identical to the match are dropped); the ``align`` head on [CLS] is trained with
    binary cross-entropy, matched = 1 (VideoBERT's linguistic-visual alignment). Unmasked
    inputs, so the presence of masking cannot give the answer away.
``tnce``
    Text-to-video InfoNCE where each text's candidates are the batch's videos *plus its own
    video with the frames reversed, shuffled, played twice as fast and half as fast* (times
    kept, :func:`losses.time_distortions`): the content is the video's own, only the order
    and pace of events tell the positive apart (:func:`losses.time_contrastive`). Needs no
    second sample.
``mvm`` / ``mlm``
    One more pass over the matched pairs with masked inputs (:func:`losses.choose_masked`,
    probability ``mask_prob``, at least one position per sample and modality; masked
    features are replaced by zeros, their times kept). ``mvm`` predicts, at masked video
    positions, ``video/word_ids`` with cross-entropy when every training file has them, else
    the original (frozen) frame feature, scored by InfoNCE among all masked frames of the
    batch. ``mlm`` predicts the token id at masked text positions with cross-entropy over the
    ids seen in the training files (unseen ids are one extra class).

The loss is ``sum(weight * objective)``. Objectives that need two samples (``nce``,
``align``) are skipped on a batch of one.

Reproducibility: epoch ``e`` draws its shuffling, masks, negatives and dropout from seeds
derived from ``(seed, e)`` (run inside ``torch.random.fork_rng``, so the caller's global RNG
is untouched). The epoch number is therefore the whole RNG state: resuming after epoch ``e``
with the saved optimizer state reproduces an uninterrupted run exactly (on the same device
and software).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from videobert_cli.errors import ConfigError, VideoBertError
from videobert_cli.training import losses as L
from videobert_cli.training.data import (
    LAYOUTS,
    Batch,
    FeatureSpace,
    PairDataset,
    build_pairs,
    collate,
    collect_vocabularies,
    common_space,
    expand_feature_paths,
    scan_files,
    split_files,
)

OBJECTIVES = ("align", "nce", "mvm", "mlm", "tnce")
DEFAULT_LOSSES = "align=1,nce=1,mvm=0.5,mlm=0.5"


def parse_loss_weights(spec: str | dict[str, float]) -> dict[str, float]:
    """``"align=1,nce=1,mvm=0.5"`` -> weights of all objectives (unnamed ones are 0)."""
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise ConfigError(
                    f"--loss: {part!r} is not NAME=WEIGHT",
                    hint=f"e.g. --loss {DEFAULT_LOSSES}",
                )
            name, value = part.split("=", 1)
            items.append((name.strip(), value.strip()))
    weights = {name: 0.0 for name in OBJECTIVES}
    for name, value in items:
        if name not in OBJECTIVES:
            raise ConfigError(
                f"--loss: unknown objective {name!r}", hint=f"choose from {', '.join(OBJECTIVES)}"
            )
        try:
            w = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"--loss: weight of {name} is not a number: {value!r}") from None
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"--loss: weight of {name} must be >= 0, got {value}")
        weights[name] = w
    if not any(weights.values()):
        raise ConfigError("--loss: every objective has weight 0", hint=f"e.g. --loss {DEFAULT_LOSSES}")
    return weights


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (the fusion shape applies only when not resuming)."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    val_fraction: float = 0.2
    pairs: str = "video"
    losses: str = DEFAULT_LOSSES
    mask_prob: float = 0.15
    temperature: float = 0.07
    max_frames: int | None = 64
    max_tokens: int | None = 128
    d_model: int = 256
    num_layers: int = 2
    num_heads: int = 4
    ff_dim: int | None = None  # None: 4 * d_model
    dropout: float = 0.1
    time_scale: float = 1.0  # seconds per unit of the sinusoidal time embedding
    video_delta: bool = False  # neighbouring-frame differences as an input channel
    device: str = "auto"
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto (fp32 on CPU, bf16/fp16 autocast on CUDA)
    num_workers: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.lr > 0 and math.isfinite(self.lr), "--lr must be a positive number"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (0.0 < self.mask_prob <= 1.0, "--mask-prob must be in (0, 1]"),
            (self.temperature > 0, "--temperature must be positive"),
            (self.max_frames is None or self.max_frames >= 1, "--max-frames must be at least 1"),
            (self.max_tokens is None or self.max_tokens >= 1, "--max-tokens must be at least 1"),
            (self.num_workers >= 0, "--workers must be >= 0"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"), "--precision: auto, fp32, bf16 or fp16"),
            (self.pairs in LAYOUTS, f"--pairs must be one of {', '.join(LAYOUTS)}"),
            (0.0 <= self.val_fraction < 1.0, "--val-fraction must be in [0, 1)"),
            (self.time_scale > 0 and math.isfinite(self.time_scale), "--time-scale must be a positive number"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        parse_loss_weights(self.losses)

    @property
    def loss_weights(self) -> dict[str, float]:
        return parse_loss_weights(self.losses)


@dataclass
class TrainEvent:
    """What the core reports to a progress callback.

    ``kind``: ``"start"`` (totals known), ``"step"`` (after each optimisation step, with the
    step's losses), ``"epoch"`` (after validation and the checkpoint, with epoch means and
    ``val``), ``"message"`` (a line of text).
    """

    kind: str
    epoch: int = 0  # 1-based epoch being run / just finished
    epochs: int = 0
    step: int = 0  # step within the epoch (1-based)
    steps_per_epoch: int = 0
    global_step: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    val: dict[str, Any] | None = None
    message: str = ""


@dataclass
class TrainResult:
    weights: Path
    heads_file: Path
    state_file: Path
    epochs: int
    global_step: int
    history: list[dict[str, Any]]
    num_train_pairs: int
    num_val_pairs: int
    seconds: float
    skipped: list[str]
    model: Any = None  # the trained FusionTransformer (eval mode, on the training device)
    heads: Any = None  # the TrainingHeads


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from the parts (stable across processes and platforms)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _autocast(precision: str, device: str):
    from videobert_cli.devices import autocast

    return autocast(precision, device)


# --------------------------------------------------------------------------------------------
# the objectives on one batch
# --------------------------------------------------------------------------------------------
def batch_losses(
    model,
    heads,
    batch: Batch,
    weights: dict[str, float],
    generator: torch.Generator,
    *,
    mask_prob: float,
    temperature: float,
    layout: str = "video_text",
) -> dict[str, torch.Tensor]:
    """The enabled objectives on ``batch`` (already on the model's device), unweighted."""
    from videobert_cli.training.evaluate import single_modality_cls

    out: dict[str, torch.Tensor] = {}
    b = len(batch)
    keys = batch.text_key
    same = keys[:, None] == keys[None, :]

    v = t = None
    if weights["nce"] > 0 and b >= 2:
        v, t = single_modality_cls(model, batch, layout)
        out["nce"] = L.info_nce(v, t, temperature, same=same)

    if weights["tnce"] > 0:
        if v is None:
            v, t = single_modality_cls(model, batch, layout)
        no_text = (batch.text[:, :0], batch.text_time[:, :0], batch.text_mask[:, :0])
        distorted = [model(d, batch.video_time, batch.video_mask, *no_text, layout=layout).cls
                     for d in L.time_distortions(batch.video, batch.video_mask, generator)]
        out["tnce"] = L.time_contrastive(t, v, distorted, temperature, same=same)

    if weights["align"] > 0 and b >= 2:
        k = int(torch.randint(1, b, (1,), generator=generator))
        perm = (torch.arange(b) + k) % b
        perm = perm.to(keys.device)
        neg_ok = keys[perm] != keys
        rows = torch.nonzero(neg_ok).flatten()
        video = torch.cat([batch.video, batch.video[rows]])
        vt = torch.cat([batch.video_time, batch.video_time[rows]])
        vm = torch.cat([batch.video_mask, batch.video_mask[rows]])
        text = torch.cat([batch.text, batch.text[perm[rows]]])
        tt = torch.cat([batch.text_time, batch.text_time[perm[rows]]])
        tm = torch.cat([batch.text_mask, batch.text_mask[perm[rows]]])
        cls = model(video, vt, vm, text, tt, tm, layout=layout).cls
        labels = torch.cat([torch.ones(b), torch.zeros(len(rows))]).to(cls.device)
        out["align"] = L.alignment_loss(heads.align(cls).squeeze(-1), labels)

    if weights["mvm"] > 0 or weights["mlm"] > 0:
        vmask = (
            L.choose_masked(batch.video_mask, mask_prob, generator)
            if weights["mvm"] > 0 else torch.zeros_like(batch.video_mask)
        )
        tmask = (
            L.choose_masked(batch.text_mask, mask_prob, generator)
            if weights["mlm"] > 0 else torch.zeros_like(batch.text_mask)
        )
        seq = model(
            L.apply_mask(batch.video, vmask), batch.video_time, batch.video_mask,
            L.apply_mask(batch.text, tmask), batch.text_time, batch.text_mask, layout=layout,
        ).sequence
        nv, nt = batch.video.shape[1], batch.text.shape[1]
        if layout == "videobert":  # [CLS] text... [>] video... [SEP]
            seq_t, seq_v = seq[:, 1 : 1 + nt], seq[:, 2 + nt : 2 + nt + nv]
        else:  # [CLS] video... text...
            seq_v, seq_t = seq[:, 1 : 1 + nv], seq[:, 1 + nv : 1 + nv + nt]
        if weights["mvm"] > 0:
            if heads.mvm_mode == "word_ids":
                if batch.word_ids is not None:
                    labels = L.masked_labels(batch.word_ids, vmask)
                    sel = labels != L.IGNORE
                    out["mvm"] = L.masked_cross_entropy(heads.mvm(seq_v[sel]), labels[sel])
            else:
                out["mvm"] = L.feature_nce(heads.mvm(seq_v[vmask]), batch.video[vmask], temperature)
        if weights["mlm"] > 0:
            labels = L.masked_labels(heads.token_classes(batch.token_ids), tmask)
            sel = labels != L.IGNORE
            out["mlm"] = L.masked_cross_entropy(heads.mlm(seq_t[sel]), labels[sel])
    return out


def _loader(dataset, order: Sequence[int], batch_size: int, num_workers: int):
    batches = [list(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, collate_fn=collate, num_workers=num_workers
    ), len(batches)


@torch.no_grad()
def validate(
    model, heads, dataset: PairDataset, config: TrainConfig, weights: dict[str, float], device: str
) -> dict[str, Any]:
    """Validation losses (fixed masks/negatives from the seed) and text-to-video R@1."""
    from videobert_cli.training.evaluate import embed_pairs, retrieval_metrics

    model.eval()
    heads.eval()
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "val"))
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    loader, _ = _loader(dataset, list(range(len(dataset))), config.batch_size, 0)
    for batch in loader:
        batch = batch.to(device)
        for name, value in batch_losses(
            model, heads, batch, weights, generator,
            mask_prob=config.mask_prob, temperature=config.temperature, layout=LAYOUTS[config.pairs],
        ).items():
            sums[name] = sums.get(name, 0.0) + float(value) * len(batch)
            counts[name] = counts.get(name, 0) + len(batch)
    out: dict[str, Any] = {name: _finite(sums[name] / counts[name]) for name in sums}
    if len(dataset) >= 2:
        v, t, keys = embed_pairs(model, dataset, device=device, batch_size=config.batch_size,
                                 layout=LAYOUTS[config.pairs])
        m = retrieval_metrics(v, t, keys)
        out["t2v_R@1"] = m["t2v"]["R@1"]
        out["v2t_R@1"] = m["v2t"]["R@1"]
    return out


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def _check_resume_settings(meta: dict[str, Any], config: TrainConfig, path: Path) -> None:
    for key in ("seed", "val_fraction", "pairs"):
        recorded = meta.get(key)
        given = getattr(config, key)
        if recorded is not None and recorded != given:
            flag = {"seed": "--seed", "val_fraction": "--val-fraction", "pairs": "--pairs"}[key]
            raise ConfigError(
                f"--resume: the checkpoint was trained with {key}={recorded!r} but this run has "
                f"{given!r} (the train/validation split would change)",
                path=path,
                hint=f"pass {flag} {recorded}",
            )


def train(
    files: str | Path | Sequence[str | Path],
    output: str | Path,
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    progress: Callable[[TrainEvent], None] | None = None,
) -> TrainResult:
    """Train fusion weights on feature files; write ``output`` (+ heads and state) each epoch.

    Trains ``config.epochs`` epochs in all: resuming from a checkpoint of epoch ``e`` runs
    epochs ``e+1 .. config.epochs``.

    Raises:
        ConfigError: files from different feature extractors, no training pair, bad
            settings, or a resume checkpoint that does not fit the files or settings.
        FeatureFileError: a file is not a complete feature file with video/ and text/.
        OutputError: the checkpoint cannot be written.
    """
    from videobert_cli.version import __version__
    from videobert_cli.devices import resolve_device, resolve_training_precision
    from videobert_cli.fusion.checkpoint import load_fusion_weights, save_fusion_weights
    from videobert_cli.fusion.model import FusionConfig, build_fusion
    from videobert_cli.training.heads import (
        TrainingHeads, check_output_paths, heads_path, load_heads, load_state, save_heads, save_state, state_path,
    )

    config = config or TrainConfig()
    weights = config.loss_weights
    emit = progress or (lambda event: None)
    output = Path(output)
    if output.is_dir():
        raise ConfigError("-o names a directory", path=output, hint="give a file name, e.g. fusion.safetensors")
    started = time.perf_counter()

    skipped_files: list[str] = []
    files = expand_feature_paths(files, skipped=skipped_files)
    for reason in skipped_files:
        emit(TrainEvent("message", message=f"skipped {reason}"))
    check_output_paths(output, files)
    infos = scan_files(files)
    space: FeatureSpace = common_space(infos)
    by_path = {info.path: info for info in infos}
    train_paths, val_paths = split_files([i.path for i in infos], config.val_fraction, config.seed)
    train_refs, skipped = build_pairs([by_path[p] for p in train_paths], config.pairs)
    val_refs, skipped_val = build_pairs([by_path[p] for p in val_paths], config.pairs)
    skipped += skipped_val
    for reason in skipped:
        emit(TrainEvent("message", message=f"skipped {reason}"))
    if not train_refs:
        raise ConfigError(
            f"no training pairs among {len(train_paths)} training file(s)",
            hint="files need video frames and transcript tokens (timed cues for --pairs sentences)",
        )

    device = resolve_device(config.device)
    precision = resolve_training_precision(config.precision, device)

    start_epoch = 0
    global_step = 0
    history: list[dict[str, Any]] = []
    state: dict[str, Any] | None = None
    if resume is not None:
        resume = Path(resume)
        model, fcfg, meta = load_fusion_weights(resume, **space.expectations())
        _check_resume_settings(meta, config, resume)
        heads, heads_meta = load_heads(heads_path(resume), fcfg.d_model, fcfg.video_dim)
        state = load_state(state_path(resume))
        epochs_seen = {int(meta.get("epochs", -1)), int(heads_meta.get("epochs", -1)), int(state["epoch"])}
        if len(epochs_seen) != 1:
            raise ConfigError(
                "--resume: weights, heads and state files are from different epochs",
                path=resume,
                hint="a save was interrupted; resume from a complete checkpoint or start over",
            )
        start_epoch = int(state["epoch"])
        global_step = int(state["global_step"])
        history = list(state.get("history", []))
        init_seed = int(meta.get("init_seed", config.seed))
        emit(TrainEvent("message", message=(
            f"resuming {resume} after epoch {start_epoch} (step {global_step}); the fusion shape "
            f"comes from the checkpoint: d_model={fcfg.d_model}, layers={fcfg.num_layers}, heads={fcfg.num_heads}"
        )))
        if start_epoch >= config.epochs:
            raise ConfigError(
                f"--resume: the checkpoint already has {start_epoch} epoch(s), --epochs is {config.epochs}",
                path=resume,
                hint=f"pass --epochs N with N > {start_epoch} (the total number of epochs)",
            )
    else:
        fcfg = FusionConfig(
            video_dim=space.video_dim,
            text_dim=space.text_dim,
            d_model=config.d_model,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            ff_dim=config.ff_dim or 4 * config.d_model,
            dropout=config.dropout,
            time_scale=config.time_scale,
            video_delta=config.video_delta,
        )
        init_seed = config.seed
        model = build_fusion(fcfg, seed=init_seed)
        vocab, _ = collect_vocabularies(train_refs)
        # visual words over the validation files too: a word seen only there still needs its
        # class, and files from another vocabulary are refused wherever they are
        _, video_vocab = collect_vocabularies(train_refs + val_refs)
        heads = TrainingHeads(fcfg.d_model, fcfg.video_dim, vocab, video_vocab)
        heads.init_weights(torch.Generator().manual_seed(derive_seed(config.seed, "heads")))

    model = model.to(device).train()
    heads = heads.to(device).train()
    params = list(model.named_parameters()) + [(f"heads.{n}", p) for n, p in heads.named_parameters()]
    decay = [p for n, p in params if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in params if not (p.dim() >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"--resume: optimizer state does not fit: {exc}", path=resume) from exc
        for group in optimizer.param_groups:  # the command line's lr wins over the saved one
            group["lr"] = config.lr
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])

    train_ds = PairDataset(train_refs, max_frames=config.max_frames, max_tokens=config.max_tokens)
    val_ds = PairDataset(val_refs, max_frames=config.max_frames, max_tokens=config.max_tokens)
    steps_per_epoch = math.ceil(len(train_ds) / config.batch_size)
    emit(TrainEvent(
        "start", epoch=start_epoch, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
        global_step=global_step,
        message=(f"{len(train_refs)} training pairs ({len(train_paths)} files), {len(val_refs)} "
                 f"validation pairs ({len(val_paths)} files); {device}, {precision}"),
    ))

    hp, sp = heads_path(output), state_path(output)
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    for epoch in range(start_epoch, config.epochs):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(config.seed, epoch, "dropout"))
            generator = torch.Generator().manual_seed(derive_seed(config.seed, epoch, "batches"))
            order = torch.randperm(len(train_ds), generator=generator).tolist()
            loader, _ = _loader(train_ds, order, config.batch_size, config.num_workers)
            model.train()
            heads.train()
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            for step, batch in enumerate(loader, start=1):
                batch = batch.to(device)
                with _autocast(precision, device):
                    parts = batch_losses(
                        model, heads, batch, weights, generator,
                        mask_prob=config.mask_prob, temperature=config.temperature,
                        layout=LAYOUTS[config.pairs],
                    )
                if not parts:
                    continue
                total = sum(weights[name] * value for name, value in parts.items())
                if not torch.isfinite(total):
                    raise VideoBertError(
                        f"training diverged: the loss is {float(total)} at epoch {epoch + 1}, step {step}",
                        hint="lower --lr, or use --precision fp32",
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                if config.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_([p for _, p in params], config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                global_step += 1
                step_losses = {name: float(value.detach()) for name, value in parts.items()}
                step_losses["total"] = float(total.detach())
                for name, value in step_losses.items():
                    sums[name] = sums.get(name, 0.0) + value * len(batch)
                    counts[name] = counts.get(name, 0) + len(batch)
                emit(TrainEvent(
                    "step", epoch=epoch + 1, epochs=config.epochs, step=step,
                    steps_per_epoch=steps_per_epoch, global_step=global_step, losses=step_losses,
                ))
        train_means = {name: _finite(sums[name] / counts[name]) for name in sums}
        val = validate(model, heads, val_ds, config, weights, device) if len(val_ds) else {}
        model.train()
        heads.train()
        history.append({"epoch": epoch + 1, "train": train_means, "val": val})

        meta = {
            **space.to_dict(),
            "created_by": "videobert train",
            "tool_version": __version__,
            "trained_steps": global_step,
            "epochs": epoch + 1,
            "losses": history,
            "loss_weights": weights,
            "pairs": config.pairs,
            "layout": LAYOUTS[config.pairs],
            "seed": config.seed,
            "init_seed": init_seed,
            "val_fraction": config.val_fraction,
            "train_files": len(train_paths),
            "val_files": len(val_paths),
            "train_pairs": len(train_refs),
            "val_pairs": len(val_refs),
            "batch_size": config.batch_size,
            "lr": config.lr,
            "weight_decay": config.weight_decay,
            "mask_prob": config.mask_prob,
            "temperature": config.temperature,
            "max_frames": config.max_frames,
            "max_tokens": config.max_tokens,
            "mvm_mode": heads.mvm_mode,
            "precision": precision,
            "heads_file": hp.name,
        }
        # heads and state first: the weights file is what users point at, and a resume
        # checks all three carry the same epoch
        save_heads(hp, heads, {"epochs": epoch + 1, "trained_steps": global_step})
        save_state(sp, {
            "epoch": epoch + 1,
            "global_step": global_step,
            "seed": config.seed,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "history": history,
        })
        save_fusion_weights(output, model, fcfg, meta)
        emit(TrainEvent(
            "epoch", epoch=epoch + 1, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
            global_step=global_step, losses={k: v for k, v in train_means.items() if v is not None},
            val=val,
        ))

    model.eval()
    return TrainResult(
        weights=output, heads_file=hp, state_file=sp, epochs=config.epochs, global_step=global_step,
        history=history, num_train_pairs=len(train_refs), num_val_pairs=len(val_refs),
        seconds=time.perf_counter() - started, skipped=skipped, model=model, heads=heads.eval(),
    )


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as a JSON-safe dict."""
    return asdict(config)
