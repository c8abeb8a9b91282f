"""The scheduler of the engines that hand videos to long-lived workers (several local devices,
Ray): the queue of videos, reservations, stealing, failures and the records.

A free worker takes the next pending video. A busy worker also has the following video
reserved (its decoding starts as soon as the current video is decoded); a worker that falls
idle while nothing is pending takes over another worker's reserved video, so one long video
never holds up the rest. Records are written here, by the parent, as results come back.

An engine subclasses :class:`Scheduler` for its kind of worker: how a worker is started and
told a video (:meth:`Scheduler.available`, :meth:`Scheduler.dispatch`) and how its events are
waited for (:meth:`Scheduler.wait_once`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from videobert_cli.errors import VideoBertError
from videobert_cli.pipeline.core import OpenRun
from videobert_cli.pipeline.inputs import VideoInput
from videobert_cli.pipeline.plan import PlannedVideo
from videobert_cli.pipeline.report import (
    Manifest,
    RunObserver,
    RunRecord,
    RunReport,
    failed_record,
    record_input,
)
from videobert_cli.pipeline.signals import StopFlag

#: the reason code of a video whose worker process was lost (died, node lost, OOM kill)
REASON_WORKER_LOST = "worker-lost"


@dataclass
class Task:
    """One video to process, and how often a worker was lost while processing it."""

    video: PlannedVideo
    attempt: int = 0
    lost: list[str] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.video.number

    @property
    def item(self) -> VideoInput:
        return self.video.item

    @property
    def output(self) -> Path:
        return self.video.output


class Slot:
    """The scheduler's view of one worker (an engine's slots add what they need)."""

    def __init__(self, index: int):
        self.index = index
        self.dead = False  # given up: never used again
        self.ever_ready = False
        self.reserved: Task | None = None  # the next video, its decoding started ahead

    @property
    def busy(self) -> bool:
        raise NotImplementedError


class Scheduler:
    """The queue of videos over :attr:`slots`; see the module docstring."""

    #: how messages name a worker
    noun = "worker"

    def __init__(self, observer: RunObserver, stop: StopFlag, *, prefetch: bool = True):
        self.observer = observer
        self.stop = stop
        self.prefetch = prefetch
        self.slots: list = []
        self.pending: deque[Task] = deque()
        self.manifest: Manifest | None = None
        self.report: RunReport | None = None
        self.fatal: VideoBertError | None = None
        self.stopping = False
        self.last_death = ""

    # -- what an engine provides ------------------------------------------------------------------
    def available(self, slot) -> bool:
        """Whether an idle, not dead ``slot`` can take a video now (it may start a worker)."""
        raise NotImplementedError

    def dispatch(self, slot, task: Task, hint: Task | None) -> None:
        """Hand ``task`` to the worker of ``slot``; ``hint`` is reserved for it next."""
        raise NotImplementedError

    def wait_once(self) -> None:
        """Wait briefly for the workers' events and handle them."""
        raise NotImplementedError

    def stolen(self, slot, task: Task) -> None:
        """``task``, reserved by ``slot``, went to another worker."""

    def give_up(self) -> str | None:
        """Why the remaining videos cannot be processed (no worker will come), or None."""
        return None

    def after_wait(self) -> None:
        """Checks after each wait (e.g. a watchdog)."""

    # -- records -----------------------------------------------------------------------------------
    def finish(self, task: Task, record: RunRecord) -> None:
        if task.lost:
            record.warnings.append(f"tried {task.attempt + 1} times: worker lost ({'; '.join(task.lost)})")
        record_input(self.manifest, self.report, self.observer, record)

    def fail(self, task: Task, reason: str, message: str, seconds: float = 0.0) -> None:
        self.finish(task, failed_record(task.item, task.output, task.video.why, reason, message, seconds))

    def done(self, task: Task, record: RunRecord, fatal: VideoBertError | None) -> None:
        """A worker's result: recorded; a fatal error (out of space) starts no further video."""
        self.finish(task, record)
        if fatal is not None and self.fatal is None:
            self.fatal = fatal

    def lost(self, task: Task, cause: str, retries: int) -> None:
        """The worker processing ``task`` was lost: try again up to ``retries`` times."""
        task.lost.append(cause)
        task.attempt += 1
        if task.attempt <= retries:
            self.observer.on_message(f"{task.item.path}: worker lost ({cause}); trying again")
            self.pending.appendleft(task)
        else:
            self.fail(task, REASON_WORKER_LOST,
                      f"{task.item.path}: the worker processing it was lost {task.attempt} time(s) ({cause})")

    def return_reserved(self, slot) -> None:
        if slot.reserved is not None:
            self.pending.appendleft(slot.reserved)
            slot.reserved = None

    def fail_remaining(self, why: str) -> None:
        for slot in self.slots:
            self.return_reserved(slot)
        while self.pending:
            task = self.pending.popleft()
            self.fail(task, REASON_WORKER_LOST, f"{task.item.path}: {why}")

    # -- dispatch ------------------------------------------------------------------------------------
    def halted(self) -> bool:
        if self.stop.is_set():
            self.stopping = True
        return self.stopping or self.fatal is not None

    def steal(self) -> Task | None:
        """A video reserved by a busy worker, for an idle one (the tail of a run)."""
        for other in self.slots:
            if other.reserved is not None and other.busy:
                task, other.reserved = other.reserved, None
                self.stolen(other, task)
                return task
        return None

    def assign(self) -> None:
        """Give each idle worker its reserved video, else the next pending one, else one it steals."""
        for slot in self.slots:
            if slot.dead or slot.busy or not self.available(slot):
                continue
            task, slot.reserved = slot.reserved, None
            if task is None and self.pending:
                task = self.pending.popleft()
            if task is None:
                task = self.steal()
            if task is None:
                continue
            hint = None
            if self.prefetch and self.pending:
                hint = slot.reserved = self.pending.popleft()
            self.observer.on_input_start(task.item)
            self.dispatch(slot, task, hint)

    def left(self) -> bool:
        return bool(self.pending) or any(slot.reserved is not None for slot in self.slots)

    def run(self, tasks: list[Task]) -> bool:
        """Process ``tasks``; returns whether videos were left (a signal or a fatal error)."""
        self.pending.extend(tasks)
        while True:
            if not self.halted():
                self.assign()
            if not any(slot.busy for slot in self.slots):
                left = self.left()
                if self.halted() or not left:
                    return left
                if all(slot.dead for slot in self.slots):
                    self.fail_remaining(f"no {self.noun} left ({self.last_death or 'all died'})")
                    return False
                why = self.give_up()
                if why is not None:
                    self.fail_remaining(why)
                    return False
            self.wait_once()
            self.after_wait()

    def serve(self, run: OpenRun, fields: dict, on_second_signal=None) -> None:
        """The run's manifest (``fields`` added to its run line): the up-to-date inputs are
        recorded at once, then the others are processed; a fatal error is raised at the end."""
        observer = run.request.observer
        with run.recording(fields, stopping="finishing the videos in progress",
                           on_second_signal=on_second_signal) as manifest:
            self.manifest, self.report = manifest, run.report
            for video in run.plan:  # up to date: recorded at once
                if not video.needed:
                    observer.on_input_start(video.item)
                    record_input(manifest, run.report, observer, video.record())
            tasks = [Task(video) for video in run.todo]
            if tasks:
                run.report.interrupted = self.run(tasks) and self.fatal is None
        if self.fatal is not None:
            raise self.fatal  # out of space or read-only: a usage error (exit 2)
