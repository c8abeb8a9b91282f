"""Tests of the fusion Transformer and its safetensors checkpoints (tiny dims, CPU)."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from videobert_cli.errors import ConfigError
from videobert_cli.features import MODALITY_CLS, MODALITY_TEXT, MODALITY_VIDEO
from videobert_cli.fusion.checkpoint import (
    load_fusion_weights,
    save_fusion_weights,
    weights_sha256,
)
from videobert_cli.fusion.model import (
    FusionConfig,
    FusionOutput,
    FusionTransformer,
    MultiHeadSelfAttention,
    build_fusion,
    fuse_one,
)

VD, TD, DM = 12, 10, 16
ATOL = 1e-5


def tiny_config(**overrides) -> FusionConfig:
    kwargs = dict(video_dim=VD, text_dim=TD, d_model=DM, num_layers=2, num_heads=4, ff_dim=32)
    kwargs.update(overrides)
    return FusionConfig(**kwargs)


@pytest.fixture(scope="module")
def model() -> FusionTransformer:
    m = build_fusion(tiny_config(), seed=7)
    # BERT-style init is nearly symmetric (zero biases, N(0, .02)); perturb all parameters
    # so the tests exercise every term with non-trivial magnitudes.
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return m


def rand_inputs(b: int, nv: int, nt: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(b, nv, VD, generator=g)
    vtime = torch.rand(b, nv, generator=g, dtype=torch.float64) * 60
    text = torch.randn(b, nt, TD, generator=g)
    ttime = torch.rand(b, nt, generator=g, dtype=torch.float64) * 60
    vmask = torch.ones(b, nv, dtype=torch.bool)
    tmask = torch.ones(b, nt, dtype=torch.bool)
    return video, vtime, vmask, text, ttime, tmask


def run(model, video, vtime, vmask, text, ttime, tmask) -> FusionOutput:
    with torch.no_grad():
        return model(video, vtime, vmask, text, ttime, tmask)


# --- config -------------------------------------------------------------------------------
def test_config_roundtrip_json():
    cfg = tiny_config(dropout=0.1, time_scale=0.5)
    again = FusionConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert cfg.to_dict() == {
        "video_dim": VD, "text_dim": TD, "d_model": DM, "num_layers": 2, "num_heads": 4,
        "ff_dim": 32, "dropout": 0.1, "time_scale": 0.5, "video_delta": False,
    }


@pytest.mark.parametrize(
    "overrides",
    [
        {"d_model": 18, "num_heads": 4},
        {"video_dim": 0},
        {"text_dim": -3},
        {"num_layers": 0},
        {"ff_dim": 2.5},
        {"dropout": 1.0},
        {"time_scale": 0.0},
        {"time_scale": float("nan")},
    ],
)
def test_config_validation(overrides):
    with pytest.raises(ConfigError):
        tiny_config(**overrides)


def test_config_from_dict_rejects_unknown_and_missing():
    with pytest.raises(ConfigError, match="unknown keys: bogus"):
        FusionConfig.from_dict({**tiny_config().to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="text_dim"):
        FusionConfig.from_dict({"video_dim": 4})


# --- shapes -------------------------------------------------------------------------------
@pytest.mark.parametrize("b,nv,nt", [(1, 5, 4), (1, 5, 0), (1, 0, 4), (3, 6, 2), (2, 0, 0)])
def test_output_shapes_and_layout(model, b, nv, nt):
    out = run(model, *rand_inputs(b, nv, nt))
    length = 1 + nv + nt
    assert out.sequence.shape == (b, length, DM)
    assert out.sequence.dtype == torch.float32
    assert out.modality.shape == (b, length) and out.modality.dtype == torch.int8
    assert out.time.shape == (b, length)
    assert out.mask.shape == (b, length) and out.mask.dtype == torch.bool
    assert out.cls.shape == (b, DM)
    expected_mod = [MODALITY_CLS] + [MODALITY_VIDEO] * nv + [MODALITY_TEXT] * nt
    assert out.modality.tolist() == [expected_mod] * b
    assert torch.isnan(out.time[:, 0]).all()
    assert out.mask.all()
    assert torch.equal(out.cls, out.sequence[:, 0])
    assert torch.isfinite(out.sequence).all()


def test_time_output_carries_input_times(model):
    inputs = rand_inputs(2, 3, 2)
    out = run(model, *inputs)
    assert torch.equal(out.time[:, 1:4], inputs[1])
    assert torch.equal(out.time[:, 4:], inputs[4])


def test_wrong_feature_dim_is_config_error(model):
    video, vtime, vmask, text, ttime, tmask = rand_inputs(1, 3, 2)
    with pytest.raises(ConfigError, match="video features are 13-d"):
        run(model, torch.zeros(1, 3, VD + 1), vtime, vmask, text, ttime, tmask)


# --- masking ------------------------------------------------------------------------------
def test_padding_does_not_change_valid_outputs(model):
    video, vtime, vmask, text, ttime, tmask = rand_inputs(1, 4, 3, seed=1)
    ref = run(model, video, vtime, vmask, text, ttime, tmask)

    pad_v, pad_t = 3, 2
    garbage_v = torch.full((1, pad_v, VD), 1e6)
    garbage_v[0, 1, 0] = float("nan")
    garbage_t = torch.full((1, pad_t, TD), -7.0)
    garbage_t[0, 0, 3] = float("inf")
    out = run(
        model,
        torch.cat([video, garbage_v], 1),
        torch.cat([vtime, torch.tensor([[1.0, float("nan"), 1e9]], dtype=torch.float64)], 1),
        torch.cat([vmask, torch.zeros(1, pad_v, dtype=torch.bool)], 1),
        torch.cat([text, garbage_t], 1),
        torch.cat([ttime, torch.tensor([[3.0, 4.0]], dtype=torch.float64)], 1),
        torch.cat([tmask, torch.zeros(1, pad_t, dtype=torch.bool)], 1),
    )
    valid = out.mask[0]
    assert valid.sum().item() == 1 + 4 + 3
    assert valid.tolist() == [True] + [True] * 4 + [False] * 3 + [True] * 3 + [False] * 2
    torch.testing.assert_close(out.sequence[0, valid], ref.sequence[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.cls, ref.cls, atol=ATOL, rtol=0)
    # padding rows are exactly zero, their times NaN
    assert torch.equal(out.sequence[0, ~valid], torch.zeros(5, DM))
    assert torch.isnan(out.time[0, ~valid]).all()


def test_batch_with_different_lengths_matches_single_runs(model):
    a = rand_inputs(1, 5, 2, seed=2)
    b = rand_inputs(1, 2, 4, seed=3)
    ref_a, ref_b = run(model, *a), run(model, *b)

    video = torch.zeros(2, 5, VD)
    video[0], video[1, :2] = a[0][0], b[0][0]
    vtime = torch.zeros(2, 5, dtype=torch.float64)
    vtime[0], vtime[1, :2] = a[1][0], b[1][0]
    vmask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
    text = torch.zeros(2, 4, TD)
    text[0, :2], text[1] = a[3][0], b[3][0]
    ttime = torch.zeros(2, 4, dtype=torch.float64)
    ttime[0, :2], ttime[1] = a[4][0], b[4][0]
    tmask = torch.tensor([[True] * 2 + [False] * 2, [True] * 4])
    out = run(model, video, vtime, vmask, text, ttime, tmask)

    torch.testing.assert_close(out.sequence[0, out.mask[0]], ref_a.sequence[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.sequence[1, out.mask[1]], ref_b.sequence[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.cls[0], ref_a.cls[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.cls[1], ref_b.cls[0], atol=ATOL, rtol=0)


def test_all_padding_sample_equals_empty_input(model):
    video, vtime, _, text, ttime, _ = rand_inputs(1, 3, 2)
    none_v = torch.zeros(1, 3, dtype=torch.bool)
    none_t = torch.zeros(1, 2, dtype=torch.bool)
    out = run(model, video, vtime, none_v, text, ttime, none_t)
    empty = run(model, *rand_inputs(1, 0, 0))
    assert torch.isfinite(out.sequence).all()
    torch.testing.assert_close(out.cls, empty.cls, atol=ATOL, rtol=0)


# --- permutation --------------------------------------------------------------------------
def test_permuting_video_positions_with_times_permutes_outputs(model):
    video, vtime, vmask, text, ttime, tmask = rand_inputs(1, 6, 3, seed=4)
    ref = run(model, video, vtime, vmask, text, ttime, tmask)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out = run(model, video[:, perm], vtime[:, perm], vmask, text, ttime, tmask)
    torch.testing.assert_close(
        out.sequence[:, 1:7], ref.sequence[:, 1:7][:, perm], atol=ATOL, rtol=0
    )
    torch.testing.assert_close(out.sequence[:, 7:], ref.sequence[:, 7:], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.cls, ref.cls, atol=ATOL, rtol=0)
    # permuting features but not their times is a different input
    moved = run(model, video[:, perm], vtime, vmask, text, ttime, tmask)
    assert (moved.cls - ref.cls).abs().max() > 1e-3


# --- attention ----------------------------------------------------------------------------
def _attention_and_inputs(seed: int):
    torch.manual_seed(seed)
    attn = MultiHeadSelfAttention(DM, 4).eval()
    x = torch.randn(3, 7, DM)
    mask = torch.tensor(
        [[True] * 7, [True] * 4 + [False] * 3, [False, True, False, True, True, False, True]]
    )
    return attn, x, mask


def test_attention_matches_sdpa():
    attn, x, mask = _attention_and_inputs(0)
    with torch.no_grad():
        ours = attn(x, mask)
        b, length, _ = x.shape
        split = lambda t: t.view(b, length, 4, DM // 4).transpose(1, 2)  # noqa: E731
        q, k, v = split(attn.q_proj(x)), split(attn.k_proj(x)), split(attn.v_proj(x))
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        ref = attn.out_proj(ref.transpose(1, 2).reshape(b, length, DM))
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_attention_matches_nn_multihead_attention():
    attn, x, mask = _attention_and_inputs(1)
    mha = torch.nn.MultiheadAttention(DM, 4, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(
            torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        )
        mha.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        mha.out_proj.weight.copy_(attn.out_proj.weight)
        mha.out_proj.bias.copy_(attn.out_proj.bias)
        ref, _ = mha(x, x, x, key_padding_mask=~mask, need_weights=False)
        ours = attn(x, mask)
        ours_nomask = attn(x, None)
        ref_nomask, _ = mha(x, x, x, need_weights=False)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours_nomask, ref_nomask, atol=ATOL, rtol=0)


def test_attention_fully_masked_rows_are_finite_with_finite_grads():
    attn, x, _ = _attention_and_inputs(2)
    mask = torch.tensor([[False] * 7, [True] * 2 + [False] * 5, [False] * 7])
    x = x.clone().requires_grad_(True)
    out = attn(x, mask)
    assert torch.isfinite(out).all()
    # a sample without valid keys attends to nothing: only out_proj's bias remains
    torch.testing.assert_close(out[0], attn.out_proj.bias.detach().expand(7, DM), atol=0, rtol=0)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def _reference_forward(model, video, vtime, text, ttime) -> torch.Tensor:
    """The documented architecture re-implemented with functional ops, from the state dict."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    cfg = model.config
    lin = lambda x, name: F.linear(x, sd[name + ".weight"], sd[name + ".bias"])  # noqa: E731
    ln = lambda x, name: F.layer_norm(  # noqa: E731
        x, (cfg.d_model,), sd[name + ".weight"], sd[name + ".bias"]
    )
    b = video.shape[0]
    content = torch.cat(
        [sd["cls_token"].expand(b, 1, -1), lin(video.double(), "video_proj"),
         lin(text.double(), "text_proj")], 1,
    )
    codes = [MODALITY_CLS] + [MODALITY_VIDEO] * video.shape[1] + [MODALITY_TEXT] * text.shape[1]
    times = torch.cat([torch.full((b, 1), float("nan"), dtype=torch.float64), vtime, ttime], 1)
    n = cfg.d_model // 2
    w = 10000.0 ** (-torch.arange(n, dtype=torch.float64) / n)
    ang = torch.nan_to_num(times, nan=0.0)[..., None] / cfg.time_scale * w
    temb = lin(torch.cat([ang.sin(), ang.cos()], -1), "time_embed.proj")
    temb = torch.where(times.isnan()[..., None], sd["time_embed.no_time"], temb)
    x = content + sd["modality_embed.weight"][codes] + temb
    heads, dh = cfg.num_heads, cfg.d_model // cfg.num_heads
    split = lambda t: t.view(b, -1, heads, dh).transpose(1, 2)  # noqa: E731
    for i in range(cfg.num_layers):
        p = f"layers.{i}."
        h = ln(x, p + "attn_norm")
        q, k, v = (split(lin(h, p + f"attn.{c}_proj")) for c in "qkv")
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
        x = x + lin(a, p + "attn.out_proj")
        h = ln(x, p + "ff_norm")
        x = x + lin(F.gelu(lin(h, p + "ff.0")), p + "ff.2")
    return ln(x, "final_norm")


