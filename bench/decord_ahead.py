"""decord's decoder thread keeps decoding after a call returns: CPU and memory while idle.

    python -m bench.decord_ahead [VIDEO]     # default: the benchmark's 10-minute 720p input

For each call on a fresh reader, prints the CPU seconds the process used (all threads) and how
much its resident memory grew during the 0.5 s of doing nothing that follow. See "decord
decodes ahead" in docs/benchmarks.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

IDLE_S = 0.5
CALLS = (
    ("(none: just opened)", ()),
    ("next()", (("next",),)),
    ("skip_frames(5)", (("skip_frames", 5),)),
    ("seek_accurate(100)", (("seek_accurate", 100),)),
    ("get_batch([10])", (("get_batch", [10]),)),
    ("seek(<a keyframe>)", (("seek", "keyframe"),)),
    ("get_batch([10]), then seek(0)", (("get_batch", [10]), ("seek", 0))),
)


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str]) -> int:
    from videobert_cli.decoders.decord import open_reader as open_video

    if argv:
        video = Path(argv[0])
    else:
        from bench.inputs import ensure

        video = Path(ensure(["720p_10min"], 5000)["720p_10min"]["path"])  # cached after the first run
    print(f"video: {video}\n")
    print(f"| after this call on a fresh reader | CPU in the next {IDLE_S} s of doing nothing | RSS growth in it |")
    print("|---|---|---|")
    for label, steps in CALLS:
        reader = open_video(video, num_threads=1)
        keys = reader.get_key_indices()
        keyframe = int(keys[min(1, len(keys) - 1)])  # the second keyframe, if there is one
        results = []
        for name, *args in steps:
            args = [keyframe if a == "keyframe" else a for a in args]
            results.append(getattr(reader, name)(*args))
        cpu, rss = time.process_time(), _rss_mb()
        time.sleep(IDLE_S)
        print(f"| {label.replace('<a keyframe>', str(keyframe))} | {time.process_time() - cpu:.2f} s | "
              f"{_rss_mb() - rss:+.0f} MB |", flush=True)
        del reader, results
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
