"""Device specifications: one device for every command, several for ``videobert run``.

``RuntimeConfig.device`` is one of

``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``
    one device (every command; :func:`resolve_device`).
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

import contextlib
import os
import platform

from videobert_cli.errors import ConfigError, UsageError

#: the ``--devices`` spelling of "every visible CUDA device"
ALL_DEVICES = "all"

#: what a GPU driver shows on Linux: NVIDIA's, AMD's (ROCm) and WSL's GPU devices
GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def cuda_possible() -> bool:
    """False where torch cannot see a GPU: Linux without any GPU driver. Lets ``auto`` mean the CPU
    without importing torch (~2.4 s and ~450 MB), which an ONNX Runtime run does not need."""
    return platform.system() != "Linux" or any(os.path.exists(path) for path in GPU_DRIVER_PATHS)


_LIST_HINT = "name each device once, separated by commas: cuda:0,cuda:1 (or cpu,cpu)"


def _normalised(spec: str | None) -> str:
    return (spec or "").strip().lower()


def is_multi_device(spec: str | None) -> bool:
    """Whether ``spec`` names several devices (a comma list, or ``all``)."""
    spec = _normalised(spec)
    return "," in spec or spec == ALL_DEVICES


def spec_error(spec: str, message: str, *, hint: str | None = None, error=ConfigError):
    """An ``error`` about the device spec ``spec``, naming its field (``device``, or ``devices``
    for ``all``, a spelling only ``run --devices`` has)."""
    field = "devices" if _normalised(spec) == ALL_DEVICES else "device"
    return error(f"{field} {spec}: {message}", field=field, hint=hint)


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
            raise spec_error(spec, f"empty entry in the device list", hint=_LIST_HINT)
        if entry in ("auto", ALL_DEVICES):
            raise spec_error(spec, f"{entry!r} cannot be part of a device list",
                              hint=f"use --devices all alone, or {_LIST_HINT}")
        if entry == "cuda":
            raise spec_error(spec, f"'cuda' in a list does not say which GPU", hint=_LIST_HINT)
        if entry.startswith("cuda:"):
            index = entry.split(":", 1)[1]
            if not index.isdigit():
                raise spec_error(spec, f"bad GPU {entry!r}", hint="GPUs are cuda:0, cuda:1, ...")
            entry = f"cuda:{int(index)}"
        elif entry != "cpu":
            raise spec_error(spec, f"unknown device {entry!r}", hint="use cpu or cuda:N entries")
        if entry.startswith("cuda:") and entry in entries:
            raise spec_error(spec, f"{entry} is listed twice",
                              hint="one worker per GPU: list each GPU once")
        entries.append(entry)
    if len({entry == "cpu" for entry in entries}) > 1:
        raise spec_error(spec, f"CPUs and GPUs cannot be mixed in one run",
                          hint="their precisions differ (fp32 / fp16); list only GPUs or only cpu")
    return tuple(entries)


def resolve_devices(spec: str | None) -> tuple[str, ...]:
    """The concrete torch devices of ``spec``: one for a single device, several for a list.

    ``all`` becomes every visible CUDA device; a list's GPUs must exist. Errors are one-line
    :class:`ConfigError`\\ s with a hint (exit code 2).
    """
    if not is_multi_device(spec):
        return (resolve_device(spec or "auto"),)
    import torch

    entries = parse_device_list(spec)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if entries == (ALL_DEVICES,):
        if not visible:
            raise spec_error(
                spec, "no CUDA GPU is visible",
                hint="check nvidia-smi and CUDA_VISIBLE_DEVICES, or run on the CPU with --device cpu",
            )
        return tuple(f"cuda:{index}" for index in range(visible))
    for entry in entries:
        if entry.startswith("cuda:"):
            if not visible:
                raise spec_error(spec, f"CUDA is not available",
                                  hint="check nvidia-smi and CUDA_VISIBLE_DEVICES, or use --device cpu")
            if int(entry.split(":")[1]) >= visible:
                raise spec_error(spec, f"no GPU {entry} ({visible} visible)",
                                  hint="list GPUs with nvidia-smi, or use --devices all")
    return entries


def require_single_device(spec: str | None, command: str) -> None:
    """A :class:`UsageError` when ``command`` (which runs on one device) is given several."""
    if is_multi_device(spec):
        raise UsageError(
            f"{command} runs on one device, but device {spec} names several",
            hint="use `videobert run` for one worker per device, or give one device such as cuda:0",
        )


def uses_gpu(spec: str | None) -> bool:
    """Whether the models of ``spec`` run on CUDA (``auto``: when a GPU is visible).

    A list never mixes CPUs and GPUs (:func:`parse_device_list`), so its first entry decides.
    """
    spec = _normalised(spec) or "auto"
    if spec == "auto":
        if not cuda_possible():
            return False
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


# --- one device: resolution, decoding threads, precision ----------------------------------
def resolve_device(device: str) -> str:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a concrete torch device string."""
    if is_multi_device(device):
        # several devices are for `run` (videobert_cli.engines.devices), never one model
        raise spec_error(
            device, "names several devices, but this runs on one", error=UsageError,
            hint="only `videobert run` uses several devices (one worker each); give one device such as cuda:0",
        )
    device = (device or "auto").strip().lower()
    if device == "cpu" or (device == "auto" and not cuda_possible()):
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise spec_error(device, "CUDA is not available", hint="use --device cpu or --device auto")
        if ":" in device:
            index = device.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise spec_error(device, f"no such GPU ({torch.cuda.device_count()} visible)",
                                 hint="list GPUs with nvidia-smi")
            return f"cuda:{int(index)}"  # torch refuses "cuda:01"
        return device
    raise spec_error(device, "unknown device", hint="use auto, cpu, cuda or cuda:N")


