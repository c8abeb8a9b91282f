"""The decoder interface, the registry of decoders by name, and what every decoder shares.

A decoder (:class:`Decoder`) opens a video (:meth:`Decoder.open`), which checks and probes it
(:class:`VideoInfo`: frame count, rate, size, every frame's start and end time), and returns an
:class:`OpenVideo` that yields chunks of sampled frames as RGB uint8 ``(n, H, W, 3)`` arrays with
their frame indices (:meth:`OpenVideo.chunks`). Which frames to sample is decided from the
probe alone (:func:`videobert_cli.decoders.sampling.plan_sampling`), the same for every decoder.

Decoders register themselves by name (:func:`register`); ``--decoder NAME`` picks one, and
``auto`` (:func:`open_video`) picks the first registered decoder of :data:`AUTO_ORDER` that can
run here. A decoder that must give another decoder's frames (PyAV gives decord's, see
``decoders/pyav.py``) names it as its ``reference``: the reference probes the video, and the
decoder takes over where it can vouch for the same frames, or leaves the video to the reference.
A new decoder is one module that defines a :class:`Decoder` subclass and calls :func:`register`
(then add it to ``decoders/__init__.py``'s imports).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from videobert_cli.errors import ConfigError, VideoDecodeError

log = logging.getLogger(__name__)

#: frames decoded per chunk; bounds memory independently of video length
DEFAULT_CHUNK_FRAMES = 16
#: the decoder name that picks one (``--decoder auto``, the default)
AUTO = "auto"
#: ``auto``'s preference: the first of these that is registered and can run here
AUTO_ORDER = ("pyav", "decord")

#: ``(indices, frames)``: frame indices (n,) int64 and their frames (n, ...) in playback order
Chunks = Iterator[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video as the decoder sees them."""

    path: str
    num_frames: int
    native_fps: float
    duration: float  # end time of the last frame, seconds
    width: int
    height: int
    frame_starts: np.ndarray  # (num_frames,) presentation start time of every frame, seconds
    frame_ends: np.ndarray  # (num_frames,)
    timestamps_source: str = "decoder"
    decoder: str = "decord"  # which frame decoder gives the pixels (``--decoder``)
    decoder_note: str = ""  # why it is not the one asked for, or what to beware of: a manifest warning
    sampled: np.ndarray | None = None  # the sampling plan (frame indices), once the decoder planned it

    def to_attrs(self) -> dict:
        """The video facts stored in the HDF5 ``video/`` group."""
        return {
            "native_fps": float(self.native_fps),
            "num_frames": int(self.num_frames),
            "duration": float(self.duration),
            "width": int(self.width),
            "height": int(self.height),
            "timestamps_source": self.timestamps_source,
            "decoder": self.decoder,
        }


class Unsuitable(Exception):
    """A decoder cannot vouch for its frames of this video (the reason is the message): its
    reference decoder decodes it instead."""


class OpenVideo:
    """One opened, probed video; :meth:`chunks` decodes its frames."""

    def __init__(self, info: VideoInfo, note: str = ""):
        self.info = info
        self.note = note  # a manifest warning about this decoder's frames of this video

    def chunks(self, indices: np.ndarray, *, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
               transform: Callable[[np.ndarray], np.ndarray] | None = None) -> Chunks:
        """Yield ``(indices, frames)``, at most ``chunk_frames`` at a time, for ``indices`` (in
        playback order, repeats allowed); with ``transform``, each frame is replaced by
        ``transform(frame)`` as soon as it is decoded."""
        raise NotImplementedError

    def suspend(self) -> None:
        """Stop any work the decoder does while nobody reads (the next chunk resumes it)."""

    def close(self) -> None:
        """Release the decoder's resources (also done when the object is dropped)."""


class Decoder:
    """A frame decoder, registered by ``name``."""

    name: str = ""
    title: str = ""  # the name in messages ("PyAV"); ``name`` where empty
    #: the decoder whose frames this one must give, which decodes where this one cannot vouch
    reference: str | None = None

    def check(self) -> None:
        """Raise :class:`ConfigError` when this decoder cannot run here (e.g. a missing package)."""

    def open(self, path: str | Path, *, threads: int = 1, like: VideoInfo | None = None) -> OpenVideo:
        """Check and probe ``path`` (raising :class:`VideoDecodeError` for a bad file).

        ``like``: the reference decoder's probe; the video must then be opened with exactly its
        frames (count and times), or :class:`Unsuitable` is raised.
        """
        raise NotImplementedError


_DECODERS: dict[str, Decoder] = {}


def register(decoder: Decoder) -> Decoder:
    """Make ``decoder`` available as ``--decoder NAME`` (replacing one of the same name)."""
    _DECODERS[decoder.name] = decoder
    return decoder


def names() -> list[str]:
    """The decoder names ``--decoder`` takes."""
    return sorted([AUTO, *_DECODERS])


