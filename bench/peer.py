"""Ours beside the peers' way, in one run: model-only and end-to-end frames/s, peak RSS, agreement.

    python -m bench.peer                                  # efficientnet-lite0 and resnet50, 720p --fps 5
    python -m bench.peer --models resnet50 --rounds 3 --json peer.json
    python -m bench.peer --copies 3 --rounds 2            # a folder of 3 videos: start-up paid once

Model-only, on the same saved crops (each in a fresh interpreter):
  plain     eager torch, default memory format, fp32, batch 32 (what video_features runs)
  torch     videobert's torch path (channels-last)         --model-runtime torch
  ours      videobert's default (ONNX Runtime on the CPU)  --model-runtime auto
End to end, as a user runs them, on ``--copies`` links to the video, alternating over
``--rounds`` rounds (medians reported):
  plain extractor   ``bench.plain_extractor`` (decode, resize, crop, eager batch 32, .npy; one
                    process for all the videos, as video_features runs a list)
  extract-video     ``videobert extract-video VIDEO... -o DIR``
  run               ``videobert run DIR -o OUT``
frames/s are the sampled frames over the whole command's wall time (start-up and model
loading included), timed with nothing else running. Memory comes from one more run of each
command, sampled every 50 ms (the sampling reads /proc and would slow the timed runs): the peak
of the summed PSS of the command's processes (shared pages counted once: what the command
holds) and the peak RSS of its largest process.
Targets (issue 18): end to end >= 1.25 x plain model-only frames/s; peak RSS <= the plain
extractor's; model agreement with plain eager: per-frame cosine >= 0.9999.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from bench.measure import PeakRss
from videobert_cli.video.runtimes import agreement
from bench.run import (ROOT, ensure_inputs, machine_facts, measurement_env, run_measurement, table, verdict,
                       weights_for)

FPS = 5.0
TARGET_SPEEDUP = 1.25
MIN_COSINE = 0.9999

MODEL_ONLY = r"""
import json, sys, time, numpy as np, torch
from videobert_cli.config import VideoModelConfig
from videobert_cli.video.models import load_video_model
from videobert_cli.video.preprocess import normalize
from videobert_cli.video.encoder import FrameEncoder
spec = json.loads(sys.argv[1])
crops = torch.from_numpy(np.load(spec["crops"]))
model = load_video_model(VideoModelConfig(name=spec["model"], weights=spec["weights"]))
if spec["path"] == "plain":
    module = model.module.eval()
    def encode(batch):
        with torch.inference_mode():
            return module(normalize(batch, model.preprocessing)).numpy()
    runtime = "eager torch, default memory format"
else:
    encoder = FrameEncoder(model, device="cpu", precision="fp32", model_runtime=spec["path"])
    encode, runtime = encoder.encode, encoder.runtime
batches = [crops[i:i + 32] for i in range(0, len(crops), 32)]
features = np.concatenate([encode(b) for b in batches])  # one pass (also the warm-up)
full = [b for b in batches if len(b) == 32]
started, frames = time.perf_counter(), 0
while frames < spec["min_frames"]:
    for b in full:
        encode(b)
        frames += len(b)
seconds = time.perf_counter() - started
np.save(spec["features"], features)
print(json.dumps({"fps": frames / seconds, "frames": frames, "runtime": runtime}))
"""


def tree_pss_kb(root: int) -> int:
    """Proportional set size of ``root`` and its descendants (shared pages counted once)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
        stack.extend(children.get(pid, []))
    return total


def timed_command(command: list[str], env: dict) -> dict:
    """Wall time of ``command``, with nothing sampling it."""
    started = time.perf_counter()
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-2000:]}")
    return {"wall_s": wall}


