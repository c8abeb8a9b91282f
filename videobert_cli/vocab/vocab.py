"""VideoBERT's visual words: a hierarchical k-means vocabulary of feature vectors.

``build_vocabulary`` streams the ``video/features`` of many feature files (batches of
``batch_size`` rows, never a whole dataset) and trains a tree of ``levels`` levels with up to
``clusters`` children per node, level by level: the data is streamed again for each level and
each point is routed through the levels already trained to find its node, whose minibatch
k-means (:mod:`videobert_cli.vocab.kmeans`) it then updates. A word is a leaf; its id is the
path ``(c_1, ..., c_L)`` read as a base-``clusters`` number, ``sum_i c_i * clusters**(L-1-i)``.

``assign_words`` maps feature rows to word ids and paths (pure, vectorised). The vocabulary
file (``save_vocab``/``load_vocab``) and ``assign_file``, which adds ``word_ids``/``word_paths``
to a feature file, are in :mod:`videobert_cli.vocab.files`; the file layout is documented in
``docs/vocab.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from videobert_cli.errors import ConfigError, FeatureFileError, InputError
from videobert_cli.store.schema import (
    FORMAT_NAME as FEATURES_FORMAT,
    VOCAB_FORMAT,
    VOCAB_FORMAT_VERSION,
    decode_attrs,
    file_format,
    open_file,
)
from videobert_cli.vocab.kmeans import NodeKMeans, nearest_in_nodes

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GROUP_DATASETS",
    "IDENTITY_KEYS",
    "STORED_IDENTITY",
    "Vocabulary",
    "build_vocabulary",
    "assign_words",
    "check_compatible",
    "feature_files",
    "file_identity",
    "open_h5",
    "usage_stats",
]

#: the vocabulary file's ``format`` and ``format_version`` (see :mod:`videobert_cli.store.schema`)
FORMAT_NAME = VOCAB_FORMAT
FORMAT_VERSION = VOCAB_FORMAT_VERSION

#: feature dataset each group's vocabulary is built from (and whose rows get words)
GROUP_DATASETS = {"video": "features", "text": "token_features", "fused": "sequence"}
#: attributes that must agree between every input file and the vocabulary
IDENTITY_KEYS = ("model_name", "feature_dim", "weights_sha256", "feature_layer")
#: attributes of the feature model copied into the vocabulary (identity plus provenance)
STORED_IDENTITY = (*IDENTITY_KEYS, "weights_name", "model_kind", "preprocessing")

#: a vocabulary is reported degenerate when one word takes more than this share of the rows...
DEGENERATE_LARGEST_SHARE = 0.5
#: ...or fewer than this fraction of the possible words is used
DEGENERATE_MIN_USED = 0.10

#: refuse trees whose centroids alone would take more memory than this
MAX_CENTROID_BYTES = 8 << 30
#: memory allowed for the per-node reservoir samples of one level (k-means++ and re-seeding)
SAMPLE_BUDGET_BYTES = 256 << 20
MAX_SAMPLE_ROWS = 1024


# --------------------------------------------------------------------------------------------
# the vocabulary
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Vocabulary:
    """A hierarchical k-means vocabulary (a tree of ``levels`` levels, ``clusters`` wide).

    Attributes:
        levels, clusters: tree depth and branching; ``size == clusters ** levels`` word ids.
        centroids: one array per level; level ``i`` is ``(clusters**i, clusters, D)`` float32,
            row ``n`` holding the children of node ``n`` (node ids are path prefixes read in
            base ``clusters``). Unused slots hold zeros.
        counts: one array per level, ``(clusters**i, clusters)`` int64: training rows that
            fell in each child. A child exists iff its count is > 0.
        identity: the feature model the vocabulary belongs to (``model_name``,
            ``feature_dim``, ``weights_sha256``, ``feature_layer``, ...).
        group, dataset: where the features come from (``video``/``features``).
        params: training parameters and per-level training facts.
        sources: ``(path, rows)`` of every training file.
        stats: cluster usage (:func:`usage_stats`).
        path, sha256: the file it was loaded from / saved to (``None`` before).
    """

    levels: int
    clusters: int
    centroids: list[np.ndarray]
    counts: list[np.ndarray]
    identity: dict[str, Any]
    group: str = "video"
    dataset: str = "features"
    params: dict[str, Any] = field(default_factory=dict)
    sources: list[tuple[str, int]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    sha256: str | None = None
    _sq_norms: list[np.ndarray] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.levels < 1 or self.clusters < 2:
            raise ValueError("a vocabulary needs levels >= 1 and clusters >= 2")
        if len(self.centroids) != self.levels or len(self.counts) != self.levels:
            raise ValueError(f"expected {self.levels} levels of centroids and counts")
        dim = None
        for i, (c, n) in enumerate(zip(self.centroids, self.counts)):
            nodes = self.clusters**i
            if c.ndim != 3 or c.shape[:2] != (nodes, self.clusters):
                raise ValueError(f"level {i}: centroids shape {c.shape}, expected ({nodes}, {self.clusters}, D)")
            if n.shape != (nodes, self.clusters):
                raise ValueError(f"level {i}: counts shape {n.shape}, expected ({nodes}, {self.clusters})")
            if dim is not None and c.shape[2] != dim:
                raise ValueError(f"level {i}: width {c.shape[2]} != {dim}")
            dim = c.shape[2]
        self.centroids = [np.ascontiguousarray(c, dtype=np.float32) for c in self.centroids]
        self.counts = [np.asarray(n, dtype=np.int64) for n in self.counts]
        self._sq_norms = [_sq_norms(c, n > 0) for c, n in zip(self.centroids, self.counts)]

    @property
    def feature_dim(self) -> int:
        return int(self.centroids[0].shape[2])

    @property
    def size(self) -> int:
        """Number of possible word ids, ``clusters ** levels``."""
        return self.clusters**self.levels

    def word_counts(self) -> np.ndarray:
        """(size,) training rows per word id."""
        return self.counts[-1].reshape(-1)


def _sq_norms(centroids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    c = centroids.astype(np.float64)
    norms = np.einsum("nkd,nkd->nk", c, c).astype(np.float32)
    return np.where(valid, norms, np.float32(np.inf))


def _route(
    x: np.ndarray, centroids: list[np.ndarray], sq_norms: list[np.ndarray], clusters: int, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Descend ``depth`` levels: returns (node id at level ``depth``, (n, depth) int16 path)."""
    n = x.shape[0]
    node = np.zeros(n, dtype=np.int64)
    paths = np.zeros((n, depth), dtype=np.int16)
    for level in range(depth):
        child = nearest_in_nodes(x, node, centroids[level], sq_norms[level])
        paths[:, level] = child
        node = node * clusters + child
    return node, paths


