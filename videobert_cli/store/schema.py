"""The HDF5 formats the store writes: their names, their attribute encoding, how files are opened.

Three formats share one root-attribute convention (``format``, a ``"major.minor"`` version,
``tool_version``, ``created_at``, ``complete``) and the attribute encoding below:

* feature files (``docs/hdf5-schema.md``): :data:`FORMAT_NAME`, :data:`SCHEMA_VERSION`;
* the corpus index (:mod:`videobert_cli.store.index`): :data:`INDEX_FORMAT`;
* visual-word vocabularies (``docs/vocab.md``): :data:`VOCAB_FORMAT`.

Readers accept any minor of a major they know; a new major means a layout change old readers
must refuse rather than misread.

Attribute encoding (every format): values HDF5 holds natively (str, bool, int, float, numpy)
are stored as they are; those it cannot hold (dict, list, tuple, None, integers beyond 64 bits,
empty or string arrays) as JSON strings, and the object they sit on carries a
:data:`JSON_ATTRS_KEY` attribute naming those keys. :func:`write_attrs` and :func:`decode_attrs`
are the two sides; strings are always valid UTF-8 (:func:`safe_str`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = [
    "FORMAT_NAME",
    "SCHEMA_VERSION",
    "SUPPORTED_MAJOR",
    "GROUPS",
    "VIDEO_EXTRA_DATASETS",
    "INDEX_FORMAT",
    "INDEX_SCHEMA_VERSION",
    "VOCAB_FORMAT",
    "VOCAB_FORMAT_VERSION",
    "VOCAB_SUPPORTED_MAJOR",
    "JSON_ATTRS_KEY",
    "LIBVER",
    "attr_text",
    "decode_attrs",
    "created_at",
    "file_format",
    "major_version",
    "open_file",
    "plain",
    "safe_str",
    "write_attrs",
]

#: root ``format`` attribute of a per-video feature file
FORMAT_NAME = "videobert-features"
#: "major.minor" of the feature-file layout written by this version
SCHEMA_VERSION = "1.0"
#: the feature-file major this reader reads
SUPPORTED_MAJOR = 1
#: the groups a feature file may hold, in file order
GROUPS = ("video", "text", "fused", "segments")
#: optional datasets of video/ (VideoFeatures.extra), one row per feature row: units, description
VIDEO_EXTRA_DATASETS: dict[str, tuple[str | None, str]] = {
    "clip_end": ("seconds", "end time of each clip (its start is in timestamps)"),
    "clip_real_frames": ("frames", "frames of the clip present in the video (< clip_len: padded tail)"),
    "clip_frame_indices": ("frames", "index of every frame of each clip in decode order (clip_len columns)"),
    "word_ids": (None, "visual word of each row in the vocabulary named by the group's vocab_* attributes"),
    "word_paths": (None, "path of each visual word through the hierarchical k-means tree (levels columns)"),
}

#: root ``format`` attribute of a corpus index (``OUT_DIR/index.h5``)
INDEX_FORMAT = "videobert-index"
INDEX_SCHEMA_VERSION = "1.1"

#: root ``format`` attribute of a visual-word vocabulary
VOCAB_FORMAT = "videobert-vocab"
VOCAB_FORMAT_VERSION = "1.0"
VOCAB_SUPPORTED_MAJOR = 1

#: attribute (on the root, a group or a dataset) listing which of its attributes are JSON
JSON_ATTRS_KEY = "json_attrs"

#: v108..v110: files stay readable by HDF5 1.10 based tools (MATLAB, older h5py, h5dump)
#: while still allowing large (dense) attribute storage.
LIBVER = ("v108", "v110")


def open_file(path: str | Path, mode: str, **kwargs: Any) -> h5py.File:
    """``h5py.File`` with the store's settings.

    ``locking="best-effort"``: filesystems without flock (some NFS/FUSE mounts) must not
    break the store.
    """
    return h5py.File(path, mode, locking="best-effort", **kwargs)


def attr_text(value: Any) -> str:
    """An attribute value as ``str``: bytes decoded, ``""`` for a missing (None) one."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return attr_text(value.item())
    return "" if value is None else str(value)


