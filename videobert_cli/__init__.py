"""videobert-cli: VideoBERT-style video, text and fused features, written to self-describing HDF5.

The library does everything the ``videobert`` command does::

    from videobert_cli import PipelineConfig, extract_video, extract_text, fuse, run, load

    video = extract_video("clip.mp4")                 # VideoFeatures (per-frame CNN features)
    text = extract_text("clip.srt")                   # TextFeatures (token + cue features)
    fused = fuse(video, text)                         # FusedFeatures ([CLS] + video + text)
    report = run(["videos/"], "features/")            # one HDF5 file per video + manifest
    features = load("features/clip.h5")               # FeatureFile with .video/.text/.fused
"""

from videobert_cli.version import __version__

from videobert_cli.aligned import embed_images, embed_text_queries, is_aligned_pair  # noqa: E402
from videobert_cli.api import (  # noqa: E402
    extract_text,
    extract_text_files,
    extract_video,
    extract_video_files,
    fuse,
    fuse_files,
    run,
)
from videobert_cli.config import (  # noqa: E402
    FusionConfigOptions,
    OutputConfig,
    PipelineConfig,
    RuntimeConfig,
    SamplingConfig,
    TextModelConfig,
    VideoModelConfig,
)
from videobert_cli.errors import VideoBertError  # noqa: E402
from videobert_cli.features import FeatureFile, FusedFeatures, TextFeatures, VideoFeatures  # noqa: E402
from videobert_cli.store.hdf5 import describe, load  # noqa: E402

__all__ = [
    "__version__",
    "extract_video",
    "extract_text",
    "fuse",
    "run",
    "extract_video_files",
    "extract_text_files",
    "fuse_files",
    "load",
    "describe",
    "PipelineConfig",
    "SamplingConfig",
    "VideoModelConfig",
    "TextModelConfig",
    "FusionConfigOptions",
    "RuntimeConfig",
    "OutputConfig",
    "VideoBertError",
    "VideoFeatures",
    "TextFeatures",
    "FusedFeatures",
    "FeatureFile",
    "is_aligned_pair",
    "embed_text_queries",
    "embed_images",
]
