"""How the stages overlap, for ``run`` and the file commands alike.

:class:`DecodeFeed`: videos are decoded in the decode worker process
(:class:`~videobert_cli.pipeline.decode_worker.DecodeWorker`), one video ahead, while this process
encodes. :class:`WriteBehind`: feature files are written in a background thread while the next
inputs are worked on.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Sequence


class DecodeFeed:
    """The videos ``paths`` decoded for ``stage`` (a
    :class:`~videobert_cli.pipeline.stages.VideoStage`) by ``stage.decode_workers`` decode worker
    processes, each on its own video, and handed over in order. Video ``p`` goes to worker
    ``p mod workers``; each worker starts its next video as soon as its current one is decoded,
    so the workers decode the next ``workers`` videos side by side while the model encodes.

    ``decode`` replaces the workers' decode function (a test hook, see
    :mod:`videobert_cli.engines.hooks`).
    """

    def __init__(self, stage, paths: Sequence[str], *, timeout: float, chunk_frames: int,
                 decode: Callable | None = None):
        from videobert_cli.pipeline.decode_worker import DecodeWorker, decoder_niceness, default_decode

        self.stage = stage
        self.paths = list(paths)
        self.chunk_frames = chunk_frames
        count = max(1, min(stage.decode_workers, len(self.paths)))
        self.workers = [DecodeWorker(timeout=timeout, decode=decode or default_decode,
                                     niceness=decoder_niceness(stage.device)) for _ in range(count)]
        self.submitted: dict[int, object] = {}
        for position in range(count):  # decoding starts now, while the models finish loading
            self.submit(position)

    def _worker(self, position: int):
        return self.workers[position % len(self.workers)]

    def submit(self, position: int) -> None:
        """Start decoding the ``position``-th video (if not started yet)."""
        if position < len(self.paths) and position not in self.submitted:
            self.submitted[position] = self._worker(position).submit(
                self.stage.decode_request(self.paths[position], self.chunk_frames))

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
