"""Benchmark inputs: synthetic H.264 videos and a long SRT transcript, cached in ``bench/.cache/``.

Videos are written with PyAV (libx264 preset veryfast, crf 23, yuv420p, 30 fps, x264's
default GOP of 250 frames; x264 places only 16 B-frames in 1800 frames of this content, so the
``_bframes`` variants force 3 B-frames in a pyramid) and have content the encoder must work on: a drifting
colour gradient, three moving rectangles and a little per-frame noise (cycled from a small
bank so generation stays cheap). Frames are built directly in YUV 4:2:0 (no RGB->YUV
conversion) for the same reason.

Encoding 1080p with veryfast runs at ~19 frames/s on 2 cores (a 10-minute video would take
16 minutes), so the 10-minute videos are the 1-minute encode *remuxed* ten times with shifted
timestamps: real H.264 at full resolution and length (every copy starts on an IDR frame), the
content just repeats every minute. Decoding cost is the same as for a fresh encode.

Run ``python -m bench.inputs`` to (re)build the cache by hand; the driver imports PyAV only in
a child process (PyAV and decord ship different FFmpeg builds, and decord is loaded by the
measurements).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"

#: name -> (width, height, seconds)
VIDEOS = {
    "warmup_720p_4s": (1280, 720, 4),  # untimed warm-up runs
    "720p_3s": (1280, 720, 3),  # copied into a folder of short videos (cross-video batching)
    "720p_1min": (1280, 720, 60),
    "1080p_1min": (1920, 1080, 60),
    "720p_10min": (1280, 720, 600),
    "1080p_10min": (1920, 1080, 600),
    # the same content with 3 B-frames in a pyramid (most real H.264 has B-frames; x264's own
    # choice puts almost none in the videos above): decode-only rows, for the frames the
    # decoder may skip
    "720p_1min_bframes": (1280, 720, 60),
    "1080p_1min_bframes": (1920, 1080, 60),
}
#: x264 settings of the ``_bframes`` videos: preset veryfast would not place B-frames in this
#: content even when told to (b-adapt=0), so ultrafast with veryfast's main coding tools
#: switched back on (CABAC, deblocking, 8x8 transform, weighted P, hex search, mbtree)
BFRAMES_X264 = ("bframes=3:b-adapt=0:b-pyramid=normal:cabac=1:deblock=1:0:0:ref=1:partitions=i8x8,i4x4:me=hex:"
                "subme=2:weightp=1:8x8dct=1:mbtree=1:rc-lookahead=10:aq-mode=1")
FPS = 30
PRESET = "veryfast"
#: bump when the generator changes, so stale cached files are rebuilt
VERSION = 1


def video_path(name: str) -> Path:
    preset, x264_params = _encoding(name)
    return CACHE / f"{name}_v{VERSION}_{preset}{'-bframes' if x264_params else ''}.mp4"


def _encoding(name: str) -> tuple[str, str | None]:
    """libx264's preset and extra parameters for the video called ``name``."""
    return ("ultrafast", BFRAMES_X264) if name.endswith("_bframes") else (PRESET, None)


