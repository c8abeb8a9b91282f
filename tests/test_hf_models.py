"""Models from transformers (``hf:``): tiny random CLIP, SigLIP and VideoMAE saved to a temp folder.

Every check holds our path to transformers' own: the processor's output on the same frames, the
model's own forward (``get_image_features``, ``get_text_features``, the classifier's input).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import synth
from conftest import minilm_dir
from videobert_cli.video.preprocess import resize_and_crop
from typer.testing import CliRunner

from videobert_cli.cli.app import app

TINY_TOWER = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
TINY_VISION = dict(TINY_TOWER, image_size=32, patch_size=8)
#: frame sizes with odd margins: 45x61 resizes to 32x43, whose centre crop starts at 5.5 (our
#: torchvision presets round it to 6, transformers rounds down to 5)
FRAME_SIZES = ((45, 61), (64, 48), (32, 32))
#: the uint8 crops are equal (same torchvision kernel on the same uint8 frames); after that ours
#: normalises x / 255 - mean / std, transformers (x - 255 mean) / (255 std): float rounding only
#: (measured at most 2.4e-7; docs/models-hf.md)
PIXEL_TOLERANCE = 1e-5
FEATURE_TOLERANCE = 1e-4


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _frames(height: int, width: int, count: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A tiny random CLIP with MiniLM's WordPiece tokenizer ([CLS] ... [SEP] frame the text)."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    directory = tmp_path_factory.mktemp("tiny-clip")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    config = CLIPConfig(
        text_config=dict(TINY_TOWER, vocab_size=len(tokenizer), max_position_embeddings=77,
                         bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=TINY_VISION, projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        CLIPModel(config).eval().save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory) -> Path:
    """A tiny random SigLIP with a word-level tokenizer that appends </s> (SigLIP's framing)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel

    directory = tmp_path_factory.mktemp("tiny-siglip")
    words = "a red square blue circle moves left right the on in".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", model_max_length=16)
    config = SiglipConfig(
        text_config=dict(TINY_TOWER, vocab_size=len(vocab), max_position_embeddings=16,
                         pad_token_id=0, eos_token_id=1),
        vision_config=TINY_VISION,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(8)
        SiglipModel(config).eval().save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def videomae_dir(tmp_path_factory) -> Path:
    """A tiny random VideoMAE video classifier: clips of 4 frames, tubelets of 2."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEVideoProcessor

    directory = tmp_path_factory.mktemp("tiny-videomae")
    config = VideoMAEConfig(**TINY_VISION, num_frames=4, tubelet_size=2, num_labels=5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(9)
        VideoMAEForVideoClassification(config).eval().save_pretrained(str(directory))
    VideoMAEVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        str(directory))
    return directory


@pytest.fixture(scope="module")
def vjepa2_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random V-JEPA 2 models, a video classifier and a pretrained-style backbone: 4 frames."""
    from transformers import VJEPA2Config, VJEPA2ForVideoClassification, VJEPA2Model, VJEPA2VideoProcessor

    config = VJEPA2Config(crop_size=32, patch_size=8, frames_per_clip=4, tubelet_size=2, hidden_size=32,
                          num_attention_heads=2, num_hidden_layers=1, mlp_ratio=2, num_pooler_layers=1,
                          pred_hidden_size=32, pred_num_attention_heads=2, pred_num_hidden_layers=1, num_labels=5)
    dirs = {}
    for kind, model_class in (("classifier", VJEPA2ForVideoClassification), ("backbone", VJEPA2Model)):
        dirs[kind] = tmp_path_factory.mktemp(f"tiny-vjepa2-{kind}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(10)
            model_class(config).eval().save_pretrained(str(dirs[kind]))
        VJEPA2VideoProcessor(crop_size=32).save_pretrained(str(dirs[kind]))
    return dirs


def _load(name: str):
    from videobert_cli.config import VideoModelConfig
    from videobert_cli.video.models import load_video_model

    return load_video_model(VideoModelConfig(name=name))


def _our_input(loaded, frames: np.ndarray) -> torch.Tensor:
    from videobert_cli.video.preprocess import normalize, resize_and_crop

    return normalize(resize_and_crop(frames, loaded.preprocessing), loaded.preprocessing)


# --- preprocessing ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["clip", "siglip"])
@pytest.mark.parametrize("size", FRAME_SIZES)
def test_frame_preprocessing_equals_the_processor(family, size, clip_dir, siglip_dir) -> None:
    from transformers import AutoImageProcessor

    directory = clip_dir if family == "clip" else siglip_dir
    loaded = _load(f"hf:{directory}")
    assert loaded.preprocessing.resize_mode == ("short_side" if family == "clip" else "square")
    assert loaded.preprocessing.interpolation == "bicubic"
    frames = _frames(*size)
    processor = AutoImageProcessor.from_pretrained(str(directory))
    expected = processor(images=list(frames), return_tensors="pt")["pixel_values"]
    ours = _our_input(loaded, frames)
    assert ours.shape == expected.shape == (3, 3, 32, 32)
    assert (ours - expected).abs().max().item() <= PIXEL_TOLERANCE
    crops = processor(images=list(frames), do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
    assert torch.equal(torch.from_numpy(resize_and_crop(frames, loaded.preprocessing)), crops.to(torch.uint8))


def test_video_preprocessing_equals_the_video_processor(videomae_dir) -> None:
    from transformers import AutoVideoProcessor

    loaded = _load(f"hf:{videomae_dir}")
    assert loaded.kind == "clip" and loaded.clip_len == 4 and loaded.preprocessing.interpolation == "bilinear"
    video = _frames(45, 61, count=4)
    expected = AutoVideoProcessor.from_pretrained(str(videomae_dir))(videos=[video], return_tensors="pt")
    expected = expected["pixel_values"][0]  # (T, 3, S, S)
    assert (_our_input(loaded, video) - expected).abs().max().item() <= PIXEL_TOLERANCE
    crops = AutoVideoProcessor.from_pretrained(str(videomae_dir))(
        videos=[video], do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(torch.from_numpy(resize_and_crop(video, loaded.preprocessing)), crops.to(torch.uint8))


def test_existing_models_keep_their_preprocessing_identity() -> None:
    from videobert_cli.video.models import Preprocessing

    keys = list(Preprocessing(256, 224, (0.5,) * 3, (0.5,) * 3).to_dict())
    assert keys == ["resize_size", "crop_size", "mean", "std", "interpolation", "antialias"]
    square = Preprocessing(224, 224, (0.5,) * 3, (0.5,) * 3, resize_mode="square", method="transformers")
    assert square.to_dict()["resize_mode"] == "square" and square.to_dict()["method"] == "transformers"


# --- features against transformers' forward ---------------------------------------------------
@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_frame_features_equal_get_image_features(family, clip_dir, siglip_dir) -> None:
    from transformers import AutoImageProcessor, AutoModel

    from videobert_cli.aligned import embed_images

    directory = clip_dir if family == "clip" else siglip_dir
    name = f"hf:{directory}"
    loaded = _load(name)
    frames = _frames(45, 61, seed=3)
    with torch.inference_mode():
        ours = loaded.module(_our_input(loaded, frames)).numpy()
    reference = AutoModel.from_pretrained(str(directory)).eval()
    pixels = AutoImageProcessor.from_pretrained(str(directory))(images=list(frames), return_tensors="pt")
    with torch.inference_mode():
        expected = reference.get_image_features(**pixels).pooler_output.numpy()
    assert ours.shape == (3, loaded.feature_dim)
    assert np.abs(ours - expected).max() <= FEATURE_TOLERANCE
    unit = embed_images(name, frames)
    assert np.abs(unit - expected / np.linalg.norm(expected, axis=1, keepdims=True)).max() <= FEATURE_TOLERANCE
    assert embed_images(name, frames[:0]).shape == (0, loaded.feature_dim)
    identity = loaded.identity()
    assert identity["weights_name"] == f"dir:{directory.resolve()}" and len(identity["weights_sha256"]) == 64


def test_clip_model_features_are_the_classifier_input(videomae_dir) -> None:
    from transformers import AutoVideoProcessor, VideoMAEForVideoClassification

    loaded = _load(f"hf:{videomae_dir}")
    video = _frames(48, 64, count=4, seed=5)
    clip = _our_input(loaded, video).view(1, 4, 3, 32, 32).permute(0, 2, 1, 3, 4)  # (B, 3, T, S, S)
    with torch.inference_mode():
        ours = loaded.module(clip)
    reference = VideoMAEForVideoClassification.from_pretrained(str(videomae_dir)).eval()
    pixels = AutoVideoProcessor.from_pretrained(str(videomae_dir))(videos=[video], return_tensors="pt")
    with torch.inference_mode():
        logits = reference(**pixels).logits
        assert (reference.classifier(ours) - logits).abs().max().item() <= FEATURE_TOLERANCE
    assert ours.shape == (1, 32)
    from videobert_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="clips of 4 frames"):
        loaded.module(torch.zeros(1, 3, 8, 32, 32))


@pytest.mark.parametrize("kind", ["classifier", "backbone"])
def test_vjepa2_features_match_transformers(kind, vjepa2_dirs) -> None:
    from transformers import AutoVideoProcessor, VJEPA2ForVideoClassification, VJEPA2Model

    directory = vjepa2_dirs[kind]
    loaded = _load(f"hf:{directory}")
    assert loaded.kind == "clip" and loaded.clip_len == 4 and loaded.feature_dim == 32
    assert loaded.preprocessing.resize_size == 36 and loaded.preprocessing.crop_size == 32  # 32 * 256 / 224
    video = _frames(45, 61, count=4, seed=6)
    processor = AutoVideoProcessor.from_pretrained(str(directory))
    pixels = processor(videos=[video], return_tensors="pt")["pixel_values_videos"]
    assert (_our_input(loaded, video) - pixels[0]).abs().max().item() <= PIXEL_TOLERANCE
    clip = _our_input(loaded, video).view(1, 4, 3, 32, 32).permute(0, 2, 1, 3, 4)
    with torch.inference_mode():
        ours = loaded.module(clip)
        if kind == "classifier":
            reference = VJEPA2ForVideoClassification.from_pretrained(str(directory)).eval()
            difference = reference.classifier(ours) - reference(pixel_values_videos=pixels).logits
        else:
            reference = VJEPA2Model.from_pretrained(str(directory)).eval()
            difference = ours - reference.get_vision_features(pixels).mean(dim=1)
    assert ours.shape == (1, 32) and difference.abs().max().item() <= FEATURE_TOLERANCE


# --- text tower and queries ---------------------------------------------------------------------
@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_text_tower_tokens_and_queries_match_transformers(family, clip_dir, siglip_dir) -> None:
    from transformers import AutoModel, AutoTokenizer

    from videobert_cli.aligned import embed_text_queries
    from videobert_cli.config import TextModelConfig
    from videobert_cli.text.encoder import TextEncoder
    from videobert_cli.text.models import load_text_model
    from videobert_cli.text.transcripts import Cue, Transcript

    directory = clip_dir if family == "clip" else siglip_dir
    name = f"hf:{directory}"
    padding = "max_length" if family == "siglip" else "longest"
    loaded = load_text_model(TextModelConfig(name=name))
    assert loaded.max_length == (77 if family == "clip" else 16)
    text = "a red square moves left"
    transcript = Transcript(cues=(Cue(text, 0.0, 1.0),), format="literal", source=None, encoding="utf-8",
                            warnings=())
    features = TextEncoder(loaded).encode(transcript)
    reference = AutoModel.from_pretrained(str(directory)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    inputs = tokenizer([text], padding=padding, max_length=loaded.max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = reference.text_model(**inputs).last_hidden_state[0].numpy()
    first = 1 if family == "clip" else 0  # [CLS] opens CLIP's window here, SigLIP's has no prefix
    tokens = len(features.token_ids)
    assert tokens == len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert np.abs(features.token_features - hidden[first : first + tokens]).max() <= FEATURE_TOLERANCE
    assert features.attrs["padding"] == padding

    queries = ["a red square", "blue circle moves right on the left"]
    batch = tokenizer(queries, padding=padding, truncation=True, max_length=loaded.max_length, return_tensors="pt")
    with torch.inference_mode():
        expected = reference.get_text_features(**batch).pooler_output.numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    ours = embed_text_queries(name, queries)
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= FEATURE_TOLERANCE
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert embed_text_queries(name, []).shape == (0, expected.shape[1])


def test_aligned_pairs_are_recognised_without_loading(clip_dir, videomae_dir, tiny_bert_dir) -> None:
    from videobert_cli.aligned import embed_text_queries, is_aligned_pair
    from videobert_cli.errors import ConfigError, ModelUnavailableError

    assert is_aligned_pair(f"hf:{clip_dir}", f"hf:{clip_dir}/")
    assert not is_aligned_pair(f"hf:{clip_dir}", None)
    assert not is_aligned_pair(f"hf:{clip_dir}", str(tiny_bert_dir))
    assert not is_aligned_pair("efficientnet-lite0", "all-minilm-l6-v2")
    assert not is_aligned_pair(f"hf:{videomae_dir}", f"hf:{videomae_dir}")
    assert not is_aligned_pair("hf:org/not-cached", "hf:org/not-cached")
    with pytest.raises(ConfigError):
        embed_text_queries("efficientnet-lite0", ["x"])
    with pytest.raises(ConfigError, match="not an aligned"):
        embed_text_queries(f"hf:{videomae_dir}", ["x"])
    with pytest.raises(ModelUnavailableError, match="offline"):
        embed_text_queries("hf:org/not-cached", ["x"])


# --- end to end ---------------------------------------------------------------------------------
def test_run_writes_image_text_features_of_the_decoded_frames(tmp_path: Path, clip_dir: Path) -> None:
    from transformers import AutoImageProcessor, AutoModel

    from videobert_cli import load
    from videobert_cli.decoders.base import open_video
    video = synth.make_video(tmp_path / "in" / "clip.mp4", width=64, height=48, fps=10, num_frames=20)
    synth.write_srt(tmp_path / "in" / "clip.srt", [(0.0, 1.0, "a red square"), (1.0, 2.0, "moves left")])
    name = f"hf:{clip_dir}"
    result = invoke("run", video, "-o", tmp_path / "out", "--video-model", name, "--text-model", name,
                    "--fps", "2", "--device", "cpu", "--precision", "fp32", "--d-model", "32", "--layers", "1",
                    "--heads", "2")
    assert result.exit_code == 0, result.output
    features = load(tmp_path / "out" / "clip.h5")
    stored = features.video.features
    indices = np.asarray(features.video.frame_indices)
    assert stored.shape == (len(indices), 16) and len(indices) == 4
    frames = np.concatenate([chunk for _, chunk in open_video(video).chunks(indices)])
    pixels = AutoImageProcessor.from_pretrained(str(clip_dir))(images=list(frames), return_tensors="pt")
    with torch.inference_mode():
        expected = AutoModel.from_pretrained(str(clip_dir)).eval().get_image_features(**pixels).pooler_output
    assert np.abs(stored - expected.numpy()).max() <= FEATURE_TOLERANCE
    assert features.video.attrs["model_name"] == name and features.text.attrs["model_family"] == "clip"
    assert features.text.token_features.shape[1] == 32


def test_offline_missing_model_fails_at_once_with_one_line(tmp_path: Path) -> None:
    video = synth.make_video(tmp_path / "clip.mp4", num_frames=5)
    result = invoke("extract-video", video, "-o", tmp_path / "x.h5", "--video-model", "hf:org/not-cached")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not in the Hugging Face cache" in lines[0] and "offline" in lines[0]
    assert not (tmp_path / "x.h5").exists()


def test_clip_model_runs_with_its_clip_length_and_names_it_otherwise(tmp_path: Path, videomae_dir: Path) -> None:
    from videobert_cli import load

    video = synth.make_video(tmp_path / "clip.mp4", width=64, height=48, fps=10, num_frames=20)
    name = f"hf:{videomae_dir}"
    result = invoke("extract-video", video, "-o", tmp_path / "x.h5", "--video-model", name, "--clip-len", "4",
                    "--clip-fps", "4", "--device", "cpu", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    stored = load(tmp_path / "x.h5").video
    assert stored.features.shape == (2, 32) and stored.attrs["model_clip_len"] == 4
    wrong = invoke("extract-video", video, "-o", tmp_path / "y.h5", "--video-model", name, "--clip-len", "8",
                   "--device", "cpu", "--precision", "fp32")
    assert wrong.exit_code == 2 and "clips of 4 frames" in wrong.stderr
    # without --clip-len the model's own clip length is the default
    default = invoke("extract-video", video, "-o", tmp_path / "z.h5", "--video-model", name, "--clip-fps", "4",
                     "--device", "cpu", "--precision", "fp32")
    assert default.exit_code == 0, default.output
    np.testing.assert_array_equal(load(tmp_path / "z.h5").video.features, stored.features)


def test_unsupported_model_types_are_refused_with_one_line(tmp_path: Path, tiny_bert_dir: Path) -> None:
    from transformers import Siglip2Config

    from videobert_cli.config import TextModelConfig
    from videobert_cli.errors import ConfigError
    from videobert_cli.text.models import load_text_model
    from videobert_cli.video.models import get_video_model_entry

    Siglip2Config().save_pretrained(str(tmp_path / "naflex"))  # config only: refused before any weights
    with pytest.raises(ConfigError, match="NaFlex") as caught:
        get_video_model_entry(f"hf:{tmp_path / 'naflex'}")
    assert "siglip2-base-patch16-224" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="not supported as a video model"):
        get_video_model_entry(f"hf:{tiny_bert_dir}")
    # a plain text encoder named with hf: loads as without the prefix, keeping the name it was given
    loaded = load_text_model(TextModelConfig(name=f"hf:{tiny_bert_dir}"))
    assert loaded.name == f"hf:{tiny_bert_dir}" and loaded.hidden_size == 32 and loaded.prefix_ids is None
