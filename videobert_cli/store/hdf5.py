"""HDF5 feature store: one self-describing file per video.

The layout is documented in ``docs/hdf5-schema.md``; keep the two in step. In short:

* root attributes describe the file (``format``, ``schema_version``, provenance, ``complete``);
* groups ``video/``, ``text/`` and ``fused/`` hold the arrays of :mod:`videobert_cli.features`;
  a group that was not computed is simply absent;
* attribute values that HDF5 cannot hold natively (dict, list, tuple, None) are stored as JSON
  strings, and the object they sit on carries a ``json_attrs`` attribute naming those keys.

Writes are atomic: the file is built under a temporary name in the destination directory
(``.<name>.tmp-<pid>-<8 hex>``), fsynced, checked, and only then renamed over the final name.
A reader therefore sees either the previous complete file or the new complete one, never a
partial file; temporaries left by killed runs are found by :func:`stale_temp_files`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from videobert_cli.errors import ConfigError, FeatureFileError, OutputError
from videobert_cli.features import (
    MODALITY_NAMES,
    FeatureFile,
    FusedFeatures,
    FusedSegments,
    SourceInfo,
    TextFeatures,
    VideoFeatures,
)

__all__ = [
    "FORMAT_NAME",
    "SCHEMA_VERSION",
    "GROUPS",
    "JSON_ATTRS_KEY",
    "write_feature_file",
    "load",
    "read_attrs",
    "is_complete",
    "describe",
    "stale_temp_files",
    "clean_stale_temp_files",
    "temp_name_for",
]

FORMAT_NAME = "videobert-features"
#: "major.minor": readers accept any minor of a major they know; a new major means a
#: layout change old readers must refuse rather than misread.
SCHEMA_VERSION = "1.0"
SUPPORTED_MAJOR = 1
GROUPS = ("video", "text", "fused", "segments")
#: attribute (on the root, a group or a dataset) listing which of its attributes are JSON
JSON_ATTRS_KEY = "json_attrs"

FEATURE_DTYPES = ("float32", "float16")
COMPRESSIONS = (None, "lzf", "gzip")
GZIP_LEVEL = 4

# Root attributes the writer owns; callers' extra_attrs must not shadow them.
RESERVED_ROOT_ATTRS = frozenset(
    {
        "format",
        "schema_version",
        "tool_version",
        "created_at",
        "complete",
        "config_hash",
        "source_path",
        "source_size",
        "source_mtime",
        "source_sha256",
        JSON_ATTRS_KEY,
    }
)

# HDF5's default chunk cache is 1 MiB per dataset; chunks well below that stay cacheable, and
# ~256 rows keeps reading a time slice cheap without making tiny chunks for small D.
_CHUNK_ROWS = 256
_CHUNK_BYTES = 512 * 1024

# v108..v110: files stay readable by HDF5 1.10 based tools (MATLAB, older h5py, h5dump)
# while still allowing large (dense) attribute storage.
_LIBVER = ("v108", "v110")

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})$", re.DOTALL)
_NAME_MAX = 255

# Temp files this process is writing right now: cleaning must never delete them, even with
# older_than_s=0 (a cleanup and a write can run in one process, e.g. from worker threads).
_ACTIVE_TEMPS: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# attributes
# --------------------------------------------------------------------------------------------
def _safe_str(value: str) -> str:
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


def _write_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
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
            obj.attrs[key] = _safe_str(json.dumps(value, ensure_ascii=False, default=_json_default))
            json_keys.append(key)
        elif isinstance(value, str):
            obj.attrs[key] = _safe_str(value)
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


def _plain(value: Any) -> Any:
    """Turn an h5py attribute value into plain Python (numbers, str, bool, list/ndarray)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return [_plain(v) for v in value.ravel().tolist()]
        return value
    return value