def assign_words(features: np.ndarray, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """Words of feature rows: ``(ids (N,) int64, paths (N, levels) int16)``.

    Pure: neither argument is modified. ``ids == sum_i paths[:, i] * clusters**(levels-1-i)``.
    Each row descends the tree to the nearest existing child at every level.

    Raises:
        ConfigError: the feature width is not the vocabulary's.
        InputError: rows with NaN or infinite values (they have no nearest word).
    """
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features: expected a 2-D array, got shape {x.shape}")
    if x.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, vocab.levels), dtype=np.int16)
    if x.shape[1] != vocab.feature_dim:
        raise ConfigError(
            f"features have dimension {x.shape[1]}, the vocabulary expects {vocab.feature_dim}",
            path=vocab.path,
            hint="use a vocabulary built from features of the same model",
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} feature rows contain NaN or infinite values (first: row {int(np.argmax(bad))})",
            hint="re-extract the features (float16 storage overflows beyond 65504)",
            reason="non-finite",
        )
    ids, paths = _route(x, vocab.centroids, vocab._sq_norms, vocab.clusters, vocab.levels)
    return ids, paths


# --------------------------------------------------------------------------------------------
# feature model identity
# --------------------------------------------------------------------------------------------
def _identity(attrs: Mapping[str, Any], dim: int) -> dict[str, Any]:
    ident = {key: attrs.get(key) for key in STORED_IDENTITY}
    ident["feature_dim"] = int(dim)  # the dataset's width is the truth
    return ident


