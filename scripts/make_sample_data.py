#!/usr/bin/env python3
"""Write the small sample videos and transcripts of ``sample_data/``, deterministically.

Usage: ``python scripts/make_sample_data.py [OUTPUT_DIR]`` (default: the repository's
``sample_data/``). Needs only PyAV (``av``) and numpy.

Each video is a few seconds of synthetic footage with real visual structure: coloured shapes
moving over a gradient background, and a scene change halfway through. The transcripts
describe what is on screen at those times. Frames come from closed-form numpy drawing (no
randomness) and the encoders run single-threaded with fixed settings and FFmpeg's bitexact
flags, so that re-running the script rewrites byte-identical files with the same PyAV/FFmpeg
build.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "sample_data"

RGB = tuple[int, int, int]
# (frame index, time in s, height, width) -> (H, W, 3) uint8 RGB
Painter = Callable[[int, float, int, int], np.ndarray]


# --- drawing -------------------------------------------------------------------------------
def gradient(h: int, w: int, top_left: RGB, bottom_right: RGB, phase: float = 0.0) -> np.ndarray:
    """Diagonal gradient from one colour to another; ``phase`` (0..1) slides it along."""
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    # Triangle wave keeps the slid gradient continuous instead of wrapping with a seam.
    t = (x + y) / 2.0 + phase
    t = 1.0 - np.abs((t % 2.0) - 1.0)
    a = np.asarray(top_left, dtype=np.float32)
    b = np.asarray(bottom_right, dtype=np.float32)
    return (a + (b - a) * t[..., None]).round().astype(np.uint8)


def rect(img: np.ndarray, cx: float, cy: float, w: float, h: float, color: RGB) -> None:
    """Fill an axis-aligned rectangle centred at (cx, cy), clipped to the image."""
    x0, x1 = int(round(cx - w / 2)), int(round(cx + w / 2))
    y0, y1 = int(round(cy - h / 2)), int(round(cy + h / 2))
    H, W = img.shape[:2]
    x0, x1, y0, y1 = max(x0, 0), min(x1, W), max(y0, 0), min(y1, H)
    if x0 < x1 and y0 < y1:
        img[y0:y1, x0:x1] = color


def circle(img: np.ndarray, cx: float, cy: float, r: float, color: RGB) -> None:
    """Fill a disc of radius ``r`` centred at (cx, cy), clipped to the image."""
    H, W = img.shape[:2]
    yy, xx = np.ogrid[:H, :W]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = color


def stripes(h: int, w: int, period: int, offset: float, a: RGB, b: RGB) -> np.ndarray:
    """Vertical stripes of two colours, shifted left by ``offset`` pixels."""
    x = (np.arange(w) + int(round(offset))) % period < period // 2
    row = np.where(x[:, None], np.asarray(a, np.uint8), np.asarray(b, np.uint8))
    return np.broadcast_to(row[None], (h, w, 3)).copy()


def ease(u: float) -> float:
    """Smoothstep on [0, 1], so shapes start and stop gently."""
    u = min(max(u, 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


# --- scenes --------------------------------------------------------------------------------
def paint_kitchen(i: int, t: float, h: int, w: int) -> np.ndarray:
    """0-3 s: red square slides right over a warm gradient, a blue ball bounces.
    3-6 s: cool gradient, a yellow circle moves left and grows."""
    if t < 3.0:
        img = gradient(h, w, (250, 170, 90), (255, 240, 210), phase=t / 12)
        u = ease(t / 3.0)
        rect(img, 30 + u * (w - 60), h * 0.6, 40, 40, (220, 30, 30))
        bounce = abs(np.sin(np.pi * t * 1.5))
        circle(img, w * 0.25, h * 0.85 - bounce * h * 0.5, 12, (40, 70, 220))
    else:
        s = t - 3.0
        img = gradient(h, w, (20, 40, 110), (30, 160, 150), phase=s / 12)
        u = ease(s / 3.0)
        circle(img, (w - 40) - u * (w - 80), h * 0.5, 15 + 35 * u, (250, 220, 40))
        rect(img, w * 0.5, h - 10, w, 20, (90, 60, 40))  # a counter top along the bottom
    return img


def paint_portrait(i: int, t: float, h: int, w: int) -> np.ndarray:
    """0-2 s: green circle falls down a purple gradient.
    2-4 s: blue square rises over scrolling orange and white stripes."""
    if t < 2.0:
        img = gradient(h, w, (90, 30, 120), (200, 120, 220), phase=t / 8)
        circle(img, w / 2, 25 + ease(t / 2.0) * (h - 50), 22, (40, 200, 60))
    else:
        s = t - 2.0
        img = stripes(h, w, period=40, offset=s * 60, a=(250, 140, 30), b=(245, 245, 245))
        rect(img, w / 2, (h - 30) - ease(s / 2.0) * (h - 60), 50, 50, (30, 60, 200))
    return img


def paint_square(i: int, t: float, h: int, w: int) -> np.ndarray:
    """0-2.5 s: magenta square circles the centre of a teal gradient.
    2.5-5 s: checkerboard with a pulsing white circle."""
    if t < 2.5:
        img = gradient(h, w, (0, 90, 90), (160, 230, 210), phase=t / 10)
        angle = 2 * np.pi * t / 2.5
        rect(img, w / 2 + 70 * np.cos(angle), h / 2 + 70 * np.sin(angle), 44, 44, (230, 30, 200))
    else:
        s = t - 2.5
        yy, xx = np.indices((h, w))
        board = ((xx // 30 + yy // 30) % 2).astype(bool)
        img = np.where(board[..., None], np.uint8(40), np.uint8(110)).astype(np.uint8)
        img = np.repeat(img[..., :1], 3, axis=2)
        circle(img, w / 2, h / 2, 30 + 30 * abs(np.sin(np.pi * s / 1.25)), (250, 250, 250))
    return img


def paint_street(i: int, t: float, h: int, w: int) -> np.ndarray:
    """0-1.5 s: daytime road, a red car drives right, lane dashes scroll.
    1.5-3 s: night, two headlights approach from the right."""
    day = t < 1.5
    img = (
        gradient(h, w, (120, 180, 250), (200, 230, 255))
        if day
        else gradient(h, w, (5, 5, 30), (30, 30, 70))
    )
    road_top = int(h * 0.55)
    img[road_top:] = (90, 90, 90) if day else (30, 30, 35)
    dash_y = (road_top + h) / 2
    for k in range(-1, w // 40 + 2):
        rect(img, k * 40 - (t * 80) % 40, dash_y, 20, 4, (240, 220, 60))
    if day:
        x = -30 + ease(t / 1.5) * (w + 60)
        rect(img, x, dash_y - 18, 50, 20, (210, 30, 30))
        rect(img, x, dash_y - 32, 28, 12, (180, 20, 20))
    else:
        s = t - 1.5
        x = w + 10 - ease(s / 1.5) * (w * 0.6)
        r = 5 + 5 * ease(s / 1.5)
        circle(img, x, dash_y - 12, r, (255, 250, 200))
        circle(img, x + 30, dash_y - 12, r, (255, 250, 200))
    return img


# --- videos --------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoSpec:
    name: str
    container: str  # FFmpeg muxer name
    codec: str  # FFmpeg encoder name
    width: int
    height: int
    fps: int
    seconds: int
    paint: Painter
    options: dict[str, str]
    #: tried when decord cannot read what ``codec`` produced: (encoder, its options)
    fallback: tuple[str, dict[str, str]] | None = None
    #: an optional file is left out (not shipped broken) when decord cannot read it
    optional: bool = False

    @property
    def frames(self) -> int:
        return self.fps * self.seconds


def x264_options(fps: int) -> dict[str, str]:
    # threads=1: x264's multi-threaded lookahead/slices make output depend on scheduling.
    # asm=0 (plain C): with its AVX-512 code x264 reads uninitialised memory when a side is
    # not a multiple of 16 (320x180, 180x320), so bytes changed from run to run (seen with
    # MALLOC_PERTURB_); and its SIMD levels do not all give the same bits, so the C path also
    # makes the output independent of the CPU. For these tiny clips it costs about a second.
    # A fixed GOP of one second and no scene-cut keyframes keep the stream layout stable.
    return {
        "preset": "medium",
        "crf": "23",
        "g": str(fps),
        "keyint_min": str(fps),
        "sc_threshold": "0",
        "threads": "1",
        "flags": "+bitexact",
        "x264-params": "asm=0",
    }


def vpx_options(fps: int) -> dict[str, str]:
    return {
        "crf": "32",
        "b": "0",  # constant-quality mode: crf alone, no bitrate target
        "g": str(fps),
        "deadline": "good",
        "cpu-used": "4",
        "threads": "1",
        "row-mt": "0",
        "flags": "+bitexact",
    }


def mpeg4_options(fps: int) -> dict[str, str]:
    return {"qscale": "4", "g": str(fps), "threads": "1", "flags": "+bitexact"}


VIDEOS: tuple[VideoSpec, ...] = (
    VideoSpec("kitchen.mp4", "mp4", "libx264", 320, 180, 25, 6, paint_kitchen, x264_options(25)),
    VideoSpec("portrait.mp4", "mp4", "libx264", 180, 320, 30, 4, paint_portrait, x264_options(30)),
    VideoSpec(
        "square.mkv",
        "matroska",
        "libx264",
        240,
        240,
        24,
        5,
        paint_square,
        x264_options(24),
        fallback=("mpeg4", mpeg4_options(24)),
    ),
    VideoSpec(
        "street.webm",
        "webm",
        "libvpx-vp9",
        256,
        144,
        25,
        3,
        paint_street,
        vpx_options(25),
        optional=True,
    ),
)


def encode(spec: VideoSpec, path: Path, codec: str, options: dict[str, str]) -> None:
    """Encode ``spec`` with ``codec`` to ``path`` (via a temporary name, then renamed)."""
    tmp = path.with_name(path.name + ".part")
    # fflags=+bitexact: no encoder version strings and, for Matroska/WebM, a fixed segment
    # UID instead of a random one, so that the bytes only depend on the frames.
    with av.open(
        str(tmp), "w", format=spec.container, container_options={"fflags": "+bitexact"}
    ) as out:
        stream = out.add_stream(codec, rate=Fraction(spec.fps, 1), options=options)
        stream.width = spec.width
        stream.height = spec.height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, spec.fps)
        stream.codec_context.thread_count = 1
        for i in range(spec.frames):
            rgb = spec.paint(i, i / spec.fps, spec.height, spec.width)
            assert rgb.shape == (spec.height, spec.width, 3) and rgb.dtype == np.uint8
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, spec.fps)
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    tmp.replace(path)


# --- transcripts ---------------------------------------------------------------------------
def srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def vtt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 60_000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


KITCHEN_CUES = [
    (0.0, 1.5, "A red square slides to the right across a warm orange background."),
    (1.5, 3.0, "A small blue ball bounces up and down on the left."),
    (3.0, 4.5, "The scene changes to a cool blue and teal background."),
    (4.5, 6.0, "A yellow circle moves to the left and grows above a brown counter."),
]
PORTRAIT_CUES = [
    (0.0, 2.0, "A green ball falls down a purple background."),
    (2.0, 3.0, "Orange and white stripes scroll sideways."),
    (3.0, 4.0, "A blue square rises to the top."),
]
SQUARE_LINES = [
    "A magenta square circles around the middle of a teal picture.",
    "Then a grey checkerboard appears.",
    "A white circle in the centre grows and shrinks.",
]
STREET_SEGMENTS = [
    (0.0, 1.5, " A red car drives to the right along a road on a sunny day."),
    (1.5, 3.0, " Night falls and two headlights come closer from the right."),
]


def write_transcripts(out: Path, stems: set[str]) -> list[str]:
    """Write one transcript per video stem; returns the file names written."""
    written: list[str] = []

    def put(name: str, text: str) -> None:
        # newline="\n": the same bytes on every platform.
        (out / name).write_text(text, encoding="utf-8", newline="\n")
        written.append(name)

    if "kitchen" in stems:
        blocks = [
            f"{k}\n{srt_time(a)} --> {srt_time(b)}\n{text}\n"
            for k, (a, b, text) in enumerate(KITCHEN_CUES, 1)
        ]
        put("kitchen.srt", "\n".join(blocks))
    if "portrait" in stems:
        blocks = [f"{vtt_time(a)} --> {vtt_time(b)}\n{text}\n" for a, b, text in PORTRAIT_CUES]
        put("portrait.vtt", "WEBVTT\n\n" + "\n".join(blocks))
    if "square" in stems:
        put("square.txt", "\n".join(SQUARE_LINES) + "\n")
    if "street" in stems:
        segments = [
            {"id": k, "start": a, "end": b, "text": text}
            for k, (a, b, text) in enumerate(STREET_SEGMENTS)
        ]
        whisper = {
            "text": "".join(s["text"] for s in segments),
            "segments": segments,
            "language": "en",
        }
        put("street.json", json.dumps(whisper, indent=2) + "\n")
    return written


# --- verification --------------------------------------------------------------------------
def load_decord() -> Any:
    """The decord module, or None where it is not installed (the check is then skipped)."""
    try:
        import decord
    except ImportError:
        return None
    return decord


def check_with_decord(decord: Any, spec: VideoSpec, path: Path) -> str | None:
    """Why decord cannot read ``path`` as expected, or None when it decodes correctly.

    decord (what the pipeline decodes with) bundles its own, older FFmpeg, so a file PyAV
    wrote is only useful here if decord agrees on frame count, rate, size and timestamps.
    """
    try:
        vr = decord.VideoReader(str(path))
        n = len(vr)
        fps = vr.get_avg_fps()
        stamps = vr.get_frame_timestamp(range(n)) if n else np.zeros((0, 2))
        batch = vr.get_batch([0, n // 2, n - 1]).asnumpy() if n else None
    except Exception as exc:  # decord raises plain DECORDError/RuntimeError
        return f"decord failed: {exc}"
    if n != spec.frames:
        return f"decord sees {n} frames, expected {spec.frames}"
    if abs(fps - spec.fps) > 1e-3:
        return f"decord reports {fps} fps, expected {spec.fps}"
    expected = np.arange(n) / spec.fps
    if not np.allclose(stamps[:, 0], expected, atol=0.5 / spec.fps):
        return f"frame start times {stamps[:3, 0]}... differ from i/fps"
    if batch is None or batch.shape != (3, spec.height, spec.width, 3) or not batch.any():
        return f"decoded batch has shape {None if batch is None else batch.shape} or is black"
    return None


def describe(path: Path) -> dict[str, object]:
    """Stream facts of an encoded video, read back with PyAV (for the README)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = sum(1 for packet in c.demux(s) if packet.size)
        return {
            "codec": s.codec_context.name,
            "pix_fmt": s.codec_context.pix_fmt,
            "width": s.codec_context.width,
            "height": s.codec_context.height,
            "fps": float(s.average_rate),
            "frames": frames,
            "seconds": frames / float(s.average_rate),
        }


