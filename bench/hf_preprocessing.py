"""Agreement of the ``hf:`` preprocessing with transformers' processors (``python -m bench.hf_preprocessing``).

For CLIP-224 and SigLIP-224 processor configurations (transformers' defaults) and four frame
sizes: our uint8 crops against the processor's (torchvision backend, no rescale/normalise), our
normalised input against its ``pixel_values``, and ours against the PIL backend (what
transformers 4's "slow" processors computed). Frames are tests/synth.py's, with noise. Figures
are in docs/models-hf.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import synth  # noqa: E402

from videobert_cli.video.hf import preprocessing_from_processor  # noqa: E402
from videobert_cli.video.preprocess import normalize, resize_and_crop  # noqa: E402

SIZES = ((480, 640), (720, 1280), (1080, 1920), (361, 479))


def frames(height: int, width: int, count: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = [np.clip(synth.frame_pixels(i * 7, width, height).astype(np.int16) + rng.integers(-20, 21, (height, width, 3)),
                   0, 255).astype(np.uint8) for i in range(count)]
    return np.stack(out)


def main() -> None:
    from transformers import CLIPImageProcessor, SiglipImageProcessor
    from transformers.models.clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    for label, fast, pil in (("CLIP-224", CLIPImageProcessor(), CLIPImageProcessorPil()),
                             ("SigLIP-224", SiglipImageProcessor(), SiglipImageProcessorPil())):
        prep = preprocessing_from_processor(fast, label)
        for height, width in SIZES:
            batch = frames(height, width)
            ours_u8 = torch.from_numpy(resize_and_crop(batch, prep))
            theirs_u8 = fast(images=list(batch), do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
            ours = normalize(ours_u8, prep)
            theirs = fast(images=list(batch), return_tensors="pt")["pixel_values"]
            pil_levels = ((ours - pil(images=list(batch), return_tensors="pt")["pixel_values"])
                          * torch.tensor(prep.std).view(1, 3, 1, 1) * 255).abs()
            print(f"{label} {height}x{width}: uint8 crops max diff "
                  f"{(ours_u8.int() - theirs_u8.round().int()).abs().max().item()} levels; normalised max abs diff "
                  f"{(ours - theirs).abs().max().item():.2e}; vs PIL backend max {pil_levels.max().item():.1f} levels, "
                  f"{(pil_levels > 0.5).float().mean().item() * 100:.2f} % of pixels differ")


if __name__ == "__main__":
    main()
