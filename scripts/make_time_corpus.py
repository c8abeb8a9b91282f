#!/usr/bin/env python3
"""Write a corpus of coloured-shape clips whose captions differ only in what pooling cannot see.

Usage::

    python scripts/make_time_corpus.py OUT_DIR [--count 216] [--seed 0]

Two families of clips, 36 *kinds* in all (clip ``i`` is of kind ``i mod 36``):

* **motion** (24 kinds): one shape (square/circle) of one colour (red/green/blue) moves
  ``left``/``right`` ``slowly``/``quickly`` along a horizontal path - "A red square moves
  left slowly." Left and right visit the *same* positions in reverse order; a quick clip
  crosses the path twice (it re-enters at the start, as on a conveyor) at the same frame
  positions' half-steps, so slow and quick clips visit the same stretch uniformly. Mean-pooled
  over time, the frames of a left and a right clip (or of a slow and a quick one) are the same
  set of images; only their order in time tells them apart.
* **order** (12 kinds): one object for the first half of the clip, another for the second half
  - "A red square, then a blue circle." Swapping the order keeps the pooled content.

Every clip is a new *instance* (path, position, size, colour and background tint drawn from
``numpy.random.default_rng(seed)``). Next to each clip an ``.srt`` (one timed cue over the
clip) and in ``OUT_DIR``: ``corpus.jsonl`` (every clip's parameters) and ``contrasts.json``,
the caption pairs that differ in one factor only - ``{"motion": [[a, b], ...], "speed":
[...], "order": [...]}`` - which ``videobert eval --contrasts`` scores as two-way choices.

Frames: 160x120, 4 fps, 2 s (8 frames) by default: small and short, because feature extraction
is the slow part on a CPU. Drawing, the background and the deterministic x264 settings come
from ``make_shapes_corpus.py``: the same ``--count``/``--seed`` rewrite identical bytes.
"""

from __future__ import annotations

import json
import sys
from itertools import product
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_shapes_corpus import (  # noqa: E402
    COLOURS, VISIBLE_X, VISIBLE_Y, background, corpus_arguments, draw, write_clips, write_mp4,
)

TIME_COLOURS = ("red", "green", "blue")
SHAPES = ("square", "circle")
OBJECTS = list(product(TIME_COLOURS, SHAPES))  # 6 (colour, shape)
DIRECTIONS = ("left", "right")
SPEEDS = {"slowly": 1, "quickly": 2}  # crossings of the path per clip
#: ordered pairs of objects differing in colour and shape: 6 unordered pairs x 2 orders
ORDER_PAIRS = [(a, b) for a, b in product(OBJECTS, OBJECTS) if a[0] != b[0] and a[1] != b[1]]
MOTION_KINDS = [("motion", c, s, d, v) for (c, s), d, v in product(OBJECTS, DIRECTIONS, SPEEDS)]
ORDER_KINDS = [("order", a, b) for a, b in ORDER_PAIRS]
KINDS = MOTION_KINDS + ORDER_KINDS  # 24 + 12


def caption(kind: tuple) -> str:
    """The caption of a kind (what the transcript says)."""
    if kind[0] == "motion":
        _, colour, shape, direction, speed = kind
        return f"A {colour} {shape} moves {direction} {speed}."
    _, (c1, s1), (c2, s2) = kind
    return f"A {c1} {s1}, then a {c2} {s2}."


def contrasts() -> dict[str, list[list[str]]]:
    """Caption pairs that differ in exactly one factor, per factor (each pair listed once)."""
    out: dict[str, list[list[str]]] = {"motion": [], "speed": [], "order": []}
    flip = {"left": "right", "right": "left", "slowly": "quickly", "quickly": "slowly"}
    for kind in MOTION_KINDS:
        _, c, s, d, v = kind
        if d == DIRECTIONS[0]:
            out["motion"].append([caption(kind), caption(("motion", c, s, flip[d], v))])
        if v == "slowly":
            out["speed"].append([caption(kind), caption(("motion", c, s, d, flip[v]))])
    for kind in ORDER_KINDS:
        _, a, b = kind
        if a < b:
            out["order"].append([caption(kind), caption(("order", b, a))])
    return out


