"""The vocabulary file, and visual words written into feature files.

``save_vocab``/``load_vocab`` write and read a :class:`~videobert_cli.vocab.vocab.Vocabulary`
(layout in ``docs/vocab.md``; format names and attribute encoding are the store's,
:mod:`videobert_cli.store.schema`); ``assign_file`` adds ``word_ids``/``word_paths`` to a
feature file. Both replace their file atomically (:mod:`videobert_cli.store.atomic`).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from videobert_cli.errors import FeatureFileError, OutputError
from videobert_cli.hashing import file_sha256
from videobert_cli.store.atomic import atomic_replace, make_parent
from videobert_cli.store.reader import is_complete, load
from videobert_cli.store.schema import (
    FORMAT_NAME as FEATURES_FORMAT,
    LIBVER,
    VOCAB_FORMAT,
    VOCAB_FORMAT_VERSION,
    VOCAB_SUPPORTED_MAJOR,
    created_at,
    decode_attrs,
    file_format,
    major_version,
    open_file,
    safe_str,
    write_attrs,
)
from videobert_cli.version import __version__
from videobert_cli.vocab.vocab import (
    GROUP_DATASETS,
    STORED_IDENTITY,
    Vocabulary,
    assign_words,
    check_compatible,
    open_h5,
)

__all__ = ["save_vocab", "load_vocab", "word_attrs", "write_words", "assign_file"]


# --------------------------------------------------------------------------------------------
# vocabulary file
# --------------------------------------------------------------------------------------------
def save_vocab(vocab: Vocabulary, path: str | Path) -> Path:
    """Write ``vocab`` to ``path`` atomically; sets ``vocab.path`` and ``vocab.sha256``.

    Raises:
        OutputError: unwritable destination, a directory, or an existing feature file there.
    """
    final = Path(path)
    if final.is_dir():
        raise OutputError("destination is a directory", path=final, hint="give a file name, e.g. vocab.h5")
    if final.is_file():
        try:
            with open_file(final, "r") as f:
                existing = file_format(f)
        except OSError:
            existing = None
        if existing == FEATURES_FORMAT:
            raise OutputError(
                "refusing to overwrite a feature file with a vocabulary",
                path=final,
                hint="choose another --output, e.g. vocab.h5",
            )
    make_parent(final)

    root: dict[str, Any] = {
        "format": VOCAB_FORMAT,
        "format_version": VOCAB_FORMAT_VERSION,
        "tool_version": __version__,
        "created_at": created_at(),
        "complete": False,
        "levels": int(vocab.levels),
        "clusters": int(vocab.clusters),
        "vocab_size": int(vocab.size),
        "group": vocab.group,
        "dataset": vocab.dataset,
    }
    root.update({k: vocab.identity.get(k) for k in STORED_IDENTITY})
    root["feature_dim"] = int(vocab.feature_dim)
    params = dict(vocab.params)
    level_info = params.pop("level_info", None)
    root.update(params)
    stats = dict(vocab.stats)
    root.update(stats)
    if level_info is not None:
        root["level_info"] = level_info

    def fill(tmp: Path) -> None:
        with open_file(tmp, "x", libver=LIBVER, track_order=True) as f:
            write_attrs(f, root)
            for i, (c, n) in enumerate(zip(vocab.centroids, vocab.counts)):
                g = f.create_group(f"level_{i}", track_order=True)
                ds = g.create_dataset("centroids", data=c.astype(np.float32))
                write_attrs(ds, {"description": f"children of each level-{i} node: (clusters**{i}, clusters, D)"})
                ds = g.create_dataset("counts", data=n.astype(np.int64))
                write_attrs(ds, {"description": "training rows in each child; a child exists iff > 0"})
            g = f.create_group("sources", track_order=True)
            names = [safe_str(p) for p, _ in vocab.sources]
            ds = g.create_dataset("path", shape=(len(names),), dtype=h5py.string_dtype("utf-8"))
            if names:
                ds[...] = np.array(names, dtype=object)
            g.create_dataset("rows", data=np.array([r for _, r in vocab.sources], dtype=np.int64))
            g = f.create_group("usage", track_order=True)
            ds = g.create_dataset("word_counts", data=vocab.word_counts())
            write_attrs(ds, {"description": "training rows per word id (level_{L-1}/counts, flattened)"})
            f.attrs["complete"] = True
            f.flush()

    atomic_replace(final, fill, "cannot write vocabulary")
    vocab.path = str(final)
    vocab.sha256 = file_sha256(final)
    return final


def load_vocab(path: str | Path) -> Vocabulary:
    """Read a vocabulary written by :func:`save_vocab`.

    Raises:
        FeatureFileError: missing, not HDF5, not a (complete, supported) vocabulary, or an
            inconsistent tree.
    """
    p = Path(path)
    hint = "build one with: videobert vocab build FEATURES... -o vocab.h5"
    with open_h5(p) as f:
        attrs = decode_attrs(f)
        if attrs.get("format") != VOCAB_FORMAT:
            raise FeatureFileError(
                f"not a videobert vocabulary (format attribute is {attrs.get('format')!r})", path=p, hint=hint
            )
        if major_version(attrs.get("format_version")) != VOCAB_SUPPORTED_MAJOR:
            raise FeatureFileError(
                f"unsupported vocabulary version {attrs.get('format_version')!r}", path=p, hint=hint
            )
        if attrs.get("complete") is not True:
            raise FeatureFileError("vocabulary file is incomplete", path=p, hint=hint)
        try:
            levels, clusters = int(attrs["levels"]), int(attrs["clusters"])
            centroids = [f[f"level_{i}/centroids"][()] for i in range(levels)]
            counts = [f[f"level_{i}/counts"][()] for i in range(levels)]
            names = [str(s) for s in f["sources/path"].asstr()[()]] if len(f["sources/path"]) else []
            rows = f["sources/rows"][()].tolist()
        except (KeyError, OSError, ValueError) as exc:
            raise FeatureFileError(f"damaged vocabulary file ({exc})", path=p, hint=hint) from exc
    params = {k: attrs[k] for k in ("seed", "batch_size", "max_iter", "tol", "epochs", "converged", "level_info") if k in attrs}
    stat_keys = ("rows", "words_total", "words_used", "words_used_fraction", "largest_share", "largest_word",
                 "perplexity", "degenerate", "warnings", "mean_sq_distance", "centroids_per_level")
    stats = {k: attrs[k] for k in stat_keys if k in attrs}
    identity = {k: attrs.get(k) for k in STORED_IDENTITY}
    try:
        vocab = Vocabulary(
            levels=levels, clusters=clusters, centroids=centroids, counts=counts, identity=identity,
            group=str(attrs.get("group", "video")), dataset=str(attrs.get("dataset", "features")),
            params=params, sources=list(zip(names, rows)), stats=stats, path=str(p), sha256=file_sha256(p),
        )
    except ValueError as exc:
        raise FeatureFileError(f"inconsistent vocabulary ({exc})", path=p, hint=hint) from exc
    for i in range(levels - 1):
        # every existing child must have children of its own, or a row could reach a dead end
        if not np.array_equal(counts[i].reshape(-1) > 0, (counts[i + 1] > 0).any(axis=1)):
            raise FeatureFileError(f"inconsistent vocabulary tree at level {i}", path=p, hint=hint)
    if vocab.group not in GROUP_DATASETS or identity.get("feature_dim") != vocab.feature_dim:
        raise FeatureFileError("inconsistent vocabulary attributes", path=p, hint=hint)
    return vocab


# --------------------------------------------------------------------------------------------
# assigning words to feature files
# --------------------------------------------------------------------------------------------
def word_attrs(vocab: Vocabulary) -> dict[str, Any]:
    """Attributes naming the vocabulary, put on ``word_ids`` and ``word_paths``."""
    return {
        "vocab_path": str(Path(vocab.path).resolve()) if vocab.path else None,
        "vocab_sha256": vocab.sha256,
        "vocab_levels": int(vocab.levels),
        "vocab_clusters": int(vocab.clusters),
        "vocab_size": int(vocab.size),
    }


def write_words(group: h5py.Group, ids: np.ndarray, paths: np.ndarray, vocab: Vocabulary) -> None:
    """Create (or replace) ``word_ids`` and ``word_paths`` in an open, writable HDF5 group."""
    for name in ("word_ids", "word_paths"):
        if name in group:
            del group[name]
    ds = group.create_dataset("word_ids", data=np.asarray(ids, dtype=np.int64))
    write_attrs(ds, {"description": "visual word id of each row (hierarchical k-means leaf)", **word_attrs(vocab)})
    ds = group.create_dataset("word_paths", data=np.asarray(paths, dtype=np.int16).reshape(-1, vocab.levels))
    write_attrs(ds, {"description": "cluster index at each vocabulary level (the word's path)", **word_attrs(vocab)})
    # the group names the vocabulary too, as `videobert run --vocab` writes it
    write_attrs(group, {**decode_attrs(group), **word_attrs(vocab)})


def assign_file(path: str | Path, vocab: Vocabulary) -> dict[str, Any]:
    """Add ``<group>/word_ids`` and ``<group>/word_paths`` to a feature file, atomically.

    The file is copied to a temporary name in its directory, the datasets are written into
    the copy, which is fsynced and renamed over the original: on any failure the original is
    untouched. Existing word datasets are replaced.

    Returns:
        ``{"path", "rows", "distinct_words"}``.

    Raises:
        FeatureFileError: not a complete feature file, or the group is missing.
        ConfigError: features of another model or dimension than the vocabulary's.
        InputError: NaN/inf features.
        OutputError: the file cannot be rewritten.
    """
    p = Path(path)
    ff = load(p, groups=[vocab.group])
    grp = getattr(ff, vocab.group)
    x = np.asarray(getattr(grp, GROUP_DATASETS[vocab.group]))
    width = x.shape[1] if x.ndim == 2 else 0
    check_compatible(grp.attrs, width, vocab, path=p)
    ids, paths = assign_words(x, vocab)

    mode = stat.S_IMODE(p.stat().st_mode)

    def fill(tmp: Path) -> None:
        shutil.copy2(p, tmp)
        if not mode & stat.S_IWUSR:
            os.chmod(tmp, mode | stat.S_IWUSR)
        with open_file(tmp, "r+") as f:
            write_words(f[vocab.group], ids, paths, vocab)
            f.flush()
        if not mode & stat.S_IWUSR:
            os.chmod(tmp, mode)
        if not is_complete(tmp):
            raise OSError(errno.EIO, "rewritten file does not read back as complete")

    atomic_replace(p, fill, "cannot rewrite feature file")
    return {"path": str(p), "rows": int(ids.size), "distinct_words": int(np.unique(ids).size)}
