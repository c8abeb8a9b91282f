"""Deterministic synthetic videos and transcripts for the tests (PyAV writes, decord reads).

Every frame is a pure function of its index, so a test can say exactly which frame it expects:
frame ``i`` has a background colour that changes with ``i`` and a white square whose position
moves with ``i``; :func:`frame_signature` gives the colour of frame ``i`` so decoded frames can be
matched back to their index even after lossy compression.

Frame times are either constant rate (``fps``) or given explicitly with ``pts`` (seconds, one per
frame, strictly increasing) for variable-frame-rate videos; explicit times are written with a
millisecond time base, so they round-trip exactly through the container.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

#: codecs by container suffix when the caller does not choose one
_DEFAULT_CODEC = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}

#: time base of videos written with explicit ``pts`` (1 ms: millisecond times are exact)
VFR_TIME_BASE = Fraction(1, 1000)


def frame_signature(index: int) -> tuple[int, int, int]:
    """Background RGB colour of frame ``index``: far apart for neighbouring frames."""
    return ((index * 47 + 30) % 200 + 20, (index * 83 + 90) % 200 + 20, (index * 29 + 150) % 200 + 20)


def frame_pixels(index: int, width: int, height: int) -> np.ndarray:
    """The uint8 (height, width, 3) RGB picture of frame ``index``."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[...] = frame_signature(index)
    side = max(2, min(width, height) // 4)
    x = (index * 7) % max(1, width - side)
    y = (index * 5) % max(1, height - side)
    frame[y : y + side, x : x + side] = 255
    # a gradient stripe along the top, so resizing/cropping has structure to act on
    stripe = max(1, height // 8)
    frame[:stripe, :, 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    return frame


def make_video(
    path: str | Path,
    *,
    width: int = 64,
    height: int = 48,
    fps: float = 25,
    num_frames: int = 25,
    codec: str | None = None,
    pts: Sequence[float] | None = None,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write a deterministic test video with PyAV and return its path.

    The container is chosen by the suffix of ``path`` (``.mp4``, ``.mkv``, ``.webm``, ``.avi``,
    ``.mov``). Frames are encoded with no B-frames and every frame kept, so decode order is
    presentation order and frame ``i`` of the decoder is :func:`frame_pixels` ``(i)``.

    Args:
        width, height: frame size in pixels. ``yuv420p`` needs even sizes, so odd sizes switch
            to ``yuv444p`` automatically. (decord 0.6 mis-decodes a few widths such as 48 and
            72; use them only to test that failure.)
        fps: constant frame rate (also the nominal rate of a VFR video).
        num_frames: number of frames (ignored when ``pts`` is given).
        codec: encoder name; default by suffix (``libx264`` for .mp4/.mkv/.mov, VP9 for .webm,
            MPEG-4 part 2 for .avi).
        pts: explicit presentation time of every frame in seconds, strictly increasing
            (variable frame rate). Written in units of :data:`VFR_TIME_BASE` (1 ms), so pass
            millisecond-exact values.

    If decord's FFmpeg was loaded before PyAV's (``tests/conftest.py`` imports PyAV first to
    prevent it), PyAV's VP9 encoder cannot open; the video is then written by a fresh
    interpreter instead.
    """
    kwargs = dict(width=width, height=height, fps=fps, num_frames=num_frames, codec=codec,
                  pts=None if pts is None else [float(t) for t in pts], pix_fmt=pix_fmt)
    try:
        return _write_video(path, **kwargs)
    except Exception as exc:
        chosen = codec or _DEFAULT_CODEC.get(Path(path).suffix.lower(), "libx264")
        if not (chosen.startswith("libvpx") and "decord" in sys.modules and "avcodec_open2" in str(exc)):
            raise
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import synth; "
        "synth._write_video(sys.argv[2], **json.loads(sys.argv[3]))"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent), str(path), json.dumps(kwargs)],
        check=True,
        capture_output=True,
    )
    return Path(path)


def _write_video(
    path: str | Path,
    *,
    width: int,
    height: int,
    fps: float,
    num_frames: int,
    codec: str | None,
    pts: Sequence[float] | None,
    pix_fmt: str,
) -> Path:
    """The body of :func:`make_video` (runs in this process or a fresh one)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or _DEFAULT_CODEC.get(path.suffix.lower(), "libx264")
    if (width % 2 or height % 2) and pix_fmt == "yuv420p":
        pix_fmt = "yuv444p"
    if pts is not None:
        pts = [float(t) for t in pts]
        if any(b <= a for a, b in zip(pts, pts[1:])):
            raise ValueError("pts must be strictly increasing")
        num_frames = len(pts)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width = width
        stream.height = height
        stream.pix_fmt = pix_fmt
        options: dict[str, str] = {}
        if codec == "libx264":
            options.update({"bf": "0", "preset": "ultrafast", "crf": "10", "g": "12"})
        elif codec.startswith("libvpx"):
            options.update({"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "5"})
        stream.options = options
        if pts is not None:
            stream.codec_context.time_base = VFR_TIME_BASE
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(index, width, height), format="rgb24")
            if pts is not None:
                frame.pts = int(round(pts[index] / VFR_TIME_BASE))
                frame.time_base = VFR_TIME_BASE
            else:
                frame.pts = index
                frame.time_base = Fraction(1) / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def container_frame_times(path: str | Path) -> np.ndarray:
    """Presentation times (seconds) of every frame as PyAV decodes them, in decode order."""
    return container_frame_spans(path)[0]


def container_frame_spans(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` in seconds of every frame as PyAV reads the container.

    A frame ends where its recorded duration says (the muxer stores one per packet); a frame
    without a duration ends where the next one starts.
    """
    import av

    starts, durations = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            starts.append(Fraction(frame.pts) * frame.time_base)
            durations.append(Fraction(frame.duration or 0) * frame.time_base)
    ends = [
        start + duration if duration > 0 else (starts[i + 1] if i + 1 < len(starts) else start)
        for i, (start, duration) in enumerate(zip(starts, durations))
    ]
    return np.array([float(t) for t in starts]), np.array([float(t) for t in ends])


def closest_signature(frame: np.ndarray, candidates: Sequence[int]) -> int:
    """Which of the frame indices ``candidates`` the decoded RGB ``frame`` most likely is.

    Compares the median colour of the bottom-right region (away from the stripe and, for the
    sizes used here, mostly background) with :func:`frame_signature`.
    """
    h, w = frame.shape[:2]
    region = frame[h // 2 :, w // 2 :].reshape(-1, 3).astype(np.float64)
    colour = np.median(region, axis=0)
    distances = [np.abs(colour - np.array(frame_signature(i))).sum() for i in candidates]
    return int(candidates[int(np.argmin(distances))])


def write_srt(path: str | Path, cues: Sequence[tuple[float, float, str]]) -> Path:
    """Write an SRT file from ``(start, end, text)`` cues (seconds)."""

    def stamp(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    path = Path(path)
    blocks = [f"{i}\n{stamp(a)} --> {stamp(b)}\n{text}\n" for i, (a, b, text) in enumerate(cues, start=1)]
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


#: x264 with B-frames and several GOPs (so sampling needs seeks and pts reordering)
B_FRAMES_X264 = {"g": "20", "bf": "2", "preset": "ultrafast", "crf": "18"}


def write_encoded(path: str | Path, *, frames: int = 90, fps: int = 30, width: int = 96, height: int = 64,
                  pix_fmt: str = "yuv420p", codec: str = "libx264", rotation: int | None = None,
                  options: dict | None = None, container_options: dict | None = None) -> Path:
    """A video of :func:`frame_pixels` with the encoder's own options (default: H.264 with B-frames,
    :data:`B_FRAMES_X264`), a display rotation, or container options (``{"live": "1"}``: Matroska/WebM
    written as a live stream, with no duration)."""
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options if options is not None else B_FRAMES_X264
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(index, width, height), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)