def run_command(command: list[str], env: dict) -> dict:
    """Wall time, the peak of the summed PSS of ``command``'s process tree (what it really holds),
    and the peak RSS of its largest process (what ``/usr/bin/time`` reports), in MB."""
    with PeakRss(interval=0.05) as peaks:
        existing = set(peaks.peaks)
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        peak_pss = 0
        while process.poll() is None:
            peak_pss = max(peak_pss, tree_pss_kb(process.pid))
            time.sleep(0.05)
        stdout, stderr = process.communicate()
        wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    mine = {pid: kb for pid, (role, kb) in peaks.peaks.items() if pid not in existing and pid != os.getpid()}
    return {"wall_s": wall, "peak_pss_mb": peak_pss / 1024, "largest_process_peak_rss_mb": max(mine.values()) / 1024,
            "processes": len(mine), "stdout": stdout}


def bench_model(model: str, video: str, rounds: int, env: dict, work: Path, copies: int = 1) -> dict:
    weights = weights_for(model)
    videobert = [sys.executable, "-c", "from videobert_cli.cli.app import main; main()"]
    flags = ["--video-model", model, "--video-weights", weights, "--fps", f"{FPS:g}", "--device", "cpu",
             "--precision", "fp32"]
    # the sampled frames (indices) and their crops, from one untimed run of ours; it also fills
    # the ONNX export cache, as any earlier run on this machine would have
    reference = work / f"{model}-ref.h5"
    run_command([*videobert, "--quiet", "extract-video", video, "-o", str(reference), *flags], env)
    with h5py.File(reference) as f:
        indices = f["video/frame_indices"][()]
        ours_features = f["video/features"][()].astype(np.float32)
    np.save(work / "indices.npy", indices)
    crops = work / f"{model}-crops.npy"
    # the same sampled frames' crops, decoded by our decoder in a fresh interpreter
    spec = {"kind": "decode", "model": model, "weights": weights, "batch_size": 32, "video": video, "fps": FPS,
            "save_crops": str(crops), "save_max": len(indices)}
    run_measurement(spec, env=env)

    result: dict = {"model": model, "weights": weights, "frames": int(len(indices)) * copies, "copies": copies,
                    "model_only": {}}
    for path in ("plain", "torch", "auto"):
        spec = {"crops": str(crops), "model": model, "weights": weights, "path": path, "min_frames": 256,
                "features": str(work / f"{model}-{path}.npy")}
        out = subprocess.run([sys.executable, "-c", MODEL_ONLY, json.dumps(spec)], cwd=ROOT, env=env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"model-only {path} failed:\n{out.stderr[-2000:]}")
        result["model_only"][path] = json.loads(out.stdout.strip().splitlines()[-1])
    plain = np.load(work / f"{model}-plain.npy")
    for path in ("torch", "auto"):
        other = np.load(work / f"{model}-{path}.npy")
        cosine, diff = agreement(plain, other)
        result["model_only"][path]["min_cosine_vs_plain"] = cosine
        result["model_only"][path]["max_abs_diff_vs_plain"] = diff

    folder = work / f"{model}-in"
    folder.mkdir(exist_ok=True)
    videos = []
    for copy in range(copies):
        linked = folder / f"{copy}-{Path(video).name}"
        if not linked.exists():
            linked.symlink_to(video)
        videos.append(str(linked))
    extract_output = str(work / f"{model}-xv.h5") if copies == 1 else str(work / f"{model}-xv")
    commands = {
        "plain extractor": [sys.executable, "-m", "bench.plain_extractor", *videos, "--indices",
                            str(work / "indices.npy"), "--model", model, "--weights", weights,
                            "-o", str(work / f"{model}-peer.npy")],
        "extract-video": [*videobert, "--quiet", "extract-video", *videos, "-o", extract_output, *flags],
        "run": [*videobert, "--quiet", "run", str(folder), "-o", str(work / f"{model}-run"), "--force", *flags],
    }
    frames = len(indices) * copies
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    for round_ in range(rounds):
        order = list(commands) if round_ % 2 == 0 else list(reversed(commands))
        for name in order:
            measured = timed_command(commands[name], env)
            measured["fps"] = frames / measured["wall_s"]
            runs[name].append(measured)
            print(f"  {model} round {round_} {name}: {measured['fps']:.1f} f/s", flush=True)
    memory = {}
    for name in commands:
        memory[name] = run_command(commands[name], env)
        print(f"  {model} memory run {name}: peak PSS {memory[name]['peak_pss_mb']:.0f} MB, largest process "
              f"{memory[name]['largest_process_peak_rss_mb']:.0f} MB", flush=True)
    result["end_to_end"] = {
        name: {"fps_median": statistics.median(r["fps"] for r in measured),
               "fps_all": [round(r["fps"], 2) for r in measured],
               "peak_pss_mb": memory[name]["peak_pss_mb"],
               "largest_process_peak_rss_mb": memory[name]["largest_process_peak_rss_mb"]}
        for name, measured in runs.items()
    }
    peer = np.load(work / f"{model}-peer.npy")[: len(indices)]  # the first video's frames
    result["ours_vs_plain_extractor_min_cosine"] = agreement(peer, ours_features)[0]
    return result


