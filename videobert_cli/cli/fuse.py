"""`videobert fuse`: fuse video and text features with the fusion Transformer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from videobert_cli.cli import options as opt
from videobert_cli.cli.common import DEFAULTS, build_config, handle_errors, report_file_results

HELP = """Fuse video and text features from HDF5 files into one sequence (group fused/).

Files are paired by stem (features/clip.h5 from extract-video with text/clip.h5 from
extract-text); two files with different stems are paired with each other. The output holds
video/, text/ and fused/: the same layout as `videobert run`.

Without --fusion-weights the fusion Transformer is a seeded random initialisation (the seed
is stored): a fixed random mixing, useful as a baseline; train weights with a checkpoint.

Examples:

  videobert fuse vid/clip.h5 txt/clip.h5 -o fused/clip.h5

  videobert fuse vid/*.h5 txt/*.h5 -o fused/ --fusion-weights fusion.safetensors

  videobert fuse vid/ txt/ -o fused/          # the same: files are paired by name
"""


@handle_errors
def fuse_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="HDF5 files with video/ and/or text/ groups, or directories of them.", show_default=False),
    ],
    output: opt.Output,
    fusion_weights: opt.FusionWeights = None,
    fusion_seed: opt.FusionSeed = DEFAULTS.fusion.seed,
    d_model: opt.DModel = DEFAULTS.fusion.d_model,
    layers: opt.Layers = 2,
    heads: opt.Heads = 4,
    align: opt.Align = DEFAULTS.fusion.align,
    device: opt.Device = None,
    dtype: opt.Dtype = DEFAULTS.output.dtype,
    compression: opt.Compression = None,
) -> None:
    from videobert_cli.api import fuse_files

    config = build_config(
        fusion_weights=fusion_weights, fusion_seed=fusion_seed, d_model=d_model, layers=layers, heads=heads, align=align,
        device=device, dtype=dtype, compression=compression,
    )
    results = fuse_files(inputs, output, config)
    raise typer.Exit(report_file_results(results, "inputs"))
