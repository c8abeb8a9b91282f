"""A corpus index: one HDF5 file that reads a whole output directory as one.

``OUT_DIR/index.h5`` holds

* ``videos/<id>`` - an HDF5 external link (relative path) to the root of every complete
  per-video file, so ``index["videos/<id>/video/features"]`` reads that video's features;
* ``table/`` - parallel datasets, one row per per-video file (complete or not):
  ``id``, ``path`` (relative to OUT_DIR), ``status`` (``complete``/``incomplete``),
  ``duration`` (seconds, NaN if unknown), ``video_rows``, ``text_tokens`` (-1 if unknown),
  ``source_path``, ``config_hash``, and (since 1.1) ``file_size`` (bytes) and ``file_mtime``
  (seconds since the epoch) of the file when it was indexed, so a reader can tell a file that
  changed since;
* ``search/`` (since 1.1) - what ``videobert search`` needs without opening every file: one row
  per moment window (:mod:`videobert_cli.search.moments`) of every complete file:
  ``embeddings`` (M, D) float16, L2-normalised pooled video features; ``file`` (row of
  ``table/``), ``start``/``end`` (seconds), ``row_start``/``row_stop`` (rows of
  ``video/features``); attributes ``window_s``, ``hop_s`` and the files' models. Files of
  different video models get no rows: the group's ``unavailable`` attribute says why.
  ``search/fusion/<sha256>/embeddings`` (M, d) hold the moments in the space of the fusion
  weights with that hash, when ``videobert index --fusion-weights`` wrote them. A rewrite
  copies the moments of files whose size and mtime are unchanged from the index it replaces.

Ids are the file's path under OUT_DIR without ``.h5``, ``/`` written as ``__`` (``a/b.h5`` ->
``a__b``); a clash gets ``~2``, ``~3``... Links are relative, so the directory can be moved or
mounted elsewhere as a whole. The index is written atomically (temp file + rename) and never
lists itself; its temporary name is ``.<name>.building-<pid>-<8 hex>``, not the ``.tmp-`` of
feature files, because ``videobert index`` may write it while a run (which removes every
``.tmp-`` file of its output directory when it starts) is about to begin.
``videobert index OUT_DIR`` writes it; ``videobert run`` refreshes it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np

from videobert_cli.errors import ConfigError, FeatureFileError, OutputError, UsageError
from videobert_cli.search.files import FileModels, FileMoments, common_models, file_moments
from videobert_cli.search.moments import HOP_S, WINDOW_S, Windows
from videobert_cli.store.atomic import atomic_replace, clean_stale_temp_files
from videobert_cli.store.schema import (
    FORMAT_NAME,
    INDEX_FORMAT,
    INDEX_SCHEMA_VERSION,
    SUPPORTED_MAJOR,
    attr_text,
    created_at,
    file_format,
    major_version,
    open_file,
)
from videobert_cli.version import __version__

INDEX_NAME = "index.h5"

#: table columns: name -> kind ("str", "float", "int")
COLUMNS = {
    "id": "str",
    "path": "str",
    "status": "str",
    "duration": "float",
    "video_rows": "int",
    "text_tokens": "int",
    "source_path": "str",
    "config_hash": "str",
    "file_size": "int",
    "file_mtime": "float",
}
#: columns an index written before 1.1 lacks (read as None)
OPTIONAL_COLUMNS = ("file_size", "file_mtime")
STATUS_COMPLETE = "complete"
STATUS_INCOMPLETE = "incomplete"

#: the temporary name's tag, ``.<name>.building-<pid>-<8 hex>``
BUILDING_TAG = "building"
#: a temporary index of a live pid is removed once it is this old
_STALE_BUILDING_S = 24 * 3600


def _describe_file(path: Path, root: Path) -> dict | None:
    """One table row for ``path``; None for an HDF5 file that is no videobert feature file."""
    row = {
        "path": path.relative_to(root).as_posix(),
        "status": STATUS_INCOMPLETE,
        "duration": math.nan,
        "video_rows": -1,
        "text_tokens": -1,
        "source_path": "",
        "config_hash": "",
        "file_size": -1,
        "file_mtime": math.nan,
    }
    try:
        stat = path.stat()
        row["file_size"], row["file_mtime"] = int(stat.st_size), float(stat.st_mtime)
    except OSError:
        pass
    try:
        with open_file(path, "r") as f:
            fmt = file_format(f)
            if fmt and fmt != FORMAT_NAME:
                return None  # another index, or somebody else's HDF5 file
            if not fmt and not any(group in f for group in ("video", "text", "fused")):
                return None  # readable, but nothing of a feature file: somebody else's
            row["source_path"] = attr_text(f.attrs.get("source_path"))
            row["config_hash"] = attr_text(f.attrs.get("config_hash"))
            # a schema this version cannot read is not offered as complete (load() refuses it)
            complete = (fmt == FORMAT_NAME and bool(f.attrs.get("complete", False))
                        and major_version(f.attrs.get("schema_version")) == SUPPORTED_MAJOR)
            video = f.get("video")
            if isinstance(video, h5py.Group):
                if "features" in video:
                    row["video_rows"] = int(video["features"].shape[0])
                if "duration" in video.attrs:
                    row["duration"] = float(video.attrs["duration"])
            text = f.get("text")
            if isinstance(text, h5py.Group) and "token_features" in text:
                row["text_tokens"] = int(text["token_features"].shape[0])
            elif complete:
                row["text_tokens"] = 0  # complete, video only
            if complete:
                row["status"] = STATUS_COMPLETE
    except (OSError, KeyError, ValueError, TypeError):
        pass  # truncated or damaged: listed as incomplete
    return row


def _feature_files(root: Path, index_name: str) -> list[Path]:
    found = []
    for current, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or not name.endswith(".h5"):
                continue
            path = Path(current) / name
            if path.parent == root and name == index_name:
                continue
            found.append(path)
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def _unique_ids(paths: list[str]) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    for path in paths:
        base = path[: -len(".h5")].replace("/", "__") or "_"
        candidate, n = base, 1
        while candidate in seen:
            n += 1
            candidate = f"{base}~{n}"
        seen.add(candidate)
        ids.append(candidate)
    return ids


def scan(out_dir: str | Path, *, name: str = INDEX_NAME) -> list[dict]:
    """The table rows :func:`write_index` would write for ``out_dir`` (sorted by path)."""
    root = Path(out_dir)
    rows = [row for path in _feature_files(root, name) if (row := _describe_file(path, root)) is not None]
    for row, row_id in zip(rows, _unique_ids([row["path"] for row in rows])):
        row["id"] = row_id
    return [{column: row[column] for column in COLUMNS} for row in rows]


def _clean_building(root: Path) -> None:
    """Remove temp files of index writes that were killed (dead pid, or older than a day)."""
    try:
        clean_stale_temp_files(root, older_than_s=_STALE_BUILDING_S, tag=BUILDING_TAG)
    except OutputError:
        pass  # best effort: a leftover is only a hidden file, and the next write tries again


def write_index(out_dir: str | Path, *, name: str = INDEX_NAME, window_s: float | None = None,
                hop_s: float | None = None, sections: Sequence[Callable[[h5py.Group, Path], None]] = ()) -> Path:
    """Write ``out_dir/name`` (default ``index.h5``) atomically and return its path.

    ``window_s``/``hop_s``: the moment windows of ``search/``; by default those of the index
    being replaced, else :data:`~videobert_cli.search.moments.WINDOW_S` / ``HOP_S``.
    ``sections``: callables ``(search_group, root)`` adding more to ``search/`` (e.g. the
    embeddings of a fusion space) once its moment table is written.

    Raises:
        UsageError: ``out_dir`` is not a directory.
        OutputError: the index cannot be written, or ``name`` is taken by a per-video file
            (a video called ``index``): pass another ``name``.
    """
    root = Path(out_dir)
    if not root.is_dir():
        raise UsageError("not a directory", path=root, hint="give the output directory of `videobert run`")
    if not name.endswith(".h5"):  # manifest.jsonl and the run's lock file are not to be replaced
        raise UsageError(f"--name {name!r}: the index is an HDF5 file; give a name ending in .h5",
                         hint="e.g. --name corpus-index.h5")
    final = root / name
    if final.exists():
        try:
            with open_file(final, "r") as f:
                taken = file_format(f) == FORMAT_NAME
        except OSError:
            taken = False
        if taken:
            raise OutputError(f"{name} is the feature file of a video named {Path(name).stem!r}",
                              path=final, hint="write the index under another name (videobert index --name)")
    rows = scan(root, name=name)
    _clean_building(root)
    previous = _previous_windows(final)
    window_s = float(window_s if window_s is not None else previous[0])
    hop_s = float(hop_s if hop_s is not None else previous[1])

    def fill(path: Path) -> None:
        with open_file(path, "x", track_order=True) as f:
            complete = sum(row["status"] == STATUS_COMPLETE for row in rows)
            f.attrs["format"] = INDEX_FORMAT
            f.attrs["schema_version"] = INDEX_SCHEMA_VERSION
            f.attrs["tool_version"] = __version__
            f.attrs["created_at"] = created_at()
            f.attrs["count"] = len(rows)
            f.attrs["complete"] = complete
            f.attrs["incomplete"] = len(rows) - complete
            videos = f.create_group("videos", track_order=True)
            for row in rows:
                if row["status"] == STATUS_COMPLETE:
                    videos[row["id"]] = h5py.ExternalLink(row["path"], "/")
            table = f.create_group("table", track_order=True)
            for column, kind in COLUMNS.items():
                values = [row[column] for row in rows]
                if kind == "str":
                    data = np.array(values, dtype=h5py.string_dtype("utf-8")) if values else np.zeros(
                        0, dtype=h5py.string_dtype("utf-8"))
                elif kind == "float":
                    data = np.asarray(values, dtype=np.float64)
                else:
                    data = np.asarray(values, dtype=np.int64)
                table.create_dataset(column, data=data)
            search = f.create_group("search", track_order=True)
            write_moments(search, root, rows, window_s, hop_s, reuse=previous_moments(final, window_s, hop_s))
            if "embeddings" in search:
                for section in sections:
                    section(search, root)

    atomic_replace(final, fill, "cannot write the index", tag=BUILDING_TAG)
    return final


def _index_path(path: str | Path) -> Path:
    path = Path(path)
    return path / INDEX_NAME if path.is_dir() else path


def read_index(path: str | Path) -> list[dict]:
    """The table of an index (``OUT_DIR`` or the index file): one dict per per-video file.

    ``duration`` is None when unknown; ``video_rows``/``text_tokens`` are None when unknown.
    """
    index = _index_path(path)
    if not index.is_file():
        raise FeatureFileError("index not found", path=index, hint="write it with `videobert index OUT_DIR`")
    try:
        with open_file(index, "r") as f:
            if file_format(f) != INDEX_FORMAT:
                raise FeatureFileError("not a videobert index", path=index, hint="write it with `videobert index OUT_DIR`")
            table = f["table"]
            columns = {}
            count = len(table["id"])
            for column, kind in COLUMNS.items():
                if column not in table and column in OPTIONAL_COLUMNS:
                    columns[column] = np.full(count, -1 if kind == "int" else math.nan)
                    continue
                data = table[column]
                columns[column] = data.asstr()[()] if kind == "str" else data[()]
    except OSError as exc:
        raise FeatureFileError(f"cannot read the index ({exc})", path=index, hint="write it again") from exc
    rows = []
    for i in range(len(columns["id"])):
        row = {}
        for column, kind in COLUMNS.items():
            value = columns[column][i]
            if kind == "float":
                value = None if math.isnan(value) else float(value)
            elif kind == "int":
                value = None if value < 0 else int(value)
            else:
                value = str(value)
            row[column] = value
        rows.append(row)
    return rows


def _previous_windows(index: Path) -> tuple[float, float]:
    """The window and hop of the index at ``index``, or the defaults."""
    try:
        with open_file(index, "r") as f:
            attrs = f["search"].attrs
            return float(attrs["window_s"]), float(attrs["hop_s"])
    except (OSError, KeyError, ValueError, TypeError):
        return WINDOW_S, HOP_S


def previous_moments(index: Path, window_s: float, hop_s: float) -> dict[str, tuple[int, float, FileMoments]]:
    """The moments the index at ``index`` holds per file path, with the file's size and mtime
    then, when it has search data of these windows (else empty): a refresh reuses them."""
    try:
        with open_file(index, "r") as f:
            group = f["search"]
            if (math.isclose(float(group.attrs["window_s"]), window_s) is False
                    or math.isclose(float(group.attrs["hop_s"]), hop_s) is False or "embeddings" not in group):
                return {}
            table = f["table"]
            paths = table["path"].asstr()[()]
            sizes, mtimes = table["file_size"][()], table["file_mtime"][()]
            attrs = group.attrs
            arrays = {name: group[name][()] for name in ("embeddings", "file", "start", "end", "row_start", "row_stop")}
            text_model = attr_text(attrs.get("text_model")) or None
            models = dict(video_model=attr_text(attrs.get("video_model")) or None, video_dim=int(attrs["video_dim"]),
                          video_weights=attr_text(attrs.get("video_weights")) or None, text_model=text_model,
                          text_dim=int(attrs.get("text_dim", 0)) or None)
    except (OSError, KeyError, ValueError, TypeError):
        return {}
    order = np.argsort(arrays["file"], kind="stable")
    bounds = np.searchsorted(arrays["file"][order], np.arange(len(paths) + 1))
    out = {}
    for i, path in enumerate(paths):
        rows = order[bounds[i]:bounds[i + 1]]
        if rows.size:
            windows = Windows(arrays["row_start"][rows], arrays["row_stop"][rows], arrays["start"][rows], arrays["end"][rows])
            moments = FileMoments(FileModels(path=path, **models), windows, arrays["embeddings"][rows].astype(np.float32))
            out[str(path)] = (int(sizes[i]), float(mtimes[i]), moments)
    return out


def write_moments(group: h5py.Group, root: Path, rows: list[dict], window_s: float, hop_s: float,
                  reuse: dict[str, tuple[int, float, FileMoments]] | None = None) -> None:
    """Fill ``search/`` with the moment table and embeddings of the complete files of ``rows``.

    ``reuse`` (:func:`previous_moments`): a file whose size and mtime are those recorded there
    is not read again.
    """
    reuse = reuse or {}
    group.attrs["window_s"] = window_s
    group.attrs["hop_s"] = hop_s
    group.attrs["pooling"] = "L2-normalised mean of the window's L2-normalised rows"
    found, skipped = [], []
    for i, row in enumerate(rows):
        if row["status"] != STATUS_COMPLETE:
            continue
        old = reuse.get(row["path"])
        if old is not None and (old[0], old[1]) == (row["file_size"], row["file_mtime"]):
            found.append((i, old[2]))
            continue
        try:
            found.append((i, file_moments(root / row["path"], window_s, hop_s)))
        except (FeatureFileError, OSError, ValueError) as exc:
            skipped.append(f"{row['path']}: {exc}")  # listed, but never a search hit
    group.attrs["skipped"] = json.dumps(skipped)
    try:
        models = common_models([moments.models for _, moments in found]) if found else None
    except ConfigError as exc:
        group.attrs["unavailable"] = exc.message
        return
    if models is not None:
        for key in ("video_model", "video_weights", "text_model"):
            group.attrs[key] = getattr(models, key) or ""
        group.attrs["video_dim"] = models.video_dim
        group.attrs["text_dim"] = models.text_dim or 0
    dim = models.video_dim if models is not None else 0

    def column(get, dtype) -> np.ndarray:
        return np.concatenate([np.asarray(get(i, m), dtype=dtype) for i, m in found]) if found else np.zeros(0, dtype)

    embeddings = np.concatenate([m.embeddings for _, m in found]).astype(np.float16) if found else np.zeros((0, dim), np.float16)
    group.create_dataset("embeddings", data=embeddings)  # contiguous: a query reads it whole
    group.create_dataset("file", data=column(lambda i, m: np.full(len(m.windows), i), np.int32))
    group.create_dataset("start", data=column(lambda i, m: m.windows.start, np.float64))
    group.create_dataset("end", data=column(lambda i, m: m.windows.end, np.float64))
    group.create_dataset("row_start", data=column(lambda i, m: m.windows.row_start, np.int64))
    group.create_dataset("row_stop", data=column(lambda i, m: m.windows.row_stop, np.int64))
    group.attrs["count"] = len(embeddings)
