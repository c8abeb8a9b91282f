"""`videobert train` and `videobert eval`: train the fusion Transformer on HDF5 features, and measure it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from videobert_cli.cli.common import STATE, handle_errors, say, stderr, stdout

TRAIN_HELP = """Train the fusion Transformer on features written by `videobert run` (encoders frozen).

FEATURES are .h5 files (or directories of them) with video/ and text/ groups; all must come
from the same video and text models. A validation split of whole files is held out
(--val-fraction, deterministic by --seed and file name). Objectives and their weights:
align (matched vs. mismatched video+text on [CLS], as VideoBERT), nce (contrastive
video-alone vs. text-alone [CLS], as CBT), tnce (nce with each video's own reversed and
shuffled frames as extra negatives), mvm (masked frame prediction), mlm (masked token
prediction); see docs/training.md.

Each epoch writes, atomically: OUT (fusion weights, usable with `videobert fuse
--fusion-weights OUT`), OUT's .heads.safetensors (training heads) and OUT.state.pt
(optimizer state for --resume). --epochs is the total: `--resume OUT --epochs 20` continues
a 10-epoch run to 20.

Examples:

  videobert train features/ -o fusion.safetensors --epochs 20

  videobert train features/*.h5 -o fusion.safetensors --loss nce=1,align=1 --pairs sentences

  videobert train features/ -o fusion.safetensors --resume fusion.safetensors --epochs 40

  videobert fuse features/clip.h5 -o fused/ --fusion-weights fusion.safetensors
"""

EVAL_HELP = """Evaluate fusion weights: retrieval and alignment on held-out pairs, with baselines.

By default the held-out pairs are the training run's validation split (seed, fraction and
pairing are read from the checkpoint); --all evaluates every given file. Reports
text-to-video and video-to-text recall@1/5/10 and median rank (cosine of the video-alone and
text-alone [CLS] vectors; token-identical captions count as correct), alignment accuracy
(with the align head), and the same for the untrained fusion (the seeded initialisation),
for the unfused features through CCA fitted on the training split (or --cca-fit FILES),
and chance.

Examples:

  videobert eval features/ --fusion-weights fusion.safetensors

  videobert eval features/ --fusion-weights fusion.safetensors --json eval.json

  videobert eval test_features/ --fusion-weights fusion.safetensors --all --cca-fit features/

  videobert eval test_features/ --fusion-weights fusion.safetensors --all --contrasts videos/contrasts.json
"""

Features = Annotated[
    list[Path],
    typer.Argument(help="HDF5 feature files, or directories of .h5 files.", show_default=False),
]
DeviceOpt = Annotated[
    Optional[str],
    typer.Option("--device", help="auto | cpu | cuda | cuda:N (auto: CUDA when present). Overrides the global flag."),
]


def use_threads() -> None:
    """Apply the global ``--threads`` (small fusion models run far faster on 1 thread of a busy CPU)."""
    if STATE.threads:
        import torch

        torch.set_num_threads(STATE.threads)


@handle_errors
def train_command(
    features: Features,
    output: Annotated[Path, typer.Option("--output", "-o", help="Fusion weights to write (.safetensors).")],
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Total epochs (including resumed ones).")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Pairs per optimisation step.")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 3e-4,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (matrices only).")] = 0.01,
    loss: Annotated[
        str, typer.Option("--loss", help="Objectives and weights: align, nce, tnce, mvm, mlm (unnamed = 0).")
    ] = "align=1,nce=1,mvm=0.5,mlm=0.5",
    pairs: Annotated[
        str, typer.Option("--pairs", help="video: a video with its whole transcript | sentences: each cue with its frames.")
    ] = "video",
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Fraction of files held out for validation.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initialisation, split, shuffling and masks.")] = 0,
    mask_prob: Annotated[float, typer.Option("--mask-prob", help="Masking probability for mvm/mlm.")] = 0.15,
    temperature: Annotated[float, typer.Option("--temperature", help="Softmax temperature of the InfoNCE losses.")] = 0.07,
    max_frames: Annotated[int, typer.Option("--max-frames", min=1, help="Frames per pair (evenly subsampled).")] = 64,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Text tokens per pair (evenly subsampled).")] = 128,
    d_model: Annotated[int, typer.Option("--d-model", help="Width of the fusion Transformer.")] = 256,
    layers: Annotated[int, typer.Option("--layers", help="Fusion Transformer layers.")] = 2,
    heads: Annotated[int, typer.Option("--heads", help="Attention heads.")] = 4,
    dropout: Annotated[float, typer.Option("--dropout", help="Dropout while training.")] = 0.1,
    time_scale: Annotated[
        float, typer.Option("--time-scale", help="Seconds per unit of the time embedding (smaller: finer in time).")
    ] = 1.0,
    video_delta: Annotated[
        bool, typer.Option("--video-delta", help="Also feed each frame's feature change since the previous frame.")
    ] = False,
    device: DeviceOpt = None,
    precision: Annotated[
        str, typer.Option("--precision", help="auto (fp32 on CPU; bf16, else fp16, autocast on CUDA) | fp32 | bf16 | fp16.")
    ] = "auto",
    workers: Annotated[int, typer.Option("--workers", min=0, help="DataLoader worker processes reading HDF5.")] = 0,
    resume: Annotated[
        Optional[Path], typer.Option("--resume", help="Continue from these weights (and their .heads/.state.pt files).")
    ] = None,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from videobert_cli.training import TrainConfig, train

    use_threads()
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
        val_fraction=val_fraction, pairs=pairs, losses=loss, mask_prob=mask_prob,
        temperature=temperature, max_frames=max_frames, max_tokens=max_tokens, d_model=d_model,
        num_layers=layers, num_heads=heads, dropout=dropout, time_scale=time_scale,
        video_delta=video_delta, device=device or STATE.device,
        precision=precision, num_workers=workers,
    )
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=stderr,
        disable=STATE.quiet,
    )
    task = None

    def on_event(event) -> None:
        nonlocal task
        if event.kind == "message":
            if not STATE.quiet:
                progress.console.print(event.message, soft_wrap=True)
        elif event.kind == "start":
            total = (event.epochs - event.epoch) * event.steps_per_epoch
            task = progress.add_task("", total=total)
            if not STATE.quiet:
                progress.console.print(event.message)
        elif event.kind == "step" and task is not None:
            shown = " ".join(f"{k}={v:.3f}" for k, v in event.losses.items())
            progress.update(task, advance=1, description=f"epoch {event.epoch}/{event.epochs} {shown}")
        elif event.kind == "epoch" and not STATE.quiet:
            train_part = " ".join(f"{k}={v:.3f}" for k, v in event.losses.items())
            val = event.val or {}
            val_part = " ".join(
                f"{k}={v:.3f}" for k, v in val.items() if isinstance(v, (int, float))
            )
            progress.console.print(
                f"epoch {event.epoch}/{event.epochs}  train: {train_part}"
                + (f"  val: {val_part}" if val_part else ""),
                soft_wrap=True,
            )

    with progress:
        result = train(features, output, config, resume=resume, progress=on_event)
    say(
        f"[green]wrote[/] {result.weights} (+ {result.heads_file.name}, {result.state_file.name}): "
        f"{result.epochs} epochs, {result.global_step} steps, {result.num_train_pairs} training / "
        f"{result.num_val_pairs} validation pairs in {result.seconds:.1f} s"
    )


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value < 10 else f"{value:.1f}"
    return str(value)


def eval_table(report: dict):
    """A rich table of :func:`videobert_cli.training.evaluate` output: one row per model and direction."""
    from rich.table import Table

    split = report["split"]
    table = Table(
        title=(
            f"{split['num_pairs']} held-out pairs ({split['mode']}, {split['pairs']} pairs, "
            f"{split['unique_texts']} distinct texts)"
        )
    )
    for name, justify in (("model", "left"), ("query", "left"), ("R@1", "right"), ("R@5", "right"),
                          ("R@10", "right"), ("MedR", "right"), ("align acc", "right")):
        table.add_column(name, justify=justify)
    names = {
        "trained": "trained fusion",
        "untrained_fusion": "untrained fusion",
        "unfused_cca": "unfused + CCA",
        "chance": "chance",
    }
    notes = ["t2v: text query, rank videos; v2t: video query, rank texts; MedR: median rank"]
    for key, label in names.items():
        row = report["results"].get(key)
        if row is None:
            continue
        if row.get("comparable") is False:
            notes.append(f"{label}: {row['reason']}")
            continue
        for direction, query in (("t2v", "t2v"), ("v2t", "v2t")):
            m = row[direction]
            table.add_row(
                label if direction == "t2v" else "",
                query,
                _fmt(m["R@1"]), _fmt(m["R@5"]), _fmt(m["R@10"]), _fmt(m["median_rank"], 1),
                _fmt(row.get("align_accuracy")) if direction == "t2v" and key != "chance" else "",
                end_section=direction == "v2t",
            )
    raw = report["results"].get("unfused_raw")
    if raw:
        notes.append(f"unfused features: not comparable - {raw['reason']}")
    cca = report["results"].get("unfused_cca", {})
    if cca.get("fit"):
        notes.append(f"CCA fitted on: {cca['fit']} ({cca['fit_pairs']} pairs, {cca['dims']} dims)")
    table.caption = "\n".join(notes)
    return table


def contrast_table(report: dict):
    """Two-way choice accuracy per minimal-pair subset and model (chance 0.5)."""
    from rich.table import Table

    subsets = list(report["contrasts"]["subsets"])
    table = Table(title="minimal pairs: two-way choice accuracy (chance 0.5)")
    table.add_column("model")
    for name in subsets:
        table.add_column(name, justify="right")
    labels = {"trained": "trained fusion", "untrained_fusion": "untrained fusion", "unfused_cca": "unfused + CCA"}
    for key, label in labels.items():
        found = report["results"].get(key, {}).get("contrasts")
        if found:
            table.add_row(label, *(f"{_fmt(found[n]['accuracy'])} ({found[n]['choices']})" for n in subsets))
    return table


@handle_errors
def eval_command(
    features: Features,
    fusion_weights: Annotated[Path, typer.Option("--fusion-weights", help="Weights written by `videobert train`.")],
    all_files: Annotated[
        bool, typer.Option("--all", help="Evaluate every given file (not only the validation split).")
    ] = False,
    json_out: Annotated[
        Optional[Path], typer.Option("--json", help="Also write the numbers as JSON to this file (- for stdout only).")
    ] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Split seed (default: the checkpoint's).")] = None,
    val_fraction: Annotated[
        Optional[float], typer.Option("--val-fraction", help="Validation fraction (default: the checkpoint's).")
    ] = None,
    pairs: Annotated[Optional[str], typer.Option("--pairs", help="video | sentences (default: the checkpoint's).")] = None,
    no_cca: Annotated[bool, typer.Option("--no-cca", help="Skip the CCA baseline on unfused features.")] = False,
    cca_fit: Annotated[
        Optional[list[Path]],
        typer.Option("--cca-fit", help="Fit the CCA baseline on these files/directories (default: the training split)."),
    ] = None,
    contrasts: Annotated[
        Optional[Path],
        typer.Option("--contrasts", help="Caption pairs differing in one factor (contrasts.json): two-way choice subsets."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Pairs per model call.")] = 32,
    device: DeviceOpt = None,
) -> None:
    from videobert_cli.training import evaluate

    use_threads()
    report = evaluate(
        features, fusion_weights, all_files=all_files, seed=seed, val_fraction=val_fraction, pairs=pairs,
        device=device or STATE.device, batch_size=batch_size, cca=not no_cca,
        cca_fit_files=cca_fit or None, contrasts=contrasts,
        on_message=lambda m: say(m),
    )
    text = json.dumps(report, indent=2, sort_keys=True)
    if json_out is not None and str(json_out) == "-":
        typer.echo(text)
        return
    if json_out is not None:
        from videobert_cli.store.atomic import atomic_write

        atomic_write(json_out, (text + "\n").encode())
        say(f"[green]wrote[/] {json_out}")
    stdout.print(eval_table(report))
    if report.get("contrasts"):
        stdout.print(contrast_table(report))
