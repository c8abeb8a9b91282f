"""Text search against ``videobert eval`` on a captioned corpus (the shapes corpus of
``make train-demo``): for every distinct caption of FEATURES, ``search(caption, FEATURES,
fusion_weights=W, top=K)``; the share whose top K moments hold a video with that caption,
next to the R@K that ``videobert eval --all`` reports for the same files and weights.

    python -m bench.search_eval build/shapes/test_features --fusion-weights build/shapes/fusion.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from videobert_cli import load
    from videobert_cli.search.engine import SearchOptions, search
    from videobert_cli.training.evaluate import evaluate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", type=Path)
    parser.add_argument("--fusion-weights", type=Path, required=True)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    files = sorted(args.features.glob("*.h5"))
    caption = {f.stem: " ".join(load(f, groups=["text"]).text.cue_text) for f in files}
    queries = sorted(set(caption.values()))
    hits = 0
    for query in queries:
        result = search(query, [args.features], options=SearchOptions(top=args.top, fusion_weights=args.fusion_weights))
        hits += any(caption[m.video] == query for m in result.moments)
    report = evaluate(files, args.fusion_weights, all_files=True, cca=False)
    print(json.dumps({"files": len(files), "captions": len(queries), f"search_top{args.top}_share": hits / len(queries),
                      f"eval_t2v_R@{args.top}": report["results"]["trained"]["t2v"].get(f"R@{args.top}"),
                      "eval_untrained_t2v": report["results"]["untrained_fusion"]["t2v"].get(f"R@{args.top}"),
                      "chance": report["results"]["chance"]["t2v"].get(f"R@{args.top}")}, indent=2))


if __name__ == "__main__":
    main()