def test_forward_matches_functional_reference(model):
    video, vtime, vmask, text, ttime, tmask = rand_inputs(2, 4, 3, seed=11)
    vtime[0, 1] = float("nan")
    ttime[1, :] = float("nan")
    out = run(model, video, vtime, vmask, text, ttime, tmask)
    ref = _reference_forward(model, video, vtime, text, ttime)
    torch.testing.assert_close(out.sequence.double(), ref, atol=1e-4, rtol=0)


def test_model_layer_attention_is_the_tested_module(model):
    assert all(isinstance(layer.attn, MultiHeadSelfAttention) for layer in model.layers)
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())


# --- time ---------------------------------------------------------------------------------
def test_nan_times_give_finite_outputs(model):
    video, vtime, vmask, text, ttime, tmask = rand_inputs(2, 4, 3, seed=5)
    vtime[0, 1] = float("nan")
    ttime[:] = float("nan")
    vtime[1, 2] = float("inf")
    out = run(model, video, vtime, vmask, text, ttime, tmask)
    assert torch.isfinite(out.sequence).all()
    assert torch.isfinite(out.cls).all()


def test_nan_times_have_finite_gradients():
    m = build_fusion(tiny_config(), seed=0).train()
    video, vtime, vmask, text, ttime, tmask = rand_inputs(1, 3, 2)
    vtime[0, 0] = float("nan")
    vmask[0, 2] = False
    out = m(video, vtime, vmask, text, ttime, tmask)
    out.cls.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_different_times_give_different_outputs(model):
    video, vtime, vmask, text, ttime, tmask = rand_inputs(1, 4, 3, seed=6)
    ref = run(model, video, vtime, vmask, text, ttime, tmask)
    shifted = run(model, video, vtime + 5.0, vmask, text, ttime, tmask)
    untimed = run(model, video, torch.full_like(vtime, float("nan")), vmask, text, ttime, tmask)
    assert (shifted.cls - ref.cls).abs().max() > 1e-3
    assert (untimed.cls - ref.cls).abs().max() > 1e-3
    # "no time" is its own learned vector, not time zero
    zero = run(model, video, torch.zeros_like(vtime), vmask, text, ttime, tmask)
    assert (untimed.cls - zero.cls).abs().max() > 1e-3
    assert (shifted.sequence[:, 1:5] - ref.sequence[:, 1:5]).abs().max() > 1e-3


