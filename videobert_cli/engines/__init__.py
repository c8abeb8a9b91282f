"""Engines: where ``videobert run`` decodes and encodes.

Every engine takes a :class:`~videobert_cli.pipeline.core.RunRequest` and gives back a
:class:`~videobert_cli.pipeline.report.RunReport` with the same guarantees (output-directory lock, skip/resume, ``manifest.jsonl``, atomic
per-video files, exit codes, progress callbacks, graceful stop): each opens the run with
:func:`~videobert_cli.pipeline.core.execute` and processes videos with the same code. They differ
only in where the work happens:

``local``
    this machine, needs nothing extra (the default). With one device (``--device cpu``,
    ``cuda:1``, ``auto``) this process encodes and a separate decode process per run decodes
    (:mod:`videobert_cli.engines.local`). With several (``--device
    cuda:0,cuda:1``, ``cpu,cpu``, or ``--devices all`` for every visible GPU) it starts one
    long-lived worker process per device, each with its own models and decode process, and
    hands each free worker the next video (:mod:`videobert_cli.engines.devices`).
``ray``
    decode tasks and long-lived model actors on a Ray cluster (``pip install 'videobert-cli[ray]'``).
    Takes one ``--device`` spec; GPUs are shared out with ``--gpus-per-worker``.

:data:`ENGINES` maps a name to a callable ``engine(request, **engine_options)``; the devices and
Ray engines share one scheduler (:mod:`videobert_cli.engines.scheduler`). Test hooks are
installed with :mod:`videobert_cli.engines.hooks`, never passed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from videobert_cli.config import PipelineConfig
from videobert_cli.errors import UsageError
from videobert_cli.pipeline.core import RunRequest
from videobert_cli.pipeline.inputs import VideoInput
from videobert_cli.pipeline.report import RunObserver, RunOptions, RunReport
from videobert_cli.pipeline.signals import StopFlag

#: command-line spelling of engine options, for messages
OPTION_FLAGS = {
    "address": "--address",
    "workers": "--workers",
    "gpus_per_worker": "--gpus-per-worker",
}


def run_local(request: RunRequest, **engine_options) -> RunReport:
    """This machine: one device (:mod:`videobert_cli.engines.local`), or one worker process per
    device for several (:mod:`videobert_cli.engines.devices`)."""
    from videobert_cli.devices import is_multi_device

    if engine_options:
        flags = ", ".join(OPTION_FLAGS.get(name, name) for name in sorted(engine_options))
        raise UsageError(f"{flags}: only for --engine ray", hint="add --engine ray or drop the option")
    if is_multi_device(request.config.runtime.device):
        from videobert_cli.engines.devices import run_devices

        return run_devices(request)
    from videobert_cli.engines.local import run_single

    return run_single(request)


def run_ray(request: RunRequest, **engine_options) -> RunReport:
    """A Ray cluster (see :mod:`videobert_cli.engines.ray_engine`); Ray is imported only there."""
    from videobert_cli.devices import is_multi_device, spec_error

    if is_multi_device(request.config.runtime.device):
        # Ray places its model workers itself; a device list would be ignored or crowd one GPU
        raise spec_error(
            request.config.runtime.device, "several devices are for the local engine", error=UsageError,
            hint="with --engine ray, give --gpus-per-worker 1 (one GPU per model worker) and --workers N",
        )
    from videobert_cli.engines import ray_engine

    return ray_engine.run_ray(request, **engine_options)


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
    request = RunRequest.of(items, out_dir, config, options, observer=observer, stop=stop)
    return engine(request, **engine_options)


def run_batch(items: list[VideoInput], out_dir: str | Path, config: PipelineConfig | None = None,
              options: RunOptions | None = None, **kwargs) -> RunReport:
    """``items`` with the local engine (:func:`run_engine` ``("local", ...)``)."""
    return run_engine("local", items, out_dir, config, options, **kwargs)
