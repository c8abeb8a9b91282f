"""Writing feature files: validate every array first, then build the file atomically.

The layout is documented in ``docs/hdf5-schema.md``; keep the two in step. Attribute encoding
and the format's names are :mod:`videobert_cli.store.schema`'s, the temp-file lifecycle is
:mod:`videobert_cli.store.atomic`'s.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from videobert_cli.errors import ConfigError, OutputError
from videobert_cli.features import (
    MODALITY_NAMES,
    FusedFeatures,
    FusedSegments,
    SourceInfo,
    TextFeatures,
    VideoFeatures,
)
from videobert_cli.store.atomic import atomic_replace, make_parent
from videobert_cli.store.reader import is_complete
from videobert_cli.store.schema import (
    FORMAT_NAME,
    JSON_ATTRS_KEY,
    LIBVER,
    SCHEMA_VERSION,
    VIDEO_EXTRA_DATASETS,
    created_at,
    open_file,
    safe_str,
    write_attrs,
)

__all__ = ["FEATURE_DTYPES", "COMPRESSIONS", "RESERVED_ROOT_ATTRS", "write_feature_file"]

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
        out[i] = safe_str(s)
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


def _modality_codes(values, name: str, n: int) -> np.ndarray:
    """``values`` as n int8 modality codes, each one of :data:`MODALITY_NAMES`."""
    modality = _int1d(values, name, n, np.int8)
    unknown = set(np.unique(modality).tolist()) - set(MODALITY_NAMES)
    if unknown:
        raise ValueError(f"{name}: unknown codes {sorted(unknown)}")
    return modality


def _prepare_fused(f: FusedFeatures, dtype: str) -> dict[str, np.ndarray]:
    seq = _float2d(f.sequence, "fused.sequence", dtype)
    n = seq.shape[0]
    cls = np.asarray(f.cls)
    if cls.ndim != 1:
        raise ValueError(f"fused.cls: expected a 1-D array, got shape {cls.shape}")
    if n and cls.shape[0] != seq.shape[1]:
        raise ValueError(f"fused.cls: length {cls.shape[0]} != sequence width {seq.shape[1]}")
    modality = _modality_codes(f.modality, "fused.modality", n)
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
    modality = _modality_codes(f.modality, "segments.modality", n)
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
        write_attrs(ds, ds_attrs)
    write_attrs(group, attrs)



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
        "created_at": created_at(),
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
    make_parent(final)
    if final.is_dir():
        raise OutputError(
            "destination is a directory",
            path=final,
            hint="a directory exists where the feature file should go; remove it or rename",
        )

    def fill(tmp: Path) -> None:
        # "x": never clobber a file that happens to have the same name.
        with open_file(tmp, "x", libver=LIBVER, track_order=True) as f:
            write_attrs(f, root)
            write_attrs(f, extra)
            for name, arrays, attrs in prepared:
                _write_group(f, name, arrays, attrs, compression)
            f.attrs["complete"] = True
            f.flush()

    def verify(tmp: Path) -> None:
        if not is_complete(tmp):
            # Should not happen; refuse to replace a good file with one we cannot read back.
            raise OSError(errno.EIO, "written file does not read back as complete")

    atomic_replace(
        final,
        fill,
        "cannot write feature file",
        verify=verify,
        replace_action="cannot move feature file into place",
        sync_action="cannot sync output directory",
    )
    return final

