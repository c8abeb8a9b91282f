"""`videobert run`: the whole pipeline over many videos, one HDF5 file per video."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from videobert_cli.cli import options as opt
from videobert_cli.cli.common import DEFAULTS, STATE, build_config, handle_errors, in_flags, stderr
from videobert_cli.errors import UsageError, VideoBertError

HELP = """Run decode -> video model -> text model -> fusion -> HDF5 for every video.

Each video is paired with the transcript of the same stem (.srt, .vtt, .json, .txt), next to
it or under --transcripts DIR. One OUT_DIR/<name>.h5 per video (video/, text/, fused/) and
OUT_DIR/manifest.jsonl with one record per input (status, reason, timings).

Re-runs skip inputs whose output is complete and was made from the same input (size+mtime, or
sha256 with --verify-hash) and configuration; --force redoes everything. A failed video never
stops the batch. One run per OUT_DIR at a time.

Exit codes: 0 all ok or skipped, 1 some inputs failed, 2 usage or configuration error (bad
flag, missing model, unwritable output), 75 OUT_DIR locked by another run, 130 interrupted,
70 internal error.

Examples:

  videobert run videos/ -o features/

  videobert run videos/ -o features/ --recursive --transcripts asr/ --fps 2

  find /data -name '*.mp4' | videobert run - -o features/ --json > summary.json

  videobert run videos/ -o features/ --dry-run

  videobert run videos/ -o features/ --devices all     (one worker per GPU; or --device cuda:0,cuda:1)

  videobert run /shared/videos -o /shared/features --engine ray --address auto --gpus-per-worker 1
