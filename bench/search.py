"""Search latency and index build time (not a test; figures go to docs/benchmarks.md):

    python -m bench.search --moments 100000 1000000 --dim 512
    python -m bench.search --build-files 100 --build-frames 1000 --fusion-windows 2000

``query``   exact cosine top-k over M random L2-normalised float16 moments of ``--dim``
            (:func:`videobert_cli.search.engine.cosine_scores` as ``search`` calls it, + the merging of
            :func:`~videobert_cli.search.moments.merge_hits`, top 10), median of ``--queries``
            queries; plus the time to read those embeddings from an index file (``search/``),
            which a CLI query pays once, and torch's matmul on the same data for comparison.
``build``   ``write_index`` over ``--build-files`` synthetic feature files of ``--build-frames``
            float16 rows at 1 frame/s (the default 4 s windows every 2 s).
``fusion``  video-only [CLS] of ``--fusion-windows`` 4-frame windows with the default fusion
            size (d_model 256, 2 layers) on 1280-d features: what computing the fusion space at
            query time costs, against storing it in the index.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float16)
    for lo in range(0, n, 1 << 16):
        block = rng.standard_normal((min(1 << 16, n - lo), dim)).astype(np.float32)
        out[lo:lo + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def bench_query(moments: int, dim: int, queries: int, folder: Path) -> dict:
    import torch

    from videobert_cli.search.engine import cosine_scores
    from videobert_cli.search.moments import merge_hits

    emb = random_unit(moments, dim, 0)
    per_file = 500
    file = (np.arange(moments) // per_file).astype(np.int32)
    start = (np.arange(moments) % per_file) * 2.0
    end = start + 4.0
    qs = random_unit(queries, dim, 1).astype(np.float32)
    score_s, rank_s, torch_s = [], [], []
    for q in qs:
        t = time.perf_counter()
        scores = cosine_scores(emb, q, exact_top=640)
        score_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        merge_hits(scores, file, start, end, 10)
        rank_s.append(time.perf_counter() - t)
    emb_t = torch.from_numpy(emb)
    for q in qs:
        t = time.perf_counter()
        torch.topk(emb_t.float() @ torch.from_numpy(q), 40)
        torch_s.append(time.perf_counter() - t)
    path = folder / f"emb-{moments}.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("search/embeddings", data=emb)
    read_s = []
    for _ in range(3):
        t = time.perf_counter()
        with h5py.File(path, "r") as f:
            f["search/embeddings"][()]
        read_s.append(time.perf_counter() - t)
    path.unlink()
    med = statistics.median
    return {"moments": moments, "dim": dim, "score_s": med(score_s), "merge_top10_s": med(rank_s),
            "query_s": med(a + b for a, b in zip(score_s, rank_s)), "torch_matmul_topk_s": med(torch_s),
            "read_from_index_s": med(read_s), "embeddings_mb": emb.nbytes / 1e6}


def bench_build(files: int, frames: int, dim: int, folder: Path) -> dict:
    from videobert_cli.features import VideoFeatures
    from videobert_cli.store.hdf5 import write_feature_file
    from videobert_cli.store.index import write_index

    rng = np.random.default_rng(0)
    out = folder / "corpus"
    for i in range(files):
        feats = rng.standard_normal((frames, dim)).astype(np.float16)
        write_feature_file(out / f"v{i:04d}.h5", video=VideoFeatures(feats, np.arange(frames, dtype=float),
                           np.arange(frames), attrs={"model_name": "bench", "duration": float(frames)}),
                           source=None, tool_version="bench", config_hash="bench", dtype="float16")
    t = time.perf_counter()
    index = write_index(out)
    seconds = time.perf_counter() - t
    with h5py.File(index, "r") as f:
        count = int(f["search"].attrs["count"])
    return {"files": files, "frames_per_file": frames, "dim": dim, "moments": count, "build_s": seconds,
            "ms_per_file": 1000 * seconds / files, "index_mb": index.stat().st_size / 1e6}


def bench_fusion(windows: int) -> dict:
    import torch

    from videobert_cli.fusion.model import FusionConfig, build_fusion
    from videobert_cli.search.moments import Windows
    from videobert_cli.search.spaces import FusionSpace, fusion_video

    config = FusionConfig(video_dim=1280, text_dim=384)
    space = FusionSpace(build_fusion(config, 0), Path("-"), "-", "video_text", "-", None, 1280, 384, "cpu")
    frames = windows * 2 + 2
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((frames, 1280)).astype(np.float32)
    times = np.arange(frames, dtype=float)
    lo = np.arange(windows) * 2
    w = Windows(lo, lo + 4, times[lo], times[lo] + 4)
    t = time.perf_counter()
    fusion_video(space, feats, times, w)
    seconds = time.perf_counter() - t
    return {"windows": windows, "seconds": seconds, "windows_per_s": windows / seconds,
            "threads": torch.get_num_threads(), "extrapolated_1M_s": 1e6 / (windows / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moments", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=7)
    parser.add_argument("--build-files", type=int, default=0)
    parser.add_argument("--build-frames", type=int, default=1000)
    parser.add_argument("--fusion-windows", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        for m in args.moments:
            print(json.dumps({"query": bench_query(m, args.dim, args.queries, Path(tmp))}), flush=True)
        if args.build_files:
            print(json.dumps({"build": bench_build(args.build_files, args.build_frames, args.dim, Path(tmp))}), flush=True)
    if args.fusion_windows:
        print(json.dumps({"fusion": bench_fusion(args.fusion_windows)}), flush=True)


if __name__ == "__main__":
    main()