#: decoding threads per video for a GPU model, at most: the GPU leaves the cores idle, and
#: FFmpeg's frame threads gain on H.264 (2 threads decoded a 1080p minute 1.5x faster on 2
#: cores here; 4 is not measured)
GPU_DECODE_THREADS = 4


def default_decode_threads(device: str, cpus: int, gpus: int) -> int:
    """Decoding threads per video when ``--decode-threads`` is not given.

    On the CPU 1: the model needs the other cores (a second thread measured 3% slower at 720p
    ``--fps 5``, 10% faster only where decoding is the bottleneck). A GPU model leaves the
    cores to the decoder, which is then nearly always the bottleneck: up to
    :data:`GPU_DECODE_THREADS`, the ``cpus`` shared by the ``gpus`` in use.
    """
    if not device.startswith("cuda"):
        return 1
    return max(1, min(GPU_DECODE_THREADS, cpus // max(gpus, 1)))


#: what one decode worker process may need at its peak (torch imported, a video's crops queued);
#: bounds how many workers ``--decode-workers`` defaults to
DECODE_WORKER_MEMORY = 1 << 30


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_decode_workers(device: str, cpus: int, gpus: int, memory: int | None = None) -> int:
    """Decode worker processes feeding one model when ``--decode-workers`` is not given.

    On the CPU 1: the model needs the other cores. A GPU model is one to two orders of
    magnitude faster than one decoder, so it gets the cores the ``gpus`` in use share, one
    worker (one video) each, as many as ``memory`` (default: what is available now) holds at
    :data:`DECODE_WORKER_MEMORY` each.
    """
    if not device.startswith("cuda"):
        return 1
    workers = max(1, cpus // max(gpus, 1))
    memory = available_memory() if memory is None else memory
    if memory is not None:
        workers = min(workers, max(1, memory // DECODE_WORKER_MEMORY))
    return workers


def apply_torch_threads(num_threads: int | None) -> None:
    """Set torch's intra-op threads when the user chose a number (default: torch's own)."""
    if num_threads:
        import torch

        torch.set_num_threads(int(num_threads))


def resolve_precision(precision: str, device: str) -> str:
    """The documented default: fp32 on CPU (full-precision features), fp16 on CUDA."""
    if precision != "auto":
        return precision
    return "fp16" if device.startswith("cuda") else "fp32"


def cuda_has_native_bf16(device: str) -> bool:
    """Whether the GPU ``device`` computes in bf16 (compute capability 8.0 or later).

    ``torch.cuda.is_bf16_supported()`` also says yes for older GPUs, which only emulate bf16:
    slowly, and cuDNN has no bf16 convolutions for them; it also asks the current GPU, not
    ``device``.
    """
    import torch

    if torch.version.hip:
        return True  # every AMD GPU that torch supports has bf16
    return torch.cuda.get_device_capability(torch.device(device)) >= (8, 0)


# --- the CPU's cores ---------------------------------------------------------------------------
def allowed_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def physical_cores(path: str = "/proc/cpuinfo") -> int:
    """The physical cores among the CPUs this process may use: torch's default intra-op threads
    (hyperthreads share a core's arithmetic units), found without importing torch."""
    allowed = allowed_cpus()
    cores, processor, socket = set(), None, "0"
    try:
        with open(path) as handle:
            for line in handle:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "processor":
                    processor, socket = int(value), "0"
                elif key == "physical id":
                    socket = value
                elif key == "core id" and processor in allowed:
                    cores.add((socket, value))
    except (OSError, ValueError):
        pass
    return max(1, min(len(cores) or len(allowed), len(allowed)))


# --- the CPU's bf16 units ------------------------------------------------------------------
#: flags that mean the CPU computes in bf16 natively (x86: AVX-512 BF16 or AMX; Arm: BF16)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    info: dict[str, str] = {}
    try:
        with open(path) as handle:
            for line in handle:
                if not line.strip():
                    if info:
                        break
                    continue
                key, _, value = line.partition(":")
                info.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return info


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``), lower case; empty if unknown."""
    info = cpuinfo()
    return set((info.get("flags") or info.get("features") or "").lower().split())


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 matmuls/convolutions in hardware.

    x86: AVX-512 BF16 or AMX BF16 (/proc/cpuinfo flags; torch's own check where there is no
    /proc). Arm: the ``bf16`` feature. Without these units bf16 is emulated by converting to
    fp32 and back, which is several times slower than fp32 (3.8x on an AVX2-only EPYC).
    """
    flags = cpu_flags()
    if flags:
        if platform.machine().lower() in ("aarch64", "arm64"):
            return "bf16" in flags
        return any(flag in flags for flag in BF16_FLAGS)
    try:
        import torch

        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:
        return False


def check_precision(precision: str, device: str) -> None:
    """Refuse combinations that cannot run well: fp16 autocast on CPU is slower than fp32, and
    bf16 on a CPU without bf16 units or a GPU older than Ampere is emulated (on an AVX2-only
    EPYC 3.8x slower than fp32)."""
    if precision == "fp16" and not device.startswith("cuda"):
        raise ConfigError("precision fp16 needs a CUDA device", field="precision",
                          hint="on CPU use --precision fp32" + (" or bf16" if cpu_has_native_bf16() else ""))
    if precision == "bf16" and not device.startswith("cuda") and not cpu_has_native_bf16():
        raise ConfigError(
            "precision bf16 needs a CPU with bf16 units (AVX-512 BF16 or AMX); this CPU would emulate it, "
            "several times slower than fp32", field="precision",
            hint="use --precision fp32 (the default on CPU); `videobert doctor` lists this CPU's instruction sets",
        )
    if precision == "bf16" and device.startswith("cuda") and not cuda_has_native_bf16(device):
        import torch

        major, minor = torch.cuda.get_device_capability(torch.device(device))
        raise ConfigError(
            f"precision bf16 needs a GPU with bf16 units (compute capability 8.0+); "
            f"{device} has {major}.{minor}", field="precision",
            hint="use --precision fp16 (the default on CUDA) or fp32",
        )


def resolve_training_precision(precision: str, device: str) -> str:
    """Training's precision. ``auto``: fp32 on CPU; on CUDA bf16 where the GPU computes in it
    (Ampere and later), else fp16 with a gradient scaler."""
    if precision == "auto":
        if device.startswith("cuda"):
            return "bf16" if cuda_has_native_bf16(device) else "fp16"
        return "fp32"
    check_precision(precision, device)
    return precision


def autocast(precision: str, device: str):
    """A context in which matmuls/convolutions run at ``precision`` (fp32: no autocast)."""
    if precision in ("fp32", "auto", None):
        return contextlib.nullcontext()
    import torch

    device_type = "cuda" if device.startswith("cuda") else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type, dtype=dtype)
