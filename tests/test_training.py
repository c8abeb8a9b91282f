"""Tests of `videobert train` / `videobert eval` (videobert_cli.training) on tiny synthetic features.

Feature files are written with ``store.hdf5.write_feature_file`` from small random arrays (no
model runs); the fusion models are a few thousand parameters, so the whole module runs in
seconds on one CPU thread.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videobert_cli.errors import ConfigError
from videobert_cli.features import TextFeatures, VideoFeatures
from videobert_cli.fusion.checkpoint import load_fusion_weights
from videobert_cli.store.hdf5 import write_feature_file
from videobert_cli.training import TrainConfig, evaluate, parse_loss_weights, split_files, train
from videobert_cli.training import losses as L
from videobert_cli.training.data import (
    IGNORE,
    PairDataset,
    build_pairs,
    collate,
    scan_files,
)
from videobert_cli.training.evaluate import chance_metrics, fit_cca, retrieval_metrics
from videobert_cli.training.heads import (
    TrainingHeads,
    heads_path,
    load_heads,
    load_state,
    state_path,
)

VD, TD = 12, 8  # video / text feature widths of the synthetic files
TINY = dict(d_model=16, num_layers=1, num_heads=2, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


# --------------------------------------------------------------------------------------------
# synthetic feature files
# --------------------------------------------------------------------------------------------
def write_pair_file(
    path: Path,
    video: np.ndarray,
    text: np.ndarray,
    token_ids: np.ndarray,
    *,
    video_times: np.ndarray | None = None,
    cues: list[tuple[float, float]] | None = None,
    token_cue: np.ndarray | None = None,
    video_model: str = "vid-a",
    text_model: str = "txt-a",
    video_weights: str | None = None,
    cue_text: list[str] | None = None,
) -> Path:
    """A feature file with video/ and text/ like `run` writes (text attrs carry model_name)."""
    nv, nt = len(video), len(text)
    video_times = np.arange(nv) * 0.5 if video_times is None else video_times
    cues = cues or [(0.0, float(nv) * 0.5)]
    token_cue = np.zeros(nt, np.int32) if token_cue is None else token_cue.astype(np.int32)
    starts = np.array([cues[c][0] for c in token_cue], float)
    ends = np.array([cues[c][1] for c in token_cue], float)
    cue_feats = np.stack([text[token_cue == c].mean(0) for c in range(len(cues))]).astype(np.float32)
    write_feature_file(
        path,
        video=VideoFeatures(video.astype(np.float32), video_times, np.arange(nv),
                            attrs={"model_name": video_model, **({"weights_sha256": video_weights} if video_weights else {})}),
        text=TextFeatures(
            token_features=text.astype(np.float32), token_ids=np.asarray(token_ids), tokens=[f"t{i}" for i in token_ids],
            token_start=starts, token_end=ends, token_cue=token_cue, token_window=np.zeros(nt, np.int32),
            cue_features=cue_feats, cue_start=np.array([c[0] for c in cues]), cue_end=np.array([c[1] for c in cues]),
            cue_text=cue_text or [f"cue {c}" for c in range(len(cues))], attrs={"model_name": text_model, "feature_dim": text.shape[1]},
        ),
        source=None, tool_version="test", config_hash="test",
    )
    return path


def latent_corpus(directory: Path, n: int, *, seed: int = 0, video_model: str = "vid-a", vd: int = VD) -> list[Path]:
    """Pairs sharing a latent z: frames = A z + noise, tokens = B z + noise (a linear retrieval task)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((vd, 4))
    b = rng.standard_normal((TD, 4))
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        z = rng.standard_normal(4)
        video = (a @ z)[None] + 0.3 * rng.standard_normal((4, vd))
        text = (b @ z)[None] + 0.3 * rng.standard_normal((3, TD))
        ids = rng.integers(1000, 1030, 3)
        paths.append(write_pair_file(directory / f"s{i:02d}.h5", video, text, ids, video_model=video_model))
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return latent_corpus(tmp_path_factory.mktemp("corpus"), 30)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A small model trained for retrieval on the latent corpus (shared by several tests)."""
    out = tmp_path_factory.mktemp("trained") / "fusion.safetensors"
    config = TrainConfig(epochs=8, batch_size=8, lr=3e-3, val_fraction=0.3, losses="nce=1,align=0.5",
                         dropout=0.0, **TINY)
    result = train(corpus, out, config)
    return out, result


# --------------------------------------------------------------------------------------------
# losses with hand-computed values
# --------------------------------------------------------------------------------------------
def test_info_nce_identity_known_value():
    eye = torch.eye(2)
    # logits = I / tau: each row's CE = log(1 + exp(-1/tau))
    assert L.info_nce(eye, eye, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-6)
    assert L.info_nce(eye, eye, 0.5).item() == pytest.approx(math.log(1 + math.exp(-2.0)), abs=1e-6)
    # 3 orthogonal vectors, temperature 1: log(1 + 2 e^-1)
    eye3 = torch.eye(3)
    assert L.info_nce(eye3, eye3, 1.0).item() == pytest.approx(math.log(1 + 2 * math.exp(-1.0)), abs=1e-6)
    # vectors are normalised: scaling changes nothing
    assert L.info_nce(3 * eye3, 0.5 * eye3, 1.0).item() == pytest.approx(math.log(1 + 2 * math.exp(-1.0)), abs=1e-6)


def test_info_nce_is_symmetric_average_of_both_directions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    logits = F.normalize(a) @ F.normalize(b).T / 0.1
    rows = F.cross_entropy(logits, torch.arange(3))
    cols = F.cross_entropy(logits.T, torch.arange(3))
    assert L.info_nce(a, b, 0.1).item() == pytest.approx(((rows + cols) / 2).item(), abs=1e-6)
    assert rows.item() != pytest.approx(cols.item(), abs=1e-3)  # the two directions differ here


def test_info_nce_same_text_pairs_are_not_negatives():
    eye = torch.eye(2)
    same = torch.ones(2, 2, dtype=torch.bool)
    # only the diagonal logit is left in each row: the loss is exactly 0
    assert L.info_nce(eye, eye, 1.0, same=same).item() == pytest.approx(0.0, abs=1e-7)
    same_none = torch.eye(2, dtype=torch.bool)  # diagonal only: nothing removed
    assert L.info_nce(eye, eye, 1.0, same=same_none).item() == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-6)


def test_alignment_loss_known_values():
    assert L.alignment_loss(torch.zeros(2), torch.tensor([1.0, 0.0])).item() == pytest.approx(math.log(2), abs=1e-6)
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    assert L.alignment_loss(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0])).item() == pytest.approx(expected, abs=1e-6)


def test_feature_nce_known_value():
    eye = torch.eye(2)
    assert L.feature_nce(eye, eye, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-6)
    assert L.feature_nce(torch.zeros(0, 3), torch.zeros(0, 3), 1.0).item() == 0.0


# --------------------------------------------------------------------------------------------
# masking
# --------------------------------------------------------------------------------------------
def test_choose_masked_only_valid_positions_at_least_one_per_sample():
    valid = torch.zeros(64, 10, dtype=torch.bool)
    for i in range(64):
        valid[i, : 1 + i % 10] = True
    valid[5] = False  # a sample without positions
    masked = L.choose_masked(valid, 0.15, torch.Generator().manual_seed(0))
    assert not (masked & ~valid).any()  # padding never masked
    has = valid.any(1)
    assert masked[has].any(1).all()  # every sample with positions has a target
    assert not masked[5].any()
    rate = masked.sum().item() / valid.sum().item()
    assert 0.1 < rate < 0.4  # about prob, plus the forced ones
    again = L.choose_masked(valid, 0.15, torch.Generator().manual_seed(0))
    assert torch.equal(masked, again)  # reproducible from the generator
    assert torch.equal(L.choose_masked(valid, 1.0, torch.Generator().manual_seed(1)), valid)


def test_apply_mask_zeroes_masked_inputs_and_labels_only_at_masked_positions():
    feats = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2) + 1
    masked = torch.tensor([[True, False, False], [False, False, True]])
    out = L.apply_mask(feats, masked)
    assert torch.all(out[masked] == 0)
    assert torch.equal(out[~masked], feats[~masked])
    labels = torch.tensor([[4, 5, 6], [7, 8, 9]])
    lab = L.masked_labels(labels, masked)
    assert lab.tolist() == [[4, IGNORE, IGNORE], [IGNORE, IGNORE, 9]]
    logits = torch.randn(2, 3, 10, generator=torch.Generator().manual_seed(0))
    expected = F.cross_entropy(torch.stack([logits[0, 0], logits[1, 2]]), torch.tensor([4, 9]))
    assert L.masked_cross_entropy(logits, lab).item() == pytest.approx(expected.item(), abs=1e-6)
    changed = logits.clone()
    changed[~masked] += 100 * torch.randn(4, 10)  # unmasked positions do not count
    assert L.masked_cross_entropy(changed, lab).item() == pytest.approx(expected.item(), abs=1e-6)


def test_token_classes_map_seen_ids_and_unseen_to_zero():
    heads = TrainingHeads(8, 4, np.array([5, 9, 20]), None)
    ids = torch.tensor([9, 5, 7, 20, -1, 21])
    assert heads.token_classes(ids).tolist() == [2, 1, 0, 3, 0, 0]
    assert heads.mlm.out_features == 4 and heads.mvm.out_features == 4 and heads.mvm_mode == "features"
    assert TrainingHeads(8, 4, np.array([1]), 50).mvm.out_features == 50


def test_parse_loss_weights():
    assert parse_loss_weights("align=1,nce=0.5,tnce=2") == {"align": 1.0, "nce": 0.5, "mvm": 0.0, "mlm": 0.0,
                                                            "tnce": 2.0}
    for bad in ("foo=1", "nce", "nce=-1", "nce=x", "nce=0"):
        with pytest.raises(ConfigError):
            parse_loss_weights(bad)


# --------------------------------------------------------------------------------------------
# data: split, pairs, batches
# --------------------------------------------------------------------------------------------
def test_split_is_deterministic_by_seed_and_name(tmp_path):
    names = [f"clip{i:02d}.h5" for i in range(20)]
    train_a, val_a = split_files([tmp_path / "a" / n for n in names], 0.2, seed=0)
    train_b, val_b = split_files([tmp_path / "b" / n for n in reversed(names)], 0.2, seed=0)
    assert len(val_a) == 4 and len(train_a) == 16
    assert sorted(p.name for p in val_a) == sorted(p.name for p in val_b)  # order/dirs do not matter
    _, val_c = split_files([tmp_path / n for n in names], 0.2, seed=1)
    assert sorted(p.name for p in val_c) != sorted(p.name for p in val_a)
    assert split_files([tmp_path / n for n in names], 0.0, seed=0)[1] == []


def test_sentence_and_video_pairs_read_the_right_rows(tmp_path):
    from videobert_cli.pipeline.text_stages import fusion_token_times

    video = np.arange(6 * VD, dtype=float).reshape(6, VD)
    text = np.arange(5 * TD, dtype=float).reshape(5, TD)
    path = write_pair_file(
        tmp_path / "two.h5", video, text, np.array([10, 11, 12, 13, 14]),
        video_times=np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]), cues=[(0.0, 2.0), (3.5, 3.8)],
        token_cue=np.array([0, 0, 0, 1, 1]),
    )
    infos = scan_files([path])
    refs, skipped = build_pairs(infos, "sentences")
    assert [r.cue for r in refs] == [0, 1] and skipped == []
    ds = PairDataset(refs)
    first, second = ds[0], ds[1]
    # frame i spans [i, i+1): cue [0, 2) gets frames 0 and 1, as `run --align sentences` pairs them
    assert np.array_equal(first.video, video[:2]) and np.array_equal(first.text, text[:3])
    assert first.token_ids.tolist() == [10, 11, 12]
    # no frame starts inside [3.5, 3.8): the one on screen then (t=3.0)
    assert second.video_time.tolist() == [3.0] and second.token_ids.tolist() == [13, 14]
    whole = PairDataset(build_pairs(infos, "video")[0])[0]
    loaded = __import__("videobert_cli").load(path).text
    assert np.array_equal(whole.text_time, fusion_token_times(loaded))  # the times `fuse` uses
    capped = PairDataset(build_pairs(infos, "video")[0], max_frames=3)[0]
    assert capped.video_time.tolist() == [0.0, 2.0, 5.0]  # evenly spread, ends kept
    batch = collate([first, second])
    assert batch.video.shape == (2, 2, VD) and batch.video_mask.tolist() == [[True, True], [True, False]]
    assert batch.token_ids[1].tolist() == [13, 14, -1] and math.isnan(batch.text_time[1, 2].item())


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def test_retrieval_metrics_hand_made():
    eye = np.eye(4)
    m = retrieval_metrics(eye, eye, np.arange(4))
    assert m["t2v"]["R@1"] == 1.0 and m["t2v"]["median_rank"] == 1.0
    # text j is closest to video (j+1) % 4, its own video second: rank 2 for every query
    shifted = np.roll(eye, 1, axis=0) + 0.5 * eye
    m = retrieval_metrics(eye, shifted, np.arange(4))
    assert m["t2v"]["R@1"] == 0.0 and m["t2v"]["R@5"] == 1.0 and m["t2v"]["median_rank"] == 2.0
    # all scores equal: ties count against the model (worst rank)
    flat = np.ones((4, 3))
    m = retrieval_metrics(flat, flat, np.arange(4))
    assert m["t2v"]["median_rank"] == 4.0 and m["v2t"]["R@1"] == 0.0
    # identical transcripts: the duplicate's video counts as correct
    m = retrieval_metrics(eye, np.roll(eye, 1, axis=0), np.array([7, 7, 8, 9]))
    assert m["t2v"]["R@1"] == pytest.approx(0.25)


def test_chance_metrics_exact():
    c = chance_metrics(np.arange(4))["t2v"]
    assert c["R@1"] == pytest.approx(0.25) and c["R@5"] == 1.0
    c = chance_metrics(np.arange(20))["t2v"]
    assert c["R@1"] == pytest.approx(0.05) and c["R@5"] == pytest.approx(0.25) and c["median_rank"] == 10.0
    # every query has 2 correct of 4: P(rank 1) = 1/2
    assert chance_metrics(np.array([1, 1, 2, 2]))["v2t"]["R@1"] == pytest.approx(0.5)


def test_cca_recovers_a_linear_relation():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((60, 3))
    x = z @ rng.standard_normal((3, 10)) + 0.01 * rng.standard_normal((60, 10))
    y = z @ rng.standard_normal((3, 7)) + 0.01 * rng.standard_normal((60, 7))
    mx, a, my, b = fit_cca(x[:40], y[:40], dims=3)
    m = retrieval_metrics((x[40:] - mx) @ a, (y[40:] - my) @ b, np.arange(20))
    assert m["t2v"]["R@1"] >= 0.9
    shuffled = retrieval_metrics((x[40:] - mx) @ a, (y[40:][::-1] - my) @ b, np.arange(20))
    assert shuffled["t2v"]["R@1"] <= 0.2


# --------------------------------------------------------------------------------------------
# training, checkpoints, resume
# --------------------------------------------------------------------------------------------
def test_checkpoint_loads_with_load_fusion_weights_and_gives_identical_outputs(trained, corpus):
    out, result = trained
    model, config, meta = load_fusion_weights(
        out, expect_video_model="vid-a", expect_video_dim=VD, expect_text_model="txt-a", expect_text_dim=TD
    )
    assert config == result.model.config and config.d_model == 16
    assert meta["video_model"] == "vid-a" and meta["text_model"] == "txt-a"
    assert meta["video_dim"] == VD and meta["text_dim"] == TD
    assert meta["epochs"] == 8 and meta["trained_steps"] == result.global_step == 8 * math.ceil(result.num_train_pairs / 8)
    assert len(meta["losses"]) == 8 and set(meta["losses"][0]["train"]) == {"nce", "align", "total"}
    batch = collate([PairDataset(build_pairs(scan_files(corpus[:3]), "video")[0])[i] for i in range(3)])
    args = (batch.video, batch.video_time, batch.video_mask, batch.text, batch.text_time, batch.text_mask)
    with torch.no_grad():
        assert torch.equal(model(*args).sequence, result.model.cpu()(*args).sequence)
    # the heads live in their own file, which is not mistaken for fusion weights
    heads, heads_meta = load_heads(heads_path(out), 16, VD)
    assert heads_meta["epochs"] == 8
    assert torch.equal(heads.align.weight, result.heads.align.weight.cpu())
    with pytest.raises(ConfigError):
        load_fusion_weights(heads_path(out))
    state = load_state(state_path(out))  # weights_only=True
    assert state["epoch"] == 8 and state["global_step"] == result.global_step


def test_training_improves_heldout_retrieval_over_untrained(trained, corpus):
    out, _ = trained
    report = evaluate(corpus, out)
    assert report["split"]["mode"] == "validation" and report["split"]["num_pairs"] == 9
    res = report["results"]
    trained_r1 = res["trained"]["t2v"]["R@1"]
    untrained_r1 = res["untrained_fusion"]["t2v"]["R@1"]
    assert trained_r1 >= 0.6, report
    assert trained_r1 >= untrained_r1 + 0.4, report
    assert res["trained"]["t2v"]["median_rank"] < res["untrained_fusion"]["t2v"]["median_rank"]
    assert res["chance"]["t2v"]["R@1"] == pytest.approx(1 / 9)
    assert res["unfused_raw"]["comparable"] is False
    assert res["unfused_cca"]["fit"] == "training split"
    assert res["trained"]["align_accuracy"] is not None and res["untrained_fusion"]["align_accuracy"] is None
    assert evaluate(corpus, out, all_files=True, cca=False)["split"]["num_pairs"] == 30


def test_resume_equals_uninterrupted_training(tmp_path):
    from safetensors.torch import load_file

    files = latent_corpus(tmp_path / "data", 10, seed=3)
    config = TrainConfig(epochs=2, batch_size=4, lr=1e-3, val_fraction=0.2, dropout=0.1,
                         losses="align=1,nce=1,mvm=0.5,mlm=0.5", **TINY)
    straight = tmp_path / "straight" / "w.safetensors"
    straight.parent.mkdir()
    train(files, straight, config)
    part = tmp_path / "part" / "w.safetensors"
    part.parent.mkdir()
    first = train(files, part, TrainConfig(**{**config.__dict__, "epochs": 1}))
    assert first.epochs == 1
    after_one = load_file(str(part))
    resumed = train(files, part, config, resume=part)
    assert resumed.global_step == 2 * math.ceil(8 / 4)
    for a, b in ((straight, part), (heads_path(straight), heads_path(part))):
        ta, tb = load_file(str(a)), load_file(str(b))
        assert ta.keys() == tb.keys()
        for name in ta:
            assert torch.equal(ta[name], tb[name]), name
    sa, sb = load_state(state_path(straight)), load_state(state_path(part))
    assert sa["history"] == sb["history"] and sa["global_step"] == sb["global_step"]
    for key, value in sa["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg"], sb["optimizer"]["state"][key]["exp_avg"])
    # the resumed epoch did change the weights (so the equality above is not trivial)
    final = load_file(str(part))
    assert any(not torch.equal(after_one[name], final[name]) for name in final)
    meta = load_fusion_weights(part)[2]
    assert meta["epochs"] == 2 and set(meta["losses"][1]["train"]) == {"align", "nce", "mvm", "mlm", "total"}


def test_resume_refuses_other_split_settings_and_finished_runs(trained, corpus):
    out, _ = trained
    base = dict(batch_size=8, lr=3e-3, val_fraction=0.3, losses="nce=1", **TINY)
    with pytest.raises(ConfigError, match="seed"):
        train(corpus, out.parent / "x.safetensors", TrainConfig(epochs=9, seed=5, **base), resume=out)
    with pytest.raises(ConfigError, match="already has 8"):
        train(corpus, out.parent / "x.safetensors", TrainConfig(epochs=8, **base), resume=out)


def test_mixed_feature_models_are_refused(tmp_path):
    files = latent_corpus(tmp_path / "a", 3) + latent_corpus(tmp_path / "b", 3, video_model="vid-b")
    with pytest.raises(ConfigError, match="different models"):
        train(files, tmp_path / "w.safetensors", TrainConfig(epochs=1, **TINY))
    wider = latent_corpus(tmp_path / "c", 3, vd=VD + 2, seed=1)
    with pytest.raises(ConfigError, match="different models"):
        train(latent_corpus(tmp_path / "d", 3) + wider, tmp_path / "w.safetensors", TrainConfig(epochs=1, **TINY))
    assert not (tmp_path / "w.safetensors").exists()


def test_fuse_and_eval_refuse_features_of_another_model(trained, tmp_path):
    from videobert_cli import FusionConfigOptions, PipelineConfig, RuntimeConfig
    from videobert_cli.api import fuse_files

    out, _ = trained
    config = PipelineConfig(fusion=FusionConfigOptions(weights_path=str(out)), runtime=RuntimeConfig(device="cpu"))
    same = latent_corpus(tmp_path / "same", 1, seed=7)
    results = fuse_files(same, tmp_path / "fused_ok", config)
    assert not results.failed  # the weights work with `fuse` on features of their models
    loaded = __import__("videobert_cli").load(results.results[0].output)
    assert loaded.fused.attrs["trained"] is True and loaded.fused.sequence.shape[1] == 16
    other = latent_corpus(tmp_path / "other", 3, video_model="vid-b", seed=8)
    with pytest.raises(ConfigError, match="vid-b"):
        fuse_files(other[:1], tmp_path / "fused_bad", config)
    with pytest.raises(ConfigError, match="vid-b"):
        evaluate(other, out, all_files=True)


def test_word_ids_and_sentence_pairs(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    files = []
    for i in range(6):
        path = write_pair_file(
            tmp_path / f"w{i}.h5", rng.standard_normal((6, VD)), rng.standard_normal((4, TD)),
            rng.integers(0, 50, 4), video_times=np.arange(6.0), cues=[(0.0, 2.5), (3.0, 5.0)],
            token_cue=np.array([0, 0, 1, 1]),
        )
        with h5py.File(path, "a") as f:  # as `videobert vocab assign` writes them
            ds = f["video"].create_dataset("word_ids", data=rng.integers(0, 7, 6))
            ds.attrs["vocab_size"] = 9
            ds.attrs["vocab_sha256"] = "ab" * 32
        files.append(path)
    out = tmp_path / "w.safetensors"
    result = train(files, out, TrainConfig(epochs=1, batch_size=4, pairs="sentences", losses="mvm=1,mlm=1", **TINY))
    assert result.num_train_pairs + result.num_val_pairs == 12  # two sentences per file
    assert result.heads.mvm_mode == "word_ids" and result.heads.mvm.out_features == 9  # the vocabulary size
    meta = load_fusion_weights(out)[2]
    assert meta["mvm_mode"] == "word_ids" and meta["pairs"] == "sentences"
    assert meta["losses"][0]["train"]["mvm"] > 0


def test_word_ids_seen_only_in_validation_files_get_a_class(tmp_path):
    """Files whose word_ids carry no vocab_size (as `run --vocab` wrote them before): the head
    must cover the words of the validation files too, not crash on one seen only there."""
    import h5py

    rng = np.random.default_rng(1)
    files = [write_pair_file(tmp_path / f"w{i}.h5", rng.standard_normal((6, VD)), rng.standard_normal((4, TD)),
                             rng.integers(0, 50, 4)) for i in range(6)]
    config = TrainConfig(epochs=1, batch_size=4, losses="mvm=1", val_fraction=0.34, **TINY)
    _, val_paths = split_files(files, config.val_fraction, config.seed)
    assert val_paths
    for i, path in enumerate(files):
        with h5py.File(path, "a") as f:  # word 30 only in the validation files
            f["video"].create_dataset("word_ids", data=np.full(6, 30 if path in val_paths else 10 + i))
    result = train(files, tmp_path / "w.safetensors", config)
    assert result.heads.mvm.out_features == 31  # words 0 .. 30
    assert result.num_val_pairs >= 1


def test_train_refuses_to_overwrite_its_inputs_and_checks_the_output_folder_first(corpus, tmp_path):
    from videobert_cli.errors import OutputError, UsageError

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    copies = [inputs / path.name for path in corpus[:6]]
    for source, copy in zip(corpus, copies):
        copy.write_bytes(source.read_bytes())
    before = copies[2].read_bytes()
    with pytest.raises(UsageError, match="would overwrite one of the feature files"):
        train(inputs, copies[2], TrainConfig(epochs=1, **TINY))
    assert copies[2].read_bytes() == before
    # a folder that does not exist yet is made before training, not found missing after an epoch
    out = tmp_path / "new" / "deeper" / "fusion.safetensors"
    result = train(inputs, out, TrainConfig(epochs=1, batch_size=4, losses="nce=1", **TINY))
    assert result.weights == out and out.is_file()
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(OutputError, match="cannot create the folder"):
        train(inputs, blocked / "fusion.safetensors", TrainConfig(epochs=1, **TINY))


def test_a_folder_with_video_only_files_trains_on_the_others(corpus, tmp_path):
    """A video without a transcript gets a video-only file; `train features/` skips it."""
    folder = tmp_path / "features"
    folder.mkdir()
    for path in corpus[:8]:
        (folder / path.name).write_bytes(path.read_bytes())
    rng = np.random.default_rng(2)
    write_feature_file(folder / "silent.h5", video=VideoFeatures(rng.standard_normal((4, VD)).astype(np.float32),
                       np.arange(4.0), np.arange(4), attrs={"model_name": "vid-a"}),
                       source=None, tool_version="test", config_hash="test")
    messages = []
    result = train(str(folder), tmp_path / "f.safetensors", TrainConfig(epochs=1, batch_size=4, losses="nce=1", **TINY),
                   progress=lambda event: messages.append(event.message))
    assert result.num_train_pairs + result.num_val_pairs == 8
    assert any("silent.h5: no text/ group" in str(m) for m in messages)
    # named explicitly, it is still refused: the user asked for it
    with pytest.raises(Exception, match="has no text/ group"):
        train([folder / "silent.h5", *sorted(folder.glob("s*.h5"))], tmp_path / "g.safetensors",
              TrainConfig(epochs=1, **TINY))


def test_fusion_weights_refuse_features_of_other_weights_of_the_same_model(tmp_path):
    """ResNet-50 with IMAGENET1K_V1 or V2: one name, one width, two feature spaces."""
    from videobert_cli import PipelineConfig, fuse
    from videobert_cli.config import FusionConfigOptions, RuntimeConfig

    rng = np.random.default_rng(3)
    v1, v2 = "1" * 64, "2" * 64

    def files(folder, weights, n=6):
        (tmp_path / folder).mkdir()
        return [write_pair_file(tmp_path / folder / f"f{i}.h5", rng.standard_normal((4, VD)),
                                rng.standard_normal((3, TD)), rng.integers(0, 30, 3), video_weights=weights)
                for i in range(n)]

    ours, theirs, unknown = files("v1", v1), files("v2", v2), files("unknown", None)
    with pytest.raises(ConfigError, match="different weights of 'vid-a'"):
        train(ours[:3] + theirs[:3], tmp_path / "mixed.safetensors", TrainConfig(epochs=1, **TINY))
    out = tmp_path / "w.safetensors"
    train(ours, out, TrainConfig(epochs=1, batch_size=4, losses="nce=1", **TINY))
    assert load_fusion_weights(out)[2]["video_weights_sha256"] == v1
    load_fusion_weights(out, expect_video_weights=v1)
    load_fusion_weights(out, expect_video_weights=None)  # not recorded: cannot tell, allowed
    with pytest.raises(ConfigError, match="other weights of the same model"):
        load_fusion_weights(out, expect_video_weights=v2)
    with pytest.raises(ConfigError, match="other weights of the same model"):
        evaluate(theirs, out, all_files=True, cca=False)
    evaluate(unknown, out, all_files=True, cca=False)
    # fuse in Python: the features say which weights made them
    from videobert_cli import load

    config = PipelineConfig(fusion=FusionConfigOptions(weights_path=str(out)), runtime=RuntimeConfig(device="cpu"))
    fuse(load(ours[0]).video, load(ours[0]).text, config)
    with pytest.raises(ConfigError, match="other weights of the same model"):
        fuse(load(theirs[0]).video, load(theirs[0]).text, config)


def test_a_file_with_nan_features_is_named_not_blamed_on_the_learning_rate(corpus, trained, tmp_path):
    import h5py

    from videobert_cli.errors import FeatureFileError

    folder = tmp_path / "nan"
    folder.mkdir()
    for path in corpus[:8]:
        (folder / path.name).write_bytes(path.read_bytes())
    broken = sorted(folder.glob("*.h5"))[3]
    with h5py.File(broken, "r+") as f:
        f["video/features"][1, 2] = np.nan
    with pytest.raises(FeatureFileError, match="video/features holds NaN or inf") as caught:
        train(folder, tmp_path / "x.safetensors", TrainConfig(epochs=1, batch_size=4, losses="nce=1", **TINY))
    assert caught.value.path == str(broken) and caught.value.reason == "non-finite"
    with pytest.raises(FeatureFileError, match="holds NaN or inf"):
        evaluate(folder, trained[0], all_files=True)


# --------------------------------------------------------------------------------------------
# the commands
# --------------------------------------------------------------------------------------------
def test_cli_train_and_eval(corpus, tmp_path):
    import typer
    from typer.testing import CliRunner

    from videobert_cli.cli import train as cmd

    app = typer.Typer()
    app.command("train")(cmd.train_command)
    app.command("eval")(cmd.eval_command)
    runner = CliRunner()
    out = tmp_path / "cli.safetensors"
    directory = corpus[0].parent
    r = runner.invoke(app, ["train", str(directory), "-o", str(out), "--epochs", "2", "--batch-size", "8",
                            "--d-model", "16", "--layers", "1", "--heads", "2", "--device", "cpu", "--loss", "nce=1"])
    assert r.exit_code == 0, r.output
    assert out.is_file() and heads_path(out).is_file() and state_path(out).is_file()
    report_path = tmp_path / "eval.json"
    r = runner.invoke(app, ["eval", str(directory), "--fusion-weights", str(out), "--json", str(report_path),
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    report = json.loads(report_path.read_text())
    assert set(report["results"]) >= {"trained", "untrained_fusion", "unfused_cca", "chance"}
    assert "untrained fusion" in r.output and "R@1" in r.output and "not comparable" in r.output
    r = runner.invoke(app, ["train", str(directory), "-o", str(out), "--loss", "bogus=1"])
    assert r.exit_code == 2 and "bogus" in r.output
