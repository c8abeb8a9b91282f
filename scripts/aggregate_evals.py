#!/usr/bin/env python3
"""Mean and spread of `videobert eval --json` reports over training seeds.

Usage::

    python scripts/aggregate_evals.py seed0/test_eval.json seed1/test_eval.json ... [-o summary.json]

For every model in the reports (trained fusion, untrained fusion, unfused + CCA, chance) it
collects text-to-video R@1/R@5, video-to-text R@1 and each minimal-pair subset's two-way
choice accuracy, and writes mean, sample standard deviation (n - 1; 0 for one report), min,
max and the per-report values. Prints a Markdown table (mean +- sd) as well.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

MODELS = {"trained": "trained fusion", "untrained_fusion": "untrained fusion",
          "unfused_cca": "unfused + CCA", "chance": "chance"}


def metrics_of(entry: dict) -> dict[str, float]:
    """The flat metrics of one model entry of a report."""
    out = {}
    for direction in ("t2v", "v2t"):
        for k, v in (entry.get(direction) or {}).items():
            if k in ("R@1", "R@5") and isinstance(v, (int, float)):
                out[f"{direction} {k}"] = float(v)
    for name, found in (entry.get("contrasts") or {}).items():
        if found.get("accuracy") is not None:
            out[name] = float(found["accuracy"])
    return out


def aggregate(reports: list[dict]) -> dict:
    """``{model: {metric: {mean, sd, min, max, values}}}`` over ``reports``."""
    out: dict = {}
    for key in MODELS:
        per: dict[str, list[float]] = {}
        for report in reports:
            entry = report["results"].get(key)
            if entry is None or entry.get("comparable") is False:
                continue
            for name, value in metrics_of(entry).items():
                per.setdefault(name, []).append(value)
        if per:
            out[key] = {name: {"mean": statistics.fmean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0,
                               "min": min(v), "max": max(v), "values": v} for name, v in per.items()}
    return out


def markdown(summary: dict, n: int) -> str:
    names = list(dict.fromkeys(m for model in summary.values() for m in model))
    lines = [f"| model ({n} seeds, mean ± sd) | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for key, label in MODELS.items():
        if key in summary:
            cells = [f"{summary[key][m]['mean']:.3f} ± {summary[key][m]['sd']:.3f}" if m in summary[key] else ""
                     for m in names]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="write the summary JSON here")
    args = parser.parse_args(argv)
    reports = [json.loads(p.read_text(encoding="utf-8")) for p in args.reports]
    summary = {"reports": [str(p) for p in args.reports],
               "seeds": [r.get("checkpoint", {}).get("seed") for r in reports],
               "models": aggregate(reports)}
    if args.output:
        args.output.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(markdown(summary["models"], len(reports)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