def plan(count: int, seed: int, width: int, height: int) -> list[dict]:
    """The instances, all drawn from ``seed``: kind, geometry and tints."""
    rng = np.random.default_rng(seed)
    x_lo, x_hi = VISIBLE_X[0] * width, VISIBLE_X[1] * width
    y_lo, y_hi = VISIBLE_Y[0] * height, VISIBLE_Y[1] * height
    clips = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        size = float(rng.uniform(16, 24))
        clip = {"index": i, "family": kind[0], "caption": caption(kind), "size": round(size, 3),
                "background_tint": rng.uniform(-20, 20, 3).round().tolist(),
                "colour_jitter": rng.uniform(-15, 15, 3).round().tolist()}
        if kind[0] == "motion":
            _, colour, shape, direction, speed = kind
            span = (x_hi - x_lo - size) * float(rng.uniform(0.6, 0.9))
            x0 = float(rng.uniform(x_lo + size / 2, x_hi - size / 2 - span))
            y = float(rng.uniform(y_lo + size / 2, y_hi - size / 2))
            clip.update(name=f"{i:03d}_{colour}_{shape}_{direction}_{speed}", colour=colour, shape=shape,
                        direction=direction, speed=speed, path=[round(x0, 3), round(x0 + span, 3)],
                        y=round(y, 3))
        else:
            _, (c1, s1), (c2, s2) = kind
            where = [[round(float(rng.uniform(x_lo + size / 2, x_hi - size / 2)), 3),
                      round(float(rng.uniform(y_lo + size / 2, y_hi - size / 2)), 3)] for _ in range(2)]
            clip.update(name=f"{i:03d}_{c1}_{s1}_then_{c2}_{s2}", objects=[[c1, s1], [c2, s2]], at=where)
        clips.append(clip)
    return clips


def scene(clip: dict, frame: int, frames: int) -> list[tuple[str, float, float, str]]:
    """(shape, x, y, colour) of what frame ``frame`` of ``frames`` shows."""
    if clip["family"] == "motion":
        cycles = 2 if clip["speed"] == "quickly" else 1
        # half-step phases: slow visits (i + 0.5)/n, quick (2i + 1)/n mod 1 - the same stretch,
        # centred the same, so pooling over frames cannot tell the speeds apart
        phase = ((frame + 0.5) * cycles / frames) % 1.0
        if clip["direction"] == "left":
            phase = 1.0 - phase
        x0, x1 = clip["path"]
        return [(clip["shape"], x0 + phase * (x1 - x0), clip["y"], clip["colour"])]
    k = 0 if frame < frames // 2 else 1
    colour, shape = clip["objects"][k]
    x, y = clip["at"][k]
    return [(shape, x, y, colour)]


def render(clip: dict, path: Path, width: int, height: int, fps: int, seconds: float) -> None:
    bg = background(height, width, np.array(clip["background_tint"], np.float32))
    frames = int(round(fps * seconds))

    def images():
        for i in range(frames):
            img = bg.copy()
            for shape, x, y, colour in scene(clip, i, frames):
                rgb = np.clip(np.array(COLOURS[colour], np.float32) + clip["colour_jitter"], 0, 255)
                draw(img, shape, x, y, clip["size"], rgb)
            yield img

    write_mp4(path, images(), width, height, fps)


def main(argv: list[str] | None = None) -> int:
    parser = corpus_arguments(__doc__.split("\n\n")[0], count=216, fps=4)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    if int(round(args.fps * args.seconds)) < 4:
        parser.error("a clip needs at least 4 frames (--fps x --seconds)")
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    clips = plan(args.count, args.seed, args.width, args.height)
    write_clips(out, clips, render, args)
    (out / "contrasts.json").write_text(json.dumps(contrasts(), indent=1) + "\n", encoding="utf-8", newline="\n")
    print(f"wrote {len(clips)} clips ({len(KINDS)} kinds) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
