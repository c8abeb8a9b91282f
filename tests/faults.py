"""Decode functions that misbehave like real broken decoders, for the batch runner's worker.

They live in their own importable module because the decode worker is a spawned process that
imports its target by name.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from videobert_cli.pipeline.decode_worker import default_decode


def hang_on_marked_files(job, emit) -> None:
    """Hang forever (as decord's get_batch does on some files) for files named ``hang*``."""
    if Path(job.path).name.startswith("hang"):
        while True:
            time.sleep(1)
    default_decode(job, emit)


def crash_on_marked_files(job, emit) -> None:
    """Die of SIGSEGV (as decord does on some corrupt files) for files named ``crash*``."""
    if Path(job.path).name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    default_decode(job, emit)


def slow_frames(job, emit) -> None:
    """Decode normally but slowly (0.3 s per chunk), so a test can interrupt a run mid-way."""
    def slow_emit(message):
        if message[0] == "chunk":
            time.sleep(0.3)
        emit(message)

    default_decode(job, slow_emit)
