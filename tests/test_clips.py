"""Clip models: clip sampling, tail rules, and features equal to an independent reference (issue 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from synth import make_video
from videobert_cli import PipelineConfig, SamplingConfig, VideoModelConfig, extract_video, load
from videobert_cli.cli.app import app
from videobert_cli.config import ConfigError
from videobert_cli.decoders.sampling import plan_clips
from videobert_cli.video.models import (
    LoadedVideoModel,
    Preprocessing,
    VideoModelEntry,
    get_video_model_entry,
    register_video_model,
)

TINY_PRE = Preprocessing(resize_size=40, crop_size=32, mean=(0.4, 0.4, 0.4), std=(0.2, 0.25, 0.3),
                         interpolation="bilinear", antialias=False)


class TinyClipNet(nn.Module):
    """A 3-D CNN with a classifier head, like torchvision's video models but tiny."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv3d(3, 8, kernel_size=3, padding=1)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):  # (B, 3, T, H, W)
        return self.fc(self.pool(torch.relu(self.stem(x))).flatten(1))


def _tiny_net() -> TinyClipNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        return TinyClipNet().eval()


def _load_tiny(config: VideoModelConfig) -> LoadedVideoModel:
    model = _tiny_net()
    model.fc = nn.Identity()
    return LoadedVideoModel("tiny-clip", model, 8, "input of fc", TINY_PRE, "none (seed 7)", "", kind="clip")


register_video_model(VideoModelEntry("tiny-clip", "test clip model", _load_tiny, lambda w: True, lambda: 8, kind="clip"))


def clip_config(**sampling) -> PipelineConfig:
    return PipelineConfig(sampling=SamplingConfig(fps=None, **sampling), video_model=VideoModelConfig(name="tiny-clip"))


@pytest.mark.parametrize(
    "num_sampled, length, stride, drop_tail, starts, real",
    [
        (22, 4, 4, False, [0, 4, 8, 12, 16, 20], [4, 4, 4, 4, 4, 2]),
        (22, 4, 4, True, [0, 4, 8, 12, 16], [4, 4, 4, 4, 4]),
        (22, 4, 2, False, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18], [4] * 10),
        (20, 4, 4, False, [0, 4, 8, 12, 16], [4] * 5),
        (3, 4, 4, False, [0], [3]),  # shorter than one clip: one padded clip
        (3, 4, 4, True, [], []),
        (10, 3, 5, False, [0, 5], [3, 3]),  # stride > length skips frames
    ],
)
def test_clip_plan_counts_and_tails(num_sampled, length, stride, drop_tail, starts, real):
    sampling = SamplingConfig(fps=None, clip_len=length, clip_fps=10.0, clip_stride=stride, drop_tail=drop_tail)
    plan = plan_clips(num_sampled, sampling, origin=0.0, duration=num_sampled / 10.0)
    assert plan.starts.tolist() == starts
    assert plan.real_frames.tolist() == real
    np.testing.assert_allclose(plan.start_times, np.array(starts) / 10.0)
    np.testing.assert_allclose(plan.end_times, np.minimum((np.array(starts) + length) / 10.0, num_sampled / 10.0))


