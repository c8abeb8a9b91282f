"""Run a producer iterator in a background thread behind a bounded queue.

decord and torch release the GIL while they work, so a decode thread overlaps with model
inference in the main thread; the queue bound keeps memory flat whatever the video length.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class Prefetched(Iterator[T], Generic[T]):
    """The consumer side of :func:`prefetch`: an iterator that can tell whether it would wait."""

    def __init__(self, items: Iterator[T], buffer: queue.Queue):
        self._items = items
        self._buffer = buffer

    def __next__(self) -> T:
        return next(self._items)

    def ready(self) -> bool:
        """Whether the next item (or the end) is already here, i.e. ``next`` would not wait."""
        return not self._buffer.empty()

    def close(self) -> None:
        """Stop the producer at its next item."""
        self._items.close()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(
    iterable: Iterable[T],
    depth: int = 2,
    *,
    max_bytes: int | None = None,
    on_full: Callable[[], None] | None = None,
    size_of: Callable[[T], int] | None = None,
) -> Prefetched[T]:
    """Iterate ``iterable`` in a daemon thread, at most ``depth`` items ahead of the consumer.

    With ``max_bytes``, the producer also stops once the items waiting hold that many bytes
    (``size_of``), calls ``on_full`` (e.g. to close a decoder) and waits until half of them
    are consumed. Exceptions of the producer are re-raised in the consumer. Closing the
    returned iterator (or abandoning it) stops the producer at its next item.
    """
    items: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    buffered = [0]
    room = threading.Condition()

    def wait_for_room() -> None:
        if max_bytes is None:
            return
        with room:
            if buffered[0] < max_bytes:
                return
            if on_full is not None:
                on_full()
            while buffered[0] > max_bytes // 2 and not stop.is_set():
                room.wait(timeout=0.1)

    def produce() -> None:
        try:
            for item in iterable:
                if max_bytes is not None:
                    with room:
                        buffered[0] += size_of(item)
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
                wait_for_room()  # after the put, so the consumer can always drain what counts
            items.put(_DONE)
        except BaseException as error:  # handed to the consumer, which decides
            items.put(_Failure(error))

    thread = threading.Thread(target=produce, name="videobert-prefetch", daemon=True)
    thread.start()
    return Prefetched(_consume(items, thread, stop, room, buffered, max_bytes, size_of), items)


def _consume(items: queue.Queue, thread: threading.Thread, stop: threading.Event, room: threading.Condition,
             buffered: list, max_bytes: int | None, size_of) -> Iterator:
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            if max_bytes is not None:
                with room:
                    buffered[0] -= size_of(item)
                    room.notify_all()
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
