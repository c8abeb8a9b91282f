"""The `videobert` command: assembles the command modules; holds no logic of its own."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from typing import Annotated, Optional

import typer

from videobert_cli.cli import doctor, extract_text, extract_video, fuse, index_cmd, inspect_cmd, models, plot, run, search, train, vocab
from videobert_cli.cli.common import DEFAULTS, STATE
from videobert_cli.version import __version__

app = typer.Typer(
    name="videobert",
    help="VideoBERT-style features: CNN features of frames, BERT features of words, fused by a "
    "Transformer, written to self-describing HDF5.\n\nStart with: videobert run VIDEO_DIR -o OUT_DIR",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"videobert-cli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N (auto picks CUDA when present).")] = DEFAULTS.runtime.device,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Frames or text windows per model call.")] = DEFAULTS.runtime.batch_size,
    threads: Annotated[
        Optional[int], typer.Option("--threads", min=1, help="torch intra-op threads for the models (default: torch's).")
    ] = None,
    decoder: Annotated[
        str,
        typer.Option("--decoder", help="auto | pyav | decord: the same frames either way. PyAV decodes in the "
                     "calling thread with no read-ahead (flat memory, less CPU); auto uses it wherever it gives "
                     "decord's pixels, decord elsewhere."),
    ] = DEFAULTS.runtime.decoder,
    decode_threads: Annotated[
        Optional[int],
        typer.Option("--decode-threads", min=1, help="Decoding threads per video (same frames). More than 1 "
                     "speeds up a decoder that is the bottleneck (e.g. 1080p at --fps 1, or a GPU model) and "
                     "slows a CPU model that is. [default: 1 for a CPU model; for a GPU model 4, or the "
                     "cores per GPU if fewer]"),
    ] = None,
    decode_workers: Annotated[
        Optional[int],
        typer.Option("--decode-workers", min=1, help="Decode worker processes feeding the model, one video each "
                     "(same features). [default: 1 for a CPU model; for a GPU model its CPU cores, as memory "
                     "allows, one decoding thread each]"),
    ] = None,
    model_runtime: Annotated[
        str,
        typer.Option("--model-runtime", help="auto | torch | onnxruntime: what runs the frame model. auto: ONNX "
                     "Runtime for fp32 frame models on the CPU (several times faster, features equal to ~1e-5, "
                     "checked before use), torch elsewhere; torch turns it off."),
    ] = DEFAULTS.runtime.model_runtime,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output; errors only.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    STATE.device = device
    STATE.batch_size = batch_size
    STATE.threads = threads
    STATE.decoder = decoder
    STATE.decode_threads = decode_threads
    STATE.model_runtime = model_runtime
    STATE.decode_workers = decode_workers
    STATE.quiet = quiet
    STATE.debug = debug


app.command("extract-video", help=extract_video.HELP)(extract_video.extract_video_command)
app.command("extract-text", help=extract_text.HELP)(extract_text.extract_text_command)
app.command("fuse", help=fuse.HELP)(fuse.fuse_command)
app.command("run", help=run.HELP)(run.run_command)
app.command("models", help=models.HELP)(models.models_command)
app.command("inspect", help=inspect_cmd.HELP)(inspect_cmd.inspect_command)
app.command("index", help=index_cmd.HELP)(index_cmd.index_command)
app.command("search", help=search.HELP)(search.search_command)
app.command("plot", help=plot.HELP)(plot.plot_command)
app.command("train", help=train.TRAIN_HELP)(train.train_command)
app.command("eval", help=train.EVAL_HELP)(train.eval_command)
app.add_typer(vocab.app, name="vocab")
app.command("doctor", help=doctor.HELP)(doctor.doctor_command)


def main() -> None:
    """Console-script entry point."""
    status = {"code": 1}  # an exception that escapes typer exits with 1, as Python's would
    # Registered first, so it runs after every other exit handler (multiprocessing's, logging's,
    # Ray's): it then ends the process without the interpreter's teardown of torch and ONNX
    # Runtime, which took ~0.9 s of a 10 s command; every file is closed by then.
    atexit.register(exit_without_teardown, status)
    try:
        app()
    except SystemExit as done:
        status["code"] = 0 if done.code is None else done.code if isinstance(done.code, int) else 1
        raise


def exit_without_teardown(status: dict) -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status["code"])