CODEC_NAMES = {"h264": "H.264", "vp9": "VP9", "vp8": "VP8", "mpeg4": "MPEG-4 Part 2"}
CONTAINER_NAMES = {"mp4": "MP4", "matroska": "Matroska", "webm": "WebM"}


def write_readme(
    out: Path, rows: list[tuple[VideoSpec, dict[str, object]]], texts: list[str], notes: list[str]
) -> None:
    """Write ``README.md`` describing the files just generated (sizes and checksums included)."""
    lines = [
        "# Sample data",
        "",
        "Tiny synthetic videos with matching transcripts, for tests, demos and the README",
        "examples. Each video shows coloured shapes moving over a gradient background and has a",
        "scene change halfway through; the transcripts describe what is on screen.",
        "",
        "| file | size | resolution | fps | duration | frames | codec |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for spec, info in rows:
        codec = CODEC_NAMES.get(str(info["codec"]), str(info["codec"]))
        container = CONTAINER_NAMES.get(spec.container, spec.container)
        lines.append(
            f"| `{spec.name}` | {(out / spec.name).stat().st_size:,} B "
            f"| {info['width']}x{info['height']} | {info['fps']:g} | {info['seconds']:g} s "
            f"| {info['frames']} | {codec} ({info['pix_fmt']}) in {container} |"
        )
    lines += ["", "| transcript | size | format | cues |", "|---|---:|---|---|"]
    kinds = {
        ".srt": "SubRip",
        ".vtt": "WebVTT",
        ".txt": "plain text, one line per cue",
        ".json": "Whisper-style JSON (`segments`)",
    }
    for name in texts:
        path = out / name
        body = path.read_text(encoding="utf-8")
        if name.endswith(".json"):
            count = len(json.loads(body)["segments"])
        elif name.endswith(".txt"):
            count = sum(1 for line in body.splitlines() if line.strip())
        else:
            count = body.count("-->")
        lines.append(f"| `{name}` | {path.stat().st_size:,} B | {kinds[path.suffix]} | {count} |")
    lines += [
        "",
        "## Regenerate",
        "",
        "```",
        "python scripts/make_sample_data.py            # writes sample_data/",
        "python scripts/make_sample_data.py OUT_DIR    # or somewhere else",
        "```",
        "",
        "The script needs only PyAV and numpy. Frames are drawn with numpy (no randomness) and",
        "encoded single-threaded with fixed settings and FFmpeg's bitexact flags; x264 runs its",
        "plain-C code path (`asm=0`), because its AVX-512 code reads uninitialised memory at",
        "sizes that are not multiples of 16, which made bytes differ between runs. Re-running",
        "with the same PyAV wheel rewrites byte-identical files (checksums below); another",
        "PyAV/FFmpeg/x264/libvpx build may encode slightly different bytes of the same content.",
        "Each video is checked with decord (frame count = fps x duration, frame rate, size,",
        "timestamps), which the pipeline decodes with; an optional format decord cannot read",
        "would be left out.",
        "",
    ]
    if notes:
        lines += ["Notes from the last run:", ""] + [f"- {note}" for note in notes] + [""]
    lines += ["SHA-256:", "", "```"]
    for name in [spec.name for spec, _ in rows] + texts:
        digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
        lines.append(f"{digest}  {name}")
    lines += ["```", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8", newline="\n")


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[VideoSpec, dict[str, object]]] = []
    notes: list[str] = []
    failed = False
    decord = load_decord()
    if decord is None:
        notes.append("decord was not installed, so the videos were not checked with it")
    for spec in VIDEOS:
        path = out / spec.name
        attempts = [(spec.codec, spec.options)] + ([spec.fallback] if spec.fallback else [])
        problem: str | None = None
        for codec, options in attempts:
            encode(spec, path, codec, options)
            problem = None if decord is None else check_with_decord(decord, spec, path)
            if problem is None:
                break
            print(f"{spec.name}: decord cannot read the {codec} encode: {problem}", file=sys.stderr)
            notes.append(f"`{spec.name}` with {codec}: decord cannot read it ({problem})")
        if problem is not None:
            path.unlink()
            if spec.optional:
                print(f"skipped {spec.name}", file=sys.stderr)
                continue
            failed = True
            continue
        info = describe(path)
        rows.append((spec, info))
        print(
            f"{spec.name}: {path.stat().st_size} bytes, {info['width']}x{info['height']}, "
            f"{info['fps']:g} fps, {info['frames']} frames, {info['codec']}"
        )
    texts = write_transcripts(out, {Path(spec.name).stem for spec, _ in rows})
    for name in texts:
        print(f"{name}: {(out / name).stat().st_size} bytes")
    write_readme(out, rows, texts, notes)
    if failed:
        print("error: some required videos cannot be decoded by decord", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