def _read_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    """Read all attributes of ``obj`` with JSON ones decoded and ``json_attrs`` removed."""
    json_keys = set(_decode_key_list(obj.attrs.get(JSON_ATTRS_KEY)))
    out: dict[str, Any] = {}
    for key in obj.attrs.keys():
        if key == JSON_ATTRS_KEY:
            continue
        value = _plain(obj.attrs[key])
        if key in json_keys and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass  # a hand-edited file: show the raw string rather than fail
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# array preparation (all validation happens before any file is created)
# --------------------------------------------------------------------------------------------
def _float2d(arr: Any, name: str, dtype: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 1 and a.size == 0:
        a = a.reshape(0, 0)  # an empty list has no known width
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {a.shape}")
    if a.size and a.dtype.kind not in "fiub":
        raise ValueError(f"{name}: expected numeric data, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=dtype)


def _float1d(arr: Any, name: str, n: int, dtype: Any = np.float64) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},), got {a.shape}")
    if a.size and a.dtype.kind not in "fiub":
        raise ValueError(f"{name}: expected numeric data, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=dtype)


def _int1d(arr: Any, name: str, n: int, dtype: Any) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},), got {a.shape}")
    if a.size == 0:
        return np.zeros(0, dtype=dtype)  # np.array([]) is float64; emptiness is what matters
    if a.dtype.kind not in "iub":
        raise ValueError(f"{name}: expected integers, got dtype {a.dtype}")
    info = np.iinfo(dtype)
    # A silent wrap-around would corrupt indices without anyone noticing.
    if int(a.min()) < info.min or int(a.max()) > info.max:
        raise ValueError(f"{name}: values out of range for {np.dtype(dtype).name}")
    return np.ascontiguousarray(a, dtype=dtype)


def _str1d(values: Any, name: str, n: int) -> np.ndarray:
    items = list(values)
    if len(items) != n:
        raise ValueError(f"{name}: expected {n} strings, got {len(items)}")
    out = np.empty(n, dtype=object)
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise ValueError(f"{name}[{i}]: expected str, got {type(s).__name__}")
        out[i] = _safe_str(s)
    return out


def _prepare_video(v: VideoFeatures, dtype: str) -> dict[str, np.ndarray]:
    feats = _float2d(v.features, "video.features", dtype)
    n = feats.shape[0]
    arrays = {
        "features": feats,
        "timestamps": _float1d(v.timestamps, "video.timestamps", n),
        "frame_indices": _int1d(v.frame_indices, "video.frame_indices", n, np.int64),
    }
    for key, value in (v.extra or {}).items():
        if key not in VIDEO_EXTRA_DATASETS:
            raise ValueError(f"video: unknown extra dataset {key!r} (known: {sorted(VIDEO_EXTRA_DATASETS)})")
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] != n or value.dtype == object:
            raise ValueError(f"video.{key}: expected a numeric array with {n} rows, got {value.shape} {value.dtype}")
        arrays[key] = value
    return arrays


def _prepare_text(t: TextFeatures, dtype: str) -> dict[str, np.ndarray]:
    tok = _float2d(t.token_features, "text.token_features", dtype)
    cue = _float2d(t.cue_features, "text.cue_features", dtype)
    n_tok, n_cue = tok.shape[0], cue.shape[0]
    if n_tok and n_cue and tok.shape[1] != cue.shape[1]:
        raise ValueError(
            f"text: token_features width {tok.shape[1]} != cue_features width {cue.shape[1]}"
        )
    return {
        "token_features": tok,
        "token_ids": _int1d(t.token_ids, "text.token_ids", n_tok, np.int64),
        "tokens": _str1d(t.tokens, "text.tokens", n_tok),
        "token_start": _float1d(t.token_start, "text.token_start", n_tok),
        "token_end": _float1d(t.token_end, "text.token_end", n_tok),
        "token_cue": _int1d(t.token_cue, "text.token_cue", n_tok, np.int32),
        "token_window": _int1d(t.token_window, "text.token_window", n_tok, np.int32),
        "cue_features": cue,
        "cue_start": _float1d(t.cue_start, "text.cue_start", n_cue),
        "cue_end": _float1d(t.cue_end, "text.cue_end", n_cue),
        "cue_text": _str1d(t.cue_text, "text.cue_text", n_cue),
    }