def file_format(f: h5py.File) -> str:
    """The root ``format`` attribute of an open file (``""`` when absent)."""
    return attr_text(f.attrs.get("format"))


def major_version(version: Any) -> int | None:
    """The major of a ``"major.minor"`` version attribute; None when it is not one."""
    try:
        return int(attr_text(version).split(".", 1)[0])
    except ValueError:
        return None


def created_at() -> str:
    """The ``created_at`` root attribute: now, UTC, ISO 8601 to the second (``...Z``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# attribute encoding
# --------------------------------------------------------------------------------------------
def safe_str(value: str) -> str:
    """Return ``value`` encodable as UTF-8 (HDF5 strings must be valid UTF-8).

    Paths decoded with surrogateescape carry lone surrogates; escaping them keeps the write
    going with a readable, if lossy, value instead of failing the whole file.
    """
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_default(obj: Any) -> Any:
    # Pipeline metadata often carries numpy scalars/arrays nested inside dicts.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"attribute value of type {type(obj).__name__} is not JSON-serialisable")


def _needs_json(value: Any) -> bool:
    if value is None or isinstance(value, (dict, list, tuple)):
        return True
    if isinstance(value, int) and not isinstance(value, bool):
        # HDF5 has no arbitrary-precision integers.
        return not (-(2**63) <= value < 2**63)
    if isinstance(value, np.ndarray):
        # Empty and string arrays do not survive native attribute storage reliably.
        return value.size == 0 or value.dtype.kind in "OUS"
    return False


def write_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    """Write ``attrs`` onto ``obj``, JSON-encoding what HDF5 cannot hold (see module doc)."""
    json_keys: list[str] = []
    for key, value in attrs.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"attribute names must be non-empty strings, got {key!r}")
        if key == JSON_ATTRS_KEY:
            raise ValueError(f"attribute name {JSON_ATTRS_KEY!r} is reserved by the store")
        if isinstance(value, Path):
            value = str(value)
        if _needs_json(value):
            obj.attrs[key] = safe_str(json.dumps(value, ensure_ascii=False, default=_json_default))
            json_keys.append(key)
        elif isinstance(value, str):
            obj.attrs[key] = safe_str(value)
        elif isinstance(value, (bool, int, float, np.generic, np.ndarray)):
            obj.attrs[key] = value
        else:
            raise ValueError(
                f"attribute {key!r}: unsupported value type {type(value).__name__} "
                "(use str, int, float, bool, numpy, or JSON-serialisable dict/list)"
            )
    if json_keys:
        # Merge with keys a previous call on the same object already declared.
        previous = _decode_key_list(obj.attrs.get(JSON_ATTRS_KEY))
        merged = previous + [k for k in json_keys if k not in previous]
        obj.attrs[JSON_ATTRS_KEY] = np.array(merged, dtype=h5py.string_dtype("utf-8"))


def _decode_key_list(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, (str, bytes)):
        raw = [raw]
    return [k.decode("utf-8") if isinstance(k, bytes) else str(k) for k in np.ravel(raw)]


def plain(value: Any) -> Any:
    """Turn an h5py attribute value into plain Python (numbers, str, bool, list/ndarray)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return [plain(v) for v in value.ravel().tolist()]
        return value
    return value


def decode_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    """Read all attributes of ``obj`` with JSON ones decoded and ``json_attrs`` removed."""
    json_keys = set(_decode_key_list(obj.attrs.get(JSON_ATTRS_KEY)))
    out: dict[str, Any] = {}
    for key in obj.attrs.keys():
        if key == JSON_ATTRS_KEY:
            continue
        value = plain(obj.attrs[key])
        if key in json_keys and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass  # a hand-edited file: show the raw string rather than fail
        out[key] = value
    return out
