"""The peers' way, as a baseline: decode, resize, crop, eager torch at fp32, batch 32, save .npy.

    python -m bench.plain_extractor VIDEO [VIDEO ...] --indices idx.npy --model resnet50 --weights none -o out.npy

What v-iashin/video_features does per frame model (eager torchvision, default memory format,
batch 32, features to .npy), here on exactly the frames given by ``--indices`` (frame numbers
in decoding order, as videobert stores them in ``video/frame_indices``) so that its features can be
compared frame by frame. Decoding is PyAV's, sequential, converting only the wanted frames.
The model and its preprocessing come from videobert's registry (plain torchvision modules).
Several videos (the same indices in each) are extracted by one process with the model loaded
once, as video_features does for a list of videos; their features are saved one after another.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from videobert_cli.config import VideoModelConfig
from videobert_cli.video.models import load_video_model

BATCH = 32


def frames(path: str, wanted: set[int]):
    """RGB uint8 (H, W, 3) arrays of the wanted frames, in order."""
    with av.open(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                yield frame.to_ndarray(format="rgb24")
            if index >= max(wanted):
                return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--indices", required=True)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--weights", default="default")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)

    model = load_video_model(VideoModelConfig(name=args.model, weights=args.weights))
    module, prep = model.module.eval(), model.preprocessing
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    wanted = set(int(i) for i in np.load(args.indices))
    features, batch = [], []

    def flush() -> None:
        x = torch.stack(batch).float().div_(255).sub_(mean).div_(std)
        with torch.inference_mode():
            features.append(module(x).numpy())
        batch.clear()

    for video in args.videos:
        for rgb in frames(video, wanted):
            image = torch.from_numpy(rgb).permute(2, 0, 1)
            image = F.resize(image, [prep.resize_size], interpolation=InterpolationMode(prep.interpolation),
                             antialias=prep.antialias)
            batch.append(F.center_crop(image, [prep.crop_size, prep.crop_size]))
            if len(batch) == BATCH:
                flush()
        if batch:
            flush()
    np.save(Path(args.output), np.concatenate(features).astype(np.float32))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
