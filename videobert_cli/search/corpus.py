"""The searched corpus: every moment window of a set of feature files, read from the files
themselves or from an index (``videobert index``) that stores them, checked for staleness."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from videobert_cli.errors import ConfigError, FeatureFileError
from videobert_cli.search.files import FileModels, common_models, file_moments
from videobert_cli.store.index import STATUS_COMPLETE, read_index, scan
from videobert_cli.store.schema import FORMAT_NAME, INDEX_FORMAT, attr_text, file_format, open_file


@dataclass
class Corpus:
    """Moment windows ``0..M-1``; window ``i`` belongs to file ``file[i]`` (``paths``/``ids``)."""

    paths: list[Path]
    ids: list[str]
    models: FileModels
    embeddings: np.ndarray  # (M, D) float16/float32, L2-normalised
    file: np.ndarray  # (M,) int32
    start: np.ndarray  # (M,) float64
    end: np.ndarray  # (M,) float64
    row_start: np.ndarray  # (M,) int64
    row_stop: np.ndarray  # (M,) int64
    window_s: float
    hop_s: float
    index: Path | None = None  # the index it was read from
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.file.shape[0])


def _kind(path: Path) -> str:
    """"dir", "index", "features" or "other" (a missing file is "features": load says why)."""
    if path.is_dir():
        return "dir"
    if not path.is_file():
        return "features"
    try:
        with open_file(path, "r") as f:
            fmt = file_format(f)
    except OSError:
        return "features"
    return {INDEX_FORMAT: "index", FORMAT_NAME: "features"}.get(fmt, "other")


def expand_sources(sources: Sequence[str | Path]) -> tuple[list[Path], list[Path], list[str]]:
    """(feature files, index files, notes): a folder stands for its complete feature files (recursive)."""
    files: list[Path] = []
    indexes: list[Path] = []
    notes: list[str] = []
    for source in sources:
        p = Path(source)
        kind = _kind(p)
        if kind == "dir":
            rows = scan(p)
            complete = [p / row["path"] for row in rows if row["status"] == STATUS_COMPLETE]
            notes += [f"skipped {p / row['path']}: incomplete" for row in rows if row["status"] != STATUS_COMPLETE]
            if not complete:
                raise ConfigError(f"no complete feature files in {p}", path=p,
                                  hint="pass the output directory of `videobert run`")
            files += complete
        elif kind == "index":
            indexes.append(p)
        elif kind == "other":
            raise FeatureFileError("neither a videobert feature file nor an index", path=p,
                                   hint="pass .h5 files written by `videobert run`, a folder of them, or an index.h5")
        else:
            files.append(p)
    if indexes and (files or len(indexes) > 1):
        raise ConfigError("an index is searched on its own", path=indexes[0],
                          hint="pass one index.h5, or feature files and folders without an index")
    seen: set[Path] = set()
    for p in files:
        key = p.resolve()
        if key in seen:
            raise ConfigError("feature file given twice", path=p, hint="pass each file once")
        seen.add(key)
    return files, indexes, notes


def load_corpus(sources: Sequence[str | Path], *, window_s: float | None = None, hop_s: float | None = None) -> Corpus:
    """Read the moments of ``sources`` (feature files, folders, or one index).

    Raises:
        ConfigError: mixed feature models, an index with other windows than asked for.
        FeatureFileError: an unreadable file, a stale index.
    """
    from videobert_cli.search.moments import HOP_S, WINDOW_S

    files, indexes, notes = expand_sources(sources)
    if indexes:
        corpus = read_indexed(indexes[0], window_s=window_s, hop_s=hop_s)
        corpus.notes[:0] = notes
        return corpus
    window_s = WINDOW_S if window_s is None else float(window_s)
    hop_s = HOP_S if hop_s is None else float(hop_s)
    parts = [file_moments(p, window_s, hop_s) for p in files]
    models = common_models([m.models for m in parts])

    def cat(get, dtype) -> np.ndarray:
        return np.concatenate([np.asarray(get(i, m), dtype=dtype) for i, m in enumerate(parts)])

    return Corpus(
        paths=files, ids=[p.stem for p in files], models=models,
        embeddings=np.concatenate([m.embeddings for m in parts]),
        file=cat(lambda i, m: np.full(len(m.windows), i), np.int32),
        start=cat(lambda i, m: m.windows.start, np.float64), end=cat(lambda i, m: m.windows.end, np.float64),
        row_start=cat(lambda i, m: m.windows.row_start, np.int64),
        row_stop=cat(lambda i, m: m.windows.row_stop, np.int64),
        window_s=window_s, hop_s=hop_s, notes=notes,
    )


def stale_files(index: Path, rows: list[dict]) -> list[str]:
    """Complete files of the index that are gone or changed (size or mtime) since it was written."""
    root = index.parent
    stale = []
    for row in rows:
        if row["status"] != STATUS_COMPLETE:
            continue
        path = root / row["path"]
        try:
            stat = path.stat()
        except OSError:
            stale.append(f"{row['path']} (gone)")
            continue
        if row["file_size"] is None or row["file_mtime"] is None:
            stale.append(f"{row['path']} (indexed by an older version)")
        elif stat.st_size != row["file_size"] or stat.st_mtime != row["file_mtime"]:
            stale.append(f"{row['path']} (changed)")
    return stale


def read_indexed(index: Path, *, window_s: float | None = None, hop_s: float | None = None) -> Corpus:
    """The corpus an index stores (``search/``); refuses a stale index or other windows."""
    rows = read_index(index)
    stale = stale_files(index, rows)
    if stale:
        more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
        raise FeatureFileError(f"the index is stale: {stale[0]}{more} since it was written", path=index,
                               reason="stale-index", hint=f"write it again: videobert index {index.parent}")
    try:
        with open_file(index, "r") as f:
            group = f.get("search")
            if not isinstance(group, h5py.Group):
                raise FeatureFileError("the index holds no search data (written before videobert-cli stored it)",
                                       path=index, hint=f"write it again: videobert index {index.parent}")
            attrs = group.attrs
            if "unavailable" in attrs:
                raise ConfigError(f"the index cannot be searched: {attr_text(attrs['unavailable'])}", path=index,
                                  hint="index files of one video model per folder")
            stored = float(attrs["window_s"]), float(attrs["hop_s"])
            asked = (stored[0] if window_s is None else float(window_s), stored[1] if hop_s is None else float(hop_s))
            if not all(math.isclose(a, b) for a, b in zip(asked, stored)):
                raise ConfigError(f"the index stores windows of {stored[0]:g} s every {stored[1]:g} s, "
                                  f"not {asked[0]:g} s every {asked[1]:g} s", path=index,
                                  hint=f"search without --window/--hop, or index again with them "
                                       f"(videobert index {index.parent} --window {asked[0]:g} --hop {asked[1]:g})")
            arrays = {name: group[name][()] for name in ("embeddings", "file", "start", "end", "row_start", "row_stop")}
            models = FileModels(
                path=str(index), video_model=attr_text(attrs.get("video_model")) or None,
                video_dim=int(attrs.get("video_dim", arrays["embeddings"].shape[1])),
                video_weights=attr_text(attrs.get("video_weights")) or None,
                text_model=attr_text(attrs.get("text_model")) or None,
                text_dim=int(attrs.get("text_dim", 0)) or None,
            )
            skipped = json.loads(attr_text(attrs.get("skipped")) or "[]")
    except (OSError, KeyError, ValueError) as exc:
        raise FeatureFileError(f"cannot read the index's search data ({exc})", path=index,
                               hint=f"write it again: videobert index {index.parent}") from exc
    notes = [f"not searchable (left out when indexing): {line}" for line in skipped]
    return Corpus(
        paths=[index.parent / row["path"] for row in rows], ids=[row["id"] for row in rows], models=models,
        window_s=stored[0], hop_s=stored[1], index=index, notes=notes, **arrays,
    )


def fusion_embeddings_of_index(index: Path, sha256: str) -> np.ndarray | None:
    """The moments' embeddings in the space of the fusion weights ``sha256`` stored in the index."""
    with open_file(index, "r") as f:
        data = f.get(f"search/fusion/{sha256}/embeddings")
        return None if data is None else data[()]
