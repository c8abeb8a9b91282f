"""The text and fusion stages (the video stage is in :mod:`videobert_cli.pipeline.stages`).

Each stage owns its model, built once and reused for every input.
"""

from __future__ import annotations

import numpy as np
import torch

from videobert_cli.config import PipelineConfig
from videobert_cli.devices import apply_torch_threads, resolve_device, resolve_precision
from videobert_cli.errors import ConfigError, FeatureFileError, InputError
from videobert_cli.features import FusedFeatures, FusedSegments, TextFeatures, VideoFeatures
from videobert_cli.pipeline.timing import StageTimer
from videobert_cli.text.encoder import TextEncoder
from videobert_cli.text.models import load_text_model
from videobert_cli.text.transcripts import Transcript


class TextStage:
    """Token and cue features of transcripts."""

    def __init__(self, config: PipelineConfig, *, device: str | None = None):
        apply_torch_threads(config.runtime.num_threads)
        self.config = config
        self.device = resolve_device(device or config.runtime.device)
        self.precision = resolve_precision(config.runtime.precision, self.device)
        # fp16 BERT on CPU is not supported; text always follows the device's documented default
        self.model = load_text_model(config.text_model)
        self.encoder = TextEncoder(
            self.model, device=self.device, precision=self.precision, batch_size=config.runtime.batch_size
        )

    @property
    def feature_dim(self) -> int:
        return self.model.hidden_size

    def identity(self) -> dict:
        return self.model.identity()

    def extract(self, transcript: Transcript, timer: StageTimer | None = None) -> TextFeatures:
        timer = timer or StageTimer()
        with timer.stage("text"):
            features = self.encoder.encode(transcript)
        features.attrs["source_path"] = transcript.source or ""
        features.attrs["precision"] = self.precision
        return features


def fusion_token_times(text: TextFeatures) -> np.ndarray:
    """Times fed to the fusion time embedding for text tokens.

    Stored token times are their cue's span; for fusion each token gets a point inside that
    span, in token order, so word order within a cue is visible to the (order-free) encoder.
    """
    times = np.array(text.token_start, dtype=np.float64, copy=True)
    if len(times) == 0:
        return times
    for cue in np.unique(text.token_cue):
        rows = np.flatnonzero(text.token_cue == cue)
        start, end = text.token_start[rows[0]], text.token_end[rows[0]]
        if np.isfinite(start) and np.isfinite(end):
            times[rows] = start + (np.arange(len(rows)) + 0.5) / len(rows) * (end - start)
    return times