def _planes(width: int, height: int, bank: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    luma = (40 + 150 * (0.6 * x + 0.4 * y)).astype(np.uint8)  # (H, W)
    cw, ch = width // 2, height // 2
    cx = np.linspace(0, 1, cw, dtype=np.float32)[None, :]
    cy = np.linspace(0, 1, ch, dtype=np.float32)[:, None]
    u = (128 + 60 * np.sin(2 * np.pi * (cx + 0.5 * cy))).astype(np.uint8)
    v = (128 + 60 * np.cos(2 * np.pi * (0.7 * cx - cy))).astype(np.uint8)
    noise = [rng.integers(-6, 7, size=(height, width), dtype=np.int16) for _ in range(bank)]
    return luma, u, v, noise


def write_video(path: Path, width: int, height: int, seconds: int, *, preset: str = PRESET,
                x264_params: str | None = None) -> dict:
    """Write one synthetic video; returns facts about it (frames, bytes, seconds taken)."""
    import av

    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    luma, u, v, noise = _planes(width, height, bank=8)
    frames = seconds * FPS
    side = height // 5
    shapes = [  # (speed x, speed y, luma value, size factor)
        (7, 3, 235, 1.0),
        (-5, 4, 20, 0.7),
        (3, -6, 180, 1.3),
    ]
    buffer = np.empty((height * 3 // 2, width), dtype=np.uint8)
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset, "crf": "23", **({"x264-params": x264_params} if x264_params else {})}
        for index in range(frames):
            shift = (index * 2) % width
            y_plane = np.roll(luma, shift, axis=1).astype(np.int16)
            y_plane += noise[index % len(noise)]
            np.clip(y_plane, 0, 255, out=y_plane)
            y8 = y_plane.astype(np.uint8)
            for k, (sx, sy, value, scale) in enumerate(shapes):
                s = int(side * scale)
                px = (100 * k + index * sx) % (width - s)
                py = (50 * k + index * sy) % (height - s)
                y8[py : py + s, px : px + s] = value
            buffer[:height] = y8
            ch, cw = height // 2, width // 2
            cshift = (index // 2) % cw
            buffer[height : height + ch // 2] = np.roll(u, cshift, axis=1).reshape(ch // 2, width)
            buffer[height + ch // 2 :] = np.roll(v, -cshift, axis=1).reshape(ch // 2, width)
            frame = av.VideoFrame.from_ndarray(buffer, format="yuv420p")
            frame.pts = index
            frame.time_base = Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return {
        "path": str(path),
        "width": width,
        "height": height,
        "seconds": seconds,
        "frames": frames,
        "bytes": path.stat().st_size,
        "generation_s": round(time.perf_counter() - started, 2),
        "preset": preset + (f" ({x264_params})" if x264_params else ""),
    }


def remux_repeat(source: Path, path: Path, copies: int) -> dict:
    """Concatenate ``copies`` copies of ``source``'s video stream (no re-encoding)."""
    import av

    started = time.perf_counter()
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(source)) as probe:
        stream = probe.streams.video[0]
        tb = stream.time_base
        packets = [(p.pts, p.dts) for p in probe.demux(stream) if p.dts is not None]
        # one copy lasts (last pts + one frame duration) - first pts
        frame_ticks = int(round(1 / (FPS * tb)))
        span = max(p for p, _ in packets) + frame_ticks - min(p for p, _ in packets)
        frames = len(packets)
        width, height = stream.codec_context.width, stream.codec_context.height
    with av.open(str(tmp), mode="w") as out:
        with av.open(str(source)) as first:
            out_stream = out.add_stream_from_template(first.streams.video[0])
        for copy in range(copies):
            with av.open(str(source)) as inp:
                in_stream = inp.streams.video[0]
                for packet in inp.demux(in_stream):
                    if packet.dts is None:
                        continue
                    packet.pts += copy * span
                    packet.dts += copy * span
                    packet.stream = out_stream
                    out.mux(packet)
    tmp.replace(path)
    return {
        "path": str(path),
        "width": width,
        "height": height,
        "seconds": copies * 60,
        "frames": copies * frames,
        "bytes": path.stat().st_size,
        "generation_s": round(time.perf_counter() - started, 2),
        "preset": f"{PRESET} (1-min encode remuxed x{copies})",
    }


_WORDS = (
    "the a video kitchen person knife onion table slowly then cuts pan heat oil stir add salt "
    "minute water boil pasta drain sauce tomato garlic pepper bowl plate serve fresh herbs "
    "camera shows close view hand moves left right after before while we now next step "
    "carefully until golden brown about three five ten seconds really good simple recipe "
    "chopping board wooden spoon lid cover simmer taste adjust season finally enjoy dinner "
    "electroencephalography transcontinental misunderstanding photosynthesis"
).split()


def transcript_path(tokens: int) -> Path:
    return CACHE / f"transcript_{tokens}tok_v{VERSION}.srt"


def write_transcript(path: Path, approx_tokens: int, seed: int = 0) -> dict:
    """An SRT with timed cues of 8-30 words; ~1.3 WordPiece tokens per word on this vocabulary."""
    rng = random.Random(seed)
    words_needed = int(approx_tokens / 1.3)
    cues, words, t = [], 0, 0.0
    while words < words_needed:
        n = rng.randint(8, 30)
        sentences = []
        left = n
        while left > 0:
            k = min(left, rng.randint(4, 14))
            sentence = " ".join(rng.choice(_WORDS) for _ in range(k))
            sentences.append(sentence[0].upper() + sentence[1:] + rng.choice([".", ".", "?", "!"]))
            left -= k
        duration = 0.35 * n
        cues.append((t, t + duration, " ".join(sentences)))
        t += duration + rng.uniform(0.0, 0.8)
        words += n

    def stamp(seconds: float) -> str:
        ms = int(round(seconds * 1000))
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for number, (start, end, text) in enumerate(cues, 1):
            handle.write(f"{number}\n{stamp(start)} --> {stamp(end)}\n{text}\n\n")
    return {"path": str(path), "cues": len(cues), "words": words, "duration_s": round(t, 1)}


def ensure(names: list[str], transcript_tokens: int) -> dict:
    """Build whatever of the requested inputs is not cached; returns {name: facts}."""
    facts: dict = {}
    meta_path = CACHE / "inputs.json"
    known = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    for name in names:
        path = video_path(name)
        if path.exists() and Path(known.get(name, {}).get("path", "")).name == path.name:
            facts[name] = {**known[name], "path": str(path)}
            continue
        width, height, seconds = VIDEOS[name]
        if seconds > 60:
            base = name.replace(f"_{seconds // 60}min", "_1min")
            if base not in facts:
                facts.update({k: v for k, v in ensure([base], transcript_tokens).items() if k == base})
            print(f"  remuxing {base} x{seconds // 60} into {name} ...", file=sys.stderr, flush=True)
            facts[name] = remux_repeat(Path(facts[base]["path"]), path, seconds // 60)
            known[name] = facts[name]
            meta_path.write_text(json.dumps(known, indent=1))
            continue
        preset, x264_params = _encoding(name)
        print(f"  generating {name} ({width}x{height}, {seconds} s, libx264 {preset}) ...", file=sys.stderr, flush=True)
        facts[name] = write_video(path, width, height, seconds, preset=preset, x264_params=x264_params)
        print(f"  ... {facts[name]['generation_s']} s, {facts[name]['bytes'] / 1e6:.1f} MB", file=sys.stderr, flush=True)
        known[name] = facts[name]
        meta_path.write_text(json.dumps(known, indent=1))
    tpath = transcript_path(transcript_tokens)
    key = f"transcript_{transcript_tokens}"
    if not tpath.exists() or key not in known:
        known[key] = write_transcript(tpath, transcript_tokens)
        meta_path.write_text(json.dumps(known, indent=1))
    facts["transcript"] = {**known[key], "path": str(tpath)}
    return facts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=",".join(VIDEOS))
    parser.add_argument("--transcript-tokens", type=int, default=20000)
    args = parser.parse_args(argv)
    names = [n for n in args.videos.split(",") if n]
    print(json.dumps(ensure(names, args.transcript_tokens)))


if __name__ == "__main__":
    main()
