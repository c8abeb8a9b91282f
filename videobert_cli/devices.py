"""Device specifications: one device for every command, several for ``videobert run``.

``RuntimeConfig.device`` is one of

``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``
    one device (every command; :func:`videobert_cli.config.resolve_device`).
a comma list such as ``cuda:0,cuda:1`` or ``cpu,cpu``
    several devices: ``run``'s local engine starts one worker process per entry
    (:mod:`videobert_cli.engines.devices`). GPUs are named one by one (``cuda:N``) and at most
    once each; ``cpu`` may repeat (several CPU workers share the cores); CPUs and GPUs are not
    mixed in one run, since their default precisions differ (fp32 / fp16).
``all``
    every visible CUDA device (``run --devices all``); an error when none is visible - never a
    silent fallback to the CPU.

Syntax is checked when the configuration is built (:func:`parse_device_list`, no torch
import); whether the GPUs exist is checked when a run starts (:func:`resolve_devices`).
"""

from __future__ import annotations

from videobert_cli.errors import ConfigError, UsageError

#: the ``--devices`` spelling of "every visible CUDA device"
ALL_DEVICES = "all"

_LIST_HINT = "name each device once, separated by commas: cuda:0,cuda:1 (or cpu,cpu)"


def _normalised(spec: str | None) -> str:
    return (spec or "").strip().lower()


def is_multi_device(spec: str | None) -> bool:
    """Whether ``spec`` names several devices (a comma list, or ``all``)."""
    spec = _normalised(spec)
    return "," in spec or spec == ALL_DEVICES


def flag_for(spec: str) -> str:
    """How ``spec`` was spelled on the command line, for messages."""
    # the configuration does not know which flag it came from; "all" only exists as --devices
    return f"--devices {spec}" if _normalised(spec) == ALL_DEVICES else f"--device {spec}"


def parse_device_list(spec: str) -> tuple[str, ...]:
    """The entries of a device list, normalised (``CUDA:01`` -> ``cuda:1``); syntax only.

    Raises :class:`ConfigError` for an empty entry, ``auto``/``all``/``cuda`` inside a list (they
    name no single device), an unknown name, a GPU listed twice, or CPUs mixed with GPUs.
    ``all`` on its own returns ``("all",)``; :func:`resolve_devices` expands it.
    """
    text = _normalised(spec)
    if text == ALL_DEVICES:
        return (ALL_DEVICES,)
    entries: list[str] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            raise ConfigError(f"{flag_for(spec)}: empty entry in the device list", hint=_LIST_HINT)
        if entry in ("auto", ALL_DEVICES):
            raise ConfigError(f"{flag_for(spec)}: {entry!r} cannot be part of a device list",
                              hint=f"use --devices all alone, or {_LIST_HINT}")
        if entry == "cuda":
            raise ConfigError(f"{flag_for(spec)}: 'cuda' in a list does not say which GPU", hint=_LIST_HINT)
        if entry.startswith("cuda:"):
            index = entry.split(":", 1)[1]
            if not index.isdigit():
                raise ConfigError(f"{flag_for(spec)}: bad GPU {entry!r}", hint="GPUs are cuda:0, cuda:1, ...")
            entry = f"cuda:{int(index)}"
        elif entry != "cpu":
            raise ConfigError(f"{flag_for(spec)}: unknown device {entry!r}", hint="use cpu or cuda:N entries")
        if entry.startswith("cuda:") and entry in entries:
            raise ConfigError(f"{flag_for(spec)}: {entry} is listed twice",
                              hint="one worker per GPU: list each GPU once")
        entries.append(entry)
    if len({entry == "cpu" for entry in entries}) > 1:
        raise ConfigError(f"{flag_for(spec)}: CPUs and GPUs cannot be mixed in one run",
                          hint="their precisions differ (fp32 / fp16); list only GPUs or only cpu")
    return tuple(entries)


def resolve_devices(spec: str | None) -> tuple[str, ...]:
    """The concrete torch devices of ``spec``: one for a single device, several for a list.

    ``all`` becomes every visible CUDA device; a list's GPUs must exist. Errors are one-line
    :class:`ConfigError`\\ s with a hint (exit code 2).
    """
    import torch

    from videobert_cli.config import resolve_device

    if not is_multi_device(spec):
        return (resolve_device(spec or "auto"),)
    entries = parse_device_list(spec)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if entries == (ALL_DEVICES,):
        if not visible:
            raise ConfigError(
                "--devices all: no CUDA GPU is visible",
                hint="check nvidia-smi and CUDA_VISIBLE_DEVICES, or run on the CPU with --device cpu",
            )
        return tuple(f"cuda:{index}" for index in range(visible))
    for entry in entries:
        if entry.startswith("cuda:"):
            if not visible:
                raise ConfigError(f"{flag_for(spec)}: CUDA is not available",
                                  hint="check nvidia-smi and CUDA_VISIBLE_DEVICES, or use --device cpu")
            if int(entry.split(":")[1]) >= visible:
                raise ConfigError(f"{flag_for(spec)}: no GPU {entry} ({visible} visible)",
                                  hint="list GPUs with nvidia-smi, or use --devices all")
    return entries


def device_option(device: str | None, devices: str | None) -> str | None:
    """The device spec of ``run``'s ``--device`` and ``--devices`` (at most one of them)."""
    if device is not None and devices is not None:
        raise UsageError("--device and --devices are mutually exclusive",
                         hint="give one of them, e.g. --devices all or --device cuda:0,cuda:1")
    if devices is not None and not _normalised(devices):
        raise UsageError("--devices needs a value", hint="--devices all, or a list such as cuda:0,cuda:1")
    return devices if devices is not None else device


def require_single_device(spec: str | None, command: str) -> None:
    """A :class:`UsageError` when ``command`` (which runs on one device) is given several."""
    if is_multi_device(spec):
        raise UsageError(
            f"{command} runs on one device, but {flag_for(spec or '')} names several",
            hint="use `videobert run` for one worker per device, or give one device such as cuda:0",
        )


def uses_gpu(spec: str | None) -> bool:
    """Whether the models of ``spec`` run on CUDA (``auto``: when a GPU is visible).

    A list never mixes CPUs and GPUs (:func:`parse_device_list`), so its first entry decides.
    """
    spec = _normalised(spec) or "auto"
    if spec == "auto":
        import torch

        return torch.cuda.is_available()
    return spec == ALL_DEVICES or spec.split(",")[0].strip().startswith("cuda")


def worker_threads(devices: tuple[str, ...], num_threads: int | None, cpus: int) -> tuple[int | None, ...]:
    """torch intra-op threads for the worker of each device (None: torch's default).

    The rule: an explicit ``--threads N`` is what each worker uses (it sets
    ``torch.set_num_threads`` in every process, as it does in a single-device run). Without it,
    the CPU workers share the ``cpus`` this process may use evenly, ``max(1, cpus // number of
    CPU workers)`` each, so that N workers do not each start one thread per core and
    oversubscribe the machine; CUDA workers keep torch's default (their work is on the GPU).
    """
    if num_threads:
        return tuple(int(num_threads) for _ in devices)
    on_cpu = sum(1 for device in devices if device == "cpu")
    share = max(1, cpus // on_cpu) if on_cpu else None
    return tuple(share if device == "cpu" else None for device in devices)
