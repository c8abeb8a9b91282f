#!/usr/bin/env python3
"""Write a small paired video/caption corpus of coloured shapes moving in four directions.

Usage::

    python scripts/make_shapes_corpus.py OUT_DIR [--count 160] [--seed 0]

Each clip shows one shape (square or circle) of one colour (red, green, blue, yellow) moving
left, right, up or down: 4 x 2 x 4 = 32 *kinds*. Clip ``i`` is of kind ``i mod 32``, so kinds
are balanced; every clip is a new *instance* with its own start position, size, speed and
colour/background tint drawn from ``numpy.random.default_rng(seed)``. Next to each clip
``NNN_<colour>_<shape>_<direction>.mp4`` an ``.srt`` caption says what happens ("A red square
moves left.", one cue over the whole clip), and ``corpus.jsonl`` lists every clip's parameters.

Frames: 160x120, 10 fps, 2 s (20 frames) by default. The background is a fixed gradient
(dark to light from left to right, warm to cool from top to bottom), so where a shape is
changes what surrounds it - the pooled CNN features of a frame then carry its position,
not only its colour and shape. Motion stays inside the part of the frame the bundled video
model sees (its 256-px resize + 224-px centre crop keeps the central ~66 % of the width).

Deterministic: the same ``--count``/``--seed`` draw the same instances, and the encoder runs
single-threaded with FFmpeg's bitexact flags and x264's plain-C path (as
``make_sample_data.py``), so re-running with the same PyAV build rewrites identical bytes.
Needs PyAV (``av``) and numpy only.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from itertools import product
from pathlib import Path

import av
import numpy as np

COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 70, 215),
    "yellow": (230, 200, 40),
}
SHAPES = ("square", "circle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
KINDS = list(product(COLOURS, SHAPES, DIRECTIONS))  # 32 (colour, shape, direction)

#: horizontal band the video model's centre crop keeps, as fractions of the width
VISIBLE_X = (0.19, 0.81)
VISIBLE_Y = (0.08, 0.92)


def x264_options(fps: int) -> dict[str, str]:
    """Deterministic x264 settings (see make_sample_data.py for why each is there)."""
    return {
        "preset": "medium",
        "crf": "20",
        "g": str(fps),
        "keyint_min": str(fps),
        "sc_threshold": "0",
        "threads": "1",
        "flags": "+bitexact",
        "x264-params": "asm=0",
    }


def background(h: int, w: int, tint: np.ndarray) -> np.ndarray:
    """Fixed gradient: luminance rises left to right, hue goes warm (top) to cool (bottom)."""
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    warm = np.array([200, 170, 140], np.float32)
    cool = np.array([140, 170, 200], np.float32)
    base = warm * (1 - y) + cool * y
    img = base * (0.45 + 0.55 * x) + tint[None, None, :]
    return np.clip(img, 0, 255)


def draw(img: np.ndarray, shape: str, cx: float, cy: float, size: float, colour: np.ndarray) -> None:
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    if shape == "square":
        inside = (np.abs(xx - cx) <= size / 2) & (np.abs(yy - cy) <= size / 2)
    else:
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= (size / 2) ** 2
    img[inside] = colour


def plan(count: int, seed: int, width: int, height: int, seconds: float) -> list[dict]:
    """The instances: kind, start centre, size, speed and tints, all drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(count):
        colour, shape, direction = KINDS[i % len(KINDS)]
        size = float(rng.uniform(16, 26))
        speed = float(rng.uniform(20, 32))  # pixels per second
        dx, dy = DIRECTIONS[direction]
        travel = speed * seconds
        x0, x1 = VISIBLE_X[0] * width + size / 2, VISIBLE_X[1] * width - size / 2
        y0, y1 = VISIBLE_Y[0] * height + size / 2, VISIBLE_Y[1] * height - size / 2
        # start so that the whole path stays inside the visible box
        sx_lo, sx_hi = (x0 + travel, x1) if dx < 0 else (x0, x1 - travel) if dx > 0 else (x0, x1)
        sy_lo, sy_hi = (y0 + travel, y1) if dy < 0 else (y0, y1 - travel) if dy > 0 else (y0, y1)
        start = (float(rng.uniform(sx_lo, sx_hi)), float(rng.uniform(sy_lo, sy_hi)))
        tint = rng.uniform(-20, 20, 3).round().tolist()
        jitter = rng.uniform(-15, 15, 3).round().tolist()
        clips.append({
            "index": i,
            "name": f"{i:03d}_{colour}_{shape}_{direction}",
            "colour": colour,
            "shape": shape,
            "direction": direction,
            "caption": f"A {colour} {shape} moves {direction}.",
            "size": round(size, 3),
            "speed": round(speed, 3),
            "start": [round(start[0], 3), round(start[1], 3)],
            "background_tint": tint,
            "colour_jitter": jitter,
        })
    return clips


def write_mp4(path: Path, images, width: int, height: int, fps: int) -> None:
    """H.264 of float RGB ``images`` (bit-exact settings, one thread), written via a .part file."""
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), "w", format="mp4", container_options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("libx264", rate=Fraction(fps, 1), options=x264_options(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.thread_count = 1
        for i, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img.round().astype(np.uint8)), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    tmp.replace(path)


def render(clip: dict, path: Path, width: int, height: int, fps: int, seconds: float) -> None:
    dx, dy = DIRECTIONS[clip["direction"]]
    colour = np.clip(np.array(COLOURS[clip["colour"]], np.float32) + clip["colour_jitter"], 0, 255)
    bg = background(height, width, np.array(clip["background_tint"], np.float32))

    def images():
        for i in range(int(round(fps * seconds))):
            t = i / fps
            img = bg.copy()
            cx = clip["start"][0] + dx * clip["speed"] * t
            cy = clip["start"][1] + dy * clip["speed"] * t
            draw(img, clip["shape"], cx, cy, clip["size"], colour)
            yield img

    write_mp4(path, images(), width, height, fps)


def srt(caption: str, seconds: float) -> str:
    ms = int(round(seconds * 1000))
    end = f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
    return f"1\n00:00:00,000 --> {end}\n{caption}\n"


def corpus_arguments(description: str, *, count: int, fps: int) -> argparse.ArgumentParser:
    """The options of the corpus scripts (this one and make_time_corpus.py; defaults differ)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, default=count, help=f"number of clips (default {count})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the instances (default 0)")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fps", type=int, default=fps)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    return parser


def write_clips(out: Path, clips: list[dict], render_clip, args: argparse.Namespace) -> None:
    """Each clip's .mp4 (drawn by ``render_clip``) and .srt, and ``corpus.jsonl``."""
    for clip in clips:
        render_clip(clip, out / f"{clip['name']}.mp4", args.width, args.height, args.fps, args.seconds)
        (out / f"{clip['name']}.srt").write_text(srt(clip["caption"], args.seconds), encoding="utf-8", newline="\n")
    with open(out / "corpus.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for clip in clips:
            f.write(json.dumps(clip, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = corpus_arguments(__doc__.split("\n\n")[0], count=160, fps=10)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    clips = plan(args.count, args.seed, args.width, args.height, args.seconds)
    write_clips(out, clips, render, args)
    print(f"wrote {len(clips)} clips ({len(KINDS)} kinds) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