def _describe_identity(ident: Mapping[str, Any]) -> str:
    sha = ident.get("weights_sha256")
    sha_text = f"{str(sha)[:12]}" if sha else "none"
    text = f"{ident.get('model_name')!s} (dim {ident.get('feature_dim')}, weights sha256 {sha_text}"
    if ident.get("feature_layer") is not None:
        text += f", layer {ident.get('feature_layer')}"
    return text + ")"


def _differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    out = []
    for key in IDENTITY_KEYS:
        va, vb = a.get(key), b.get(key)
        if key == "feature_dim":
            va, vb = (int(va) if va is not None else None), (int(vb) if vb is not None else None)
        if va != vb:
            out.append(key)
    return out


def check_compatible(
    attrs: Mapping[str, Any], feature_dim: int, vocab: Vocabulary, *, path: str | Path | None = None
) -> None:
    """Refuse features of another model, weights, layer or width than the vocabulary's.

    ``attrs`` are the feature group's attributes (or a video model's ``identity()``);
    ``feature_dim`` the width of its feature rows.

    Raises:
        ConfigError: naming what differs, e.g. ``model_name``/``feature_dim``.
    """
    ident = _identity(attrs, feature_dim)
    diff = _differences(vocab.identity, ident)
    if diff:
        where = vocab.path or "the vocabulary"
        raise ConfigError(
            f"vocabulary {where} was built on {_describe_identity(vocab.identity)} features, "
            f"these are {_describe_identity(ident)} (differs in {', '.join(diff)})",
            path=path,
            hint="build a vocabulary from features of this model (videobert vocab build), "
            f"or extract with --video-model {vocab.identity.get('model_name')}",
        )


# --------------------------------------------------------------------------------------------
# streaming the training data
# --------------------------------------------------------------------------------------------
@dataclass
class _Source:
    path: Path
    rows: int
    dim: int
    identity: dict[str, Any]


def open_h5(path: Path) -> h5py.File:
    """Open ``path`` read-only; FeatureFileError when missing, not a file, or not HDF5."""
    if not path.exists():
        raise FeatureFileError("feature file not found", path=path, hint="check the path")
    if not path.is_file():
        raise FeatureFileError("not a regular file", path=path, hint="pass .h5 feature files")
    try:
        return open_file(path, "r")
    except OSError as exc:
        raise FeatureFileError(
            f"not a readable HDF5 file ({exc})",
            path=path,
            hint="the file is corrupt or was not written by videobert-cli; re-run extraction",
        ) from exc


def _open_source(path: Path, group: str, dataset: str) -> _Source:
    with open_h5(path) as f:
        root = decode_attrs(f)
        if root.get("format") != FEATURES_FORMAT:
            raise FeatureFileError(
                f"not a videobert feature file (format attribute is {root.get('format')!r})",
                path=path,
                hint="pass feature files written by videobert extract-video / run",
            )
        if root.get("complete") is not True:
            raise FeatureFileError(
                "feature file is incomplete", path=path, hint="re-run extraction for this video"
            )
        ds = f.get(f"{group}/{dataset}")
        if not isinstance(ds, h5py.Dataset) or len(ds.shape) != 2:
            raise FeatureFileError(
                f"no 2-D dataset {group}/{dataset}",
                path=path,
                hint=f"the file has no {group} features; extract them first",
            )
        attrs = decode_attrs(f[group])
        return _Source(path, int(ds.shape[0]), int(ds.shape[1]), _identity(attrs, int(ds.shape[1])))