class FusionStage:
    """The fusion Transformer, from a checkpoint or a seeded initialisation."""

    def __init__(
        self,
        config: PipelineConfig,
        *,
        video_dim: int,
        text_dim: int,
        video_model: str | None = None,
        text_model: str | None = None,
        video_weights: str | None = None,
        text_weights: str | None = None,
        device: str | None = None,
    ):
        """``video_weights``/``text_weights``: sha256 of the extractors' weights (None: not known);
        trained fusion weights refuse features of other weights of the same model."""
        from videobert_cli.fusion.checkpoint import load_fusion_weights, weights_sha256
        from videobert_cli.fusion.model import FusionConfig, build_fusion

        options = config.fusion
        self.device = resolve_device(device or config.runtime.device)
        if options.weights_path:
            model, fusion_config, metadata = load_fusion_weights(
                options.weights_path,
                expect_video_dim=video_dim,
                expect_text_dim=text_dim,
                expect_video_model=video_model,
                expect_text_model=text_model,
                expect_video_weights=video_weights,
                expect_text_weights=text_weights,
            )
            self.attrs = {
                "trained": True,
                "weights_path": str(options.weights_path),
                "weights_sha256": weights_sha256(options.weights_path),
                "checkpoint_metadata": metadata,
                "seed": -1,
            }
        else:
            fusion_config = FusionConfig(
                video_dim=video_dim,
                text_dim=text_dim,
                d_model=options.d_model,
                num_layers=options.num_layers,
                num_heads=options.num_heads,
                ff_dim=options.ff_dim,
            )
            model = build_fusion(fusion_config, seed=options.seed)
            self.attrs = {"trained": False, "weights_path": "", "weights_sha256": "", "seed": options.seed}
        self.model = model.to(self.device).eval()
        self.fusion_config = fusion_config
        self.attrs["config"] = fusion_config.to_dict()
        self.attrs["text_level"] = "tokens"
        self.attrs["layout"] = "[CLS] video... text..."

    def fuse(
        self, video: VideoFeatures | None, text: TextFeatures | None, timer: StageTimer | None = None
    ) -> FusedFeatures:
        """Fuse one video's features with its transcript's (either may be None)."""
        from videobert_cli.fusion.model import fuse_one

        timer = timer or StageTimer()
        self._check_inputs(video, text)
        with timer.stage("fuse"):
            out = fuse_one(
                self.model,
                video.features if video is not None else None,
                video.timestamps if video is not None else None,
                text.token_features if text is not None else None,
                fusion_token_times(text) if text is not None else None,
            )
        return FusedFeatures(
            sequence=out["sequence"],
            modality=out["modality"],
            time=out["time"],
            source_index=out["source_index"],
            cls=out["cls"],
            attrs=dict(self.attrs),
        )

    def _check_inputs(self, video: VideoFeatures | None, text: TextFeatures | None) -> None:
        """Widths the model takes, one time per row, and finite numbers (fp16 can overflow to
        inf; NaN in would make every fused position NaN, silently)."""
        for name, features, dim in (
            ("video", video, self.fusion_config.video_dim),
            ("text", text, self.fusion_config.text_dim),
        ):
            if features is None or len(features) == 0:
                continue
            rows, times = ((features.features, features.timestamps) if name == "video"
                           else (features.token_features, features.token_start))
            if rows.shape[1] != dim:
                raise ConfigError(f"{name} features are {rows.shape[1]}-d but the fusion model expects {dim}-d")
            if len(times) != len(rows):
                raise InputError(f"{name} features have {len(rows)} rows but {len(times)} times",
                                 hint="pass features as extract_video/extract_text or load() return them")
            finite = np.isfinite(rows).all(axis=1)
            if not finite.all():
                raise InputError(
                    f"{name} features hold NaN or inf in {int((~finite).sum())} of {len(rows)} rows",
                    reason="non-finite",
                    hint="with --precision fp16 try bf16 or fp32; for a file, extract it again",
                )

    def fuse_segments(
        self, video: VideoFeatures, text: TextFeatures, timer: StageTimer | None = None, *, batch_size: int = 16
    ) -> FusedSegments | None:
        """VideoBERT segments: each cue with the video positions inside its time span.

        Returns None when nothing can be aligned (untimed transcript, no cue inside the video).
        """
        from videobert_cli.fusion.align import align_segments

        timer = timer or StageTimer()
        self._check_inputs(video, text)
        segments, stats = align_segments(video, text)
        if not segments:
            return None
        token_times = fusion_token_times(text)
        d = self.fusion_config.d_model
        pieces: dict[str, list] = {k: [] for k in ("sequence", "modality", "time", "source_index", "cls")}
        with timer.stage("fuse"), torch.inference_mode():
            for start in range(0, len(segments), batch_size):
                batch = segments[start : start + batch_size]
                nv = max(len(seg.video_rows) for seg in batch)
                nt = max(len(seg.text_rows) for seg in batch)
                b = len(batch)
                v = torch.zeros(b, nv, self.fusion_config.video_dim)
                vt = torch.full((b, nv), float("nan"), dtype=torch.float64)
                vm = torch.zeros(b, nv, dtype=torch.bool)
                t = torch.zeros(b, nt, self.fusion_config.text_dim)
                tt = torch.full((b, nt), float("nan"), dtype=torch.float64)
                tm = torch.zeros(b, nt, dtype=torch.bool)
                for row, seg in enumerate(batch):
                    k, m = len(seg.video_rows), len(seg.text_rows)
                    v[row, :k] = torch.from_numpy(np.asarray(video.features[seg.video_rows], dtype=np.float32))
                    vt[row, :k] = torch.from_numpy(np.asarray(video.timestamps[seg.video_rows], dtype=np.float64))
                    vm[row, :k] = True
                    t[row, :m] = torch.from_numpy(np.asarray(text.token_features[seg.text_rows], dtype=np.float32))
                    tt[row, :m] = torch.from_numpy(token_times[seg.text_rows])
                    tm[row, :m] = True
                out = self.model(v.to(self.device), vt, vm, t.to(self.device), tt, tm, layout="videobert")
                for row, seg in enumerate(batch):
                    keep = out.mask[row].cpu().numpy()
                    modality = out.modality[row].cpu().numpy()[keep]
                    source = np.full(int(keep.sum()), -1, dtype=np.int32)
                    source[modality == 2] = seg.text_rows
                    source[modality == 1] = seg.video_rows
                    pieces["sequence"].append(out.sequence[row].float().cpu().numpy()[keep])
                    pieces["modality"].append(modality.astype(np.int8))
                    pieces["time"].append(out.time[row].cpu().numpy()[keep])
                    pieces["source_index"].append(source)
                    pieces["cls"].append(out.cls[row].float().cpu().numpy())
        lengths = [len(m) for m in pieces["modality"]]
        return FusedSegments(
            sequence=np.concatenate(pieces["sequence"]).reshape(-1, d),
            modality=np.concatenate(pieces["modality"]),
            time=np.concatenate(pieces["time"]),
            source_index=np.concatenate(pieces["source_index"]),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            cue_index=np.array([seg.cue_index for seg in segments], dtype=np.int32),
            cls=np.stack(pieces["cls"]),
            attrs={**{k: v for k, v in self.attrs.items()}, "layout": "[CLS] text... [>] video... [SEP]",
                   "alignment": "cue time span overlaps the video position's span", **stats},
        )


def require_group(features, name: str, path: str):
    """The named group of a loaded feature file, or a clear error."""
    group = getattr(features, name)
    if group is None:
        raise FeatureFileError(f"has no {name}/ group", path=path, hint=f"make it with `videobert extract-{name}`")
    return group
