"""`videobert index`: one HDF5 file that reads a whole output directory as one corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from videobert_cli.cli.common import STATE, handle_errors, stderr

HELP = """Write OUT_DIR/index.h5: links to every complete per-video file plus a table of them.

videos/<id> in the index is an HDF5 external link (relative path) to the root of that video's
file, so h5py.File("OUT_DIR/index.h5")["videos/<id>/video/features"] reads its features; table/
lists every .h5 file under OUT_DIR (id, path, status complete/incomplete, duration, video rows,
text tokens, source path, configuration hash). Ids are paths without .h5, "/" written "__".
The file is replaced atomically; `videobert run` refreshes an existing index at its end.

search/ stores what `videobert search` needs: every moment window (--window seconds, every --hop
seconds) of every complete file with its normalised, pooled video embedding (float16); with
--fusion-weights also the moments in that fusion space (kept under the weights' sha256).

Examples:

  videobert index features/

  videobert index features/ --fusion-weights fusion.safetensors

  videobert index features/ --json | jq '.files[] | select(.status=="incomplete") | .path'
"""


@handle_errors
def index_command(
    out_dir: Annotated[Path, typer.Argument(help="The output directory of `videobert run`.", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="File name of the index inside OUT_DIR.")] = "index.h5",
    json_output: Annotated[bool, typer.Option("--json", help="Print the index table as JSON on stdout.")] = False,
    window: Annotated[Optional[float], typer.Option(
        "--window", min=0.001, help="Search moment window, seconds [default: the previous index's, else 4].")] = None,
    hop: Annotated[Optional[float], typer.Option(
        "--hop", min=0.001, help="Search window hop, seconds [default: the previous index's, else 2].")] = None,
    fusion_weights: Annotated[Optional[Path], typer.Option(
        "--fusion-weights", help="Also store the moments in this fusion checkpoint's space.")] = None,
) -> None:
    from videobert_cli.errors import UsageError
    from videobert_cli.store.index import STATUS_COMPLETE, read_index, write_index

    if "/" in name or name in ("", ".", ".."):
        raise UsageError(f"--name {name!r}: give a file name, not a path")
    sections = []
    if fusion_weights is not None:
        from videobert_cli.devices import resolve_device
        from videobert_cli.search.spaces import fusion_index_section

        sections.append(fusion_index_section(fusion_weights, device=resolve_device(STATE.device)))
    path = write_index(out_dir, name=name, window_s=window, hop_s=hop, sections=sections)
    rows = read_index(path)
    complete = sum(row["status"] == STATUS_COMPLETE for row in rows)
    if json_output:
        typer.echo(json.dumps({"index": str(path), "total": len(rows), "complete": complete,
                               "incomplete": len(rows) - complete, "files": rows}, indent=2))
    elif not STATE.quiet:
        stderr.print(f"indexed {complete} complete file(s)"
                     + (f", {len(rows) - complete} incomplete" if len(rows) > complete else "") + f" -> {path}")
