"""Training data: paired video/text samples streamed from the HDF5 files written by ``run``.

A *file* is one feature file with ``video/`` and ``text/`` groups. A *pair* (one sample) is

* ``pairs="video"``: all sampled frames of the file's video with all of its transcript's
  tokens;
* ``pairs="sentences"``: one cue (sentence) of the transcript with the video positions
  paired with it by :func:`videobert_cli.fusion.align.align_segments` - the same rule the
  pipeline's sentence-aligned segments (``run --align sentences``) use: positions whose time
  span overlaps the cue's. Untimed transcripts have no sentence pairs.

Times are the ones ``videobert fuse`` feeds the fusion model: frame timestamps for video and
:func:`~videobert_cli.pipeline.stages.fusion_token_times` for text (tokens spread evenly
over their cue's span), in absolute seconds of the video. The fused layout follows the pair
mode (:data:`LAYOUTS`): ``[CLS] video... text...`` for whole videos, VideoBERT's
``[CLS] text... [>] video... [SEP]`` for sentences, as ``fuse`` writes them.

Nothing is held in memory beyond one batch: :class:`PairDataset` opens the file of an item
when the item is read (h5py, reading only the rows it needs). :func:`scan_files` reads only
attributes and shapes.

Train/validation split (:func:`split_files`): files - not pairs - are held out, so the
sentences of a validation video never appear in training. Each file gets the key
``sha256(f"{seed}:{file name}")``; files are sorted by key and the first
``max(1, round(val_fraction * n))`` are the validation split (none when ``val_fraction`` is
0; at least one file always stays for training). The split depends only on the seed, the
fraction and the set of file *names* (not their directories or the order given).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import h5py
import numpy as np
import torch

from videobert_cli.errors import ConfigError, FeatureFileError

PAIR_MODES = ("video", "sentences")
#: the fusion model's ``layout`` for each pair mode (what ``fuse`` uses for that unit)
LAYOUTS = {"video": "video_text", "sentences": "videobert"}

#: label value of positions that carry no prediction target (torch's CE ignore_index default)
IGNORE = -100


# --------------------------------------------------------------------------------------------
# scanning and checking
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileInfo:
    """What :func:`scan_files` learns about one feature file without reading its arrays."""

    path: Path
    video_model: str | None
    video_dim: int
    text_model: str | None
    text_dim: int
    num_frames: int
    num_tokens: int
    num_cues: int
    has_word_ids: bool
    timed: bool  # some cue has finite start and end times (sentence pairs are possible)
    video_weights: str | None = None  # sha256 of the extractor's weights (None: not recorded)
    text_weights: str | None = None


def _attr_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)


def _open(path: Path) -> h5py.File:
    # same flags as the store: filesystems without flock must not break reading
    return h5py.File(path, "r", locking="best-effort")


def scan_file(path: str | Path) -> FileInfo:
    """Check that ``path`` is a complete feature file with video/ and text/; describe it.

    Raises:
        FeatureFileError: not a (complete, supported) feature file, or a group is missing.
    """
    from videobert_cli.store.hdf5 import load

    path = Path(path)
    load(path, groups=[])  # validates format, schema version and completeness; reads no data
    try:
        with _open(path) as f:
            for group in ("video", "text"):
                if group not in f:
                    raise FeatureFileError(
                        f"has no {group}/ group",
                        path=path,
                        hint="train on files written by `videobert run` (video + transcript)",
                    )
            v, t = f["video"], f["text"]
            vfeat, tfeat = v["features"], t["token_features"]
            video_dim = int(v.attrs.get("feature_dim", vfeat.shape[1]))
            text_dim = int(t.attrs.get("feature_dim", tfeat.shape[1]))
            if vfeat.shape[1] != video_dim or (tfeat.shape[0] and tfeat.shape[1] != text_dim):
                raise FeatureFileError(
                    "feature_dim attribute disagrees with the stored features",
                    path=path,
                    hint="the file is damaged; re-run extraction",
                )
            cue_start = np.asarray(t["cue_start"][()], dtype=np.float64)
            cue_end = np.asarray(t["cue_end"][()], dtype=np.float64)
            return FileInfo(
                path=path,
                video_model=_attr_str(v.attrs.get("model_name")),
                video_dim=video_dim,
                text_model=_attr_str(t.attrs.get("model_name")),
                text_dim=text_dim,
                num_frames=int(vfeat.shape[0]),
                num_tokens=int(tfeat.shape[0]),
                num_cues=int(cue_start.shape[0]),
                has_word_ids="word_ids" in v,
                timed=bool(np.any(np.isfinite(cue_start) & np.isfinite(cue_end))),
                video_weights=_attr_str(v.attrs.get("weights_sha256")) or None,
                text_weights=_attr_str(t.attrs.get("weights_sha256")) or None,
            )
    except KeyError as exc:
        raise FeatureFileError(
            f"a dataset is missing: {exc}", path=path, hint="the file does not follow the schema"
        ) from None
    except OSError as exc:
        raise FeatureFileError(
            f"cannot read feature file: {exc}", path=path, hint="the file is damaged"
        ) from exc


def scan_files(paths: Sequence[str | Path]) -> list[FileInfo]:
    """:func:`scan_file` every path (in the given order); duplicates are an error."""
    if not paths:
        raise ConfigError("no feature files given", hint="pass the .h5 files written by `videobert run`")
    seen: dict[Path, str] = {}
    infos = []
    for p in paths:
        key = Path(p).resolve()
        if key in seen:
            raise ConfigError(f"feature file given twice: {p}", path=p, hint="pass each file once")
        seen[key] = str(p)
        infos.append(scan_file(p))
    return infos


@dataclass(frozen=True)
class FeatureSpace:
    """The feature extractors (and widths) all files of a training run share."""

    video_model: str | None
    video_dim: int
    text_model: str | None
    text_dim: int
    video_weights: str | None = None  # sha256 of the extractors' weights, where recorded
    text_weights: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "video_model": self.video_model,
            "video_dim": self.video_dim,
            "text_model": self.text_model,
            "text_dim": self.text_dim,
            "video_weights_sha256": self.video_weights,
            "text_weights_sha256": self.text_weights,
        }

    def expectations(self) -> dict[str, Any]:
        """The ``expect_*`` arguments of :func:`~videobert_cli.fusion.checkpoint.load_fusion_weights`."""
        return {"expect_video_model": self.video_model, "expect_video_dim": self.video_dim,
                "expect_text_model": self.text_model, "expect_text_dim": self.text_dim,
                "expect_video_weights": self.video_weights, "expect_text_weights": self.text_weights}


def common_space(infos: Sequence[FileInfo]) -> FeatureSpace:
    """The shared feature space of ``infos``; ConfigError when files disagree.

    Files whose features come from different models (``video/@model_name``,
    ``text/@model_name``) or have different widths cannot be trained on together: the
    fusion model's input projections are tied to one feature space.
    """
    first = infos[0]
    for info in infos[1:]:
        for modality in ("video", "text"):
            a_model, a_dim = getattr(first, f"{modality}_model"), getattr(first, f"{modality}_dim")
            b_model, b_dim = getattr(info, f"{modality}_model"), getattr(info, f"{modality}_dim")
            if a_model != b_model or a_dim != b_dim:
                raise ConfigError(
                    f"{modality} features come from different models: {first.path} has "
                    f"{a_model!r} ({a_dim}-d) but this file has {b_model!r} ({b_dim}-d)",
                    path=info.path,
                    hint=f"train on files extracted with one {modality} model; re-extract the "
                    "others with `videobert run --"
                    + ("video-model" if modality == "video" else "text-model")
                    + f" {a_model}`",
                )
    weights = {}
    for modality in ("video", "text"):
        known = sorted((sha, info.path) for info in infos if (sha := getattr(info, f"{modality}_weights")))
        if known and known[0][0] != known[-1][0]:
            (a, a_path), (b, b_path) = known[0], known[-1]
            raise ConfigError(
                f"{modality} features come from different weights of {getattr(first, f'{modality}_model')!r}: "
                f"{a_path} ({a[:12]}) and {b_path} ({b[:12]})",
                path=b_path,
                hint=f"train on files extracted with one set of {modality} weights",
            )
        weights[modality] = known[0][0] if known else None
    return FeatureSpace(first.video_model, first.video_dim, first.text_model, first.text_dim,
                        weights["video"], weights["text"])


def split_key(seed: int, path: str | Path) -> str:
    """The hex key that orders files for the validation split (see the module doc)."""
    return hashlib.sha256(f"{int(seed)}:{Path(path).name}".encode("utf-8", "surrogatepass")).hexdigest()


def split_files(
    paths: Sequence[str | Path], val_fraction: float, seed: int
) -> tuple[list[Path], list[Path]]:
    """Deterministic (train, val) split of ``paths`` by seed and file name; each keeps input order."""
    if not (0.0 <= float(val_fraction) < 1.0):
        raise ConfigError(
            f"--val-fraction must be in [0, 1), got {val_fraction}", hint="use e.g. 0.2"
        )
    paths = [Path(p) for p in paths]
    n = len(paths)
    n_val = 0 if val_fraction == 0 or n < 2 else min(n - 1, max(1, round(val_fraction * n)))
    # full path breaks ties between equal names in different directories
    order = sorted(range(n), key=lambda i: (split_key(seed, paths[i]), str(paths[i])))
    val_set = set(order[:n_val])
    train = [p for i, p in enumerate(paths) if i not in val_set]
    val = [p for i, p in enumerate(paths) if i in val_set]
    return train, val


# --------------------------------------------------------------------------------------------
# samples and the dataset
# --------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One video/text pair, as the fusion model takes it (float32 features, float64 times)."""

    video: np.ndarray  # (Nv, Dv) float32
    video_time: np.ndarray  # (Nv,) float64
    text: np.ndarray  # (Nt, Dt) float32
    text_time: np.ndarray  # (Nt,) float64
    token_ids: np.ndarray  # (Nt,) int64
    word_ids: np.ndarray | None  # (Nv,) int64 video vocabulary ids, when the file has them
    text_key: int  # crc32 of the token ids: equal keys = identical transcripts
    source: str  # "file.h5" or "file.h5#cue3"