def test_time_scale_is_applied():
    cfg1, cfg2 = tiny_config(time_scale=1.0), tiny_config(time_scale=2.0)
    m1, m2 = build_fusion(cfg1, seed=3), build_fusion(cfg2, seed=3)
    inputs = list(rand_inputs(1, 3, 2, seed=7))
    with torch.no_grad():
        a = m1(*inputs).sequence
        inputs[1], inputs[4] = inputs[1] * 2, inputs[4] * 2
        b = m2(*inputs).sequence
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


# --- initialisation -----------------------------------------------------------------------
def _state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_same_seed_same_weights_regardless_of_global_rng():
    torch.manual_seed(1)
    a = _state(build_fusion(tiny_config(), seed=42))
    torch.manual_seed(999)
    torch.randn(100)
    b = _state(build_fusion(tiny_config(), seed=42))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_different_seed_different_weights():
    a = _state(build_fusion(tiny_config(), seed=1))
    b = _state(build_fusion(tiny_config(), seed=2))
    assert not torch.equal(a["video_proj.weight"], b["video_proj.weight"])
    assert not torch.equal(a["cls_token"], b["cls_token"])
    assert not torch.equal(a["layers.1.attn.q_proj.weight"], b["layers.1.attn.q_proj.weight"])


def test_build_fusion_leaves_global_rng_untouched_and_returns_eval_model():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    m = build_fusion(tiny_config(), seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert not m.training


# --- fuse_one -----------------------------------------------------------------------------
def test_fuse_one_matches_forward(model):
    video, vtime, vmask, text, ttime, tmask = rand_inputs(1, 4, 3, seed=8)
    ttime[0, 1] = float("nan")
    ref = run(model, video, vtime, vmask, text, ttime, tmask)
    got = fuse_one(model, video[0].numpy(), vtime[0].numpy(), text[0].numpy(), ttime[0].numpy())
    assert set(got) == {"sequence", "modality", "time", "source_index", "cls"}
    assert got["sequence"].dtype == np.float32 and got["sequence"].shape == (8, DM)
    assert got["cls"].dtype == np.float32 and got["cls"].shape == (DM,)
    assert got["modality"].dtype == np.int8
    assert got["modality"].tolist() == [0, 1, 1, 1, 1, 2, 2, 2]
    assert got["source_index"].dtype == np.int32
    assert got["source_index"].tolist() == [-1, 0, 1, 2, 3, 0, 1, 2]
    np.testing.assert_array_equal(got["time"], ref.time[0].numpy())
    np.testing.assert_allclose(got["sequence"], ref.sequence[0].numpy(), atol=ATOL, rtol=0)
    np.testing.assert_array_equal(got["cls"], got["sequence"][0])


@pytest.mark.parametrize("which", ["video", "text"])
def test_fuse_one_single_modality(model, which):
    feats = np.random.default_rng(0).standard_normal((3, VD if which == "video" else TD))
    times = np.array([0.0, 1.0, 2.0])
    if which == "video":
        got = fuse_one(model, feats, times, None, None)
        code = MODALITY_VIDEO
    else:
        got = fuse_one(model, None, None, feats, times)
        code = MODALITY_TEXT
    assert got["sequence"].shape == (4, DM)
    assert got["modality"].tolist() == [MODALITY_CLS, code, code, code]
    assert got["source_index"].tolist() == [-1, 0, 1, 2]
    assert np.isfinite(got["sequence"]).all()


# --- checkpoints --------------------------------------------------------------------------
META = {
    "video_model": "resnet50", "text_model": "all-minilm-l6-v2", "trained_steps": 1234,
}


def test_checkpoint_roundtrip_identical_outputs(model, tmp_path):
    path = tmp_path / "fusion.safetensors"
    save_fusion_weights(path, model, model.config, META)
    assert sorted(os.listdir(tmp_path)) == ["fusion.safetensors"]  # no temp file left
    loaded, cfg, meta = load_fusion_weights(
        path, expect_video_dim=VD, expect_text_dim=TD,
        expect_video_model="resnet50", expect_text_model="all-minilm-l6-v2",
    )
    assert cfg == model.config
    assert meta == {**META, "video_dim": VD, "text_dim": TD}
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    inputs = rand_inputs(2, 4, 3, seed=9)
    assert torch.equal(run(loaded, *inputs).sequence, run(model, *inputs).sequence)


def test_checkpoint_overwrite_and_sha256(model, tmp_path):
    path = tmp_path / "w.safetensors"
    save_fusion_weights(path, model, model.config, META)
    first = weights_sha256(path)
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    other = build_fusion(model.config, seed=99)
    save_fusion_weights(path, other, other.config, META)
    assert weights_sha256(path) != first
    loaded, _, _ = load_fusion_weights(path)
    assert torch.equal(loaded.cls_token, other.cls_token)


def test_checkpoint_refuses_dim_mismatch(model, tmp_path):
    path = tmp_path / "w.safetensors"
    save_fusion_weights(path, model, model.config, META)
    with pytest.raises(ConfigError) as err:
        load_fusion_weights(path, expect_video_dim=VD + 4)
    assert err.value.message == (
        f"fusion weights were trained on video features from 'resnet50' ({VD}-d) "
        f"but the input has {VD + 4}-d features"
    )
    assert err.value.hint and err.value.path == str(path)
    with pytest.raises(ConfigError, match=f"text features from 'all-minilm-l6-v2' \\({TD}-d\\)"):
        load_fusion_weights(path, expect_text_dim=TD + 1)


def test_checkpoint_refuses_model_mismatch(model, tmp_path):
    path = tmp_path / "w.safetensors"
    save_fusion_weights(path, model, model.config, META)
    with pytest.raises(ConfigError) as err:
        load_fusion_weights(path, expect_video_model="efficientnet-lite0", expect_video_dim=1280)
    assert err.value.message == (
        f"fusion weights were trained on video features from 'resnet50' ({VD}-d) "
        "but the input has 'efficientnet-lite0' (1280-d)"
    )
    with pytest.raises(ConfigError, match="text features from 'all-minilm-l6-v2'"):
        load_fusion_weights(path, expect_text_model="bert-base-uncased")
    # same dim, other model: still refused
    with pytest.raises(ConfigError, match="'efficientnet-lite0'"):
        load_fusion_weights(path, expect_video_model="efficientnet-lite0", expect_video_dim=VD)


def test_checkpoint_refuses_unrecorded_model_when_one_is_expected(model, tmp_path):
    path = tmp_path / "w.safetensors"
    save_fusion_weights(path, model, model.config, {})
    load_fusion_weights(path, expect_video_dim=VD)  # dims alone can be checked
    with pytest.raises(ConfigError, match="an unrecorded model"):
        load_fusion_weights(path, expect_video_model="resnet50")


def test_checkpoint_refuses_non_safetensors_and_missing(tmp_path):
    bogus = tmp_path / "weights.pt"
    bogus.write_bytes(b"this is not a safetensors file at all" * 10)
    with pytest.raises(ConfigError, match="not a safetensors file"):
        load_fusion_weights(bogus)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError, match="not a safetensors file"):
        load_fusion_weights(empty)
    with pytest.raises(ConfigError, match="not found"):
        load_fusion_weights(tmp_path / "nope.safetensors")
    with pytest.raises(ConfigError):
        weights_sha256(tmp_path / "nope.safetensors")