"""


@handle_errors
def run_command(
    inputs: Annotated[
        Optional[list[str]],
        typer.Argument(help="Video files, directories, or - to read paths from stdin.", show_default=False),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory (one .h5 per video).")] = ...,
    transcripts: Annotated[
        Optional[Path], typer.Option("--transcripts", help="Directory of transcripts (default: next to each video).")
    ] = None,
    transcript_lang: Annotated[
        Optional[str],
        typer.Option("--transcript-lang", help="Language of the transcripts to pair where a video has several, "
                     "as NAME.en.vtt and NAME.de.vtt (yt-dlp's subtitles): en, de, pt-BR, ..."),
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-directories.")] = False,
    glob: Annotated[
        Optional[str],
        typer.Option("--glob", help="Only videos matching this pattern (e.g. 'cam1_*'); a pattern that names an "
                     "extension ('*.dv') takes those files whatever they are."),
    ] = None,
    from_file: Annotated[
        Optional[list[Path]], typer.Option("--from-file", help="A file listing video paths, one per line.")
    ] = None,
    fps: opt.Fps = None,
    num_frames: opt.NumFrames = None,
    clip_len: opt.ClipLen = None,
    clip_fps: opt.ClipFps = None,
    clip_stride: opt.ClipStride = None,
    drop_tail: opt.DropTail = False,
    video_model: opt.VideoModel = DEFAULTS.video_model.name,
    video_weights: opt.VideoWeights = "default",
    text_model: opt.TextModel = "all-minilm-l6-v2",
    max_length: opt.MaxLength = None,
    fusion_weights: opt.FusionWeights = None,
    fusion_seed: opt.FusionSeed = DEFAULTS.fusion.seed,
    d_model: opt.DModel = DEFAULTS.fusion.d_model,
    layers: opt.Layers = 2,
    heads: opt.Heads = 4,
    align: opt.Align = DEFAULTS.fusion.align,
    device: opt.Device = None,
    devices: opt.Devices = None,
    batch_size: opt.BatchSize = None,
    precision: opt.Precision = DEFAULTS.runtime.precision,
    dtype: opt.Dtype = DEFAULTS.output.dtype,
    compression: opt.Compression = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every input, even if up to date.")] = False,
    verify_hash: Annotated[
        bool, typer.Option("--verify-hash", help="Detect changed inputs by sha256 instead of size+mtime.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be processed and why; load no model.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Seconds the decoder may go without progress on one video.")
    ] = 120.0,
    wait_lock: Annotated[
        float, typer.Option("--wait-lock", min=0.0, help="Seconds to wait if another run holds OUT_DIR (default: fail).")
    ] = 0.0,
    require_transcript: Annotated[
        bool, typer.Option("--require-transcript", help="Fail videos without a transcript instead of video-only output.")
    ] = False,
    vocab: Annotated[
        Optional[Path],
        typer.Option("--vocab", help="Also store each row's visual word (video/word_ids) with this vocabulary "
                     "(from `videobert vocab build`)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the final summary as JSON on stdout.")] = False,
    # --- engines and index (videobert_cli.engines, videobert_cli.store.index) ---
    engine: Annotated[
        str, typer.Option("--engine", help="local (this machine) | ray (a Ray cluster; see docs/cluster.md).")
    ] = "local",
    address: Annotated[
        Optional[str], typer.Option("--address", help="Ray: auto (the running cluster) or ray://HOST:10001.")
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option("--workers", min=1, help="Ray: model workers. [default: GPUs / --gpus-per-worker, else CPUs / 2]")
    ] = None,
    gpus_per_worker: Annotated[
        Optional[float], typer.Option("--gpus-per-worker", min=0.0, help="Ray: GPUs per model worker. [default: 0]")
    ] = None,
    index: Annotated[
        Optional[bool],
        typer.Option("--index/--no-index", help="Write OUT_DIR/index.h5 at the end. [default: refresh it if present]"),
    ] = None,
    # --- end engines and index ---
) -> None:
    from videobert_cli.api import run
    from videobert_cli.cli.progress import RichRunObserver, summary_table
    from videobert_cli.pipeline.report import RunOptions

    try:
        if not inputs and not from_file:
            raise UsageError("no inputs", hint="give video files or directories, - for stdin, or --from-file LIST")
        config = build_config(
            fps=fps, num_frames=num_frames, clip_len=clip_len, clip_fps=clip_fps, clip_stride=clip_stride,
            drop_tail=drop_tail, video_model=video_model, video_weights=video_weights,
            text_model=text_model, max_length=max_length, fusion_weights=fusion_weights, fusion_seed=fusion_seed,
            d_model=d_model, layers=layers, heads=heads, align=align, device=device, devices=devices,
            batch_size=batch_size, precision=precision, dtype=dtype, compression=compression,
        )
        options = RunOptions(
            force=force, verify_hash=verify_hash, dry_run=dry_run, timeout=timeout, wait_lock=wait_lock,
            require_transcript=require_transcript, vocab=str(vocab) if vocab else None,
        )
        with RichRunObserver(quiet=STATE.quiet, show_progress=not dry_run) as observer:
            report = run(
                inputs or [], output, config, options, recursive=recursive, pattern=glob, list_files=from_file or [],
                transcripts_dir=transcripts, transcript_language=transcript_lang, observer=observer, engine=engine,
                engine_options={"address": address, "workers": workers, "gpus_per_worker": gpus_per_worker},
                index=index,
            )
    except VideoBertError as error:
        if json_output:  # a script reading stdout gets JSON whatever happened (the line stays on stderr)
            typer.echo(json.dumps({"output_dir": str(output), "error": in_flags(error), "reason": error.reason,
                                   "exit_code": error.exit_code}, indent=2))
        raise
    if json_output:
        summary = report.summary()
        if dry_run:
            summary["plan"] = [
                {"input": r.input, "output": r.output, "action": "process" if r.status == "pending" else "skip",
                 "why": r.decision, "transcript": r.transcript}
                for r in report.records
            ]
        typer.echo(json.dumps(summary, default=str, indent=2))
    elif not STATE.quiet:
        stderr.print(summary_table(report))
    elif report.exit_code:
        stderr.print(summary_table(report, failures_only=True))
    raise typer.Exit(report.exit_code)