def text_key(token_ids: np.ndarray) -> int:
    """A key equal for token-identical texts (used to avoid false negatives)."""
    return int(zlib.crc32(np.ascontiguousarray(token_ids, dtype=np.int64).tobytes()))


def _even_subsample(n: int, limit: int | None) -> np.ndarray:
    """Indices of at most ``limit`` rows spread evenly over ``n`` (all rows when n <= limit)."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(np.int64))


@dataclass(frozen=True)
class PairRef:
    """Where one pair lives: a file and, for sentence pairs, a cue and its rows (-1: whole video)."""

    path: Path
    cue: int = -1
    video_rows: tuple[int, ...] = ()
    text_rows: tuple[int, ...] = ()


def _segments(path: Path) -> list:
    """:func:`align_segments` of a file, from its small arrays only (no features read)."""
    from videobert_cli.fusion.align import align_segments

    with _open(path) as f:
        v, t = f["video"], f["text"]
        duration = v.attrs.get("duration")
        video = SimpleNamespace(
            timestamps=np.asarray(v["timestamps"][()], dtype=np.float64),
            extra={"clip_end": np.asarray(v["clip_end"][()], dtype=np.float64)} if "clip_end" in v else {},
            attrs={} if duration is None else {"duration": float(duration)},
        )
        n_cues = int(t["cue_start"].shape[0])
        text = SimpleNamespace(
            cue_text=range(n_cues),
            cue_start=np.asarray(t["cue_start"][()], dtype=np.float64),
            cue_end=np.asarray(t["cue_end"][()], dtype=np.float64),
            token_cue=np.asarray(t["token_cue"][()]),
        )
    return align_segments(video, text)[0]


def build_pairs(infos: Sequence[FileInfo], mode: str) -> tuple[list[PairRef], list[str]]:
    """The pairs of ``infos`` under ``mode``; also the reasons files gave no pair."""
    if mode not in PAIR_MODES:
        raise ConfigError(f"unknown --pairs {mode!r}", hint=f"use one of {', '.join(PAIR_MODES)}")
    refs: list[PairRef] = []
    skipped: list[str] = []
    for info in infos:
        if info.num_frames == 0 or info.num_tokens == 0:
            skipped.append(f"{info.path}: no {'frames' if info.num_frames == 0 else 'text tokens'}")
            continue
        if mode == "video":
            refs.append(PairRef(info.path))
            continue
        if not info.timed:
            skipped.append(f"{info.path}: transcript has no times (no sentence pairs)")
            continue
        found = 0
        for seg in _segments(info.path):
            if len(seg.video_rows) and len(seg.text_rows):
                refs.append(PairRef(info.path, int(seg.cue_index), tuple(int(r) for r in seg.video_rows),
                                    tuple(int(r) for r in seg.text_rows)))
                found += 1
        if not found:
            skipped.append(f"{info.path}: no cue overlaps the video (no sentence pairs)")
    return refs, skipped


class PairDataset(torch.utils.data.Dataset):
    """Reads one pair per item from its HDF5 file (only the rows the pair needs).

    ``max_frames``/``max_tokens`` bound the sequence lengths: longer pairs keep that many
    rows spread evenly over the pair (frames and tokens keep their times and order).
    """

    def __init__(
        self,
        refs: Sequence[PairRef],
        *,
        max_frames: int | None = None,
        max_tokens: int | None = None,
        read_word_ids: bool = True,
    ):
        self.refs = list(refs)
        self.max_frames = max_frames
        self.max_tokens = max_tokens
        self.read_word_ids = read_word_ids

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> Sample:
        ref = self.refs[index]
        try:
            return self._read(ref)
        except (OSError, KeyError, ValueError) as exc:
            raise FeatureFileError(
                f"cannot read training pair: {exc}", path=ref.path, hint="the file is damaged"
            ) from exc

    def _read(self, ref: PairRef) -> Sample:
        from videobert_cli.pipeline.text_stages import fusion_token_times

        with _open(ref.path) as f:
            v, t = f["video"], f["text"]
            vtimes = np.asarray(v["timestamps"][()], dtype=np.float64)
            token_cue = np.asarray(t["token_cue"][()])
            token_start = np.asarray(t["token_start"][()], dtype=np.float64)
            token_end = np.asarray(t["token_end"][()], dtype=np.float64)
            ttimes = fusion_token_times(
                SimpleNamespace(token_start=token_start, token_end=token_end, token_cue=token_cue)
            )
            if ref.cue < 0:
                vrows = np.arange(len(vtimes))
                trows = np.arange(len(token_cue))
            else:
                vrows = np.asarray(ref.video_rows, dtype=np.int64)
                trows = np.asarray(ref.text_rows, dtype=np.int64)
            vrows = vrows[_even_subsample(len(vrows), self.max_frames)]
            trows = trows[_even_subsample(len(trows), self.max_tokens)]
            all_ids = np.asarray(t["token_ids"][()], dtype=np.int64)
            video = _rows(v["features"], vrows)
            text = _rows(t["token_features"], trows)
            for name, rows in (("video/features", video), ("text/token_features", text)):
                if not np.isfinite(rows).all():  # else training "diverges", or eval's SVD fails
                    raise FeatureFileError(f"{name} holds NaN or inf", path=ref.path, reason="non-finite",
                                           hint="extract this video again, or leave its file out")
            word_ids = None
            if self.read_word_ids and "word_ids" in v:
                word_ids = np.asarray(v["word_ids"][()], dtype=np.int64)[vrows]
        token_ids = all_ids[trows]
        source = ref.path.name if ref.cue < 0 else f"{ref.path.name}#cue{ref.cue}"
        return Sample(
            video=video,
            video_time=vtimes[vrows],
            text=text,
            text_time=ttimes[trows],
            token_ids=token_ids,
            word_ids=word_ids,
            text_key=text_key(all_ids[np.flatnonzero(token_cue == ref.cue)] if ref.cue >= 0 else all_ids),
            source=source,
        )


def _rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """``dataset[rows]`` as float32; a contiguous run is read as one slice."""
    if rows.size == 0:
        return np.zeros((0, dataset.shape[1]), dtype=np.float32)
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    block = dataset[lo:hi]
    if hi - lo != rows.size:
        block = block[rows - lo]
    return np.asarray(block, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Samples padded to the longest of the batch; masks are True at real positions."""

    video: torch.Tensor  # (B, Nv, Dv) float32
    video_time: torch.Tensor  # (B, Nv) float64, NaN at padding
    video_mask: torch.Tensor  # (B, Nv) bool
    text: torch.Tensor  # (B, Nt, Dt) float32
    text_time: torch.Tensor  # (B, Nt) float64
    text_mask: torch.Tensor  # (B, Nt) bool
    token_ids: torch.Tensor  # (B, Nt) int64, -1 at padding
    word_ids: torch.Tensor | None  # (B, Nv) int64, -1 at padding; None unless every sample has them
    text_key: torch.Tensor  # (B,) int64
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.video.shape[0])

    def to(self, device: str | torch.device) -> Batch:
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return Batch(
            move(self.video), move(self.video_time), move(self.video_mask), move(self.text),
            move(self.text_time), move(self.text_mask), move(self.token_ids),
            move(self.word_ids), move(self.text_key), list(self.sources),
        )


