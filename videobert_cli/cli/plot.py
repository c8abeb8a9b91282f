"""`videobert plot`: a picture of one feature file (self-similarity, cues, cue-by-frame similarity)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from videobert_cli.cli.common import STATE, handle_errors, say

HELP = """Draw a feature file: the frame-by-frame self-similarity of its video features on a time axis,
the transcript cues as spans under it, and - where text and video share a space (an aligned hf:
encoder pair, or --fusion-weights) - the similarity of every cue to every frame.

Needs matplotlib: pip install 'videobert-cli[plot]'. See docs/search.md.

Examples:

  videobert plot features/talk.h5 -o talk.png

  videobert plot features/talk.h5 -o talk.png --fusion-weights fusion.safetensors
"""


@handle_errors
def plot_command(
    path: Annotated[Path, typer.Argument(help="A feature file written by `videobert run`.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The PNG to write.", show_default=False)],
    fusion_weights: Annotated[Optional[Path], typer.Option(
        "--fusion-weights", help="Fusion checkpoint: draw the cue-by-frame similarity in its space.")] = None,
) -> None:
    from videobert_cli.devices import resolve_device
    from videobert_cli.viz import plot_data, pyplot, render_plot

    pyplot()  # a missing matplotlib fails before any work
    data = plot_data(path, fusion_weights=fusion_weights, device=resolve_device(STATE.device))
    render_plot(data, output)
    say(f"[green]wrote[/] {output}" + ("" if data.cross is not None else " (no shared text-video space: no cue-by-frame panel)"))