def test_checkpoint_refuses_foreign_safetensors_and_missing_tensors(model, tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(ConfigError, match="not a videobert-cli fusion checkpoint"):
        load_fusion_weights(foreign)

    good = tmp_path / "good.safetensors"
    save_fusion_weights(good, model, model.config, META)
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in tensors.items() if k != "cls_token"}, str(partial), header)
    with pytest.raises(ConfigError, match="missing tensors: cls_token"):
        load_fusion_weights(partial)
    bad_shape = tmp_path / "bad_shape.safetensors"
    save_file({**tensors, "cls_token": torch.zeros(DM + 1)}, str(bad_shape), header)
    with pytest.raises(ConfigError, match="cls_token has shape"):
        load_fusion_weights(bad_shape)
    bad_cfg = tmp_path / "bad_cfg.safetensors"
    save_file(tensors, str(bad_cfg), {**header, "config": json.dumps({"video_dim": 3})})
    with pytest.raises(ConfigError, match="text_dim"):
        load_fusion_weights(bad_cfg)


def test_save_refuses_unserialisable_or_inconsistent_metadata(model, tmp_path):
    path = tmp_path / "w.safetensors"
    with pytest.raises(ConfigError, match="JSON"):
        save_fusion_weights(path, model, model.config, {"bad": object()})
    with pytest.raises(ConfigError, match="video_dim"):
        save_fusion_weights(path, model, model.config, {"video_dim": VD + 1})
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_loading_does_not_touch_global_rng(model, tmp_path):
    path = tmp_path / "w.safetensors"
    save_fusion_weights(path, model, model.config, META)
    before = torch.get_rng_state()
    load_fusion_weights(path)
    assert torch.equal(torch.get_rng_state(), before)


def test_attention_in_query_blocks_equals_one_block(monkeypatch):
    """Long sequences are attended in query blocks (bounded memory) with identical results."""
    import videobert_cli.fusion.model as fusion_model

    torch.manual_seed(0)
    attention = fusion_model.MultiHeadSelfAttention(16, 4).eval()
    x = torch.randn(2, 37, 16)
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[1, 30:] = False
    with torch.no_grad():
        whole = attention(x, mask)
        monkeypatch.setattr(fusion_model, "QUERY_BLOCK_ELEMENTS", 2 * 4 * 37 * 5)  # 5 query rows per block
        blocked = attention(x, mask)
    torch.testing.assert_close(blocked, whole, atol=1e-6, rtol=1e-6)
