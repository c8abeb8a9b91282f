"""`videobert search`: the best moments of extracted videos for a text query or another moment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from videobert_cli.cli.common import STATE, handle_errors, say, stdout

HELP = """Find the moments of your videos that match a text query, or that look like a moment of another video.

FEATURES are feature files, folders of them (read recursively), or one index.h5 written by
`videobert index` (fast: it stores the moment embeddings; a file changed since indexing is
reported, never searched silently). A moment is a window of frames (--window seconds, every
--hop seconds); neighbouring hits of one video merge into one row: video, start, end, score,
and the transcript cues in that span.

A text query needs text and video in one space: fusion weights from `videobert train`
(--fusion-weights), or features from an aligned encoder pair (the same hf: image-text model as
--video-model and --text-model). --like FILE.h5 --at SECONDS works in any video feature space.
See docs/search.md.

Examples:

  videobert search "a man slicing bread" features/index.h5 --fusion-weights fusion.safetensors

  videobert search "a red car" clip_feats/ --top 5 --json

  videobert search --like features/a.h5 --at 12.5 features/ --thumbnails hits.png
"""


@handle_errors
def search_command(
    arguments: Annotated[list[str], typer.Argument(help="QUERY then FEATURES... (with --like: FEATURES only).",
                                                    show_default=False, metavar="[QUERY] FEATURES...")],
    top: Annotated[int, typer.Option("--top", min=1, help="Moments to show.")] = 10,
    json_output: Annotated[bool, typer.Option("--json", help="Print the moments as JSON on stdout.")] = False,
    like: Annotated[Optional[Path], typer.Option("--like", help="Search for moments like one of this feature file.")] = None,
    at: Annotated[Optional[float], typer.Option("--at", help="With --like: the moment's time, seconds.")] = None,
    fusion_weights: Annotated[Optional[Path], typer.Option(
        "--fusion-weights", help="Fusion checkpoint from `videobert train`: search in its text-video space.")] = None,
    window: Annotated[Optional[float], typer.Option(
        "--window", min=0.001, help="Moment window, seconds [default: the index's, else 4].")] = None,
    hop: Annotated[Optional[float], typer.Option(
        "--hop", min=0.001, help="Window hop, seconds [default: the index's, else 2].")] = None,
    gap: Annotated[float, typer.Option("--gap", min=0.0, help="Merge hits of one video this close (seconds).")] = 0.0,
    thumbnails: Annotated[Optional[Path], typer.Option(
        "--thumbnails", help="Also draw the moments' frames from the source videos into this PNG.")] = None,
) -> None:
    from videobert_cli.devices import resolve_device
    from videobert_cli.errors import UsageError
    from videobert_cli.search.engine import SearchOptions, search

    if like is not None and at is None:
        raise UsageError("--like needs --at SECONDS", hint="e.g. --like a.h5 --at 12.5")
    if at is not None and like is None:
        raise UsageError("--at goes with --like", hint="e.g. --like a.h5 --at 12.5")
    query, sources = (None, arguments) if like is not None else (arguments[0], arguments[1:])
    if not sources:
        raise UsageError("no FEATURES given", hint="videobert search QUERY FEATURES... (files, folders or an index.h5)")
    options = SearchOptions(top=top, window_s=window, hop_s=hop, gap_s=gap, fusion_weights=fusion_weights,
                            device=resolve_device(STATE.device))
    result = search(query, sources, like=None if like is None else (like, at), options=options, on_message=say)
    if thumbnails is not None:
        from videobert_cli.viz import contact_sheet

        sheet = contact_sheet(result.moments, thumbnails, decoder=STATE.decoder)
        for warning in sheet.warnings:
            say(f"[yellow]warning[/] {warning}")
        say(f"[green]wrote[/] {thumbnails}")
    if json_output:
        typer.echo(json.dumps({"space": result.space, "searched_windows": result.searched,
                               "moments": [m.to_dict() for m in result.moments], "notes": result.notes,
                               "seconds": result.seconds}, indent=2))
        return
    for m in result.moments:
        words = m.words if len(m.words) <= 70 else m.words[:67] + "..."
        stdout.print(f"{m.rank:>3}  {m.score:6.3f}  {m.start:8.2f}-{m.end:<8.2f} {m.video}  {words}", soft_wrap=True,
                     markup=False)
    say(f"{len(result.moments)} moment(s) from {result.searched} window(s) in the {result.space} space, "
        f"{result.seconds.get('total', 0):.2f} s")
