"""Time-aware training: the time corpus, the neighbour-difference input, reversed/shuffled
negatives (tnce) and the minimal-pair (contrasts) evaluation."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from test_training import TD, TINY, VD, write_pair_file
from videobert_cli.cli.app import app
from videobert_cli.fusion.checkpoint import load_fusion_weights
from videobert_cli.fusion.model import FusionConfig, build_fusion
from videobert_cli.training import TrainConfig, evaluate, train
from videobert_cli.training import losses as L
from videobert_cli.training.contrasts import choice_accuracy, load_contrasts

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus_script():
    return load_script("make_time_corpus")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


# --------------------------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------------------------
def test_time_corpus_plan_is_deterministic_and_balanced(corpus_script):
    a = corpus_script.plan(72, 0, 160, 120)
    assert a == corpus_script.plan(72, 0, 160, 120)
    assert a != corpus_script.plan(72, 1, 160, 120)
    assert len(corpus_script.KINDS) == 36
    captions = [c["caption"] for c in a]
    assert all(captions.count(c) == 2 for c in set(captions))  # 72 clips = 2 per kind


def test_contrast_pairs_differ_in_one_factor_only(corpus_script):
    pairs = corpus_script.contrasts()
    assert {k: len(v) for k, v in pairs.items()} == {"motion": 12, "speed": 12, "order": 6}
    for name, swap in (("motion", {"left", "right"}), ("speed", {"slowly", "quickly"})):
        for a, b in pairs[name]:
            wa, wb = a.rstrip(".").split(), b.rstrip(".").split()
            diff = [(x, y) for x, y in zip(wa, wb) if x != y]
            assert len(wa) == len(wb) and len(diff) == 1 and set(diff[0]) == swap, (a, b)
    for a, b in pairs["order"]:
        first, second = a.rstrip(".").split(", then ")
        assert b == f"{second[0].upper()}{second[1:]}, then {first[0].lower()}{first[1:]}."
    every = {c for v in pairs.values() for p in v for c in p}
    assert every == {corpus_script.caption(k) for k in corpus_script.KINDS}


def test_pooling_cannot_tell_the_contrasts_apart(corpus_script):
    """Left/right clips show the same positions reversed; slow/quick ones the same stretch,
    centred alike: what differs is the order in time."""
    clip = corpus_script.plan(1, 3, 160, 120)[0]
    assert clip["family"] == "motion"
    xs = {}
    for direction in ("left", "right"):
        for speed in ("slowly", "quickly"):
            c = dict(clip, direction=direction, speed=speed)
            xs[direction, speed] = [corpus_script.scene(c, i, 8)[0][1] for i in range(8)]
    assert xs["left", "slowly"] == pytest.approx(xs["right", "slowly"][::-1])
    assert np.mean(xs["left", "slowly"]) == pytest.approx(np.mean(xs["left", "quickly"]))
    assert np.diff(xs["right", "slowly"]).min() > 0  # moves right all the time
    order = corpus_script.plan(36, 0, 160, 120)[24]
    assert order["family"] == "order"
    shown = [corpus_script.scene(order, i, 8)[0] for i in range(8)]
    assert shown[0][0] == order["objects"][0][1] and shown[-1][0] == order["objects"][1][1]


def test_time_corpus_files_are_byte_identical_across_runs(corpus_script, tmp_path):
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert corpus_script.main([str(out), "--count", "2", "--seed", "5", "--width", "64", "--height", "48"]) == 0
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())})
    assert digests[0] == digests[1]
    names = sorted(digests[0])
    assert names == ["000_red_square_left_slowly.mp4", "000_red_square_left_slowly.srt",
                     "001_red_square_left_quickly.mp4", "001_red_square_left_quickly.srt",
                     "contrasts.json", "corpus.jsonl"]
    srt = (tmp_path / "a" / "001_red_square_left_quickly.srt").read_text()
    assert srt == "1\n00:00:00,000 --> 00:00:02,000\nA red square moves left quickly.\n"
    assert load_contrasts(tmp_path / "a" / "contrasts.json")["motion"][0] == (
        "A red square moves left slowly.", "A red square moves right slowly.")


# --------------------------------------------------------------------------------------------
# the model's neighbour-difference channel and the checkpoint format
# --------------------------------------------------------------------------------------------
def test_old_configs_load_without_the_new_fields_and_keep_their_weights():
    cfg = FusionConfig.from_dict({"video_dim": VD, "text_dim": TD, "d_model": 16, "num_heads": 2, "ff_dim": 32})
    assert cfg.video_delta is False and cfg.time_scale == 1.0
    keys = set(build_fusion(cfg, seed=0).state_dict())
    assert not any(k.startswith("delta_proj") for k in keys)
    with_delta = build_fusion(FusionConfig(VD, TD, d_model=16, num_heads=2, ff_dim=32, video_delta=True), seed=0)
    assert set(with_delta.state_dict()) - keys == {"delta_proj.weight", "delta_proj.bias"}


def test_delta_channel_sees_order_and_stays_permutation_equivariant():
    torch.manual_seed(0)
    model = build_fusion(FusionConfig(VD, TD, d_model=16, num_heads=2, ff_dim=32, video_delta=True), seed=1)
    video = torch.randn(2, 5, VD)
    times = torch.arange(5, dtype=torch.float64).expand(2, 5).clone()
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    text = torch.zeros(2, 0, TD)
    ttime = torch.zeros(2, 0, dtype=torch.float64)
    tmask = torch.zeros(2, 0, dtype=torch.bool)
    out = model(video, times, mask, text, ttime, tmask)
    assert out.sequence.shape == (2, 6, 16)
    # rows and their times permuted together: same [CLS], permuted positions
    perm = torch.tensor([3, 0, 4, 1, 2])
    moved = model(video[:, perm], times[:, perm], mask[:, perm], text, ttime, tmask)
    assert torch.allclose(moved.cls[0], out.cls[0], atol=1e-5)
    assert torch.allclose(moved.sequence[0, 1:], out.sequence[0, 1:][perm], atol=1e-5)
    # the same frames played backwards: a different input, which the delta channel tells apart
    rev = L.reverse_in_time(video, mask)
    assert not torch.equal(rev, video)
    assert not torch.allclose(model(rev, times, mask, text, ttime, tmask).cls, out.cls, atol=1e-4)


# --------------------------------------------------------------------------------------------
# reversed / shuffled negatives and the tnce loss
# --------------------------------------------------------------------------------------------
def test_reverse_and_shuffle_keep_padding_and_content():
    x = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    rev = L.reverse_in_time(x, mask)
    assert rev[..., 0].tolist() == [[3, 2, 1, 0], [6, 5, 4, 7]]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        shuf = L.shuffle_in_time(x, mask, g)
        assert shuf.shape == x.shape
        assert not torch.equal(shuf[0], x[0]) and not torch.equal(shuf[1, :3], x[1, :3])
        assert sorted(shuf[1, :3, 0].tolist()) == [4, 5, 6] and shuf[1, 3, 0] == 7


def test_resample_in_time_plays_faster_and_slower():
    x = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 8, 1)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 6:] = False
    assert L.resample_in_time(x, mask, 2.0)[..., 0].tolist() == [
        [0, 2, 4, 6, 0, 2, 4, 6], [8, 10, 12, 8, 10, 12, 14, 15]]
    assert L.resample_in_time(x, mask, 0.5)[0, :, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    g = torch.Generator().manual_seed(0)
    negatives = L.time_distortions(x, mask, g)
    assert len(negatives) == 4 and all(n.shape == x.shape and not torch.equal(n, x) for n in negatives)


def test_time_contrastive_known_value_and_shape():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    rev = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    loss = L.time_contrastive(t, v, [rev], temperature=1.0)
    # each text: logits [1, 0, 0] (own, other video, own reversed) -> -log(e / (e + 2))
    assert loss.shape == () and float(loss) == pytest.approx(-np.log(np.e / (np.e + 2)), rel=1e-6)
    same = torch.tensor([[True, True], [True, True]])
    loss = L.time_contrastive(t, v, [rev], temperature=1.0, same=same)
    assert float(loss) == pytest.approx(-np.log(np.e / (np.e + 1)), rel=1e-6)


# --------------------------------------------------------------------------------------------
# contrasts evaluation
# --------------------------------------------------------------------------------------------
def test_choice_accuracy_hand_computed():
    captions = ["left", "right", "left", "up"]
    text = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    video = np.array([[1.0, 0.2],    # left video, nearer "left": correct
                      [0.9, 0.1],    # right video, nearer "left": wrong
                      [1.0, 1.0],    # left video, equally near both: half
                      [0.0, 1.0]])   # "up": in no pair
    res = choice_accuracy(video, text, captions, [("left", "right"), ("up", "down")])
    assert res == {"accuracy": pytest.approx(0.5), "choices": 3, "caption_pairs": 1}
    assert choice_accuracy(video, text, captions, [("up", "down")])["accuracy"] is None


def write_motion_corpus(directory: Path, n: int, seed: int = 0) -> list[Path]:
    """Frames along a line that runs forwards ("moves left") or backwards ("moves right")."""
    rng = np.random.default_rng(seed)
    base, step = rng.standard_normal(VD), rng.standard_normal(VD)
    words = {"left": rng.standard_normal((3, TD)), "right": rng.standard_normal((3, TD))}
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        word = "left" if i % 2 == 0 else "right"
        ramp = np.arange(4)[:, None] if word == "left" else np.arange(4)[::-1, None]
        video = base + ramp * step + 0.05 * rng.standard_normal((4, VD))
        text = words[word] + 0.05 * rng.standard_normal((3, TD))
        ids = np.array([1, 2 if word == "left" else 3, 4])
        paths.append(write_pair_file(directory / f"m{i:02d}.h5", video, text, ids, cue_text=[f"moves {word}"]))
    return paths


def test_eval_reports_contrast_subsets_for_every_model(tmp_path):
    files = write_motion_corpus(tmp_path / "feats", 8)
    out = tmp_path / "fusion.safetensors"
    config = TrainConfig(epochs=2, batch_size=4, lr=3e-3, val_fraction=0.25, losses="nce=1,tnce=1",
                         dropout=0.0, video_delta=True, time_scale=0.5, **TINY)
    result = train(files, out, config)
    assert all("tnce" in h["train"] for h in result.history)
    _, cfg, meta = load_fusion_weights(out)
    assert cfg.video_delta is True and cfg.time_scale == 0.5 and meta["loss_weights"]["tnce"] == 1.0
    contrasts = tmp_path / "contrasts.json"
    contrasts.write_text(json.dumps({"motion": [["moves left", "moves right"]], "order": [["a", "b"]]}))
    report = evaluate(files, out, all_files=True, contrasts=contrasts)
    assert report["contrasts"]["subsets"] == {"motion": 1, "order": 1} and report["contrasts"]["chance"] == 0.5
    for model in ("trained", "untrained_fusion", "unfused_cca"):
        found = report["results"][model]["contrasts"]
        assert found["motion"]["choices"] == 8 and 0.0 <= found["motion"]["accuracy"] <= 1.0
        assert found["order"] == {"accuracy": None, "choices": 0, "caption_pairs": 0}
    # the CLI writes the same fields to its JSON and prints the subsets table
    json_out = tmp_path / "eval.json"
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "feats"), "--fusion-weights", str(out), "--all",
                                   "--contrasts", str(contrasts), "--json", str(json_out)])
    assert res.exit_code == 0, res.output
    assert "two-way choice" in res.output
    written = json.loads(json_out.read_text())
    assert written["results"]["trained"]["contrasts"]["motion"] == report["results"]["trained"]["contrasts"]["motion"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"motion": ["left"]}))
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "feats"), "--fusion-weights", str(out), "--all",
                                   "--contrasts", str(bad)])
    assert res.exit_code == 2 and "two-caption" in res.output


def test_aggregate_script_mean_and_spread(tmp_path):
    agg = load_script("aggregate_evals")
    reports = []
    for seed, r1 in enumerate((0.5, 0.7, 0.9)):
        entry = {"t2v": {"R@1": r1, "R@5": 1.0}, "v2t": {"R@1": 0.5, "R@5": 1.0},
                 "contrasts": {"motion": {"accuracy": r1, "choices": 4}}}
        reports.append({"checkpoint": {"seed": seed}, "results": {"trained": entry}})
    paths = []
    for i, r in enumerate(reports):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(r))
    assert agg.main([*map(str, paths), "-o", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    motion = summary["models"]["trained"]["motion"]
    assert motion["mean"] == pytest.approx(0.7) and motion["sd"] == pytest.approx(0.2)
    assert summary["seeds"] == [0, 1, 2]
