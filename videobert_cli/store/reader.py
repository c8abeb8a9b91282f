"""Reading feature files: root attributes, completeness, whole groups, and the structure of any
HDF5 file (for ``inspect``).

Every failure to read is a :class:`~videobert_cli.errors.FeatureFileError` naming the file; the
layout is documented in ``docs/hdf5-schema.md``.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from videobert_cli.errors import FeatureFileError
from videobert_cli.features import (
    FeatureFile,
    FusedFeatures,
    FusedSegments,
    TextFeatures,
    VideoFeatures,
)
from videobert_cli.store.schema import (
    FORMAT_NAME,
    GROUPS,
    SUPPORTED_MAJOR,
    VIDEO_EXTRA_DATASETS,
    decode_attrs,
    major_version,
    open_file,
)

__all__ = ["read_attrs", "is_complete", "load", "describe"]


def _open_for_read(path: Path) -> h5py.File:
    """Open ``path`` read-only, translating every failure into FeatureFileError."""
    if not path.exists():
        raise FeatureFileError("feature file not found", path=path, hint="check the path")
    if not path.is_file():
        raise FeatureFileError("not a regular file", path=path, hint="pass an .h5 feature file")
    try:
        return open_file(path, "r")
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
    attrs = decode_attrs(f)
    fmt = attrs.get("format")
    if fmt != FORMAT_NAME:
        raise FeatureFileError(
            f"not a videobert feature file (format attribute is {fmt!r}, "
            f"expected {FORMAT_NAME!r})",
            path=path,
            hint="pass a file written by videobert-cli",
        )
    version = attrs.get("schema_version")
    if major_version(version) != SUPPORTED_MAJOR:
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
        return decode_attrs(f)


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


def _load_group(container: type, g: h5py.Group, path: Path):
    """A feature container (``VideoFeatures``, ...) from its group: a dataset per array field,
    named as the field (``list[str]`` fields as Python strings), the group's attributes, and
    for video the optional per-row datasets."""
    values: dict[str, Any] = {"attrs": decode_attrs(g)}
    for name, hint in typing.get_type_hints(container).items():
        if name in ("attrs", "extra"):
            continue
        data = _dataset(g, name, path)
        values[name] = [str(s) for s in data] if hint == list[str] else data
    if container is VideoFeatures:
        values["extra"] = {key: _dataset(g, key, path) for key in VIDEO_EXTRA_DATASETS if key in g}
    return container(**values)


_CONTAINERS = {"video": VideoFeatures, "text": TextFeatures, "fused": FusedFeatures, "segments": FusedSegments}


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
                setattr(result, name, _load_group(_CONTAINERS[name], g, p))
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
                "attrs": decode_attrs(group),
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
                        "attrs": decode_attrs(obj),
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