def collate(samples: Sequence[Sample]) -> Batch:
    """Pad ``samples`` into a :class:`Batch`."""
    b = len(samples)
    nv = max((len(s.video_time) for s in samples), default=0)
    nt = max((len(s.text_time) for s in samples), default=0)
    dv = samples[0].video.shape[1]
    dt = samples[0].text.shape[1]
    video = np.zeros((b, nv, dv), np.float32)
    vtime = np.full((b, nv), np.nan)
    vmask = np.zeros((b, nv), bool)
    text = np.zeros((b, nt, dt), np.float32)
    ttime = np.full((b, nt), np.nan)
    tmask = np.zeros((b, nt), bool)
    ids = np.full((b, nt), -1, np.int64)
    with_words = all(s.word_ids is not None for s in samples)
    words = np.full((b, nv), -1, np.int64) if with_words else None
    for i, s in enumerate(samples):
        n, m = len(s.video_time), len(s.text_time)
        video[i, :n], vtime[i, :n], vmask[i, :n] = s.video, s.video_time, True
        text[i, :m], ttime[i, :m], tmask[i, :m] = s.text, s.text_time, True
        ids[i, :m] = s.token_ids
        if words is not None:
            words[i, :n] = s.word_ids
    return Batch(
        video=torch.from_numpy(video),
        video_time=torch.from_numpy(vtime),
        video_mask=torch.from_numpy(vmask),
        text=torch.from_numpy(text),
        text_time=torch.from_numpy(ttime),
        text_mask=torch.from_numpy(tmask),
        token_ids=torch.from_numpy(ids),
        word_ids=None if words is None else torch.from_numpy(words),
        text_key=torch.tensor([s.text_key for s in samples], dtype=torch.int64),
        sources=[s.source for s in samples],
    )


