"""Where ``videobert run``'s names used to live: kept so that ``from videobert_cli.pipeline.runner
import RunOptions`` and the like go on working.

The run is now opened by :mod:`videobert_cli.pipeline.core`, planned by
:mod:`videobert_cli.pipeline.plan`, recorded by :mod:`videobert_cli.pipeline.report`, and placed
by the engines (:mod:`videobert_cli.engines`).
"""

from __future__ import annotations

from videobert_cli.engines import run_batch
from videobert_cli.pipeline.core import Pipeline, RunRequest, load_transcript, process_video
from videobert_cli.pipeline.plan import decide, source_info
from videobert_cli.pipeline.report import (
    MANIFEST_NAME,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_PENDING,
    STATUS_SKIPPED,
    RunObserver,
    RunOptions,
    RunRecord,
    RunReport,
    SilentObserver,
)

__all__ = [
    "MANIFEST_NAME", "STATUS_FAILED", "STATUS_OK", "STATUS_PENDING", "STATUS_SKIPPED", "Pipeline", "RunObserver",
    "RunOptions", "RunRecord", "RunReport", "RunRequest", "SilentObserver", "decide", "load_transcript",
    "process_video", "run_batch", "source_info",
]