def _reference_features(path, sampling: SamplingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Decode with decord directly, build clips by hand, run the tiny net with torchvision ops."""
    import decord
    from torchvision.transforms import functional as F

    reader = decord.VideoReader(str(path))
    starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
    duration = float(reader.get_frame_timestamp([len(reader) - 1])[0, 1])
    # the frame on screen at k / clip_fps; decord's float32 times are off by < 0.5 ms
    count = math.ceil((duration - 5e-4) * sampling.clip_fps)
    picks = [int(np.searchsorted(starts, k / sampling.clip_fps + 5e-4, side="right") - 1) for k in range(count)]
    net = _tiny_net()
    net.fc = nn.Identity()
    features, times = [], []
    start = 0
    while start < count:
        if start + sampling.clip_len > count and sampling.drop_tail:
            break
        indices = picks[start : start + sampling.clip_len]
        indices += [indices[-1]] * (sampling.clip_len - len(indices))
        frames = torch.from_numpy(reader.get_batch(indices).asnumpy()).permute(0, 3, 1, 2)
        frames = F.resize(frames, [40], antialias=False)
        frames = F.center_crop(frames, [32])
        frames = F.normalize(frames.float() / 255, TINY_PRE.mean, TINY_PRE.std)
        with torch.no_grad():
            features.append(net(frames.permute(1, 0, 2, 3)[None])[0].numpy())
        times.append(start / sampling.clip_fps)
        if start + sampling.clip_len >= count:
            break
        start += sampling.clip_stride
    return np.array(features), np.array(times)


@pytest.mark.parametrize("stride, drop_tail", [(4, False), (2, False), (4, True)])
def test_clip_features_equal_a_hand_built_reference(tmp_path, stride, drop_tail):
    video = make_video(tmp_path / "v.mp4", width=80, height=48, fps=25, num_frames=55)  # 2.2 s
    sampling = SamplingConfig(fps=None, clip_len=4, clip_fps=10.0, clip_stride=stride, drop_tail=drop_tail)
    ours = extract_video(video, clip_config(clip_len=4, clip_fps=10.0, clip_stride=stride, drop_tail=drop_tail))
    reference, times = _reference_features(video, sampling)
    assert ours.features.shape == reference.shape
    # the pipeline's uint8 resize and this float reference round differently (one level at most)
    cosine = (ours.features * reference).sum(1) / np.linalg.norm(ours.features, axis=1) / np.linalg.norm(reference, axis=1)
    assert np.all(cosine >= 0.9999), cosine
    np.testing.assert_allclose(ours.features, reference, atol=1e-2 * np.abs(reference).max())
    np.testing.assert_allclose(ours.timestamps, times, atol=1e-9)
    assert ours.attrs["sampling"] == {"mode": "clips", "clip_len": 4, "clip_fps": 10.0, "clip_stride": stride,
                                      "drop_tail": drop_tail}
    assert ours.extra["clip_frame_indices"].shape == (len(times), 4)
    if not drop_tail and stride == 4:
        assert ours.extra["clip_real_frames"].tolist() == [4, 4, 4, 4, 4, 2]
        assert ours.extra["clip_end"][-1] == pytest.approx(2.2, abs=1e-6)


def test_clips_round_trip_through_hdf5_via_the_cli(tmp_path):
    video = make_video(tmp_path / "v.mp4", width=80, height=48, fps=25, num_frames=30)
    out = tmp_path / "v.h5"
    result = CliRunner().invoke(app, ["extract-video", str(video), "-o", str(out), "--video-model", "tiny-clip",
                                      "--clip-len", "4", "--clip-fps", "10"])
    assert result.exit_code == 0, result.output
    data = load(out)
    assert data.video.features.shape == (3, 8)
    assert data.video.extra["clip_real_frames"].tolist() == [4, 4, 4]
    np.testing.assert_allclose(data.video.extra["clip_end"], [0.4, 0.8, 1.2], atol=1e-6)


def test_clip_options_need_a_clip_model_and_vice_versa(tmp_path):
    video = make_video(tmp_path / "v.mp4", width=64, height=48, fps=25, num_frames=10)
    config = PipelineConfig(sampling=SamplingConfig(fps=None, clip_len=4),
                            video_model=VideoModelConfig(name="mobilenet_v3_small", weights="none"))
    with pytest.raises(ConfigError, match="need a clip model"):
        extract_video(video, config)
    result = CliRunner().invoke(app, ["extract-video", str(video), "-o", str(tmp_path / "x.h5"), "--fps", "2",
                                      "--clip-len", "4", "--video-model", "tiny-clip"])
    assert result.exit_code == 2


def test_torchvision_video_models_are_clip_entries_with_their_feature_dims():
    dims = {name: (get_video_model_entry(name).kind, get_video_model_entry(name).feature_dim())
            for name in ("s3d", "r3d_18", "r2plus1d_18", "mc3_18", "mvit_v2_s")}
    assert dims == {"s3d": ("clip", 1024), "r3d_18": ("clip", 512), "r2plus1d_18": ("clip", 512),
                    "mc3_18": ("clip", 512), "mvit_v2_s": ("clip", 768)}
    r3d = get_video_model_entry("r3d_18").load(VideoModelConfig(name="r3d_18", weights="none"))
    assert (r3d.preprocessing.resize_size, r3d.preprocessing.crop_size, r3d.preprocessing.antialias) == (128, 112, False)
    s3d = get_video_model_entry("s3d").load(VideoModelConfig(name="s3d", weights="none"))
    with torch.no_grad():
        assert s3d.module(torch.zeros(1, 3, 16, 224, 224)).shape == (1, 1024)


def test_run_with_a_clip_model_matches_extract_video(tmp_path):
    from videobert_cli.pipeline.inputs import plan_inputs
    from videobert_cli.engines import run_batch

    video = make_video(tmp_path / "in" / "v.mp4", width=80, height=48, fps=25, num_frames=55)
    config = clip_config(clip_len=4, clip_fps=10.0)
    report = run_batch(plan_inputs([str(tmp_path / "in")]), tmp_path / "out", config)
    assert report.exit_code == 0, report.summary()
    stored = load(tmp_path / "out" / "v.h5")
    direct = extract_video(video, config)
    np.testing.assert_allclose(stored.video.features, direct.features, atol=1e-6)
    np.testing.assert_array_equal(stored.video.extra["clip_frame_indices"], direct.extra["clip_frame_indices"])
    assert stored.fused.sequence.shape[0] == 1 + 6  # [CLS] + six clips, no transcript
