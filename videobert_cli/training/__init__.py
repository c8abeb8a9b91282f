"""Training and evaluating the fusion Transformer on features read from HDF5 files.

The feature encoders stay frozen: training reads the ``video/`` and ``text/`` features that
``videobert run`` wrote and trains only the fusion model (plus small training heads).
See ``docs/training.md`` for the objectives, the files a run writes and an example.

    from videobert_cli.training import TrainConfig, train, evaluate

    result = train(files, "fusion.safetensors", TrainConfig(epochs=20, losses="nce=1,align=1"))
    report = evaluate(files, "fusion.safetensors")   # the same validation split
"""

from videobert_cli.training.data import PAIR_MODES, split_files
from videobert_cli.training.evaluate import chance_metrics, evaluate, retrieval_metrics
from videobert_cli.training.heads import heads_path, state_path
from videobert_cli.training.trainer import (
    DEFAULT_LOSSES,
    OBJECTIVES,
    TrainConfig,
    TrainEvent,
    TrainResult,
    parse_loss_weights,
    train,
)

__all__ = [
    "DEFAULT_LOSSES",
    "OBJECTIVES",
    "PAIR_MODES",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "chance_metrics",
    "evaluate",
    "heads_path",
    "parse_loss_weights",
    "retrieval_metrics",
    "split_files",
    "state_path",
    "train",
]
