"""Text towers of image-text models: ``--text-model hf:<hub name or local directory>``.

For CLIP and SigLIP (fixed-resolution SigLIP2 included) the per-token features are the last
hidden state of the model's text tower (``model.text_model``), windows are framed by the
tokenizer's own special tokens (CLIP: start/end of text; SigLIP: end of sequence) and limited to
the tower's position embeddings (77 for CLIP, 64 for SigLIP). SigLIP's tower is used with every
sequence padded to its full length (``padding="max_length"``, as its model card prescribes), so
windows are padded so too. Other ``hf:`` names load as plain text encoders (``AutoModel``).
"""

from __future__ import annotations

from videobert_cli.config import TextModelConfig
from videobert_cli.hf_hub import (
    HF_PREFIX,
    IMAGE_TEXT_TYPES,
    freeze,
    from_pretrained,
    hf_location,
    require_config,
    weights_available,
    weights_identity,
)
from videobert_cli.text.models import LoadedTextModel, load_text_model, register_text_model_prefix


def padding_rule(model_type: str | None) -> str:
    """How the model's tokenizer output is padded: SigLIP to the full window, others per batch."""
    return "max_length" if model_type == "siglip" else "longest"


def special_framing(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prefix, suffix) special-token ids the tokenizer puts around a text."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(framed) - len(plain) + 1):
        if framed[start : start + len(plain)] == plain:
            return tuple(framed[:start]), tuple(framed[start + len(plain):])
    raise ValueError(f"cannot find the special tokens of {type(tokenizer).__name__}")


def text_max_length(model_config: dict, tokenizer) -> int:
    """The tower's window: its position embeddings, or the tokenizer's limit if smaller."""
    text_config = model_config["text_config"]
    positions = int(text_config.get("max_position_embeddings", 77))
    limit = getattr(tokenizer, "model_max_length", positions) or positions
    return min(positions, int(limit)) if limit < 1_000_000 else positions


def load_text_tower(name: str):
    """(full model, tokenizer, config dict) of an ``hf:`` image-text model, frozen, on the CPU."""
    from transformers import AutoModel, AutoTokenizer

    _, model_config = require_config(name)
    tokenizer = from_pretrained(AutoTokenizer, name)
    model = freeze(from_pretrained(AutoModel, name))
    return model, tokenizer, model_config


def load_hf_text_model(config: TextModelConfig) -> LoadedTextModel:
    """The text tower of an image-text model, or a plain encoder for any other ``hf:`` name."""
    location = hf_location(config.name)
    _, model_config = require_config(config.name)
    model_type = model_config.get("model_type")
    if model_type not in IMAGE_TEXT_TYPES:
        loaded = load_text_model(TextModelConfig(name=location, max_length=config.max_length))
        loaded.name = config.name
        return loaded
    model, tokenizer, model_config = load_text_tower(config.name)
    prefix, suffix = special_framing(tokenizer)
    max_length = text_max_length(model_config, tokenizer)
    if config.max_length is not None:
        max_length = min(max_length, config.max_length)
    names = tuple(n for n in tokenizer.model_input_names if n in ("attention_mask", "token_type_ids"))
    weights_name, sha256 = weights_identity(config.name, model)
    return LoadedTextModel(
        name=config.name,
        location=location,
        tokenizer=tokenizer,
        model=model.text_model,
        hidden_size=int(model_config["text_config"]["hidden_size"]),
        max_length=max_length,
        weights_sha256=sha256,
        prefix_ids=prefix,
        suffix_ids=suffix,
        pad_to_max_length=padding_rule(model_type) == "max_length",
        input_names=names,
        extra_identity={"weights_name": weights_name, "model_family": model_type,
                        "padding": padding_rule(model_type), "feature_space": "text tower, per token"},
    )


register_text_model_prefix(HF_PREFIX, load_hf_text_model, lambda name: weights_available(hf_location(name)))
