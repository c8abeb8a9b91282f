"""What models exist and whether each works offline (for `videobert models`)."""

from __future__ import annotations

from videobert_cli.errors import VideoBertError
from videobert_cli.text.models import registered_text_models, text_weights_available
from videobert_cli.video.models import (
    get_video_model_entry,
    registered_video_models,
    torchvision_classification_models,
    torchvision_video_models,
)

#: torchvision models listed by default (``--all`` lists every classification model)
COMMON_TORCHVISION = ("resnet18", "resnet50", "resnet152", "vgg16", "efficientnet_b0", "convnext_tiny", "vit_b_16")
#: torchvision clip models listed by default (``--all`` lists every video model); s3d is VideoBERT's
COMMON_TORCHVISION_CLIPS = ("s3d", "r2plus1d_18")


def list_models(*, include_all_torchvision: bool = False) -> list[dict]:
    """Rows of kind, name, model_kind, feature_dim, offline, description; never downloads anything.

    A model that cannot serve as a feature extractor (its classifier is not a final linear
    layer) is listed with ``feature_dim`` None and why, instead of ending the listing."""
    rows = []
    names = [entry.name for entry in registered_video_models()]
    if include_all_torchvision:
        extra = torchvision_classification_models() + torchvision_video_models()
    else:
        extra = list(COMMON_TORCHVISION) + list(COMMON_TORCHVISION_CLIPS)
    names += [name for name in extra if name not in names]
    for name in names:
        entry = get_video_model_entry(name)
        try:
            feature_dim, description = entry.feature_dim(), entry.description
        except VideoBertError as error:
            feature_dim, description = None, f"{entry.description} - not usable: {error.message}"
        rows.append(
            {
                "kind": "video",
                "name": name,
                "model_kind": entry.kind,  # "frame" or "clip" (takes clips of frames: s3d, ...)
                "feature_dim": feature_dim,
                "offline": entry.weights_available("default"),
                "description": description,
            }
        )
    for alias in registered_text_models():
        rows.append(
            {
                "kind": "text",
                "name": alias.name,
                "feature_dim": alias.feature_dim,
                "offline": text_weights_available(alias.name),
                "description": alias.description,
            }
        )
    return rows
