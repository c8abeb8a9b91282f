"""What models exist and whether each works offline (for `videobert models`)."""

from __future__ import annotations

from videobert_cli.text.models import registered_text_models, text_weights_available
from videobert_cli.video.models import (
    get_video_model_entry,
    registered_video_models,
    torchvision_classification_models,
)

#: torchvision models listed by default (``--all`` lists every classification model)
COMMON_TORCHVISION = ("resnet18", "resnet50", "resnet152", "vgg16", "efficientnet_b0", "convnext_tiny", "vit_b_16")


def list_models(*, include_all_torchvision: bool = False) -> list[dict]:
    """Rows of kind, name, feature_dim, offline, description; never downloads anything."""
    rows = []
    names = [entry.name for entry in registered_video_models()]
    extra = torchvision_classification_models() if include_all_torchvision else list(COMMON_TORCHVISION)
    names += [name for name in extra if name not in names]
    for name in names:
        entry = get_video_model_entry(name)
        rows.append(
            {
                "kind": "video",
                "name": name,
                "feature_dim": entry.feature_dim(),
                "offline": entry.weights_available("default"),
                "description": entry.description,
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
