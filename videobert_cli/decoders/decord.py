"""decord: the decoder videobert-cli was specified with (``--decoder decord``).

It probes a video by reading every packet's timestamp (float32 seconds from the stream's start
time), and decodes in a thread of its own. Known faults, each handled here or documented:

- open GOPs: decord counts frames in decoding order when it skips or seeks, so on streams whose
  keyframes are not first in display order its sparse samples are shifted frames
  (:data:`OPEN_GOP_WARNING` goes to the manifest; ``auto`` decodes such files with PyAV);
- it keeps decoding ahead into memory with no bound while nobody reads (2.3 -> 6.5 GB in 35 s
  on 720p): the reader is closed while the consumer waits and reopened with an accurate seek
  (:class:`ReaderHandle`);
- it mis-sizes frames of some narrow videos (e.g. 48 or 16 pixels wide): refused with a hint;
- it refuses Matroska/WebM written live, with no duration ("Failed to measure duration/frame-count
  due to broken metadata"): reported as corrupt (PyAV's own probe reads them);
- it hangs in ``get_batch`` on some corrupt files (dmlc/decord #269) or crashes: decoding runs
  in a worker process with a timeout (``pipeline/decode_worker.py``);
- importing decord before torch initialises CUDA can segfault (dmlc/decord #293, #324): torch
  is imported first (:func:`import_decord`) wherever CUDA may start, so not in decode processes
  (``pipeline/decode_process.py``) nor on a machine without a GPU driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import sys

import numpy as np

from videobert_cli.decoders.base import (
    DEFAULT_CHUNK_FRAMES,
    Chunks,
    Decoder,
    OpenVideo,
    VideoInfo,
    check_input_file,
    chunk_decoded_frames,
    decode_failure,
    decoding_failed,
    refuse_cut_matroska,
    refuse_cut_mp4,
    register,
    video_ended_early,
)
from videobert_cli.devices import cuda_possible
from videobert_cli.errors import VideoDecodeError

#: the manifest warning for open-GOP streams decoded by decord
OPEN_GOP_WARNING = ("decord may return shifted frames here: this stream has open GOPs (decord counts frames in "
                    "decoding order when it skips or seeks); --decoder auto decodes such MP4/Matroska/AVI files with PyAV")


def import_decord():
    """decord, after torch wherever this process may start CUDA (see the module docstring)."""
    if "videobert_cli.pipeline.decode_process" not in sys.modules and cuda_possible():
        import torch  # noqa: F401  (import order matters)
    import decord

    return decord


def open_reader(path: str | Path, *, num_threads: int = 0, decoder_log: str = ""):
    """Open a video with decord, turning its failures into :class:`VideoDecodeError`.

    ``decoder_log`` is whatever ffmpeg printed so far (captured by the decode worker); it
    often holds the real reason ("moov atom not found") that decord's exception lacks.
    """
    decord = import_decord()
    path = Path(path)
    check_input_file(path)
    refuse_cut_mp4(path)
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
    except Exception as exc:  # decord raises DECORDError/RuntimeError with C++ messages
        raise decode_failure(path, str(exc) or exc.__class__.__name__, decoder_log) from exc


def quiet_decoder_logs() -> None:
    """Stop the FFmpeg inside decord printing to this process's stderr (a damaged stream can
    print hundreds of lines); decord's own one-line error on a file it cannot open remains.

    For decoding in the calling process, where each file's failure is reported in one line of
    its own; decode workers capture those lines instead, to read the reason in them.
    """
    decord = import_decord()
    decord.logging.set_level(decord.logging.QUIET)


def key_indices(reader) -> np.ndarray | None:
    """decord's keyframe indices (int64, in its decoding-order count), or ``None`` where the
    container has no index."""
    try:
        return np.asarray(reader.get_key_indices(), dtype=np.int64)
    except Exception:  # decord raises its own DECORDError, or fails inside FFmpeg
        return None


def probe(reader, path: str | Path) -> VideoInfo:
    """Read frame count, rate, size and every frame's timestamp (one frame is decoded).

    A Matroska/WebM file shorter than its header declares is refused as truncated: decord
    would read its packets up to the cut as a complete, shorter video.
    """
    refuse_cut_matroska(path)
    num_frames = len(reader)
    if num_frames <= 0:
        raise VideoDecodeError("video has no frames", path=path, reason="zero-frames")
    try:
        times = np.asarray(reader.get_frame_timestamp(np.arange(num_frames)), dtype=np.float64)
        first = reader[0]
        # reading a frame sets decord decoding ahead in its own thread; a plain seek to the
        # first keyframe stops it, so an idle probed reader costs no CPU and no memory
        reader.seek(0)
    except Exception as exc:
        raise decode_failure(path, str(exc) or exc.__class__.__name__) from exc
    if len(first.shape) != 3 or first.shape[2] != 3:
        raise VideoDecodeError(
            f"decord returns malformed frames for this frame size (frame shape {tuple(first.shape)})",
            path=path,
            hint="re-encode the video at another width (e.g. ffmpeg -vf scale=64:-2)",
            reason="decoder-unsupported",
        )
    height, width = int(first.shape[0]), int(first.shape[1])
    native_fps = float(reader.get_avg_fps()) or 0.0
    starts, ends = times[:, 0], times[:, 1]
    timestamps_source = "decoder"
    if not _plausible_times(starts):
        # Some containers give decord no per-frame times (it reports AV_NOPTS_VALUE): fall back
        # to the average rate rather than fail; the output records which source was used.
        if native_fps <= 0:
            raise VideoDecodeError("decoder reported neither frame times nor a frame rate", path=path,
                                   reason="corrupt")
        starts = np.arange(num_frames, dtype=np.float64) / native_fps
        ends = starts + 1.0 / native_fps
        timestamps_source = "average frame rate (the decoder reported no frame times)"
    # decord reports 0-length last frames for some containers; the frame still lasts 1/fps.
    ends = np.where(ends > starts, ends, starts + (1.0 / native_fps if native_fps > 0 else 0.0))
    return VideoInfo(path=str(path), num_frames=num_frames, native_fps=native_fps, duration=float(ends.max()),
                     width=width, height=height, frame_starts=starts, frame_ends=ends,
                     timestamps_source=timestamps_source)


def _plausible_times(starts: np.ndarray) -> bool:
    """Frame start times that are finite, non-negative, below ~115 days, and mostly increasing."""
    if not np.all(np.isfinite(starts)) or starts.min() < -1e-3 or starts.max() > 1e7:
        return False
    return len(starts) < 2 or len(np.unique(starts)) > len(starts) // 2


class ReaderHandle:
    """A decord reader that can be closed while its consumer waits, and reopened on demand.

    decord keeps decoding ahead in a thread of its own while nobody reads from it, piling up
    full-resolution frames (measured: 2.3 -> 6.5 GB in 35 s on 720p when the encoder is the
    slower stage). Closing the reader while the pipeline waits, and reopening it with an
    accurate seek afterwards, keeps memory bounded at the cost of one seek per suspension.
    """

    def __init__(self, reader, reopen):
        self._reader = reader
        self._reopen = reopen
        self.reopened = 0

    def get(self):
        if self._reader is None:
            self._reader = self._reopen()
            self.reopened += 1
        return self._reader

    @property
    def suspended(self) -> bool:
        return self._reader is None

    def suspend(self) -> None:
        self._reader = None  # decord stops and frees its buffers when the reader is released


def iter_frame_chunks(
    reader,
    indices: np.ndarray,
    *,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    path: str | Path = "",
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Chunks:
    """Yield ``(indices, frames)`` with frames uint8 (n, H, W, 3), at most ``chunk_frames`` at a time.

    ``reader``: a decord reader or a :class:`ReaderHandle`. Frames are read sequentially in
    playback order: the decoder skips the frames in between (decoding without colour
    conversion), and jumps with an accurate seek only when the next wanted frame lies beyond a
    keyframe. Measured on 720p H.264, sequential reading is about 2x faster than decord's
    ``get_batch`` for dense sampling and never slower for sparse sampling.
    """
    return chunk_decoded_frames(indices, lambda unique: _decord_frames(reader, unique, path),
                                chunk_frames=chunk_frames, transform=transform)


def _decord_frames(reader, unique: np.ndarray, path: str | Path) -> Iterator[tuple[int, np.ndarray]]:
    """decord's frames at ``unique`` (sorted, distinct indices); ``reader`` may be a ReaderHandle."""
    handle = reader if isinstance(reader, ReaderHandle) else None
    keyframes = key_indices(handle.get() if handle else reader)
    if keyframes is None:  # some containers have no index; fall back to skipping only
        keyframes = np.zeros(0, dtype=np.int64)
    position = None  # index of the frame next() returns
    for frame_index in unique.tolist():
        if handle is not None:
            if handle.suspended:
                position = None  # a reopened reader starts with an accurate seek
            reader = handle.get()
        try:
            if position is None or frame_index < position:
                reader.seek_accurate(frame_index)
            else:
                later_key = keyframes[(keyframes > position) & (keyframes <= frame_index)]
                if len(later_key):
                    reader.seek_accurate(frame_index)  # cheaper than decoding up to the keyframe
                elif frame_index > position:
                    reader.skip_frames(frame_index - position)
            frame = reader.next().asnumpy()
        except StopIteration:
            raise video_ended_early(frame_index, path) from None
        except Exception as exc:
            raise decoding_failed(frame_index, path, exc) from exc
        position = frame_index + 1
        if handle is not None:
            # hold no reference while the consumer has a chunk: the handle may close the
            # reader meanwhile, and decord frees its frame buffers only when the last
            # reference goes (a local one kept it decoding ahead into memory: 11.8 GB)
            reader = None
        yield frame_index, frame