def file_identity(path: str | Path, group: str = "video") -> dict[str, Any]:
    """The feature model identity of a feature file's ``group`` (attributes only, no data read).

    ``feature_dim`` is the width of the group's feature dataset; ``rows`` its row count.

    Raises:
        FeatureFileError: not a complete feature file, or the group/dataset is missing.
    """
    src = _open_source(Path(path), group, GROUP_DATASETS[group])
    return {**src.identity, "rows": src.rows}


def _read_block(ds: h5py.Dataset, start: int, stop: int) -> np.ndarray:
    return np.ascontiguousarray(ds[start:stop], dtype=np.float32)


def _batches(
    sources: list[_Source],
    group: str,
    dataset: str,
    batch_size: int,
    rng: np.random.Generator | None = None,
) -> Iterator[np.ndarray]:
    """Row blocks of at most ``batch_size`` rows; files and blocks shuffled when ``rng`` given."""
    order = range(len(sources)) if rng is None else rng.permutation(len(sources)).tolist()
    for i in order:
        src = sources[i]
        if src.rows == 0:
            continue
        starts = np.arange(0, src.rows, batch_size)
        if rng is not None:
            starts = rng.permutation(starts)
        try:
            with open_h5(src.path) as f:
                ds = f[f"{group}/{dataset}"]
                if ds.shape != (src.rows, src.dim):
                    raise FeatureFileError(
                        "file changed while the vocabulary was being built",
                        path=src.path,
                        hint="do not rewrite feature files during vocab build",
                    )
                for s in starts.tolist():
                    x = _read_block(ds, s, min(s + batch_size, src.rows))
                    if not np.isfinite(x).all():
                        row = s + int(np.argmax(~np.isfinite(x).all(axis=1)))
                        raise FeatureFileError(
                            f"{group}/{dataset} row {row} contains NaN or infinite values",
                            path=src.path,
                            hint="re-extract this file (float16 storage overflows beyond 65504)",
                        )
                    yield x
        except (OSError, KeyError) as exc:
            raise FeatureFileError(
                f"cannot read {group}/{dataset}: {exc}", path=src.path, hint="the file is damaged"
            ) from exc


def feature_files(inputs: str | Path | Iterable[str | Path], group: str | None = None) -> list[Path]:
    """Expand inputs (one path or several): files as given, directories to their ``*.h5``
    feature files (sorted).

    Files in a directory whose root ``format`` is not ``videobert-features`` (a vocabulary,
    another tool's HDF5), or that lack ``group`` when it is given (a text-only file has no
    ``video/``), are skipped; duplicates are removed, first occurrence kept.
    """
    out: list[Path] = []
    seen: set[str] = set()
    for item in [inputs] if isinstance(inputs, (str, Path)) else inputs:
        p = Path(item)
        candidates = [p]
        if p.is_dir():
            candidates = []
            for child in sorted(p.glob("*.h5")):
                try:
                    with open_file(child, "r") as f:
                        if file_format(f) == FEATURES_FORMAT and (group is None or group in f):
                            candidates.append(child)
                except OSError:
                    candidates.append(child)  # let the reader report it
        for c in candidates:
            key = str(c.resolve())
            if key not in seen:
                seen.add(key)
                out.append(c)
    return out


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------
def usage_stats(word_counts: np.ndarray, levels: int, clusters: int) -> dict[str, Any]:
    """Cluster usage of the leaves: words used, largest share, perplexity, warnings."""
    counts = np.asarray(word_counts, dtype=np.int64).reshape(-1)
    rows = int(counts.sum())
    size = clusters**levels
    used = int((counts > 0).sum())
    largest = int(counts.max()) if counts.size else 0
    share = largest / rows if rows else 0.0
    p = counts[counts > 0] / rows if rows else np.zeros(0)
    perplexity = float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0
    warnings: list[str] = []
    if share > DEGENERATE_LARGEST_SHARE:
        warnings.append(
            f"one word takes {share:.0%} of the rows (word {int(np.argmax(counts))}): "
            "the features are nearly identical or the data is too small"
        )
    if used < DEGENERATE_MIN_USED * size:
        warnings.append(
            f"only {used} of {size} words ({used / size:.1%}) are used: use fewer "
            "--levels/--clusters, or more and more varied training data"
        )
    return {
        "rows": rows,
        "words_total": size,
        "words_used": used,
        "words_used_fraction": used / size,
        "largest_share": share,
        "largest_word": int(np.argmax(counts)) if counts.size else 0,
        "perplexity": perplexity,
        "degenerate": bool(warnings),
        "warnings": warnings,
    }


