"""What every command shares: global state, config building, and the one error funnel."""

from __future__ import annotations

import functools
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape

from videobert_cli.config import (
    FusionConfigOptions,
    OutputConfig,
    PipelineConfig,
    RuntimeConfig,
    SamplingConfig,
    TextModelConfig,
    VideoModelConfig,
)
from videobert_cli.errors import EXIT_INTERRUPTED, UsageError, VideoBertError

EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: a bug in videobert-cli, not in the input

#: the flag of each configuration field: the core names fields, the user reads flags
FIELD_FLAGS = {
    "fps": "--fps", "num_frames": "--num-frames", "clip_len": "--clip-len", "clip_fps": "--clip-fps",
    "clip_stride": "--clip-stride", "drop_tail": "--drop-tail", "max_length": "--max-length",
    "align": "--align", "d_model": "--d-model", "num_layers": "--layers", "num_heads": "--heads",
    "batch_size": "--batch-size", "num_threads": "--threads", "decode_threads": "--decode-threads",
    "decoder": "--decoder", "decode_workers": "--decode-workers", "model_runtime": "--model-runtime", "precision": "--precision", "device": "--device", "devices": "--devices",
    "dtype": "--dtype", "compression": "--compression",
}
_FIELD_PATTERN = re.compile(r"\b(" + "|".join(name for name in FIELD_FLAGS if "_" in name) + r")\b")


def in_flags(error: VideoBertError) -> str:
    """``error`` as one line that names flags where the core named fields."""
    message = str(error).replace("\n", " ")
    field = error.field
    if field in FIELD_FLAGS:
        prefix = f"{error.path}: " if error.path and message.startswith(f"{error.path}: ") else ""
        rest = message[len(prefix):]
        if rest.startswith(field):
            message = prefix + FIELD_FLAGS[field] + rest[len(field):]
    # other fields in the message, where the name cannot be mistaken for a word (num_frames)
    return _FIELD_PATTERN.sub(lambda match: FIELD_FLAGS[match.group(1)], message)


#: the configuration's defaults, which the flags show and fall back to (defined once, in config)
DEFAULTS = PipelineConfig()


@dataclass
class GlobalState:
    device: str = DEFAULTS.runtime.device
    batch_size: int = DEFAULTS.runtime.batch_size
    threads: int | None = DEFAULTS.runtime.num_threads
    decoder: str = DEFAULTS.runtime.decoder
    decode_threads: int | None = DEFAULTS.runtime.decode_threads  # None: 1 on CPU, more for a GPU model
    model_runtime: str = DEFAULTS.runtime.model_runtime
    decode_workers: int | None = DEFAULTS.runtime.decode_workers  # None: 1 on CPU, the cores for a GPU model
    quiet: bool = False
    debug: bool = False


STATE = GlobalState()
stderr = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)


def say(message: str) -> None:
    """A progress/status line on stderr, unless --quiet."""
    if not STATE.quiet:
        stderr.print(message)


def fail(message: str, code: int) -> None:
    stderr.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(command: Callable) -> Callable:
    """Turn core exceptions into one-line messages and exit codes (tracebacks only with --debug)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except VideoBertError as error:
            if STATE.debug:
                traceback.print_exc(file=sys.stderr)
            fail(in_flags(error), error.exit_code)
        except KeyboardInterrupt:
            stderr.print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED)
        except Exception as error:  # a bug: say so in one line, keep the traceback for --debug
            if STATE.debug:
                traceback.print_exc(file=sys.stderr)
            fail(
                f"internal error: {error.__class__.__name__}: {str(error).splitlines()[0] if str(error) else ''} "
                "(run again with --debug for a traceback and report it)",
                EXIT_INTERNAL,
            )

    return wrapper


def build_config(
    *,
    fps: Optional[float] = None,
    num_frames: Optional[int] = None,
    video_model: str = DEFAULTS.video_model.name,
    video_weights: str = DEFAULTS.video_model.weights,
    text_model: str = DEFAULTS.text_model.name,
    max_length: Optional[int] = DEFAULTS.text_model.max_length,
    fusion_weights: Optional[Path] = None,
    fusion_seed: int = DEFAULTS.fusion.seed,
    d_model: int = DEFAULTS.fusion.d_model,
    layers: int = DEFAULTS.fusion.num_layers,
    heads: int = DEFAULTS.fusion.num_heads,
    device: Optional[str] = None,
    devices: Optional[str] = None,
    batch_size: Optional[int] = None,
    precision: str = DEFAULTS.runtime.precision,
    dtype: str = DEFAULTS.output.dtype,
    compression: Optional[str] = DEFAULTS.output.compression,
    clip_len: Optional[int] = None,
    clip_fps: Optional[float] = None,
    clip_stride: Optional[int] = None,
    drop_tail: bool = False,
    align: str = "none",
) -> PipelineConfig:
    """A PipelineConfig from command-line values (command flags override global ones).

    ``devices`` is ``run``'s ``--devices`` (an alternative spelling of a device list).
    """
    sampling = SamplingConfig(fps=fps, num_frames=num_frames, clip_len=clip_len, clip_fps=clip_fps,
                              clip_stride=clip_stride, drop_tail=drop_tail)
    device = _device_option(device, devices)
    return PipelineConfig(
        sampling=sampling,
        video_model=VideoModelConfig(name=video_model, weights=video_weights),
        text_model=TextModelConfig(name=text_model, max_length=max_length),
        fusion=FusionConfigOptions(
            weights_path=str(fusion_weights) if fusion_weights else None,
            seed=fusion_seed,
            d_model=d_model,
            num_layers=layers,
            num_heads=heads,
            ff_dim=4 * d_model,
            align=align,
        ),
        runtime=RuntimeConfig(
            device=device or STATE.device,
            batch_size=batch_size or STATE.batch_size,
            precision=precision,
            num_threads=STATE.threads,
            decoder=STATE.decoder,
            decode_threads=STATE.decode_threads,
            decode_workers=STATE.decode_workers,
            model_runtime=STATE.model_runtime,
        ),
        output=OutputConfig(dtype=dtype, compression=compression),
    )


def _device_option(device: str | None, devices: str | None) -> str | None:
    """The device spec of ``run``'s ``--device`` and ``--devices`` (at most one of them)."""
    if device is not None and devices is not None:
        raise UsageError("--device and --devices are mutually exclusive",
                         hint="give one of them, e.g. --devices all or --device cuda:0,cuda:1")
    if devices is not None and not devices.strip():
        raise UsageError("--devices needs a value", hint="--devices all, or a list such as cuda:0,cuda:1")
    return devices if devices is not None else device


def report_file_results(results, noun: str) -> int:
    """Print per-file outcomes; exit code 1 when any input failed."""
    for result in results.results:
        if result.error:
            if STATE.debug and result.exception is not None:
                traceback.print_exception(result.exception, file=sys.stderr)
            stderr.print(f"[red]failed[/] {escape(result.error)}", soft_wrap=True)
        else:
            say(f"[green]wrote[/] {result.output}")
    failed = len(results.failed)
    if failed:
        stderr.print(f"{failed} of {len(results.results)} {noun} failed")
        return 1
    return 0