class DecordVideo(OpenVideo):
    """A probed video and its (suspendable) decord reader."""

    def __init__(self, path: str | Path, reader, threads: int):
        super().__init__(probe(reader, path))
        self.path = path
        # the reopen closure must not hold the reader
        self.handle = ReaderHandle(reader, lambda: open_reader(path, num_threads=threads))
        self._note: str | None = None

    @property
    def note(self) -> str:
        """:data:`OPEN_GOP_WARNING` where the stream has open GOPs (looked at once asked)."""
        if self._note is None:
            from videobert_cli.decoders.pyav import decode_order_differs

            keyframes = None if self.handle.suspended else key_indices(self.handle.get())
            # without an index decord skips without seeking
            self._note = OPEN_GOP_WARNING if keyframes is not None and decode_order_differs(self.path, keyframes) else ""
            if self._note:
                import logging

                logging.getLogger(__name__).warning("%s: %s", self.path, OPEN_GOP_WARNING)
        return self._note

    @note.setter
    def note(self, value: str) -> None:
        self._note = value if value else None

    def chunks(self, indices, *, chunk_frames=DEFAULT_CHUNK_FRAMES, transform=None) -> Chunks:
        return iter_frame_chunks(self.handle, indices, chunk_frames=chunk_frames, path=self.path, transform=transform)

    def suspend(self) -> None:
        self.handle.suspend()

    def close(self) -> None:
        self.handle.suspend()


class DecordDecoder(Decoder):
    name = "decord"

    def check(self) -> None:
        pass  # a required dependency

    def open(self, path, *, threads=1, like=None) -> OpenVideo:
        return DecordVideo(path, open_reader(path, num_threads=threads), threads)


register(DecordDecoder())
