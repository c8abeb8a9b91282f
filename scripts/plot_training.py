#!/usr/bin/env python3
"""Plot training curves (train losses, validation loss and R@1 per epoch) of `videobert train` runs.

Usage::

    python scripts/plot_training.py run0/fusion.safetensors run1/fusion.safetensors ... -o curves.png

Reads the per-epoch history each checkpoint stores in its metadata (``losses``) and draws one
line per run: the total training loss, the validation ``tnce``/``nce`` loss and validation
text-to-video R@1. Needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def history(path: Path) -> tuple[str, list[dict]]:
    from videobert_cli.fusion.checkpoint import load_fusion_weights

    _, _, meta = load_fusion_weights(path)
    return f"seed {meta.get('seed')}", list(meta.get("losses") or [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), dpi=80)
    panels = [("train total loss", lambda h: h["train"].get("total")),
              ("validation loss (tnce, else nce)", lambda h: h["val"].get("tnce", h["val"].get("nce"))),
              ("validation t2v R@1", lambda h: h["val"].get("t2v_R@1"))]
    for path in args.weights:
        label, hist = history(path)
        epochs = [h["epoch"] for h in hist]
        for ax, (_, get) in zip(axes, panels):
            ax.plot(epochs, [get(h) for h in hist], label=label)
    for ax, (title, _) in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