def report(results: list[dict]) -> str:
    rows, checks = [], []
    for r in results:
        plain = r["model_only"]["plain"]["fps"]
        for path, label in (("plain", "plain eager (peer)"), ("torch", "ours, torch"), ("auto", "ours, default")):
            m = r["model_only"][path]
            rows.append([r["model"], f"model-only {label}", f"{m['fps']:.1f}", f"{m['fps'] / plain:.2f}", "-",
                         f"{m.get('min_cosine_vs_plain', 1.0):.7f}", m["runtime"]])
        peer_pss = r["end_to_end"]["plain extractor"]["peak_pss_mb"]
        for name, e in r["end_to_end"].items():
            rows.append([r["model"], f"end to end, {name}", f"{e['fps_median']:.1f}", f"{e['fps_median'] / plain:.2f}",
                         f"{e['peak_pss_mb']:.0f} / {e['largest_process_peak_rss_mb']:.0f}", "-",
                         ", ".join(f"{x:g}" for x in e["fps_all"])])
            if name != "plain extractor":
                checks.append(f"{r['model']} {name}: {e['fps_median'] / plain:.2f} x plain model-only "
                              f"{verdict(e['fps_median'] >= TARGET_SPEEDUP * plain)}; peak memory (PSS) {e['peak_pss_mb']:.0f}"
                              f" vs {peer_pss:.0f} MB {verdict(e['peak_pss_mb'] <= peer_pss)}")
        cosine = r["model_only"]["auto"]["min_cosine_vs_plain"]
        checks.append(f"{r['model']} features, ours vs plain eager on the same crops: min cosine {cosine:.7f}, max abs "
                      f"diff {r['model_only']['auto']['max_abs_diff_vs_plain']:.1e} {verdict(cosine >= MIN_COSINE)}; "
                      f"ours vs the plain extractor end to end: min cosine {r['ours_vs_plain_extractor_min_cosine']:.5f}")
    headers = ["model", "path", "frames/s", "x plain", "peak PSS / largest RSS MB", "min cosine", "notes"]
    return table(headers, rows) + "\n\n" + "\n".join(checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet-lite0,resnet50")
    parser.add_argument("--video", default="720p_1min")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--copies", type=int, default=1, help="videos per command (links to the video)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    env = measurement_env()
    video = ensure_inputs([args.video], 5000, env)[args.video]["path"]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    work = Path(tempfile.mkdtemp(prefix="videobert-peer-"))
    env = dict(env, VIDEOBERT_CACHE=str(work / "cache"))  # exported once below, by the untimed run
    try:
        results = [bench_model(model, video, args.rounds, env, work, args.copies) for model in args.models.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(results)
    print(f"\n{started}, {args.copies} x {args.video} at --fps {FPS:g}, {args.rounds} rounds\n{text}")
    if args.json:
        Path(args.json).write_text(json.dumps({"started": started, "machine": machine_facts(), "video": args.video,
                                               "copies": args.copies, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
