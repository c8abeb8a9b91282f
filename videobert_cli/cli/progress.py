"""A rich progress bar and summary table for `videobert run` (stderr only)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.markup import escape
from rich.table import Table

from videobert_cli.cli.common import stderr


class RichRunObserver:
    """Implements the core's RunObserver protocol with a progress bar over videos."""

    def __init__(self, *, quiet: bool = False, show_progress: bool = True):
        """``quiet``: nothing but failures; ``show_progress`` False (dry runs): messages only."""
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]videos"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=stderr,
            transient=False,
            disable=quiet or not show_progress,
        )
        self.task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def on_start(self, total: int) -> None:
        self.task = self.progress.add_task("", total=total)

    def on_input_start(self, item) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=escape(str(item.path.name)))

    def on_input_done(self, record) -> None:
        if self.task is not None:
            self.progress.advance(self.task)
        if record.status == "failed":
            self.progress.console.print(f"[red]failed[/] {escape(record.message)}", soft_wrap=True)

    def on_message(self, message: str) -> None:
        if not self.quiet:
            self.progress.console.print(escape(message))


def summary_table(report, *, limit: int = 30, failures_only: bool = False) -> Table:
    """Per-input outcomes (first ``limit`` rows, failures first; only failures with
    ``failures_only``, as ``--quiet`` asks) and totals."""
    table = Table(title=f"videobert run -> {report.output_dir}", show_lines=False)
    table.add_column("input", overflow="fold")
    table.add_column("status")
    table.add_column("why")
    table.add_column("frames", justify="right")
    table.add_column("tokens", justify="right")
    table.add_column("seconds", justify="right")
    colour = {"ok": "green", "skipped": "cyan", "failed": "red", "pending": "yellow"}
    records = sorted(report.records, key=lambda r: r.status != "failed")
    if failures_only:
        records = [record for record in records if record.status == "failed"]
    for record in records[:limit]:
        why = record.message if record.status == "failed" else record.decision
        table.add_row(
            escape(record.input),
            f"[{colour.get(record.status, 'white')}]{record.status}[/]",
            escape(why),
            str(record.frames or ""),
            str(record.tokens or ""),
            f"{record.seconds:.2f}" if record.seconds else "",
        )
    if len(records) > limit:
        table.add_row(f"... {len(records) - limit} more (see manifest.jsonl)", "", "", "", "", "")
    s = report.summary()
    table.caption = (
        f"{s['ok']} ok, {s['skipped']} skipped, {s['failed']} failed"
        + (f", {s['pending']} to process" if s["pending"] else "")
        + (" - INTERRUPTED" if s["interrupted"] else "")
        + f" in {s['seconds']:.1f} s"
    )
    return table
