"""`videobert vocab`: build a visual-word vocabulary (hierarchical k-means) and assign words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from videobert_cli.cli.common import STATE, handle_errors, stderr

HELP = """Visual words: quantise clip/frame features with hierarchical k-means (VideoBERT).

A vocabulary of --levels levels x --clusters clusters has clusters**levels words (VideoBERT:
4 x 12 = 20,736). A word id is the path (c1, ..., cL) through the tree read in base
--clusters.

Examples:

  videobert vocab build features/ -o vocab.h5 --levels 4 --clusters 12

  videobert vocab assign features/ --vocab vocab.h5
"""

BUILD_HELP = """Train a vocabulary on the video/features of feature files (streamed, minibatch k-means).

Inputs are .h5 feature files or directories of them. All must come from the same feature
model (model name, dimension, weights). The vocabulary file stores the centroids, the
parameters, the feature model identity, the source files and the cluster usage; a warning is
printed when the vocabulary is degenerate (one word above 50% of the rows, or under 10% of
the words used). Same inputs in the same order + same --seed give identical centroids.

Exit codes: 0 ok, 1 an unreadable or bad input file, 2 bad options or mixed feature models.

Examples:

  videobert vocab build features/ -o vocab.h5

  videobert vocab build a.h5 b.h5 c.h5 -o vocab.h5 --levels 2 --clusters 8 --seed 1

  videobert vocab build features/ -o vocab.h5 --batch-size 8192 --max-iter 20 --json
"""

ASSIGN_HELP = """Write each row's visual word into feature files: video/word_ids (N,) and video/word_paths (N, levels).

Every file is rewritten atomically (copy, add datasets, rename). Files of another feature
model or dimension than the vocabulary's are refused before anything is written.

Exit codes: 0 ok, 1 some files failed, 2 vocabulary of another feature model (nothing written).

Examples:

  videobert vocab assign features/ --vocab vocab.h5

  videobert vocab assign features/clip.h5 --vocab vocab.h5 --json
"""

app = typer.Typer(
    name="vocab",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def say(message: str) -> None:
    """A status line on stderr (unless --quiet), never wrapped: file paths stay greppable."""
    if not STATE.quiet:
        stderr.print(message, soft_wrap=True)


def _fmt_stats(stats: dict) -> str:
    return (
        f"{stats['words_used']} of {stats['words_total']} words used "
        f"({stats['words_used_fraction']:.1%}), largest word {stats['largest_share']:.1%} of "
        f"{stats['rows']} rows, perplexity {stats['perplexity']:.1f}"
    )


@app.command("build", help=BUILD_HELP)
@handle_errors
def build_command(
    inputs: Annotated[list[Path], typer.Argument(help="Feature files (.h5) or directories of them.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The vocabulary file to write (e.g. vocab.h5).")] = ...,
    levels: Annotated[int, typer.Option("--levels", min=1, help="Tree depth.")] = 4,
    clusters: Annotated[int, typer.Option("--clusters", min=2, max=32767, help="Children per node.")] = 12,
    seed: Annotated[int, typer.Option("--seed", help="Seed of sampling, k-means++ and batch order.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows per read and per minibatch step.")] = 4096,
    max_iter: Annotated[int, typer.Option("--max-iter", min=1, help="Maximum passes over the data per level.")] = 100,
    tol: Annotated[
        float, typer.Option("--tol", min=0.0, help="Stop a node when its centres move less than tol x its variance per pass.")
    ] = 1e-4,
    group: Annotated[str, typer.Option("--group", help="Features to quantise: video | text | fused.")] = "video",
    json_output: Annotated[bool, typer.Option("--json", help="Print the usage statistics as JSON on stdout.")] = False,
) -> None:
    from videobert_cli.errors import UsageError
    from videobert_cli.vocab import GROUP_DATASETS, build_vocabulary, feature_files, save_vocab

    if group not in GROUP_DATASETS:
        raise UsageError(f"unknown --group {group!r}", hint=f"use one of {', '.join(GROUP_DATASETS)}")
    files = feature_files(inputs, group)
    if not files:
        raise UsageError("no feature files found", hint="pass .h5 feature files or directories holding them")
    out_key = output.resolve()
    if any(f.resolve() == out_key for f in files):
        raise UsageError("--output is one of the inputs", path=output, hint="write the vocabulary to another file")
    say(f"building a {levels} x {clusters} vocabulary ({clusters**levels} words) from {len(files)} file(s)")
    vocab = build_vocabulary(
        files, levels, clusters, seed, batch_size=batch_size, max_iter=max_iter, tol=tol, group=group, progress=say
    )
    save_vocab(vocab, output)
    stats = vocab.stats
    say(f"[green]wrote[/] {output}: {_fmt_stats(stats)}")
    for warning in stats["warnings"]:
        stderr.print(f"[yellow]warning:[/] degenerate vocabulary: {warning}", soft_wrap=True)
    if json_output:
        typer.echo(json.dumps({"output": str(output), "levels": levels, "clusters": clusters, **stats}, indent=2))


@app.command("assign", help=ASSIGN_HELP)
@handle_errors
def assign_command(
    inputs: Annotated[list[Path], typer.Argument(help="Feature files (.h5) or directories of them.", show_default=False)],
    vocab_path: Annotated[Path, typer.Option("--vocab", help="A vocabulary written by 'videobert vocab build'.")] = ...,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON result per file on stdout.")] = False,
) -> None:
    from videobert_cli.errors import ConfigError, FeatureFileError, UsageError, VideoBertError
    from videobert_cli.vocab import assign_file, check_compatible, feature_files, file_identity, load_vocab

    try:
        vocab = load_vocab(vocab_path)
    except FeatureFileError as error:  # a bad --vocab is a usage error: nothing was processed
        raise ConfigError(error.message, path=error.path, hint=error.hint) from error
    # in a folder, files without the vocabulary's group (a text-only file for a video vocabulary)
    # have nothing to assign; a file named explicitly is still tried (and reported)
    files = [f for f in feature_files(inputs, vocab.group) if f.resolve() != vocab_path.resolve()]
    if not files:
        raise UsageError("no feature files found", hint="pass .h5 feature files or directories holding them")
    # Refuse a vocabulary of another model before anything is written (exit 2).
    unreadable: dict[Path, VideoBertError] = {}
    for f in files:
        try:
            identity = file_identity(f, vocab.group)
        except VideoBertError as error:
            unreadable[f] = error
            continue
        check_compatible(identity, identity["feature_dim"], vocab, path=f)
    results = []
    failed = 0
    for f in files:
        try:
            if f in unreadable:
                raise unreadable[f]
            result = assign_file(f, vocab)
            say(f"[green]assigned[/] {f}: {result['rows']} rows, {result['distinct_words']} distinct words")
            results.append({**result, "status": "ok"})
        except VideoBertError as error:
            failed += 1
            stderr.print(f"[red]failed[/] {error}", soft_wrap=True)
            results.append({"path": str(f), "status": "failed", "reason": error.reason, "message": str(error)})
    if json_output:
        for result in results:
            typer.echo(json.dumps(result))
    if failed:
        stderr.print(f"{failed} of {len(files)} files failed")
        raise typer.Exit(1)
