"""Engines: where ``videobert run`` decodes and encodes.

Every engine takes the planned inputs and gives back a :class:`~videobert_cli.pipeline.runner.RunReport`
with the same guarantees (output-directory lock, skip/resume, ``manifest.jsonl``, atomic
per-video files, exit codes, progress callbacks, graceful stop). They differ only in where the
work happens:

``local``
    this machine, needs nothing extra (the default). With one device (``--device cpu``,
    ``cuda:1``, ``auto``) this process encodes and a separate decode process per run decodes
    (:func:`~videobert_cli.pipeline.runner.run_batch`). With several (``--device
    cuda:0,cuda:1``, ``cpu,cpu``, or ``--devices all`` for every visible GPU) it starts one
    long-lived worker process per device, each with its own models and decode process, and
    hands each free worker the next video (:mod:`videobert_cli.engines.devices`).
``ray``
    decode tasks and long-lived model actors on a Ray cluster (``pip install 'videobert-cli[ray]'``).
    Takes one ``--device`` spec; GPUs are shared out with ``--gpus-per-worker``.

:data:`ENGINES` maps a name to a callable with the signature
``engine(items, out_dir, config, options, *, observer=None, stop=None, **engine_options)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from videobert_cli.config import PipelineConfig
from videobert_cli.errors import UsageError
from videobert_cli.pipeline.inputs import VideoInput
from videobert_cli.pipeline.runner import RunObserver, RunOptions, RunReport
from videobert_cli.pipeline.signals import StopFlag

#: command-line spelling of engine options, for messages
OPTION_FLAGS = {
    "address": "--address",
    "workers": "--workers",
    "gpus_per_worker": "--gpus-per-worker",
}


def run_local(
    items: list[VideoInput],
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    options: RunOptions | None = None,
    *,
    observer: RunObserver | None = None,
    stop: StopFlag | None = None,
    decode: Callable | None = None,
    **engine_options,
) -> RunReport:
    """This machine: :func:`~videobert_cli.pipeline.runner.run_batch` for one device, or one
    worker process per device for several (:func:`~videobert_cli.engines.devices.run_devices`).

    ``decode`` and the ``_worker_hook`` option are test hooks, never command-line flags.
    """
    from videobert_cli.devices import is_multi_device
    from videobert_cli.pipeline.runner import run_batch

    worker_hook = engine_options.pop("_worker_hook", None)
    if engine_options:
        flags = ", ".join(OPTION_FLAGS.get(name, name) for name in sorted(engine_options))
        raise UsageError(f"{flags}: only for --engine ray", hint="add --engine ray or drop the option")
    if config is not None and is_multi_device(config.runtime.device):
        from videobert_cli.engines.devices import run_devices

        return run_devices(items, out_dir, config, options, observer=observer, stop=stop, decode=decode,
                           worker_hook=worker_hook)
    return run_batch(items, out_dir, config, options, observer=observer, stop=stop, decode=decode)


def run_ray(
    items: list[VideoInput],
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    options: RunOptions | None = None,
    *,
    observer: RunObserver | None = None,
    stop: StopFlag | None = None,
    **engine_options,
) -> RunReport:
    """A Ray cluster (see :mod:`videobert_cli.engines.ray_engine`); Ray is imported only here."""
    from videobert_cli.devices import is_multi_device, spec_error

    if config is not None and is_multi_device(config.runtime.device):
        # Ray places its model workers itself; a device list would be ignored or crowd one GPU
        raise spec_error(
            config.runtime.device, "several devices are for the local engine", error=UsageError,
            hint="with --engine ray, give --gpus-per-worker 1 (one GPU per model worker) and --workers N",
        )
    from videobert_cli.engines.ray_engine import run_ray as run

    return run(items, out_dir, config, options, observer=observer, stop=stop, **engine_options)


ENGINES: dict[str, Callable[..., RunReport]] = {
    "local": run_local,
    "ray": run_ray,
}


def get_engine(name: str) -> Callable[..., RunReport]:
    """The engine called ``name``, or a :class:`UsageError` listing the known ones."""
    try:
        return ENGINES[name]
    except KeyError:
        raise UsageError(f"unknown engine {name!r}", hint=f"choose one of: {', '.join(ENGINES)}") from None


def run_engine(
    name: str,
    items: list[VideoInput],
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    options: RunOptions | None = None,
    *,
    observer: RunObserver | None = None,
    stop: StopFlag | None = None,
    **engine_options,
) -> RunReport:
    """Run ``items`` with the engine called ``name``; ``None``-valued options are dropped."""
    engine = get_engine(name)
    engine_options = {key: value for key, value in engine_options.items() if value is not None}
    return engine(items, out_dir, config, options, observer=observer, stop=stop, **engine_options)