def _prepare_fused(f: FusedFeatures, dtype: str) -> dict[str, np.ndarray]:
    seq = _float2d(f.sequence, "fused.sequence", dtype)
    n = seq.shape[0]
    cls = np.asarray(f.cls)
    if cls.ndim != 1:
        raise ValueError(f"fused.cls: expected a 1-D array, got shape {cls.shape}")
    if n and cls.shape[0] != seq.shape[1]:
        raise ValueError(f"fused.cls: length {cls.shape[0]} != sequence width {seq.shape[1]}")
    modality = _int1d(f.modality, "fused.modality", n, np.int8)
    unknown = set(np.unique(modality).tolist()) - set(MODALITY_NAMES)
    if unknown:
        raise ValueError(f"fused.modality: unknown codes {sorted(unknown)}")
    return {
        "sequence": seq,
        "modality": modality,
        "time": _float1d(f.time, "fused.time", n),
        "source_index": _int1d(f.source_index, "fused.source_index", n, np.int32),
        "cls": np.ascontiguousarray(cls, dtype=dtype),
    }


def _prepare_segments(f: FusedSegments, dtype: str) -> dict[str, np.ndarray]:
    seq = _float2d(f.sequence, "segments.sequence", dtype)
    n = seq.shape[0]
    cls = _float2d(f.cls, "segments.cls", dtype)
    count = cls.shape[0]
    offsets = _int1d(f.offsets, "segments.offsets", count + 1, np.int64)
    if count and (offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) <= 0)):
        raise ValueError("segments.offsets must start at 0, increase, and end at the number of positions")
    modality = _int1d(f.modality, "segments.modality", n, np.int8)
    unknown = set(np.unique(modality).tolist()) - set(MODALITY_NAMES)
    if unknown:
        raise ValueError(f"segments.modality: unknown codes {sorted(unknown)}")
    return {
        "sequence": seq,
        "modality": modality,
        "time": _float1d(f.time, "segments.time", n),
        "source_index": _int1d(f.source_index, "segments.source_index", n, np.int32),
        "offsets": offsets,
        "cue_index": _int1d(f.cue_index, "segments.cue_index", count, np.int32),
        "cls": cls,
    }


# --------------------------------------------------------------------------------------------
# dataset writing
# --------------------------------------------------------------------------------------------
# units/description of every dataset; the schema doc repeats these.
#: optional datasets of video/ (VideoFeatures.extra), one row per feature row
VIDEO_EXTRA_DATASETS: dict[str, tuple[str | None, str]] = {
    "clip_end": ("seconds", "end time of each clip (its start is in timestamps)"),
    "clip_real_frames": ("frames", "frames of the clip present in the video (< clip_len: padded tail)"),
    "clip_frame_indices": ("frames", "index of every frame of each clip in decode order (clip_len columns)"),
    "word_ids": (None, "visual word of each row in the vocabulary named by the group's vocab_* attributes"),
    "word_paths": (None, "path of each visual word through the hierarchical k-means tree (levels columns)"),
}

_DATASET_INFO: dict[str, dict[str, tuple[str | None, str]]] = {
    "video": {
        "features": (None, "per-frame visual feature vectors, one row per sampled frame (or clip)"),
        "timestamps": ("seconds", "presentation time of each sampled frame (clip models: clip start)"),
        "frame_indices": ("frames", "index of each sampled frame in decode order (clips: first frame)"),
        **VIDEO_EXTRA_DATASETS,
    },
    "text": {
        "token_features": (None, "contextual feature vector of each content token"),
        "token_ids": (None, "tokenizer vocabulary id of each token"),
        "tokens": (None, "token string (UTF-8)"),
        "token_start": ("seconds", "start time of the token's cue (NaN: no time)"),
        "token_end": ("seconds", "end time of the token's cue (NaN: no time)"),
        "token_cue": (None, "row in cue_* of the cue the token belongs to"),
        "token_window": (None, "index of the model window the token was encoded in"),
        "cue_features": (None, "mean of the cue's token feature vectors"),
        "cue_start": ("seconds", "start time of the cue (NaN: no time)"),
        "cue_end": ("seconds", "end time of the cue (NaN: no time)"),
        "cue_text": (None, "text of the cue (UTF-8)"),
    },
    "fused": {
        "sequence": (None, "fused sequence: [CLS], then video positions, then text positions"),
        "modality": (None, "modality code of each position, see attribute 'codes'"),
        "time": ("seconds", "time of each position (NaN for [CLS] and untimed text)"),
        "source_index": (None, "row in video/ (video) or text/ tokens (text); -1 for [CLS]"),
        "cls": (None, "pooled [CLS] vector"),
    },
}
_FEATURE_DATASETS = frozenset({"features", "token_features", "cue_features", "sequence", "cls"})
_DATASET_INFO["segments"] = {
    "sequence": (None, "fused positions of all segments, segment i = rows offsets[i]:offsets[i+1]"),
    "modality": (None, "modality code of each position (incl. 3 = [>], 4 = [SEP]), see attribute 'codes'"),
    "time": ("seconds", "time of each position (NaN for special tokens and untimed text)"),
    "source_index": (None, "row in video/ (video) or text/ tokens (text); -1 for special tokens"),
    "offsets": (None, "start row of each segment in the per-position datasets, plus the total"),
    "cue_index": (None, "row in text/cue_* of the cue each segment aligns"),
    "cls": (None, "pooled [CLS] vector of each segment"),
}