def get(name: str) -> Decoder:
    """The registered decoder called ``name``, or a :class:`ConfigError` naming the others."""
    if name not in _DECODERS:
        raise ConfigError(f"unknown decoder {name!r}", hint=f"use one of {', '.join(names())}")
    return _DECODERS[name]


def check(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is ``auto`` or a registered decoder that can run
    here; called when a run or an extraction starts, before any work."""
    if name != AUTO:
        get(name).check()


def available(name: str) -> bool:
    try:
        check(name)
    except ConfigError:
        return False
    return True


def open_video(path: str | Path, name: str = AUTO, *, threads: int = 1) -> OpenVideo:
    """Open ``path`` with the decoder called ``name``; ``info.decoder`` and ``info.decoder_note``
    say which decoder decodes it and what to beware of.

    A decoder with a reference (see the module docstring) gets the reference's probe; where it
    raises :class:`Unsuitable` the reference decodes the video, with a warning in the manifest
    when the user named the decoder (under ``auto`` that is the expected course).
    """
    asked = name != AUTO
    if asked:
        decoder = get(name)
        decoder.check()
    else:
        decoder = get(next((n for n in AUTO_ORDER if n in _DECODERS and available(n)), AUTO_ORDER[-1]))
    if decoder.reference is None:
        return _labelled(decoder.open(path, threads=threads), decoder.name, "")
    reference = get(decoder.reference)
    fallback = reference.open(path, threads=threads)
    try:
        opened = decoder.open(path, threads=threads, like=fallback.info)
    except Unsuitable as why:
        names = reference.title or reference.name, decoder.title or decoder.name
        log.log(logging.WARNING if asked else logging.INFO, "%s: decoding with %s, not %s: %s", path, *names, why)
        note = f"decoded with {names[0]}, not {names[1]}: {why}" if asked else ""
        return _labelled(fallback, reference.name, note)
    fallback.close()  # e.g. decord decodes ahead in the background for as long as a reader lives
    del fallback
    return _labelled(opened, decoder.name, "")


def _labelled(opened: OpenVideo, name: str, note: str) -> OpenVideo:
    opened.info = replace(opened.info, decoder=name, decoder_note="; ".join(filter(None, [note, opened.note])))
    return opened


# -- checks and errors every decoder shares ------------------------------------------------------

def check_input_file(path: Path) -> None:
    """Refuse what is not a readable, non-empty regular file, before a decoder sees it."""
    if not path.exists():
        raise VideoDecodeError("file not found", path=path, hint="check the path", reason="missing")
    if path.is_dir():
        raise VideoDecodeError("is a directory, not a video file", path=path, reason="not-a-video")
    if not path.is_file():
        raise VideoDecodeError("not a regular file (device, pipe or socket)", path=path, reason="not-a-video")
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except OSError as exc:
        raise VideoDecodeError(
            f"file is not readable ({exc.strerror})", path=path, hint="check its permissions", reason="unreadable"
        ) from exc
    if empty:
        raise VideoDecodeError("file is empty (0 bytes)", path=path, reason="empty")


def refuse_cut_mp4(path: Path) -> None:
    """A cut MP4/MOV is refused as truncated before a decoder sees it: with its index at the front
    decord fails later with no reason, or reads the frames up to the cut as the whole video."""
    from videobert_cli.video.container import mp4_defect

    try:
        defect = mp4_defect(path)
    except OSError:
        return  # unreadable files were refused already
    if defect is not None:
        raise VideoDecodeError(defect, path=path, reason="truncated",
                               hint="download or copy it again; a recording that was never finished "
                                    "may be repaired with a tool such as untrunc")


def refuse_cut_matroska(path: str | Path) -> None:
    """A Matroska/WebM file shorter than its header declares is refused as truncated: decord
    would read its packets up to the cut as a complete, shorter video."""
    from videobert_cli.video.container import matroska_shortfall

    try:
        shortfall = matroska_shortfall(path)
    except OSError:
        return  # unreadable files were refused before the decoder opened them
    if shortfall is not None:
        declared, actual = shortfall
        raise VideoDecodeError(
            f"truncated Matroska/WebM file: its header declares {declared} bytes, the file has {actual} "
            f"({100 * (declared - actual) / declared:.0f}% missing)",
            path=path,
            hint="download or copy it again; to keep the part that is there, remux it first "
                 "(ffmpeg -i IN -c copy OUT.mkv) and extract from OUT.mkv",
            reason="truncated",
        )


_DECORD_NOISE = re.compile(r"^\[[0-9:]+\]\s+\S+\.cc:\d+:\s*")

#: decoder/ffmpeg phrases -> what they mean to a user
_DIAGNOSES = (
    ("cannot find video stream", "no-video-stream", "no video stream (audio-only or not a video)"),
    ("moov atom not found", "truncated", "truncated or incomplete MP4 (its index, the moov atom, is missing)"),
    ("invalid data found when processing input", "not-a-video", "not a video file (unrecognised data)"),
    ("end of file", "truncated", "truncated file (unexpected end of file)"),
    ("permission denied", "unreadable", "file is not readable (permission denied)"),
)


def clean_decoder_message(text: str) -> str:
    """The useful line of a decord/ffmpeg error (timestamps and C++ source locations removed)."""
    lines = [_DECORD_NOISE.sub("", line).strip() for line in str(text).strip().splitlines()]
    lines = [line for line in lines if line and not line.startswith("Stack trace")]
    return lines[0][:200] if lines else ""


_CONTAINER_MAGIC = (
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (4, b"ftyp", "MP4/MOV"),
    (4, b"moov", "MP4/MOV"),
    (4, b"mdat", "MP4/MOV"),
    (4, b"free", "MP4/MOV"),
    (4, b"wide", "MP4/MOV"),
    (0, b"RIFF", "AVI"),
    (0, b"FLV", "FLV"),
    (0, b"OggS", "Ogg"),
    (0, b"\x00\x00\x01\xba", "MPEG-PS"),
    (0, b"\x47", "MPEG-TS"),
    (0, b"0&\xb2u", "ASF/WMV"),
)


def sniff_container(path: str | Path) -> str | None:
    """The container family from the file's first bytes; "text" for plain text; None if unknown."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return None
    for offset, magic, name in _CONTAINER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return None


def diagnose(text: str, default: str, path: str | Path | None = None) -> tuple[str, str]:
    """(reason code, plain-language reason) of a decoder failure, from its messages and bytes."""
    container = sniff_container(path) if path is not None else None
    if path is not None and container is None:
        return "not-a-video", "not a video file (no known container signature)"
    if container == "text":
        return "not-a-video", "a text file, not a video"
    lowered = text.lower()
    for phrase, code, meaning in _DIAGNOSES:
        if phrase in lowered:
            return code, meaning
    return "corrupt", default


def decode_failure(path: str | Path, raw: str, decoder_log: str = "") -> VideoDecodeError:
    """A :class:`VideoDecodeError` that says why, in words, with the decoder's own line.

    ``decoder_log`` is whatever ffmpeg printed meanwhile (captured by the decode worker); it
    often holds the real reason ("moov atom not found") that the decoder's exception lacks.
    """
    detail = clean_decoder_message(raw) or clean_decoder_message(decoder_log)
    code, reason = diagnose(f"{raw}\n{decoder_log}", "not a readable video (unknown format or corrupt)", path)
    if code == "not-a-video":
        detail = ""  # the file's bytes said so; the decoder's words about it ("Check failed: ...") are noise
    error = VideoDecodeError(f"{reason} [{detail}]" if detail else reason, path=path, reason=code)
    error.raw = raw
    return error


def raised_by_a_decoder(error: BaseException) -> bool:
    """Whether ``error`` comes from decord or PyAV (so most likely from a bad file) rather
    than from videobert-cli's own code."""
    return (type(error).__module__ or "").split(".")[0] in ("decord", "av") or "DECORD" in type(error).__name__


def video_ended_early(frame_index: int, path: str | Path) -> VideoDecodeError:
    """The container listed a frame that the stream does not have."""
    return VideoDecodeError(f"video ends before frame {frame_index} (the container promised more frames)",
                            path=path, reason="truncated")


def decoding_failed(frame_index: int, path: str | Path, exc: BaseException) -> VideoDecodeError:
    """A decoder error while decoding up to ``frame_index``."""
    return VideoDecodeError(
        f"decoding failed near frame {frame_index} (truncated or corrupt): "
        f"{clean_decoder_message(str(exc)) or exc.__class__.__name__}",
        path=path, reason="truncated",
    )


def chunk_decoded_frames(
    indices: np.ndarray,
    decode: Callable[[np.ndarray], Iterator[tuple[int, np.ndarray]]],
    *,
    chunk_frames: int,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Chunks:
    """The chunks of every decoder: ``decode(unique sorted indices)`` yields ``(frame_index,
    frame)`` once per index; this transforms each frame at once, groups them ``chunk_frames``
    at a time and repeats the frames of repeated indices (decoded once)."""
    if not np.all(np.diff(indices) >= 0):
        raise ValueError("indices must be in playback order")
    unique = np.unique(indices)
    if len(unique) == 0:
        return
    frames: list[np.ndarray] = []
    taken: list[int] = []
    for frame_index, frame in decode(unique):
        frames.append(frame if transform is None else transform(frame))
        taken.append(frame_index)
        if len(frames) == chunk_frames:
            yield _expand(indices, taken, frames)
            frames, taken = [], []
    if frames:
        yield _expand(indices, taken, frames)


def _expand(indices: np.ndarray, taken: list[int], frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One chunk with every requested index (repeats included) of the decoded frames."""
    lookup = {index: i for i, index in enumerate(taken)}
    wanted = indices[(indices >= taken[0]) & (indices <= taken[-1])]
    stacked = np.stack(frames)
    frames.clear()
    if len(wanted) == len(taken):  # no repeated index: no second copy
        return wanted, stacked
    return wanted, stacked[[lookup[int(i)] for i in wanted]]
