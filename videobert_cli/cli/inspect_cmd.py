"""`videobert inspect`: a file's groups, datasets, shapes and metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.tree import Tree

from videobert_cli.cli.common import handle_errors, stdout

HELP = """Print the groups, datasets (shape, dtype) and attributes of a videobert HDF5 file.

Examples:

  videobert inspect features/clip.h5

  videobert inspect features/clip.h5 --json | jq '.[] | select(.kind=="dataset") | .name'
"""


def _short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 100 else text[:97] + "..."


@handle_errors
def inspect_command(
    path: Annotated[Path, typer.Argument(help="A .h5 file written by videobert.", show_default=False)],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON rows instead of a tree.")] = False,
) -> None:
    from videobert_cli.errors import FeatureFileError, UsageError
    from videobert_cli.store.hdf5 import describe

    if path.is_dir():
        raise UsageError("is a directory", path=path,
                         hint="give one .h5 file; for a whole output directory run `videobert index DIR`")
    if not path.is_file():
        raise FeatureFileError("file not found", path=path)
    rows = describe(path)
    if json_output:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    root = Tree(f"[bold]{escape(str(path))}[/]")
    nodes = {"/": root}
    for row in rows:
        name = row["name"]
        if name == "/":
            node = root
        else:
            parent = nodes.get(name.rsplit("/", 1)[0] or "/", root)
            leaf = escape(name.rsplit("/", 1)[-1])
            if row["kind"] == "group":
                label = f"[bold cyan]{leaf}/[/]"
            elif row["kind"] == "link":
                label = f"[magenta]{leaf}[/] -> {escape(row['target'])}"
            else:
                label = f"[green]{leaf}[/] {tuple(row['shape'])} {row['dtype']}"
            node = parent.add(label)
            nodes[name] = node
        for key, value in row.get("attrs", {}).items():
            node.add(f"[dim]@{escape(str(key))}[/] = {escape(_short(value))}")
    stdout.print(root)
