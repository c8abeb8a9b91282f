"""A/B of two commits end to end: alternating pairs of model-only and end-to-end runs.

    python -m bench.ab 6186928 HEAD                      # EfficientNet-Lite0, 720p 1-minute, --fps 5, 6 rounds
    python -m bench.ab 6186928 HEAD --video 1080p_1min --fps 1 --e2e-only --rounds 4
    python -m bench.ab HEAD HEAD --env-b OMP_WAIT_POLICY=PASSIVE   # one commit, two environments
    python -m bench.ab HEAD~1 HEAD --engine ray --e2e-only         # end to end on the Ray engine

On a small CPU machine one model-only run moves by +-10% from the next (see
docs/benchmarks.md), more than most changes are worth. This driver checks both commits out
into temporary git worktrees and, round after round, runs ``bench.measure`` of each one in
turn (the order alternates between rounds): model-only on the benchmark's saved crops, then
end to end on one video. Each measurement is a fresh interpreter whose ``videobert_cli`` is
the worktree's (``bench.measure`` prints which package it measured; the driver checks it). It
prints every pair, then per commit the mean and median end-to-end frames/s, the median ratio
to its model-only run, and in how many rounds B was faster than A.

Inputs are the benchmark's (``bench/inputs.py``, cached in ``bench/.cache``); the crops for
model-only are made by a decode-only run of this checkout when they are missing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import inputs
from bench.run import (BATCH, ROOT, end_to_end_spec, ensure_inputs, measurement_env, model_only_spec,
                       run_measurement, weights_for)


def _measure(checkout: Path, spec: dict, extra_env: dict[str, str] | None = None) -> dict:
    env = {**measurement_env(checkout), **(extra_env or {})}
    result = run_measurement(spec, env=env, checkout=checkout)
    if Path(result["package"]).resolve() != (checkout / "videobert_cli").resolve():
        raise RuntimeError(f"measured {result['package']}, not the worktree {checkout}")
    return result


def _crops(model: str, weights: str) -> Path:
    """The 720p fps-5 crops model-only encodes (the benchmark's own file, made if missing)."""
    path = inputs.CACHE / "work" / f"crops_{model}_720p_fps5.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        spec = {"kind": "decode", "model": model, "weights": weights, "batch_size": BATCH,
                "video": str(inputs.video_path("720p_1min")), "fps": 5.0, "save_crops": str(path), "save_max": 300}
        _measure(ROOT, spec)
    return path


def _assignments(pairs: list[str]) -> dict[str, str]:
    """``["NAME=VALUE", ...]`` as a dict; a pair without ``=`` is a usage error."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="commit A (e.g. the one before a change)")
    parser.add_argument("b", help="commit B")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--video", default="720p_1min", choices=sorted(inputs.VIDEOS))
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--e2e-only", action="store_true", help="no model-only runs (no ratios)")
    parser.add_argument("--engine", default="local", choices=["local", "ray"],
                        help="engine of the end-to-end runs (ray: a local instance with every core)")
    parser.add_argument("--engine-option", action="append", default=[], metavar="NAME=NUMBER",
                        help="an engine option of the end-to-end runs, e.g. cpus_per_worker=2 (repeatable)")
    for label in ("a", "b"):
        parser.add_argument(f"--env-{label}", action="append", default=[], metavar="NAME=VALUE",
                            help=f"set this in the environment of {label.upper()}'s measurements (repeatable)")
    args = parser.parse_args(argv)
    try:
        extra_env = {"A": _assignments(args.env_a), "B": _assignments(args.env_b)}
    except ValueError as error:
        parser.error(str(error))

    try:
        videos = ensure_inputs(["warmup_720p_4s", "720p_1min", args.video], 5000, measurement_env())
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    weights = weights_for(args.model)
    base = {"model": args.model, "weights": weights, "batch_size": BATCH, "threads": None}
    model_spec = model_only_spec(base, _crops(args.model, weights), "fp32", "cpu", 256)
    e2e_spec = end_to_end_spec(base, videos[args.video]["path"], args.fps, "fp32", "cpu",
                               videos["warmup_720p_4s"]["path"])
    if args.engine != "local":
        e2e_spec["engine"] = args.engine
    try:
        e2e_spec["engine_options"] = {k: int(v) if v.isdigit() else float(v)
                                      for k, v in _assignments(args.engine_option).items()}
    except ValueError as error:
        parser.error(f"--engine-option: {error}")

    results: dict[str, list[tuple[float, float | None]]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="videobert-ab-") as tmp:
        checkouts = {}
        try:
            for label, rev in (("A", args.a), ("B", args.b)):
                checkouts[label] = Path(tmp) / label
                subprocess.run(["git", "worktree", "add", "--detach", "-q", str(checkouts[label]), rev], cwd=ROOT,
                               check=True)
            commits = {label: subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, check=True,
                                             capture_output=True, text=True).stdout.strip()
                       for label, path in checkouts.items()}
            for label, rev in (("A", args.a), ("B", args.b)):
                settings = " ".join(f"{k}={v}" for k, v in extra_env[label].items())
                print(f"{label} = {rev} ({commits[label]}){' with ' + settings if settings else ''}")
            options = " ".join(f"{k}={v:g}" for k, v in e2e_spec["engine_options"].items())
            print(f"{args.model}, {args.video} at --fps {args.fps:g}, {args.rounds} rounds, {args.engine} engine"
                  f"{' with ' + options if options else ''}")
            for round_ in range(args.rounds):
                for label in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                    started = time.strftime("%H:%M:%S")
                    model = None if args.e2e_only else _measure(checkouts[label], model_spec, extra_env[label])["fps"]
                    e2e = _measure(checkouts[label], e2e_spec, extra_env[label])
                    fps = e2e["fps_excl_load"]
                    results[label].append((fps, model))
                    stages = " ".join(f"{k}={v:.1f}" for k, v in sorted(e2e["timings"].items())
                                      if isinstance(v, (int, float)))
                    shown = f"model-only {model:6.2f}  ratio {fps / model:.3f}  " if model else ""
                    print(f"{started} round {round_} {label}: {shown}end to end {fps:6.2f} f/s  ({stages}; "
                          f"foreign load {e2e['_load']['foreign_cores']:.2f} cores)", flush=True)
        finally:
            for path in checkouts.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)

    for label in ("A", "B"):
        fps = [f for f, _ in results[label]]
        line = f"{label}: end to end mean {statistics.mean(fps):.2f}, median {statistics.median(fps):.2f} f/s"
        if not args.e2e_only:
            line += f"; ratio to model-only median {statistics.median(f / m for f, m in results[label]):.3f}"
        print(line)
    wins = sum(b[0] > a[0] for a, b in zip(results["A"], results["B"]))
    print(f"B faster than A in {wins} of {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