def _chunks_for(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...] | None:
    if 0 in shape:
        return None  # HDF5 chunks must be >= 1 in every dimension: store empties contiguous
    if len(shape) == 1:
        return shape
    row_bytes = max(1, int(np.prod(shape[1:])) * itemsize)
    rows = max(1, min(shape[0], _CHUNK_ROWS, _CHUNK_BYTES // row_bytes))
    return (rows, *shape[1:])


def _write_group(
    parent: h5py.Group,
    name: str,
    arrays: dict[str, np.ndarray],
    attrs: Mapping[str, Any],
    compression: str | None,
) -> None:
    group = parent.create_group(name, track_order=True)
    info = _DATASET_INFO[name]
    for key, data in arrays.items():
        kwargs: dict[str, Any] = {}
        if key in _FEATURE_DATASETS:
            chunks = _chunks_for(data.shape, data.dtype.itemsize)
            if chunks is not None:
                kwargs["chunks"] = chunks
                if compression == "gzip":
                    kwargs.update(compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True)
                elif compression == "lzf":
                    kwargs["compression"] = "lzf"
        if data.dtype == object:
            ds = group.create_dataset(
                key, shape=data.shape, dtype=h5py.string_dtype("utf-8"), **kwargs
            )
            if data.size:
                ds[...] = data
        else:
            ds = group.create_dataset(key, data=data, **kwargs)
        units, description = info[key]
        ds_attrs: dict[str, Any] = {"description": description}
        if units:
            ds_attrs["units"] = units
        if key == "modality":  # fused/ and segments/
            ds_attrs["codes"] = {str(code): label for code, label in MODALITY_NAMES.items()}
        if key in ("word_ids", "word_paths"):
            # the datasets name their vocabulary too, as `videobert vocab assign` writes them
            ds_attrs.update({k: v for k, v in attrs.items() if k.startswith("vocab_")})
        _write_attrs(ds, ds_attrs)
    _write_attrs(group, attrs)


# --------------------------------------------------------------------------------------------
# temp files
# --------------------------------------------------------------------------------------------
def temp_name_for(final: str | Path, pid: int | None = None) -> Path:
    """Return a fresh temporary path next to ``final``, matching the stale-temp pattern."""
    final = Path(final)
    pid = os.getpid() if pid is None else pid
    token = secrets.token_hex(4)
    embed = final.name
    # The final name is only informative inside the temp name; trim it so that long output
    # names do not turn into ENAMETOOLONG.
    while embed and len(os.fsencode(f".{embed}.tmp-{pid}-{token}")) > _NAME_MAX:
        embed = embed[:-1]
    return final.with_name(f".{embed or 'x'}.tmp-{pid}-{token}")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OverflowError:
        return False
    return True


def stale_temp_files(directory: str | Path, older_than_s: float = 0) -> list[Path]:
    """List temp files in ``directory`` left by interrupted writes (not recursive).

    Only names matching ``.<name>.tmp-<pid>-<8 hex>`` count. A file is stale when its writer
    pid is no longer alive, or when it is at least ``older_than_s`` seconds old (a pid can be
    reused, or belong to another machine on shared storage). Temp files this very process is
    writing right now are never listed. A missing directory yields an empty list.
    """
    directory = Path(directory)
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    now = time.time()
    with _ACTIVE_LOCK:
        active = set(_ACTIVE_TEMPS)
    stale: list[Path] = []
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if not match:
            continue
        path = directory / entry.name
        if str(path.absolute()) in active:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue  # removed meanwhile
        if not _pid_alive(int(match["pid"])) or age >= older_than_s:
            stale.append(path)
    return sorted(stale)


def clean_stale_temp_files(directory: str | Path, older_than_s: float = 0) -> int:
    """Remove the files :func:`stale_temp_files` reports; return how many were removed."""
    removed = 0
    for path in stale_temp_files(directory, older_than_s=older_than_s):
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass  # another cleaner got there first
        except OSError as exc:
            raise _output_error(exc, path, "cannot remove stale temporary file") from exc
    return removed


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def _output_error(exc: OSError, path: Path, action: str) -> OutputError:
    code = exc.errno
    text = str(exc).lower()
    if code == errno.ENOSPC or "no space" in text:
        hint = "free disk space on the output filesystem, or choose another --output"
        what = "no space left on device"
    elif code == errno.EROFS or "read-only file system" in text:
        hint = "the output filesystem is mounted read-only; choose another --output"
        what = "read-only file system"
    elif code in (errno.EACCES, errno.EPERM) or "permission denied" in text:
        hint = "check the permissions of the output directory, or choose another --output"
        what = "permission denied"
    elif code == errno.EDQUOT:
        hint = "the disk quota is exhausted; free space or choose another --output"
        what = "disk quota exceeded"
    elif code == errno.ENOTDIR:
        hint = "a component of the output path is a file; choose another --output"
        what = "not a directory"
    elif code == errno.EISDIR:
        hint = "a directory exists where the feature file should go; remove it or rename"
        what = "destination is a directory"
    else:
        hint = "check that the output directory exists, is writable and has free space"
        what = exc.strerror or str(exc)
    return OutputError(f"{action}: {what}", path=path, hint=hint)


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot fsync a directory; the rename itself is still atomic.
        if not directory or exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_replace(final: Path, fill: Callable[[Path], None], action: str, *, tmp: Path | None = None) -> None:
    """Run ``fill(tmp)`` on a temp path next to ``final``, fsync it, rename it over ``final``.

    Any failure removes the temp file and leaves ``final`` untouched; OSError becomes
    :class:`OutputError` ("<action>: <reason>") with a hint. Used for vocabulary and index
    files; feature files have their own writer (it also verifies completeness before the rename).
    """
    tmp = tmp if tmp is not None else temp_name_for(final)
    try:
        fill(tmp)
        _fsync_path(tmp)
        os.replace(tmp, final)
        _fsync_path(final.parent, directory=True)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _output_error(exc, final, action) from exc
        raise


def _open(path: Path, mode: str, **kwargs: Any) -> h5py.File:
    # best-effort: filesystems without flock (some NFS/FUSE mounts) must not break the store.
    return h5py.File(path, mode, locking="best-effort", **kwargs)


def write_feature_file(
    path: str | Path,
    *,
    video: VideoFeatures | None = None,
    text: TextFeatures | None = None,
    fused: FusedFeatures | None = None,
    segments: FusedSegments | None = None,
    source: SourceInfo | None,
    tool_version: str,
    config_hash: str,
    extra_attrs: Mapping[str, Any] | None = None,
    dtype: str = "float32",
    compression: str | None = None,
) -> Path:
    """Atomically write one feature file and return its final path.

    The file is built as ``.<name>.tmp-<pid>-<hex>`` in the destination directory (created
    if missing), fsynced, re-opened to confirm it is complete, renamed over ``path``, and the
    directory is fsynced. On any failure the temporary file is removed and whatever was at
    ``path`` before is left untouched.

    Args:
        path: destination file.
        video, text, fused: the groups to write; ``None`` leaves the group out.
        source: provenance of the input video (``source_*`` root attributes), if any.
        tool_version: version of videobert-cli that produced the file.
        config_hash: hash of the effective configuration (used to skip unchanged inputs).
        extra_attrs: more root attributes; dict/list/None values are stored as JSON.
        dtype: ``"float32"`` or ``"float16"`` for the feature datasets.
        compression: ``None``, ``"lzf"`` or ``"gzip"`` for the feature datasets.

    Raises:
        ConfigError: unsupported ``dtype`` or ``compression``.
        ValueError: inconsistent array shapes or invalid attributes (a caller bug).
        OutputError: the destination cannot be written (permissions, full disk, read-only).
    """
    if str(dtype) not in FEATURE_DTYPES:
        raise ConfigError(
            f"unsupported feature dtype {dtype!r}", hint=f"use one of {', '.join(FEATURE_DTYPES)}"
        )
    dtype = str(dtype)
    if compression not in COMPRESSIONS:
        raise ConfigError(
            f"unsupported compression {compression!r}", hint="use none, lzf or gzip"
        )
    extra = dict(extra_attrs or {})
    clash = sorted(RESERVED_ROOT_ATTRS & set(extra))
    if clash:
        raise ValueError(f"extra_attrs may not set reserved root attributes: {clash}")

    # Convert and validate everything before touching the disk, so bad data never leaves a
    # temp file behind and failures here are clearly not I/O problems.
    prepared: list[tuple[str, dict[str, np.ndarray], dict[str, Any]]] = []
    if video is not None:
        arrays = _prepare_video(video, dtype)
        feats = arrays["features"]
        attrs = {**video.attrs, "feature_dim": int(feats.shape[1]), "count": int(feats.shape[0])}
        prepared.append(("video", arrays, attrs))
    if text is not None:
        prepared.append(("text", _prepare_text(text, dtype), dict(text.attrs)))
    if fused is not None:
        prepared.append(("fused", _prepare_fused(fused, dtype), dict(fused.attrs)))
    if segments is not None:
        prepared.append(("segments", _prepare_segments(segments, dtype), dict(segments.attrs)))

    root: dict[str, Any] = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "tool_version": str(tool_version),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace(
            "+00:00", "Z"
        ),
        "config_hash": str(config_hash),
        # Stays False until every group is written: a file caught half-way says so.
        "complete": False,
    }
    if source is not None:
        root.update(
            source_path=str(source.path),
            source_size=int(source.size),
            source_mtime=float(source.mtime),
        )
        if source.sha256 is not None:
            root["source_sha256"] = str(source.sha256)

    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _output_error(exc, final.parent, "cannot create output directory") from exc
    if final.is_dir():
        raise OutputError(
            "destination is a directory",
            path=final,
            hint="a directory exists where the feature file should go; remove it or rename",
        )

    tmp = temp_name_for(final)
    tmp_key = str(tmp.absolute())
    with _ACTIVE_LOCK:
        _ACTIVE_TEMPS.add(tmp_key)
    action = "cannot write feature file"
    try:
        # "x": never clobber a file that happens to have the same name.
        with _open(tmp, "x", libver=_LIBVER, track_order=True) as f:
            _write_attrs(f, root)
            _write_attrs(f, extra)
            for name, arrays, attrs in prepared:
                _write_group(f, name, arrays, attrs, compression)
            f.attrs["complete"] = True
            f.flush()
        _fsync_path(tmp)
        if not is_complete(tmp):
            # Should not happen; refuse to replace a good file with one we cannot read back.
            raise OSError(errno.EIO, "written file does not read back as complete")
        action = "cannot move feature file into place"
        os.replace(tmp, final)
        action = "cannot sync output directory"
        _fsync_path(final.parent, directory=True)
    except BaseException as exc:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass  # best effort; stale_temp_files() will find it later
        if isinstance(exc, OSError):
            raise _output_error(exc, final, action) from exc
        raise
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE_TEMPS.discard(tmp_key)
    return final


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def _open_for_read(path: Path) -> h5py.File:
    """Open ``path`` read-only, translating every failure into FeatureFileError."""
    if not path.exists():
        raise FeatureFileError("feature file not found", path=path, hint="check the path")
    if not path.is_file():
        raise FeatureFileError("not a regular file", path=path, hint="pass an .h5 feature file")
    try:
        return _open(path, "r")
    except PermissionError as exc:
        raise FeatureFileError(
            "cannot read feature file: permission denied",
            path=path,
            hint="check the file's permissions",
        ) from exc
    except OSError as exc:
        text = str(exc)
        if "truncated" in text:
            what = "file is truncated"
        elif "signature" in text:
            what = "not an HDF5 file"
        else:
            what = f"not a readable HDF5 file ({text})"
        raise FeatureFileError(
            what,
            path=path,
            hint="the file is corrupt or was not written by videobert-cli; re-run extraction",
        ) from exc


def _check_root(f: h5py.File, path: Path) -> dict[str, Any]:
    attrs = _read_attrs(f)
    fmt = attrs.get("format")
    if fmt != FORMAT_NAME:
        raise FeatureFileError(
            f"not a videobert feature file (format attribute is {fmt!r}, "
            f"expected {FORMAT_NAME!r})",
            path=path,
            hint="pass a file written by videobert-cli",
        )
    version = attrs.get("schema_version")
    try:
        major = int(str(version).split(".", 1)[0])
    except ValueError:
        major = None
    if major != SUPPORTED_MAJOR:
        raise FeatureFileError(
            f"unsupported schema version {version!r} (this reader supports "
            f"{SUPPORTED_MAJOR}.x)",
            path=path,
            hint="use the videobert-cli version that wrote the file, or re-extract",
        )
    if attrs.get("complete") is not True:
        raise FeatureFileError(
            "feature file is incomplete (the run that wrote it did not finish)",
            path=path,
            hint="re-run extraction for this video",
        )
    return attrs


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Return the root attributes of ``path``, JSON attributes decoded.

    Cheap: no dataset is read. The format and completeness are *not* checked (so ``inspect``
    can show any HDF5 file); use :func:`is_complete` for that.

    Raises:
        FeatureFileError: missing file, or not readable as HDF5.
    """
    p = Path(path)
    with _open_for_read(p) as f:
        return _read_attrs(f)


def is_complete(path: str | Path) -> bool:
    """True when ``path`` is a finished videobert feature file this reader supports.

    Never raises: missing, unreadable, truncated, foreign or partial files give False.
    """
    try:
        p = Path(path)
        with _open_for_read(p) as f:
            _check_root(f, p)
        return True
    except Exception:
        return False


def _dataset(group: h5py.Group, name: str, path: Path) -> np.ndarray:
    try:
        ds = group[name]
    except KeyError:
        raise FeatureFileError(
            f"dataset {group.name}/{name} is missing",
            path=path,
            hint="the file does not follow the schema; re-run extraction",
        ) from None
    if not isinstance(ds, h5py.Dataset):
        raise FeatureFileError(
            f"{group.name}/{name} is not a dataset", path=path, hint="re-run extraction"
        )
    if h5py.check_string_dtype(ds.dtype) is not None:
        return ds.asstr()[()] if ds.shape != (0,) else np.empty(0, dtype=object)
    return ds[()]


def _load_video(g: h5py.Group, path: Path) -> VideoFeatures:
    return VideoFeatures(
        features=_dataset(g, "features", path),
        timestamps=_dataset(g, "timestamps", path),
        frame_indices=_dataset(g, "frame_indices", path),
        attrs=_read_attrs(g),
        extra={key: _dataset(g, key, path) for key in VIDEO_EXTRA_DATASETS if key in g},
    )


def _load_text(g: h5py.Group, path: Path) -> TextFeatures:
    return TextFeatures(
        token_features=_dataset(g, "token_features", path),
        token_ids=_dataset(g, "token_ids", path),
        tokens=[str(s) for s in _dataset(g, "tokens", path)],
        token_start=_dataset(g, "token_start", path),
        token_end=_dataset(g, "token_end", path),
        token_cue=_dataset(g, "token_cue", path),
        token_window=_dataset(g, "token_window", path),
        cue_features=_dataset(g, "cue_features", path),
        cue_start=_dataset(g, "cue_start", path),
        cue_end=_dataset(g, "cue_end", path),
        cue_text=[str(s) for s in _dataset(g, "cue_text", path)],
        attrs=_read_attrs(g),
    )


def _load_fused(g: h5py.Group, path: Path) -> FusedFeatures:
    return FusedFeatures(
        sequence=_dataset(g, "sequence", path),
        modality=_dataset(g, "modality", path),
        time=_dataset(g, "time", path),
        source_index=_dataset(g, "source_index", path),
        cls=_dataset(g, "cls", path),
        attrs=_read_attrs(g),
    )


def _load_segments(g: h5py.Group, path: Path) -> FusedSegments:
    return FusedSegments(
        sequence=_dataset(g, "sequence", path),
        modality=_dataset(g, "modality", path),
        time=_dataset(g, "time", path),
        source_index=_dataset(g, "source_index", path),
        offsets=_dataset(g, "offsets", path),
        cue_index=_dataset(g, "cue_index", path),
        cls=_dataset(g, "cls", path),
        attrs=_read_attrs(g),
    )


_LOADERS = {"video": _load_video, "text": _load_text, "fused": _load_fused, "segments": _load_segments}


def load(path: str | Path, *, groups: Iterable[str] | None = None) -> FeatureFile:
    """Read a feature file into :class:`~videobert_cli.features.FeatureFile`.

    Arrays come back with their stored dtype (float16 files give float16 features); strings
    as Python ``str``; JSON attributes decoded.

    Args:
        path: the ``.h5`` file.
        groups: names among ``"video"``, ``"text"``, ``"fused"`` to read. ``None`` reads every
            group present; naming a group the file lacks is an error.

    Raises:
        FeatureFileError: missing file, not HDF5, wrong ``format``, unsupported schema major
            version, incomplete file, or a requested group/dataset missing.
        ValueError: an unknown group name.
    """
    p = Path(path)
    wanted: list[str] | None = None
    if groups is not None:
        wanted = list(dict.fromkeys([groups] if isinstance(groups, str) else groups))
        unknown = [g for g in wanted if g not in GROUPS]
        if unknown:
            raise ValueError(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    with _open_for_read(p) as f:
        attrs = _check_root(f, p)
        result = FeatureFile(path=str(p), attrs=attrs)
        for name in GROUPS:
            if wanted is not None and name not in wanted:
                continue
            if name not in f:
                if wanted is None:
                    continue
                raise FeatureFileError(
                    f"group {name}/ is not in the file",
                    path=p,
                    hint=f"the file has: {', '.join(k for k in f if k in GROUPS) or 'no groups'}",
                )
            g = f[name]
            if not isinstance(g, h5py.Group):
                raise FeatureFileError(
                    f"{name} is not a group", path=p, hint="re-run extraction"
                )
            try:
                setattr(result, name, _LOADERS[name](g, p))
            except FeatureFileError:
                raise
            except (OSError, ValueError, TypeError) as exc:
                # Damaged chunks surface only when the data is read.
                raise FeatureFileError(
                    f"cannot read group {name}/: {exc}",
                    path=p,
                    hint="the file is damaged; re-run extraction",
                ) from exc
    return result


def describe(path: str | Path) -> list[dict[str, Any]]:
    """Describe every group and dataset of ``path`` for the ``inspect`` command.

    Returns rows in file order, the root group first, each a dict with ``name`` (HDF5 path),
    ``kind`` (``"group"``/``"dataset"``), ``shape`` (tuple, ``None`` for groups), ``dtype``
    (numpy name, ``"str"`` for UTF-8 strings, ``None`` for groups), ``attrs`` (decoded), and
    for datasets ``chunks`` and ``compression``. Works on any readable HDF5 file. Links to other
    files (an index's ``videos/``) are rows of kind ``"link"`` with their ``target``, not
    followed: an index of a corpus would otherwise describe every file of it.

    Raises:
        FeatureFileError: missing file, or not readable as HDF5.
    """
    p = Path(path)
    rows: list[dict[str, Any]] = []

    def walk(group: h5py.Group) -> None:
        rows.append(
            {
                "name": group.name,
                "kind": "group",
                "shape": None,
                "dtype": None,
                "attrs": _read_attrs(group),
            }
        )
        for key in group:
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                rows.append({"name": f"{group.name.rstrip('/')}/{key}", "kind": "link", "shape": None,
                             "dtype": None, "attrs": {}, "target": f"{link.filename}:{link.path}"})
                continue
            obj = group.get(key)
            if isinstance(obj, h5py.Group):
                walk(obj)
            elif isinstance(obj, h5py.Dataset):
                is_str = h5py.check_string_dtype(obj.dtype) is not None
                rows.append(
                    {
                        "name": obj.name,
                        "kind": "dataset",
                        "shape": None if obj.shape is None else tuple(int(n) for n in obj.shape),
                        "dtype": "str" if is_str else obj.dtype.name,
                        "attrs": _read_attrs(obj),
                        "chunks": obj.chunks,
                        "compression": obj.compression,
                    }
                )

    with _open_for_read(p) as f:
        try:
            walk(f)
        except (OSError, KeyError) as exc:
            raise FeatureFileError(
                f"cannot read file structure: {exc}", path=p, hint="the file is damaged"
            ) from exc
    return rows