def collect_vocabularies(refs: Sequence[PairRef]) -> tuple[np.ndarray, int | None]:
    """Sorted unique text token ids of the files of ``refs``, and the video vocabulary size.

    The video vocabulary size is ``1 + max(video/word_ids)`` when every file has word ids,
    else None. Reads only the id datasets, one file at a time.
    """
    ids: set[int] = set()
    max_word = -1
    all_words = True
    sizes: set[int | None] = set()
    vocabs: dict[str, Path] = {}
    for path in dict.fromkeys(r.path for r in refs):
        with _open(path) as f:
            ids.update(np.unique(np.asarray(f["text/token_ids"][()], dtype=np.int64)).tolist())
            if "word_ids" in f["video"]:
                ds = f["video/word_ids"]
                w = np.asarray(ds[()], dtype=np.int64)
                size = ds.attrs.get("vocab_size")
                sizes.add(None if size is None else int(size))
                sha = _attr_str(ds.attrs.get("vocab_sha256"))
                if sha is not None:
                    vocabs.setdefault(sha, path)
                if w.size:
                    if w.min() < 0 or (size is not None and w.max() >= int(size)):
                        raise ConfigError(
                            "video/word_ids outside the vocabulary", path=path,
                            hint="word ids index a vocabulary: 0 .. vocab_size-1; re-run `videobert vocab assign`",
                        )
                    max_word = max(max_word, int(w.max()))
            else:
                all_words = False
    if all_words and len(vocabs) > 1:
        (a_sha, a), (b_sha, b) = list(vocabs.items())[:2]
        raise ConfigError(
            f"video/word_ids come from different vocabularies: {a} ({a_sha[:12]}) and {b} ({b_sha[:12]})",
            path=b,
            hint="assign every training file with one vocabulary (`videobert vocab assign`)",
        )
    vocab = np.array(sorted(ids), dtype=np.int64)
    if not all_words or max_word < 0:
        return vocab, None
    # the vocabulary's own size when recorded (ids unseen in training still get a class)
    recorded = {s for s in sizes if s is not None}
    return vocab, max(recorded) if recorded and None not in sizes else max_word + 1


