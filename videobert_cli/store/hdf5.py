"""HDF5 feature store: one self-describing file per video.

The layout is documented in ``docs/hdf5-schema.md``; keep the two in step. In short:

* root attributes describe the file (``format``, ``schema_version``, provenance, ``complete``);
* groups ``video/``, ``text/``, ``fused/`` and ``segments/`` hold the arrays of
  :mod:`videobert_cli.features`; a group that was not computed is simply absent;
* attribute values that HDF5 cannot hold natively (dict, list, tuple, None) are stored as JSON
  strings, and the object they sit on carries a ``json_attrs`` attribute naming those keys.

Writes are atomic (:mod:`videobert_cli.store.atomic`): a reader sees either the previous
complete file or the new complete one, never a partial file; temporaries left by killed runs
are found by :func:`stale_temp_files`.

This module is the store's public face; the work is done by :mod:`~videobert_cli.store.schema`
(names and attribute encoding), :mod:`~videobert_cli.store.writer`,
:mod:`~videobert_cli.store.reader` and :mod:`~videobert_cli.store.atomic`.
"""

from __future__ import annotations

from videobert_cli.errors import OutputError  # raised by write_feature_file; callers reach it here
from videobert_cli.store.atomic import clean_stale_temp_files, stale_temp_files, temp_name_for
from videobert_cli.store.reader import describe, is_complete, load, read_attrs
from videobert_cli.store.schema import (
    FORMAT_NAME,
    GROUPS,
    JSON_ATTRS_KEY,
    SCHEMA_VERSION,
    SUPPORTED_MAJOR,
    VIDEO_EXTRA_DATASETS,
)
from videobert_cli.store.writer import (
    COMPRESSIONS,
    FEATURE_DTYPES,
    RESERVED_ROOT_ATTRS,
    write_feature_file,
)

__all__ = [
    "FORMAT_NAME",
    "SCHEMA_VERSION",
    "SUPPORTED_MAJOR",
    "GROUPS",
    "JSON_ATTRS_KEY",
    "VIDEO_EXTRA_DATASETS",
    "FEATURE_DTYPES",
    "COMPRESSIONS",
    "RESERVED_ROOT_ATTRS",
    "OutputError",
    "write_feature_file",
    "load",
    "read_attrs",
    "is_complete",
    "describe",
    "stale_temp_files",
    "clean_stale_temp_files",
    "temp_name_for",
]
