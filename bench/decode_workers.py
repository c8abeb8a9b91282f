"""Decode throughput against the number of decode workers feeding one (fast) model.

    python -m bench.decode_workers                        # 1 vs 2 workers, 4 x 720p 1-minute, --fps 1
    python -m bench.decode_workers --workers 1,2,4 --video 1080p_1min --copies 8 --rounds 3

``videobert run`` on a folder of ``--copies`` links to one benchmark video, with a model far
faster than decoding (random mobilenet_v3_small, ONNX Runtime), so the run measures how fast
the workers decode. Rounds alternate the order of the settings; the median is reported with the
speed-up over one worker, and every setting's features are checked equal to one worker's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from bench.run import ROOT, ensure_inputs, machine_facts, measurement_env, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--video", default="720p_1min")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the (tiny) model runs: cpu or cuda[:N]")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args(argv)
    env = measurement_env()
    video = ensure_inputs([args.video], 5000, env)[args.video]["path"]
    settings = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="videobert-decode-workers-"))
    env = dict(env, VIDEOBERT_CACHE=str(work / "cache"))
    videobert = [sys.executable, "-c", "from videobert_cli.cli.app import main; main()"]
    flags = ["--video-model", "mobilenet_v3_small", "--video-weights", "none", "--fps", f"{args.fps:g}",
             "--device", args.device, "--precision", args.precision, "--force"]
    try:
        folder = work / "in"
        folder.mkdir()
        for copy in range(args.copies):  # links: each worker opens the same file (page cache)
            (folder / f"copy{copy}{Path(video).suffix}").symlink_to(video)
        subprocess.run([*videobert, "--quiet", "extract-video", video, "-o", str(work / "warm.h5"), *flags[:-1]],
                       cwd=ROOT, env=env, check=True)  # fills the ONNX cache
        times: dict[int, list[float]] = {w: [] for w in settings}
        frames = 0
        for round_ in range(args.rounds):
            for workers in settings if round_ % 2 == 0 else settings[::-1]:
                out = work / f"out{workers}"
                started = time.perf_counter()
                subprocess.run([*videobert, "--quiet", "--decode-workers", str(workers), "run", str(folder),
                                "-o", str(out), *flags], cwd=ROOT, env=env, check=True)
                times[workers].append(time.perf_counter() - started)
                with h5py.File(next(out.glob("*.h5"))) as f:
                    frames = len(f["video/features"]) * args.copies
                print(f"  round {round_}: {workers} worker(s) {times[workers][-1]:.1f} s", flush=True)
        reference = {p.name: h5py.File(p)["video/features"][()] for p in (work / f"out{settings[0]}").glob("*.h5")}
        equal = all(np.array_equal(reference[p.name], h5py.File(p)["video/features"][()])
                    for w in settings for p in (work / f"out{w}").glob("*.h5"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times[settings[0]])
    rows = [[w, f"{statistics.median(times[w]):.1f}", f"{frames / statistics.median(times[w]):.1f}",
             f"{base / statistics.median(times[w]):.2f}", ", ".join(f"{t:.1f}" for t in times[w])] for w in settings]
    facts = machine_facts()
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.copies} x {args.video} at --fps {args.fps:g}, "
          f"{facts.get('cpu', '')}, {facts.get('cpus', '')} cores")
    print(table(["workers", "wall s (median)", "frames/s", "speed-up", "all runs"], rows))
    print(f"features equal to {settings[0]} worker(s): {equal}")
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
