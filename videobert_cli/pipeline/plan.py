"""Planning a run: what each input needs (:func:`decide`), where its output goes, and the checks
made before any work (the output directory, the run's vocabulary, temporary files left by an
interrupted run). Nothing here loads a model.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from videobert_cli.errors import OutputError
from videobert_cli.features import SourceInfo
from videobert_cli.hashing import file_sha256
from videobert_cli.pipeline.inputs import VideoInput
from videobert_cli.pipeline.report import STATUS_PENDING, STATUS_SKIPPED, RunOptions, RunRecord, input_record


@dataclass(frozen=True)
class PlannedVideo:
    """One input of a run as planned: its number in the run, where its output goes, whether it
    needs work and why (the record's ``decision``)."""

    number: int
    item: VideoInput
    output: Path
    needed: bool
    why: str

    def record(self) -> RunRecord:
        """The record this input starts with (status ``skipped`` until it is done)."""
        return input_record(self.item, self.output, self.why)

    def dry_run_record(self) -> RunRecord:
        return input_record(self.item, self.output, self.why, status=STATUS_PENDING if self.needed else STATUS_SKIPPED,
                            fingerprint=False)


def plan_videos(items, out_dir: Path, config_hash: str, options: RunOptions) -> list[PlannedVideo]:
    """Decide for each input whether it needs work (see :func:`decide`)."""
    plan = []
    for number, item in enumerate(items):
        output = safe_output_path(out_dir, item.output_name)
        needed, why = decide(item, output, config_hash, options)
        plan.append(PlannedVideo(number, item, output, needed, why))
    return plan


def source_info(path: Path, *, with_hash: bool = False) -> SourceInfo:
    """Size, mtime (and optionally sha256) of an input file."""
    stat = path.stat()
    return SourceInfo(
        path=str(path.resolve()),
        size=stat.st_size,
        mtime=stat.st_mtime,
        sha256=file_sha256(path) if with_hash else None,
    )


def transcript_identity(path: Path | None, *, with_hash: bool = False) -> dict:
    if path is None:
        return {}
    try:
        stat = path.stat()
    except OSError:
        return {"path": str(path)}
    identity = {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}
    if with_hash:
        identity["sha256"] = file_sha256(path)
    return identity


def decide(item: VideoInput, output: Path, config_hash: str, options: RunOptions) -> tuple[bool, str]:
    """Whether ``item`` must be (re)processed, and why; never loads a model."""
    from videobert_cli.store.hdf5 import read_attrs

    if options.force:
        return True, "forced"
    if options.require_transcript and item.transcript is None:
        return True, "no transcript"  # fails as it would in a new output directory
    if not output.exists():
        return True, "new"
    try:
        attrs = read_attrs(output)
    except Exception:
        return True, "unreadable output"
    if not attrs.get("complete"):
        return True, "incomplete output"
    if attrs.get("config_hash") != config_hash:
        return True, "changed configuration"
    try:
        current = source_info(item.path)
    except OSError:
        return True, "new"
    if options.verify_hash:
        stored = attrs.get("source_sha256")
        if not stored:
            return True, "no content hash stored (made without --verify-hash)"
        if stored != file_sha256(item.path):
            return True, "changed input (content hash)"
    elif attrs.get("source_size") != current.size or not math.isclose(
        float(attrs.get("source_mtime", -1.0)), current.mtime, abs_tol=1e-6
    ):
        return True, "changed input"
    # the transcript is judged like the video, by its content, not by where it is: a dataset
    # copied elsewhere with its times kept (cp -a, rsync -a) is not redone
    stored_transcript = attrs.get("transcript_source") or {}
    if bool(stored_transcript) != (item.transcript is not None):
        return True, "transcript added or removed"
    if item.transcript is None:
        return False, "up to date"
    if options.verify_hash:
        stored = stored_transcript.get("sha256")
        if not stored:
            return True, "no transcript content hash stored (made without --verify-hash)"
        try:
            if stored != file_sha256(item.transcript):
                return True, "changed transcript (content hash)"
        except OSError:
            return True, "changed transcript"
        return False, "up to date"
    current_transcript = transcript_identity(item.transcript)
    if stored_transcript.get("size") != current_transcript.get("size") or not math.isclose(
        float(stored_transcript.get("mtime", -1.0)), current_transcript.get("mtime", -2.0), abs_tol=1e-6
    ):
        return True, "changed transcript"
    return False, "up to date"


def load_run_vocab(path: str | None):
    """The vocabulary of ``run --vocab`` (a bad file is a configuration error: exit 2)."""
    if not path:
        return None
    from videobert_cli.errors import ConfigError, FeatureFileError
    from videobert_cli.vocab import load_vocab

    try:
        return load_vocab(path)
    except FeatureFileError as error:
        raise ConfigError(error.message, path=error.path, hint=error.hint) from error


def ensure_output_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError("output path exists and is not a directory", path=out_dir, hint="give -o a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory: {exc.strerror}", path=out_dir) from exc
    if not out_dir.is_dir():
        raise OutputError("output path exists and is not a directory", path=out_dir)
    probe = out_dir / f".videobert-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"output directory is not writable: {exc.strerror}",
            path=out_dir,
            hint="choose another -o directory or fix its permissions/free space",
        ) from exc


def safe_output_path(out_dir: Path, name: str) -> Path:
    output = (out_dir / name).resolve()
    root = out_dir.resolve()
    if root != output and root not in output.parents:
        raise OutputError(f"refusing to write outside the output directory: {name}", path=out_dir)
    return out_dir / name


def clean_stale_temps(out_dir: Path) -> int:
    from videobert_cli.store.hdf5 import clean_stale_temp_files

    removed = 0
    for current, dirnames, _ in os.walk(out_dir):
        removed += clean_stale_temp_files(current)
    return removed
