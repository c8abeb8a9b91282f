"""The one exception hierarchy of videobert-cli.

Every error the core raises on purpose derives from :class:`VideoBertError`. Each carries
``exit_code`` (what the CLI exits with), the offending ``path`` when there is one, and a
``hint`` saying what the user can do. Messages name fields and parameters, never flags: the CLI
maps ``field`` to its flag and prints the error as a single line.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 75  # sysexits' EX_TEMPFAIL: "try again later", what cron wrappers expect
EXIT_INTERRUPTED = 130


class VideoBertError(Exception):
    """Base class of every error videobert-cli raises deliberately."""

    exit_code: int = EXIT_SOME_FAILED
    #: short machine-readable reason, written to the run manifest
    reason: str = "error"

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        hint: str | None = None,
        reason: str | None = None,
        field: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.hint = hint
        #: the configuration field (or parameter) the message starts with; the CLI names its flag
        self.field = field
        if reason is not None:
            self.reason = reason  # a finer code than the class default, e.g. "truncated"

    def __str__(self) -> str:
        parts = [self.message]
        if self.path and not self.message.startswith(self.path):
            parts[0] = f"{self.path}: {self.message}"
        if self.hint:
            parts.append(self.hint)
        return " - ".join(parts)


# --- usage and configuration: nothing was processed --------------------------------------
class UsageError(VideoBertError):
    """Bad options or arguments: fix the command line."""

    exit_code = EXIT_USAGE
    reason = "usage"


class ConfigError(UsageError):
    """An option value that cannot work (unknown model, bad sampling, mismatched checkpoint)."""

    reason = "config"


class ModelUnavailableError(UsageError):
    """Model weights are not available (offline, not cached, not installed)."""

    reason = "model-unavailable"


class OutputError(UsageError):
    """The output location cannot be written (read-only, full, not a directory)."""

    reason = "output"


class LockedError(VideoBertError):
    """Another run holds the lock of the output directory."""

    exit_code = EXIT_LOCKED
    reason = "locked"


# --- per-input failures: the batch goes on ------------------------------------------------
class InputError(VideoBertError):
    """One input could not be processed; a batch records it and continues."""

    reason = "input"


class VideoDecodeError(InputError):
    """A video file is unreadable, not a video, truncated, or has no frames."""

    reason = "decode"


class DecodeTimeoutError(VideoDecodeError):
    """The decoder took longer than the per-video timeout."""

    reason = "timeout"


class TranscriptError(InputError):
    """A transcript is unreadable or malformed."""

    reason = "transcript"


class FeatureFileError(InputError):
    """An HDF5 feature file is missing groups, has the wrong schema, or is incomplete."""

    reason = "feature-file"


class ResourceError(InputError):
    """Out of memory or another resource ran out while processing one input."""

    reason = "resource"


def out_of_memory(error: BaseException, path: str | Path | None = None) -> ResourceError | None:
    """``error`` as a :class:`ResourceError` if it is the host or a GPU running out of memory
    (``MemoryError``, ``torch.OutOfMemoryError``, or an allocator's RuntimeError), else None."""
    if isinstance(error, ResourceError):
        return error
    if not (isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower())):
        return None
    return ResourceError("out of memory", path=path, hint="lower --batch-size or sample fewer frames")