def expand_feature_paths(
    paths: str | Path | Sequence[str | Path],
    *,
    groups: Sequence[str] = ("video", "text"),
    skipped: list[str] | None = None,
) -> list[Path]:
    """Files as given; a directory stands for its ``*.h5`` feature files (sorted, not recursive).

    ``paths`` may be one path. In a directory, HDF5 files that are not videobert feature files
    (e.g. a vocabulary) are skipped, and so are feature files without one of ``groups`` (a
    video without a transcript has no ``text/``), each with a line in ``skipped``; a file named
    explicitly is always kept (and refused later if it is not one).
    """
    from videobert_cli.store.hdf5 import FORMAT_NAME

    def missing_group(q: Path) -> str | None:
        """None for a feature file with every group; the missing group's name; "" if not one."""
        try:
            with _open(q) as f:
                if _attr_str(f.attrs.get("format")) != FORMAT_NAME:
                    return ""
                return next((group for group in groups if group not in f), None)
        except OSError:
            return None  # let scan_file report what is wrong with it

    out: list[Path] = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        p = Path(p)
        if p.is_dir():
            found = []
            for q in sorted(q for q in p.glob("*.h5") if q.is_file()):
                missing = missing_group(q)
                if missing is None:
                    found.append(q)
                elif missing and skipped is not None:
                    skipped.append(f"{q}: no {missing}/ group (e.g. a video without a transcript)")
            if not found:
                needing = f" with {' and '.join(f'{g}/' for g in groups)}" if groups else ""
                raise ConfigError(f"no feature files{needing} in directory {p}", path=p,
                                  hint="pass the output directory of `videobert run`")
            out.extend(found)
        else:
            out.append(p)
    return out
