"""The CPU's fp32 paths side by side, in one process, on the same crops, alternating:

    python -m bench.cpu_paths --model resnet50 --rounds 4
    python -m bench.cpu_paths --model efficientnet-lite0 --paths eager,channels_last,compile,onnxruntime,openvino

Paths (all fp32, batch 32, the model's own normalisation):

``eager``          plain eager torchvision-style: the default memory format (the peer's way)
``channels_last``  model and input in channels-last (what FrameEncoder does for fp32 on the CPU)
``encoder``        videobert's FrameEncoder itself (whatever it does by default)
``compile``        ``torch.compile`` (inductor) of the channels-last model; compile time reported apart
``onnxruntime``    the model exported to ONNX, run by ONNX Runtime (CPU provider)
``openvino``       the model converted by OpenVINO (CPU plugin)

Each round runs every path once over all full batches, in an order that alternates between
rounds (on a shared 2-core machine the speed drifts by +-10% within minutes, so only
ratios taken within one round mean much). Reports per path the median frames/s over rounds,
the median ratio to ``eager`` per round, and agreement with ``eager``: max abs difference
and the minimum per-frame cosine. A path that fails to build is reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BATCH = 32


def _crops(model: str, weights: str) -> np.ndarray:
    from bench.ab import _crops as bench_crops

    return np.load(bench_crops(model, weights))


def build_paths(model_name: str, weights: str, names: list[str], sample: torch.Tensor):
    """{path name: (callable uint8 crops -> float32 numpy features, build seconds)}."""
    from videobert_cli.config import VideoModelConfig
    from videobert_cli.video.encoder import FrameEncoder
    from videobert_cli.video.models import load_video_model
    from videobert_cli.video.preprocess import normalize

    loaded = load_video_model(VideoModelConfig(name=model_name, weights=weights))
    prep = loaded.preprocessing

    def plain_input(crops):
        return normalize(crops, prep, device="cpu")

    def cl_input(crops):
        return normalize(crops, prep, device="cpu", channels_last=True)

    paths = {}
    for name in names:
        started = time.perf_counter()
        try:
            if name == "eager":
                module = load_video_model(VideoModelConfig(name=model_name, weights=weights)).module.eval()

                def run(crops, module=module):
                    with torch.inference_mode():
                        return module(plain_input(crops)).numpy()
            elif name == "channels_last":
                module = load_video_model(VideoModelConfig(name=model_name, weights=weights)).module.eval()
                module = module.to(memory_format=torch.channels_last)

                def run(crops, module=module):
                    with torch.inference_mode():
                        return module(cl_input(crops)).numpy()
            elif name == "encoder":
                encoder = FrameEncoder(load_video_model(VideoModelConfig(name=model_name, weights=weights)),
                                       device="cpu", precision="fp32")
                run = encoder.encode
            elif name == "compile":
                module = load_video_model(VideoModelConfig(name=model_name, weights=weights)).module.eval()
                module = module.to(memory_format=torch.channels_last)
                compiled = torch.compile(module)

                def run(crops, compiled=compiled):
                    with torch.inference_mode():
                        return compiled(cl_input(crops)).numpy()
                run(sample)  # compile now, timed as build
            elif name == "onnxruntime":
                import onnxruntime as ort

                module = load_video_model(VideoModelConfig(name=model_name, weights=weights)).module.eval()
                path = Path(tempfile.mkdtemp()) / "model.onnx"
                x = plain_input(sample)
                torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"],
                                  dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
                options = ort.SessionOptions()
                options.intra_op_num_threads = torch.get_num_threads()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

                def run(crops, session=session):
                    return session.run(None, {"x": plain_input(crops).numpy()})[0]
            elif name == "openvino":
                import openvino as ov

                module = load_video_model(VideoModelConfig(name=model_name, weights=weights)).module.eval()
                x = plain_input(sample)
                ov_model = ov.convert_model(module, example_input=x)
                core = ov.Core()
                compiled_ov = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                   "INFERENCE_NUM_THREADS": torch.get_num_threads()})

                def run(crops, compiled_ov=compiled_ov):
                    return compiled_ov(plain_input(crops).numpy())[0]
            else:
                raise ValueError(f"unknown path {name}")
            run(sample)  # warm-up
            paths[name] = (run, time.perf_counter() - started)
        except Exception as error:  # report and go on
            print(f"  {name}: could not build: {error.__class__.__name__}: {str(error).splitlines()[0][:200]}",
                  flush=True)
    return paths


def agreement(ref: np.ndarray, other: np.ndarray) -> dict:
    ref = ref.astype(np.float64)
    other = other.astype(np.float64)
    cos = (ref * other).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(other, axis=1) + 1e-30)
    return {"max_abs_diff": float(np.abs(ref - other).max()), "min_cosine": float(cos.min()),
            "max_abs_ref": float(np.abs(ref).max())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_paths")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--weights", default=None, help="default: real weights when cached, else none")
    parser.add_argument("--paths", default="eager,channels_last,encoder,compile,onnxruntime")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--frames", type=int, default=128, help="crops per path per round (full batches)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from bench.run import weights_for

    weights = args.weights or weights_for(args.model)
    crops = torch.from_numpy(_crops(args.model, weights))
    frames = min(len(crops), args.frames) // BATCH * BATCH
    batches = [crops[i:i + BATCH] for i in range(0, frames, BATCH)]
    names = [n for n in args.paths.split(",") if n]
    print(f"{args.model} (weights {weights}), {frames} frames per path per round, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}", flush=True)
    paths = build_paths(args.model, weights, names, batches[0])
    features = {name: np.concatenate([run(b) for b in batches]) for name, (run, _) in paths.items()}
    speeds: dict[str, list[float]] = {name: [] for name in paths}
    order = list(paths)
    for round_index in range(args.rounds):
        for name in (order if round_index % 2 == 0 else order[::-1]):
            run = paths[name][0]
            started = time.perf_counter()
            for b in batches:
                run(b)
            speeds[name].append(frames / (time.perf_counter() - started))
        print(f"  round {round_index + 1}: " + ", ".join(f"{n} {speeds[n][-1]:.1f}" for n in order), flush=True)
    result = {"model": args.model, "weights": weights, "frames": frames, "rounds": args.rounds, "paths": {}}
    base = "eager" if "eager" in paths else order[0]
    for name in order:
        ratios = [a / b for a, b in zip(speeds[name], speeds[base])]
        result["paths"][name] = {"fps_median": statistics.median(speeds[name]), "fps": speeds[name],
                                 f"ratio_vs_{base}_median": statistics.median(ratios),
                                 "build_s": paths[name][1], **agreement(features[base], features[name])}
    print(f"\n| path | frames/s (median of {args.rounds}) | vs {base} (median ratio) | build s | "
          f"max abs diff vs {base} | min per-frame cosine |")
    print("|---|---|---|---|---|---|")
    for name, r in result["paths"].items():
        print(f"| {name} | {r['fps_median']:.1f} | {r[f'ratio_vs_{base}_median']:.2f}x | {r['build_s']:.1f} | "
              f"{r['max_abs_diff']:.2g} | {r['min_cosine']:.7f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
