"""Run a producer iterator in a background thread behind a bounded queue.

decord and torch release the GIL while they work, so a decode thread overlaps with model
inference in the main thread; the queue bound keeps memory flat whatever the video length.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``iterable`` in a daemon thread, at most ``depth`` items ahead of the consumer.

    Exceptions of the producer are re-raised in the consumer. Closing the returned generator
    (or abandoning it) stops the producer at its next item.
    """
    items: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as error:  # handed to the consumer, which decides
            items.put(_Failure(error))

    thread = threading.Thread(target=produce, name="videobert-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        # drain so a producer blocked on put() sees the stop flag
        while thread.is_alive():
            try:
                items.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join(timeout=1.0)
