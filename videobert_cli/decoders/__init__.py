"""Frame decoders, registered by name (``--decoder``): see ``decoders/base.py`` for the interface.

Importing this package registers the built-in decoders, PyAV (``decoders/pyav.py``) and decord
(``decoders/decord.py``); ``auto`` picks between them.
"""

from videobert_cli.decoders import decord, pyav  # noqa: F401  (each registers itself)
from videobert_cli.decoders.base import (  # noqa: F401  (the interface)
    AUTO,
    DEFAULT_CHUNK_FRAMES,
    Decoder,
    OpenVideo,
    Unsuitable,
    VideoInfo,
    check,
    get,
    names,
    open_video,
    register,
)