def _check_params(levels: int, clusters: int, batch_size: int, max_iter: int, tol: float, group: str) -> None:
    if levels < 1:
        raise ConfigError(f"--levels must be at least 1, got {levels}")
    if not 2 <= clusters <= np.iinfo(np.int16).max:
        raise ConfigError(f"--clusters must be between 2 and 32767, got {clusters}")
    if clusters**levels >= 2**62:
        raise ConfigError(
            f"{clusters}**{levels} words do not fit a 64-bit word id", hint="use fewer --levels"
        )
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if max_iter < 1:
        raise ConfigError(f"--max-iter must be at least 1, got {max_iter}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise ConfigError(f"--tol must be a finite number >= 0, got {tol}")
    if group not in GROUP_DATASETS:
        raise ConfigError(f"unknown --group {group!r}", hint=f"use one of {', '.join(GROUP_DATASETS)}")


def _sample_size(nodes: int, clusters: int, dim: int) -> int:
    budget_rows = SAMPLE_BUDGET_BYTES // (nodes * dim * 4)
    return int(min(max(budget_rows, 2 * clusters), max(8 * clusters, MAX_SAMPLE_ROWS)))


def build_vocabulary(
    paths: Iterable[str | Path],
    levels: int = 4,
    clusters: int = 12,
    seed: int = 0,
    *,
    batch_size: int = 4096,
    max_iter: int = 100,
    tol: float = 1e-4,
    group: str = "video",
    sample_size: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Vocabulary:
    """Train a hierarchical k-means vocabulary on the features of ``paths``, streamed.

    Args:
        paths: feature files (directories are expanded, see :func:`feature_files`).
        levels, clusters: tree depth and branching (VideoBERT: 4 x 12 = 20,736 words).
        seed: everything random derives from it; same inputs (same order) + seed -> same tree.
        batch_size: rows per read and per minibatch step.
        max_iter: maximum epochs (passes over the data) per level.
        tol: a node stops training when its centres moved, over one epoch, by less than
            ``tol`` x the variance of its sample (sum of squared shifts); 0 runs every epoch.
        group: ``video`` (``video/features``), ``text`` (``token_features``) or ``fused``.
        sample_size: reservoir rows per node for k-means++ and re-seeding (default: see
            ``docs/vocab.md``).
        progress: called with one line per level.

    Raises:
        ConfigError: bad parameters, no input rows, or inputs of different feature models.
        FeatureFileError: an input that is missing, not a complete feature file, lacks the
            group, or holds NaN/inf.
    """
    _check_params(levels, clusters, batch_size, max_iter, tol, group)
    dataset = GROUP_DATASETS[group]
    files = feature_files(paths, group)
    if not files:
        raise ConfigError("no feature files given", hint="pass .h5 files or directories holding them")
    sources = [_open_source(p, group, dataset) for p in files]
    ref = sources[0]
    for src in sources[1:]:
        diff = _differences(ref.identity, src.identity)
        if diff:
            raise ConfigError(
                f"{src.path} has features of {_describe_identity(src.identity)} but {ref.path} "
                f"has {_describe_identity(ref.identity)} (differs in {', '.join(diff)})",
                hint="a vocabulary is built from the features of one model; pass files of one model",
            )
    total = sum(s.rows for s in sources)
    if total == 0:
        raise ConfigError("the input files hold no feature rows", hint="extract features from non-empty videos first")
    dim = ref.dim
    centroid_bytes = dim * 4 * sum(clusters ** (i + 1) for i in range(levels))
    if centroid_bytes > MAX_CENTROID_BYTES:
        raise ConfigError(
            f"{levels} levels x {clusters} clusters of dimension {dim} need "
            f"{centroid_bytes / 2**30:.1f} GiB of centroids",
            hint="use fewer --levels or --clusters",
        )
    say = progress or (lambda _msg: None)

    centroids: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    norms: list[np.ndarray] = []
    level_info: list[dict[str, Any]] = []

    def set_counts(level: int, node_counts: np.ndarray) -> None:
        """Final counts of ``level``'s children; children no row reaches are removed."""
        c = node_counts.reshape(clusters**level, clusters).astype(np.int64)
        counts[level] = c
        centroids[level][c == 0] = 0.0
        norms[level] = _sq_norms(centroids[level], c > 0)

    for level in range(levels):
        nodes = clusters**level
        rng = np.random.default_rng([seed, level])
        size = sample_size or _sample_size(nodes, clusters, dim)
        km = NodeKMeans(nodes, clusters, dim, sample_size=size, rng=rng, tol=tol)
        node_counts = np.zeros(nodes, dtype=np.int64)
        for x in _batches(sources, group, dataset, batch_size):
            node, _ = _route(x, centroids, norms, clusters, level)
            km.observe(x, node)
            node_counts += np.bincount(node, minlength=nodes)
        if level > 0:
            set_counts(level - 1, node_counts)
        km.initialise()
        for _ in range(max_iter):
            km.start_epoch()
            for x in _batches(sources, group, dataset, batch_size, rng):
                node, _ = _route(x, centroids, norms, clusters, level)
                km.partial_fit(x, node)
            if km.end_epoch():
                break
        centroids.append(km.centres)
        counts.append(km.counts.copy())  # replaced by the final assignment counts below
        norms.append(km.sq_norms.copy())
        info = {
            "level": level,
            "nodes": int((node_counts > 0).sum()),
            "centroids": int(km.valid.sum()),
            "epochs": km.epochs,
            "converged": bool(km.converged.all()),
            "reseeded": km.reseeded,
            "dropped": km.dropped,
            "sample_size": size,
        }
        level_info.append(info)
        say(
            f"level {level + 1}/{levels}: {info['nodes']} node(s) -> {info['centroids']} centroids, "
            f"{km.epochs} epoch(s){' (converged)' if info['converged'] else ' (max-iter reached)'}"
        )

    # Final pass: the leaves' counts (usage statistics) and the quantisation error.
    leaf_counts = np.zeros(clusters**levels, dtype=np.int64)
    sq_err = 0.0
    for x in _batches(sources, group, dataset, batch_size):
        leaf, _ = _route(x, centroids, norms, clusters, levels)
        leaf_counts += np.bincount(leaf, minlength=leaf_counts.size)
        diff = x.astype(np.float64) - centroids[-1].reshape(-1, dim)[leaf]
        sq_err += float(np.einsum("nd,nd->", diff, diff))
    set_counts(levels - 1, leaf_counts)
    for info, c in zip(level_info, counts):
        info["centroids"] = int((c > 0).sum())  # after removing children no row reaches

    stats = usage_stats(leaf_counts, levels, clusters)
    stats["mean_sq_distance"] = sq_err / total
    stats["centroids_per_level"] = [int((c > 0).sum()) for c in counts]
    params = {
        "seed": int(seed),
        "batch_size": int(batch_size),
        "max_iter": int(max_iter),
        "tol": float(tol),
        "epochs": [i["epochs"] for i in level_info],
        "converged": [i["converged"] for i in level_info],
        "level_info": level_info,
    }
    return Vocabulary(
        levels=levels,
        clusters=clusters,
        centroids=centroids,
        counts=counts,
        identity=dict(ref.identity),
        group=group,
        dataset=dataset,
        params=params,
        sources=[(str(s.path.resolve()), s.rows) for s in sources],
        stats=stats,
    )
