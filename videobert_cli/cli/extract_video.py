"""`videobert extract-video`: per-frame CNN features of videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from videobert_cli.cli import options as opt
from videobert_cli.cli.common import DEFAULTS, build_config, handle_errors, report_file_results

HELP = """Decode videos, sample frames and write their CNN features to HDF5 (group video/).

Each sampled frame is the one on screen at t = 0, 1/fps, 2/fps, ... (or at the centres of N
equal spans with --num-frames); its exact timestamp and frame index are stored.

Examples:

  videobert extract-video clip.mp4 -o clip.h5

  videobert extract-video videos/*.mp4 -o features/ --fps 2

  videobert extract-video clip.mkv -o clip.h5 --video-model resnet50 --num-frames 16

  videobert extract-video clip.mp4 -o clip.h5 --video-model s3d --clip-fps 20 --clip-len 30

Clip models (s3d, r3d_18, r2plus1d_18, mc3_18, mvit_v2_s, ...) encode clips of --clip-len
frames taken at --clip-fps, one every --clip-stride frames; each clip's start/end time is
stored. A last clip shorter than --clip-len is padded by repeating its last frame (--drop-tail
drops it).
"""


@handle_errors
def extract_video_command(
    videos: Annotated[list[Path], typer.Argument(help="Video files (.mp4, .mkv, .webm, ...).", show_default=False)],
    output: opt.Output,
    fps: opt.Fps = None,
    num_frames: opt.NumFrames = None,
    clip_len: opt.ClipLen = None,
    clip_fps: opt.ClipFps = None,
    clip_stride: opt.ClipStride = None,
    drop_tail: opt.DropTail = False,
    video_model: opt.VideoModel = DEFAULTS.video_model.name,
    video_weights: opt.VideoWeights = "default",
    device: opt.Device = None,
    batch_size: opt.BatchSize = None,
    precision: opt.Precision = DEFAULTS.runtime.precision,
    dtype: opt.Dtype = DEFAULTS.output.dtype,
    compression: opt.Compression = None,
) -> None:
    from videobert_cli.api import extract_video_files

    config = build_config(
        fps=fps, num_frames=num_frames, clip_len=clip_len, clip_fps=clip_fps, clip_stride=clip_stride,
        drop_tail=drop_tail, video_model=video_model, video_weights=video_weights,
        device=device, batch_size=batch_size, precision=precision, dtype=dtype, compression=compression,
    )
    results = extract_video_files(videos, output, config)
    raise typer.Exit(report_file_results(results, "videos"))
