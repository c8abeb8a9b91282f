"""The fusion Transformer: a VideoBERT-style joint encoder over video and text features.

Input layout of the fused sequence (one sample)::

    [CLS] v_0 ... v_{Nv-1} t_0 ... t_{Nt-1}

Each position's input vector is the sum of

* its content: the learned ``cls_token`` for [CLS], ``video_proj(video_feature)`` or
  ``text_proj(text_feature)`` otherwise;
* ``modality_embed[code]`` with the ``MODALITY_*`` codes of :mod:`videobert_cli.features`;
* a time embedding: ``time_proj(sinusoid(t / time_scale))`` for a finite time ``t`` in
  seconds, the learned ``no_time`` vector when ``t`` is NaN/inf (always for [CLS]);
* with ``video_delta`` (off in older checkpoints), for video positions also
  ``delta_proj(x_t - x_prev)``: the change of the frame feature since the previous frame *in
  time* (zero for a sample's first frame and for untimed frames). Pooling over frames loses
  the direction of change; this channel hands it to every position.

There is no index-based positional embedding: order *within* a modality is carried only by
time. This makes the encoder equivariant to permuting positions together with their times
(the tests rely on it) - and means untimed text tokens form a bag of tokens.

The encoder is **pre-LN**: each layer computes ``x + Attn(LN(x))`` then ``x + FFN(LN(x))``
and a final LayerNorm (``final_norm``) is applied to the output of the last layer. Pre-LN
is used because it trains stably without learning-rate warm-up tuning.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from videobert_cli.errors import ConfigError
from videobert_cli.features import MODALITY_CLS, MODALITY_SEP, MODALITY_SEP_VIDEO, MODALITY_TEXT, MODALITY_VIDEO

#: score-matrix elements computed at once per attention call (1 Mi floats = 4 MB in fp32; the
#: scores, their masked copy and the probabilities exist together). 64 Mi made the run's peak
#: memory grow by ~400 MB from a 1-minute to a 10-minute video (3001 positions, one block);
#: at 1 Mi the blocks are still large enough for full-speed matrix products.
QUERY_BLOCK_ELEMENTS = 1024 * 1024
#: standard deviation of the normal initialisation of weights and embeddings (BERT's value)
INIT_STD = 0.02
#: longest period of the sinusoidal time features is 2*pi*TIME_MAX_PERIOD (in time units)
TIME_MAX_PERIOD = 10000.0


@dataclass(frozen=True)
class FusionConfig:
    """Hyper-parameters of :class:`FusionTransformer`; validated on construction.

    ``time_scale`` is the number of seconds per unit fed to the sinusoidal time features,
    e.g. ``time_scale=0.5`` makes the fastest sinusoid complete a cycle every ``pi`` seconds.
    """

    video_dim: int
    text_dim: int
    d_model: int = 256
    num_layers: int = 2
    num_heads: int = 4
    ff_dim: int = 1024
    dropout: float = 0.0
    time_scale: float = 1.0
    video_delta: bool = False  # neighbouring-frame differences as an input channel

    def __post_init__(self) -> None:
        for name in ("video_dim", "text_dim", "d_model", "num_layers", "num_heads", "ff_dim"):
            value = getattr(self, name)
            # bool is an int subclass; True as a dimension is always a mistake
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ConfigError(
                    f"fusion config: {name} must be an integer, got {value!r}",
                    hint="check the fusion configuration / checkpoint",
                )
            if value <= 0:
                raise ConfigError(
                    f"fusion config: {name} must be positive, got {value}",
                    hint="check the fusion configuration / checkpoint",
                )
            object.__setattr__(self, name, int(value))
        if self.d_model % self.num_heads != 0:
            raise ConfigError(
                f"fusion config: d_model ({self.d_model}) must be divisible by "
                f"num_heads ({self.num_heads})",
                hint="pick num_heads that divides d_model, e.g. d_model=256 with num_heads=4",
            )
        for name in ("dropout", "time_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(
                value, bool
            ):
                raise ConfigError(
                    f"fusion config: {name} must be a number, got {value!r}",
                    hint="check the fusion configuration / checkpoint",
                )
            object.__setattr__(self, name, float(value))
        if not isinstance(self.video_delta, (bool, np.bool_)):
            raise ConfigError(
                f"fusion config: video_delta must be true or false, got {self.video_delta!r}",
                hint="check the fusion configuration / checkpoint",
            )
        object.__setattr__(self, "video_delta", bool(self.video_delta))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"fusion config: dropout must be in [0, 1), got {self.dropout}",
                hint="use e.g. dropout=0.1",
            )
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ConfigError(
                f"fusion config: time_scale must be a positive number of seconds, "
                f"got {self.time_scale}",
                hint="use time_scale=1.0 to feed seconds to the time embedding",
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-safe dict (ints and floats only)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionConfig:
        """Build a config from :meth:`to_dict` output; unknown or missing keys raise ConfigError.

        Keys added after a checkpoint was written (``time_scale``, ``video_delta``) take their
        defaults, which reproduce the model that checkpoint was trained as.
        """
        if not isinstance(data, dict):
            raise ConfigError(
                f"fusion config must be a mapping, got {type(data).__name__}",
                hint="the checkpoint or config file is malformed",
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"fusion config has unknown keys: {', '.join(map(str, unknown))}",
                hint="the checkpoint may come from a newer videobert-cli; upgrade it",
            )
        missing = sorted(k for k in ("video_dim", "text_dim") if k not in data)
        if missing:
            raise ConfigError(
                f"fusion config lacks required keys: {', '.join(missing)}",
                hint="the checkpoint or config file is malformed",
            )
        return cls(**data)


@dataclass(frozen=True)
class FusionOutput:
    """Batched output of :meth:`FusionTransformer.forward`; ``L = 1 + Nv + Nt``.

    Positions whose mask is False (padding) have an all-zero ``sequence`` row and NaN time.
    """

    sequence: torch.Tensor  # (B, L, d_model), after the final LayerNorm
    modality: torch.Tensor  # (B, L) int8, MODALITY_* codes
    time: torch.Tensor  # (B, L) float64 seconds, NaN for [CLS], padding and untimed positions
    mask: torch.Tensor  # (B, L) bool, True = valid; [CLS] is always valid
    cls: torch.Tensor  # (B, d_model) == sequence[:, 0]


class MultiHeadSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention, written out explicitly.

    ``Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head)) V`` per head, with padded keys set
    to -inf before the softmax. Equivalent to ``nn.MultiheadAttention(batch_first=True)``
    with ``in_proj_weight = cat(q_proj.weight, k_proj.weight, v_proj.weight)``.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % num_heads != 0:
            raise ConfigError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.attn_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend ``x`` (B, L, d_model) to itself; ``key_mask`` (B, L) bool, True = valid key.

        A query whose keys are all masked gets an all-zero attention result (then
        ``out_proj``'s bias), never NaN.
        """
        b, length, d_model = x.shape
        # (B, L, d) -> (B, H, L, d_head)
        q = self.q_proj(x).view(b, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, length, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.num_heads, self.head_dim).transpose(1, 2)

        if key_mask is not None:
            key_mask = key_mask.to(torch.bool)
            any_valid = key_mask.any(dim=-1)  # (B,)
            # A row of only -inf would make softmax return NaN (in forward and backward);
            # for samples without any valid key, let the softmax see all keys and zero the
            # probabilities afterwards instead.
            safe_mask = key_mask | ~any_valid[:, None]
        # Queries are processed in blocks: each query row's softmax is independent, so the
        # result is identical, but the (L x L) score matrix of a long video (an hour at 1 fps
        # plus its transcript is ~20k positions: 6 GB per layer) never exists at once.
        rows = max(1, QUERY_BLOCK_ELEMENTS // max(1, b * self.num_heads * length))
        # one output buffer, filled block by block: a list of small per-block results kept
        # alive between the blocks' large temporaries fragmented the heap (+1 GB at L = 8000)
        out = torch.empty_like(q) if rows < length else None
        for start in range(0, length, rows):
            scores = torch.matmul(q[:, :, start : start + rows], k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if key_mask is not None:
                scores = scores.masked_fill(~safe_mask[:, None, None, :], float("-inf"))
                probs = torch.softmax(scores, dim=-1)
                probs = probs * any_valid[:, None, None, None].to(probs.dtype)
            else:
                probs = torch.softmax(scores, dim=-1)
            probs = self.attn_dropout(probs)
            block = torch.matmul(probs, v)  # (B, H, rows, d_head)
            if out is None:
                out = block
            else:
                out[:, :, start : start + rows] = block
        out = out.transpose(1, 2).reshape(b, length, d_model)
        return self.out_proj(out)


class FusionLayer(nn.Module):
    """One pre-LN Transformer layer: ``x + Attn(LN(x))``, then ``x + FFN(LN(x))``."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model)
        self.attn = MultiHeadSelfAttention(config.d_model, config.num_heads, config.dropout)
        self.ff_norm = nn.LayerNorm(config.d_model)
        self.ff = nn.Sequential(
            nn.Linear(config.d_model, config.ff_dim),
            nn.GELU(),
            nn.Linear(config.ff_dim, config.d_model),
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``x`` (B, L, d_model) with ``key_mask`` (B, L), True = valid."""
        x = x + self.dropout(self.attn(self.attn_norm(x), key_mask))
        x = x + self.dropout(self.ff(self.ff_norm(x)))
        return x


class TimeEmbedding(nn.Module):
    """Embed timestamps in seconds: ``proj(sinusoid(t / time_scale))``, or ``no_time`` if t is NaN.

    ``sinusoid(u) = [sin(u * w_0), ..., sin(u * w_{n-1}), cos(u * w_0), ..., cos(u * w_{n-1})]``
    with ``w_i = TIME_MAX_PERIOD ** (-i / n)`` and ``n = max(1, d_model // 2)``, i.e. the
    Transformer positional-encoding frequencies applied to continuous time.
    """

    def __init__(self, d_model: int, time_scale: float):
        super().__init__()
        self.time_scale = float(time_scale)
        n_freq = max(1, d_model // 2)
        freqs = TIME_MAX_PERIOD ** (-torch.arange(n_freq, dtype=torch.float64) / n_freq)
        # a buffer so it follows .to(device) but is not a learned (or saved) weight
        self.register_buffer("freqs", freqs, persistent=False)
        self.proj = nn.Linear(2 * n_freq, d_model)
        self.no_time = nn.Parameter(torch.zeros(d_model))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Map times ``t`` (...,) in seconds to (..., d_model); non-finite t -> ``no_time``."""
        t = t.to(torch.float64)
        has_time = torch.isfinite(t)
        # Zero the missing times *before* sin/cos so no NaN enters the graph at all
        # (torch.where would still back-propagate NaN gradients through the other branch).
        u = torch.where(has_time, t, torch.zeros_like(t)) / self.time_scale
        angles = u[..., None] * self.freqs  # float64: keeps precision for long videos
        feats = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
        emb = self.proj(feats.to(self.proj.weight.dtype))
        return torch.where(has_time[..., None], emb, self.no_time.to(emb.dtype))


class FusionTransformer(nn.Module):
    """VideoBERT-style joint encoder over video and text feature sequences.

    Parameter names (the state-dict keys of saved checkpoints): ``video_proj``,
    ``text_proj``, ``modality_embed``, ``time_embed.proj``, ``time_embed.no_time``,
    ``cls_token``, ``layers.{i}.{attn_norm,attn.{q,k,v,out}_proj,ff_norm,ff.0,ff.2}``,
    ``final_norm``; ``delta_proj`` only with ``config.video_delta``.
    """

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.video_proj = nn.Linear(config.video_dim, d)
        # only when enabled: checkpoints without the channel keep their exact state-dict keys
        self.delta_proj = nn.Linear(config.video_dim, d) if config.video_delta else None
        self.text_proj = nn.Linear(config.text_dim, d)
        self.modality_embed = nn.Embedding(3, d)
        self.time_embed = TimeEmbedding(d, config.time_scale)
        self.cls_token = nn.Parameter(torch.zeros(d))
        # VideoBERT's segment layout: [>] between text and video, [SEP] at the end
        self.sep_tokens = nn.Parameter(torch.zeros(2, d))
        self.embed_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(FusionLayer(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(d)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """(Re)initialise every parameter from ``generator`` only (BERT-style).

        Linear weights, embeddings, ``cls_token`` and ``no_time`` ~ N(0, 0.02); biases 0;
        LayerNorm weight 1, bias 0. The global RNG is not used.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, INIT_STD, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, INIT_STD, generator=generator)
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        self.cls_token.normal_(0.0, INIT_STD, generator=generator)
        self.time_embed.no_time.normal_(0.0, INIT_STD, generator=generator)
        self.sep_tokens.normal_(0.0, INIT_STD, generator=generator)

    def _check_input(
        self,
        name: str,
        feats: torch.Tensor,
        times: torch.Tensor,
        mask: torch.Tensor | None,
        dim: int,
    ) -> torch.Tensor:
        """Validate one modality's tensors; return its mask (all True when None)."""
        if feats.dim() != 3:
            raise ValueError(f"{name} must be (B, N, D), got shape {tuple(feats.shape)}")
        if feats.shape[-1] != dim:
            raise ConfigError(
                f"{name} features are {feats.shape[-1]}-d but the fusion model expects "
                f"{dim}-d",
                hint=f"use fusion weights trained on {feats.shape[-1]}-d {name} features",
            )
        if tuple(times.shape) != tuple(feats.shape[:2]):
            raise ValueError(
                f"{name}_time must be (B, N) = {tuple(feats.shape[:2])}, "
                f"got {tuple(times.shape)}"
            )
        if mask is None:
            return torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        if tuple(mask.shape) != tuple(feats.shape[:2]):
            raise ValueError(
                f"{name}_mask must be (B, N) = {tuple(feats.shape[:2])}, got {tuple(mask.shape)}"
            )
        return mask.to(torch.bool)

    def video_content(self, video: torch.Tensor, times: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Content vectors of the video positions: ``video_proj(x)`` (+ ``delta_proj`` of changes).

        ``video`` is already zeroed at padding and ``times`` NaN there. The previous frame of a
        position is the valid, timed frame just before it in time (ties by row), so permuting
        rows together with their times permutes the output the same way.
        """
        out = self.video_proj(video)
        if self.delta_proj is None or video.shape[1] == 0:
            return out
        timed = mask & torch.isfinite(times)
        key = torch.where(timed, times, torch.full_like(times, float("inf")))
        order = torch.sort(key, dim=1, stable=True).indices  # timed frames first, in time order
        ordered = torch.gather(video, 1, order[..., None].expand_as(video))
        ordered_timed = torch.gather(timed, 1, order)
        delta = torch.zeros_like(ordered)
        both = ordered_timed[:, 1:] & ordered_timed[:, :-1]
        delta[:, 1:] = torch.where(both[..., None], ordered[:, 1:] - ordered[:, :-1], 0.0)
        back = torch.empty_like(delta)
        back.scatter_(1, order[..., None].expand_as(delta), delta)
        return out + self.delta_proj(back)

    def forward(
        self,
        video: torch.Tensor,
        video_time: torch.Tensor,
        video_mask: torch.Tensor | None,
        text: torch.Tensor,
        text_time: torch.Tensor,
        text_mask: torch.Tensor | None,
        layout: str = "video_text",
    ) -> FusionOutput:
        """Encode a batch of video and text sequences jointly.

        ``layout`` orders the output: ``"video_text"`` is ``[CLS] video... text...``;
        ``"videobert"`` is VideoBERT's ``[CLS] text... [>] video... [SEP]`` with learned
        separator vectors (modality codes MODALITY_SEP_VIDEO / MODALITY_SEP). Positions carry
        no index embedding, so the layout changes the order of the output, and adds the two
        separators, but nothing else.

        Args:
            video: (B, Nv, video_dim) features; Nv may be 0.
            video_time: (B, Nv) seconds; NaN = no time.
            video_mask: (B, Nv) bool, True = valid (None: all valid).
            text: (B, Nt, text_dim) features; Nt may be 0.
            text_time: (B, Nt) seconds; NaN = no time.
            text_mask: (B, Nt) bool, True = valid (None: all valid).

        Returns:
            :class:`FusionOutput` over the sequence ``[CLS] video... text...``.
        """
        cfg = self.config
        video_mask = self._check_input("video", video, video_time, video_mask, cfg.video_dim)
        text_mask = self._check_input("text", text, text_time, text_mask, cfg.text_dim)
        if video.shape[0] != text.shape[0]:
            raise ValueError(
                f"video and text batch sizes differ: {video.shape[0]} vs {text.shape[0]}"
            )
        b, nv, nt = video.shape[0], video.shape[1], text.shape[1]
        device = self.cls_token.device
        dtype = self.cls_token.dtype
        video_mask = video_mask.to(device)
        text_mask = text_mask.to(device)

        # Padding may hold anything (even NaN/inf); zero it so 0 * garbage cannot leak
        # into valid positions through the attention's probability-weighted sum.
        video = torch.where(video_mask[..., None], video.to(device, dtype), 0.0)
        text = torch.where(text_mask[..., None], text.to(device, dtype), 0.0)
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=device)
        video_time = torch.where(video_mask, video_time.to(device, torch.float64), nan)
        text_time = torch.where(text_mask, text_time.to(device, torch.float64), nan)

        def full(n: int, code: int) -> torch.Tensor:
            return torch.full((b, n), code, dtype=torch.long, device=device)

        one = torch.ones((b, 1), dtype=torch.bool, device=device)
        cls = self.cls_token.expand(b, 1, -1)
        if layout == "video_text":
            parts = [
                (cls, full(1, MODALITY_CLS), nan.expand(b, 1), one),
                (self.video_content(video, video_time, video_mask), full(nv, MODALITY_VIDEO), video_time, video_mask),
                (self.text_proj(text), full(nt, MODALITY_TEXT), text_time, text_mask),
            ]
        elif layout == "videobert":
            parts = [
                (cls, full(1, MODALITY_CLS), nan.expand(b, 1), one),
                (self.text_proj(text), full(nt, MODALITY_TEXT), text_time, text_mask),
                (self.sep_tokens[0].expand(b, 1, -1), full(1, MODALITY_SEP_VIDEO), nan.expand(b, 1), one),
                (self.video_content(video, video_time, video_mask), full(nv, MODALITY_VIDEO), video_time, video_mask),
                (self.sep_tokens[1].expand(b, 1, -1), full(1, MODALITY_SEP), nan.expand(b, 1), one),
            ]
        else:
            raise ValueError(f"unknown layout {layout!r}")
        content = torch.cat([part[0] for part in parts], dim=1)
        modality = torch.cat([part[1] for part in parts], dim=1)
        time = torch.cat([part[2] for part in parts], dim=1)
        mask = torch.cat([part[3] for part in parts], dim=1)

        # separators share the [CLS] modality embedding ("special token"); their own vectors
        # tell them apart
        embed_codes = torch.where(modality >= MODALITY_SEP_VIDEO, MODALITY_CLS, modality)
        x = content + self.modality_embed(embed_codes) + self.time_embed(time)
        x = self.embed_dropout(x)
        for layer in self.layers:
            x = layer(x, mask)
        x = self.final_norm(x)
        x = torch.where(mask[..., None], x, 0.0)

        return FusionOutput(
            sequence=x,
            modality=modality.to(torch.int8),
            time=time,
            mask=mask,
            cls=x[:, 0],
        )


def build_fusion(config: FusionConfig, seed: int) -> FusionTransformer:
    """Create a :class:`FusionTransformer` initialised deterministically from ``seed``.

    The same (config, seed) always gives identical weights, whatever the global RNG state,
    and the global RNG state is left untouched. The model is returned in eval mode on CPU.
    """
    # nn.Linear & co. draw their default init from the global CPU RNG while being
    # constructed; fork_rng restores that state afterwards. The weights themselves come
    # only from the private generator below.
    with torch.random.fork_rng(devices=[]):
        model = FusionTransformer(config)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    model.init_weights(generator)
    return model.eval()


def _as_2d(
    name: str, feats: np.ndarray | None, times: np.ndarray | None, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Normalise one modality of an unbatched sample; None means no positions."""
    if feats is None:
        feats = np.zeros((0, dim), dtype=np.float32)
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2:
        raise ValueError(f"{name} features must be (N, D), got shape {feats.shape}")
    if feats.shape[0] == 0 and feats.shape[1] != dim:
        # an empty array of the wrong width carries no data; don't refuse it
        feats = np.zeros((0, dim), dtype=np.float32)
    if times is None:
        times = np.full(feats.shape[0], np.nan)
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if times.shape[0] != feats.shape[0]:
        raise ValueError(
            f"{name} has {feats.shape[0]} feature rows but {times.shape[0]} timestamps"
        )
    return feats, times


def fuse_one(
    model: FusionTransformer,
    video_feats: np.ndarray | None,
    video_time: np.ndarray | None,
    text_feats: np.ndarray | None,
    text_time: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Fuse one unbatched sample under ``torch.inference_mode``.

    Args:
        video_feats: (Nv, video_dim) or None (no video positions).
        video_time: (Nv,) seconds, NaN = no time (None: all NaN).
        text_feats: (Nt, text_dim) or None.
        text_time: (Nt,) seconds (None: all NaN).

    Returns:
        dict with ``sequence`` (L, d_model) float32, ``modality`` (L,) int8, ``time`` (L,)
        float64 (NaN for [CLS]), ``source_index`` (L,) int32 (-1 for [CLS], else the row
        within its modality) and ``cls`` (d_model,) float32; ``L = 1 + Nv + Nt``.
    """
    cfg = model.config
    video_np, vtime_np = _as_2d("video", video_feats, video_time, cfg.video_dim)
    text_np, ttime_np = _as_2d("text", text_feats, text_time, cfg.text_dim)
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(
            torch.from_numpy(video_np)[None].to(device),
            torch.from_numpy(vtime_np)[None].to(device),
            None,
            torch.from_numpy(text_np)[None].to(device),
            torch.from_numpy(ttime_np)[None].to(device),
            None,
        )
    nv, nt = video_np.shape[0], text_np.shape[0]
    source_index = np.concatenate(
        [np.array([-1]), np.arange(nv), np.arange(nt)]
    ).astype(np.int32)
    return {
        "sequence": out.sequence[0].float().cpu().numpy(),
        "modality": out.modality[0].cpu().numpy().astype(np.int8),
        "time": out.time[0].cpu().numpy().astype(np.float64),
        "source_index": source_index,
        "cls": out.cls[0].float().cpu().numpy(),
    }
