"""Test hooks of the engines: functions tests install to make decoders and workers misbehave.

No engine takes them as arguments. Tests install them for the duration of a run::

    with hooks.installed(decode=faults.hang_on_marked_files):
        run_engine("local", items, out_dir, config)

and the engines read :func:`current` when a run starts, handing what is set to the processes
they start (each hook must be a module-level callable, importable by name there).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator


@dataclass(frozen=True)
class Hooks:
    """What may be installed (None: no hook)."""

    #: replaces the decode worker's decode function, ``decode(job, emit)`` (local engine)
    decode: Callable | None = None
    #: called in a device worker (several local devices) with each VideoInput once its
    #: decoding has started
    device_worker: Callable | None = None
    #: called in a Ray model actor with the VideoInput before a video is processed
    ray_actor: Callable | None = None
    #: called in a Ray decode task with the path before decoding
    ray_decode: Callable | None = None


NONE = Hooks()
ACTIVE: list[Hooks] = [NONE]


def current() -> Hooks:
    """The hooks installed now."""
    return ACTIVE[-1]


@contextmanager
def installed(**hooks: Callable) -> Iterator[Hooks]:
    """Install ``hooks`` (fields of :class:`Hooks`) for the duration of the block."""
    active = replace(current(), **hooks)
    ACTIVE.append(active)
    try:
        yield active
    finally:
        ACTIVE.remove(active)
