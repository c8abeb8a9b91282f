"""videobert-cli: VideoBERT-style video, text and fused features, written to self-describing HDF5.

The library does everything the ``videobert`` command does::

    from videobert_cli import PipelineConfig, extract_video, extract_text, fuse, run, load

    video = extract_video("clip.mp4")                 # VideoFeatures (per-frame CNN features)
    text = extract_text("clip.srt")                   # TextFeatures (token + cue features)
    fused = fuse(video, text)                         # FusedFeatures ([CLS] + video + text)
    report = run(["videos/"], "features/")            # one HDF5 file per video + manifest
    features = load("features/clip.h5")               # FeatureFile with .video/.text/.fused
    hits = search("a red circle", ["features/"], options=SearchOptions(fusion_weights="fusion.safetensors"))
"""

from videobert_cli.version import __version__

#: public name -> the module that defines it; imported on first use (PEP 562), so that importing
#: one submodule (a decode worker imports only the decode stack) does not import them all
_EXPORTS = {
    "extract_video": "api", "extract_text": "api", "fuse": "api", "run": "api",
    "extract_video_files": "api", "extract_text_files": "api", "fuse_files": "api",
    "load": "store.hdf5", "describe": "store.hdf5",
    "PipelineConfig": "config", "SamplingConfig": "config", "VideoModelConfig": "config",
    "TextModelConfig": "config", "FusionConfigOptions": "config", "RuntimeConfig": "config",
    "OutputConfig": "config",
    "VideoBertError": "errors",
    "VideoFeatures": "features", "TextFeatures": "features", "FusedFeatures": "features",
    "FeatureFile": "features",
    "is_aligned_pair": "aligned", "embed_text_queries": "aligned", "embed_images": "aligned",
    "search": "search.engine", "SearchOptions": "search.engine", "plot_data": "viz", "render_plot": "viz", "contact_sheet": "viz",
    "write_index": "store.index", "read_index": "store.index",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'videobert_cli' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"videobert_cli.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
