"""Shared option aliases, so a flag reads the same in every command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from videobert_cli.config import DEFAULT_CLIP_FPS, DEFAULT_CLIP_LEN, DEFAULT_FPS, RuntimeConfig

Device = Annotated[
    Optional[str],
    typer.Option(
        "--device",
        help="auto | cpu | cuda | cuda:N (auto: CUDA when present). Overrides the global flag. "
        "`run` also takes a list, one worker per device: cuda:0,cuda:1.",
    ),
]
BatchSize = Annotated[
    Optional[int], typer.Option("--batch-size", min=1, help=f"Frames (or text windows) per model call. [default: {RuntimeConfig.batch_size}]")
]
Precision = Annotated[
    str,
    typer.Option(
        "--precision",
        help="fp32 | bf16 | fp16 | auto. auto = fp32 on CPU, fp16 on CUDA. bf16 is ~2.5x faster on CPUs with AMX/AVX-512 bf16.",
    ),
]
Output = Annotated[Path, typer.Option("--output", "-o", help="A .h5 file (one input) or a directory (one .h5 per input).")]

Fps = Annotated[Optional[float], typer.Option("--fps", help=f"Frames sampled per second of video. [default: {DEFAULT_FPS}]")]
NumFrames = Annotated[
    Optional[int], typer.Option("--num-frames", min=1, help="Sample exactly N frames spread uniformly (instead of --fps).")
]
VideoModel = Annotated[str, typer.Option("--video-model", help="Video model: efficientnet-lite0 (bundled), a torchvision name, or hf:NAME (CLIP/SigLIP/VideoMAE from transformers).")]
VideoWeights = Annotated[
    str,
    typer.Option(
        "--video-weights",
        help="default | a torchvision weights name (IMAGENET1K_V2) | none (random, for timing) | path to .safetensors/.pth.",
    ),
]
TextModel = Annotated[
    str, typer.Option("--text-model", help="all-minilm-l6-v2 (bundled), a Hugging Face name, a local model directory, or hf:NAME (the text tower of a CLIP/SigLIP model).")
]
MaxLength = Annotated[
    Optional[int], typer.Option("--max-length", help="Tokens per text window incl. [CLS]/[SEP] (default: the model's maximum).")
]
FusionWeights = Annotated[
    Optional[Path], typer.Option("--fusion-weights", help="Trained fusion checkpoint (.safetensors). Without it: seeded init.")
]
FusionSeed = Annotated[int, typer.Option("--fusion-seed", help="Seed of the untrained fusion initialisation.")]
DModel = Annotated[int, typer.Option("--d-model", help="Width of the fusion Transformer (untrained fusion only).")]
Layers = Annotated[int, typer.Option("--layers", help="Fusion Transformer layers (untrained fusion only).")]
Heads = Annotated[int, typer.Option("--heads", help="Attention heads (untrained fusion only).")]
Dtype = Annotated[str, typer.Option("--dtype", help="Stored feature dtype: float32 | float16.")]
Compression = Annotated[Optional[str], typer.Option("--compression", help="HDF5 compression: lzf | gzip (default: none).")]
ClipLen = Annotated[
    Optional[int], typer.Option("--clip-len", min=1, help=f"Clip models: frames per clip. [default: {DEFAULT_CLIP_LEN}; VideoBERT: 30]")
]
ClipFps = Annotated[
    Optional[float], typer.Option("--clip-fps", help=f"Clip models: frames per second inside clips. [default: {DEFAULT_CLIP_FPS:g}; VideoBERT: 20]")
]
ClipStride = Annotated[
    Optional[int], typer.Option("--clip-stride", min=1, help="Clip models: frames between clip starts. [default: clip length]")
]
DropTail = Annotated[
    bool, typer.Option("--drop-tail", help="Clip models: drop a last clip shorter than --clip-len (default: pad it).")
]
Align = Annotated[
    str,
    typer.Option(
        "--align",
        help="none | sentences: also write one VideoBERT segment ([CLS] text [>] video [SEP]) per timed cue.",
    ),
]
Devices = Annotated[
    Optional[str],
    typer.Option(
        "--devices",
        help="Several devices, one worker process each: all (every visible GPU) or a list (cuda:0,cuda:1). "
        "Instead of --device.",
    ),
]
