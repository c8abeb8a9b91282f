"""How the stages overlap, for ``run`` and the file commands alike.

:class:`DecodeFeed`: videos are decoded in the decode worker process
(:class:`~videobert_cli.pipeline.decode_worker.DecodeWorker`), one video ahead, while this process
encodes; :func:`open_feed` starts it before the model is loaded where an earlier run left the
:class:`DecodePlan` of this configuration. :class:`WriteBehind`: feature files are written in a
background thread while the next inputs are worked on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from videobert_cli.config import PipelineConfig, SamplingConfig
from videobert_cli.pipeline.decoding import DecodeRequest
from videobert_cli.video.preprocess import Preprocessing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodePlan:
    """What decoding needs from the video stage: the request of any video (its path aside), how
    many decode workers, and their niceness (``VideoStage.decode_plan``)."""

    request: DecodeRequest  # path ""
    workers: int
    niceness: int

    def request_for(self, path: str) -> DecodeRequest:
        return dataclasses.replace(self.request, path=str(path))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DecodePlan":
        data = json.loads(text)
        request = dict(data["request"])
        request.update(sampling=SamplingConfig(**request["sampling"]),
                       preprocessing=Preprocessing.from_dict(request["preprocessing"]))
        return cls(DecodeRequest(**request), int(data["workers"]), int(data["niceness"]))


def plan_path(config: PipelineConfig, chunk_frames: int) -> Path:
    """Where the plan of ``config`` is remembered (keyed by what decides it)."""
    from videobert_cli.version import __version__
    from videobert_cli.video.runtimes import cache_entry

    runtime = config.runtime
    facts = (__version__, config.video_model, config.sampling, runtime.device, runtime.decoder,
             runtime.decode_threads, runtime.decode_workers, chunk_frames)
    return cache_entry("decode-plans", facts, "{}.json")


def remembered_plan(config: PipelineConfig, chunk_frames: int) -> DecodePlan | None:
    """The plan the last run with this configuration used, or None."""
    try:
        return DecodePlan.from_json(plan_path(config, chunk_frames).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_plan(config: PipelineConfig, chunk_frames: int, plan: DecodePlan) -> None:
    from videobert_cli.store.atomic import write_cache_file

    write_cache_file(plan_path(config, chunk_frames), plan.to_json().encode(), what="decode plan cache")


def open_feed(config: PipelineConfig, paths: Sequence[str], stage: Callable[[], object], *, timeout: float,
              chunk_frames: int, decode: Callable | None = None) -> "DecodeFeed":
    """The feed of ``paths`` for the video stage that ``stage()`` loads.

    Where an earlier run with this configuration left its plan, decoding starts with it at
    once, beside the model's loading (imports and weights: seconds), and is kept if the loaded
    stage's own plan is the same; otherwise (new weights, another device) those workers are
    stopped and the feed starts again with the stage's plan, which is remembered for next time.
    """
    guess = remembered_plan(config, chunk_frames) if paths else None
    early: list[DecodeFeed] = []
    starting = None
    if guess is not None:
        def start_early() -> None:
            try:
                early.append(DecodeFeed(guess, paths, timeout=timeout, decode=decode))
            except Exception as error:  # the feed below starts (and reports) the workers again
                log.info("early decoding did not start: %s", error)

        # in a thread: the first worker waits for the fork server, the model need not
        starting = threading.Thread(target=start_early, name="videobert-early-decode", daemon=True)
        starting.start()
    try:
        plan = stage().decode_plan(chunk_frames)
    finally:
        if starting is not None:
            starting.join()
    if early and plan == guess:
        return early[0]
    for feed in early:
        feed.close()
    if paths:
        remember_plan(config, chunk_frames, plan)
    return DecodeFeed(plan, paths, timeout=timeout, decode=decode)


class DecodeFeed:
    """The videos ``paths`` decoded as ``plan`` says by ``plan.workers`` decode worker
    processes, each on its own video, and handed over in order. Video ``p`` goes to worker
    ``p mod workers``; each worker starts its next video as soon as its current one is decoded,
    so the workers decode the next ``workers`` videos side by side while the model encodes.

    ``decode`` replaces the workers' decode function (a test hook, see
    :mod:`videobert_cli.engines.hooks`).
    """

    def __init__(self, plan: DecodePlan, paths: Sequence[str], *, timeout: float, decode: Callable | None = None):
        from videobert_cli.pipeline.decode_worker import DecodeWorker, default_decode

        self.plan = plan
        self.paths = list(paths)
        count = max(1, min(plan.workers, len(self.paths)))
        self.workers = [DecodeWorker(timeout=timeout, decode=decode or default_decode, niceness=plan.niceness)
                        for _ in range(count)]
        self.submitted: dict[int, object] = {}
        for position in range(count):  # decoding starts now, while the models finish loading
            self.submit(position)

    def _worker(self, position: int):
        return self.workers[position % len(self.workers)]

    def submit(self, position: int) -> None:
        """Start decoding the ``position``-th video (if not started yet)."""
        if position < len(self.paths) and position not in self.submitted:
            self.submitted[position] = self._worker(position).submit(self.plan.request_for(self.paths[position]))

    def open(self, position: int, timings: dict | None = None):
        """``(VideoInfo, iterator of CropChunk)`` of the ``position``-th video; ``timings`` gets
        the decoder's stage times once it is decoded."""
        for ahead in range(position, position + len(self.workers)):
            self.submit(ahead)
        job = self.submitted.pop(position)
        after = position + len(self.workers)  # this worker's next video
        return self._worker(position).stream(job, timings=timings, on_done=lambda: self.submit(after))

    def failed(self) -> None:
        """After a video failed: a half-consumed job would feed stale frames to the next video
        (queued videos of the other workers are decoded again: simple, and failures are rare)."""
        if any(worker.has_pending() for worker in self.workers):
            for worker in self.workers:
                if worker.has_pending():
                    worker.abandon()
            self.submitted.clear()

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


class WriteBehind:
    """Feature files written in a background thread, one after the other, at most ``depth``
    waiting.

    Writing (HDF5, compression, ``--verify-hash``) then overlaps with the next videos' decoding
    and encoding instead of adding to it. ``drain`` waits for the writes and calls their
    ``done(error)`` callbacks in the caller's thread, in order, so records keep the input order.
    """

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self._pending: deque = deque()  # [thread, done, error]

    def start(self, write: Callable[[], None], done: Callable[[BaseException | None], None]) -> None:
        """Write in the background after the writes already started; wait if ``depth`` are pending."""
        while len(self._pending) >= self.depth:
            self._finish_oldest()
        entry = [None, done, None]
        previous = self._pending[-1][0] if self._pending else None

        def run() -> None:
            if previous is not None:
                previous.join()  # files are written in input order
            try:
                write()
            except BaseException as error:  # handed to done() in the caller's thread
                entry[2] = error

        entry[0] = threading.Thread(target=run, name="videobert-writer", daemon=True)
        entry[0].start()
        self._pending.append(entry)

    def drain(self) -> None:
        """Wait for every write started, calling each ``done`` in turn (which may raise)."""
        while self._pending:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        thread, done, _ = self._pending[0]
        thread.join()
        _, done, error = self._pending.popleft()
        done(error)
