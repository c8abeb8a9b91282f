"""`videobert models`: what can be used, its feature size, and whether it works offline."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from videobert_cli.cli.common import handle_errors, stdout

HELP = """List video and text models with feature dimension and offline availability.

"offline" means the weights are on this machine (installed package or cache): the model
loads without network access.

Examples:

  videobert models

  videobert models --all --json

Models from transformers are named hf:<hub name or local directory> and not listed:
--video-model hf:google/siglip2-base-patch16-224 (CLIP/SigLIP frames, or a VideoMAE clip
model) with --text-model hf:<the same name> for its text tower (docs/models-hf.md).
"""


@handle_errors
def models_command(
    all_models: Annotated[bool, typer.Option("--all", help="Also list every torchvision classification model.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    from videobert_cli.catalog import list_models

    rows = list_models(include_all_torchvision=all_models)
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="videobert models")
    table.add_column("kind", no_wrap=True)
    table.add_column("name", no_wrap=True, min_width=18)  # the value users type: never truncated
    table.add_column("dim", no_wrap=True, justify="right")
    table.add_column("offline", no_wrap=True)
    table.add_column("description", overflow="fold")
    for row in rows:
        table.add_row(
            row["kind"], row["name"], "-" if row["feature_dim"] is None else str(row["feature_dim"]),
            "[green]yes[/]" if row["offline"] else "[yellow]no (downloads)[/]", row["description"],
        )
    stdout.print(table)
    stdout.print("Also: hf:<hub name or directory> for CLIP, SigLIP and VideoMAE from transformers (docs/models-hf.md).")
