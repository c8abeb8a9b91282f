"""`videobert extract-text`: token and cue features of transcripts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from videobert_cli.cli import options as opt
from videobert_cli.cli.common import DEFAULTS, build_config, handle_errors, report_file_results
from videobert_cli.errors import UsageError

HELP = """Encode transcripts with the text model and write token and cue features (group text/).

Formats by suffix: .txt (one cue per line, untimed), .srt, .vtt, .json (Whisper
"segments"). Text longer than the model window is split on cue and sentence bounds; every
token is encoded, nothing is truncated.

Examples:

  videobert extract-text talk.srt -o talk.h5

  videobert extract-text transcripts/*.vtt -o features/

  videobert extract-text --text "a person slices an onion" -o onion.h5
"""


@handle_errors
def extract_text_command(
    transcripts: Annotated[
        Optional[list[Path]], typer.Argument(help="Transcript files (.txt .srt .vtt .json).", show_default=False)
    ] = None,
    output: opt.Output = ...,
    text: Annotated[Optional[list[str]], typer.Option("--text", help="A literal text to encode (repeatable).")] = None,
    text_model: opt.TextModel = "all-minilm-l6-v2",
    max_length: opt.MaxLength = None,
    device: opt.Device = None,
    batch_size: opt.BatchSize = None,
    precision: opt.Precision = DEFAULTS.runtime.precision,
    dtype: opt.Dtype = DEFAULTS.output.dtype,
    compression: opt.Compression = None,
) -> None:
    from videobert_cli.api import extract_text_files

    if not transcripts and not text:
        raise UsageError("nothing to encode", hint="give transcript files or --text \"...\"")
    if text and not all(value.strip() for value in text):
        raise UsageError("--text is empty", hint="give the words to encode, e.g. --text \"a person slices an onion\"")
    config = build_config(
        text_model=text_model, max_length=max_length, device=device, batch_size=batch_size,
        precision=precision, dtype=dtype, compression=compression,
    )
    results = extract_text_files(transcripts or [], output, config, texts=text or [])
    raise typer.Exit(report_file_results(results, "transcripts"))
