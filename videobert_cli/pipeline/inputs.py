"""Finding the videos of a run, their transcripts, and safe, stable output names."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, TextIO

from videobert_cli.errors import UsageError

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".3gp", ".ogv",
    ".mts", ".m2ts", ".mxf", ".vob", ".asf", ".f4v", ".3g2",
)
#: the longest output file name, in bytes: file systems allow 255, and the temporary file it
#: is written as (``.<name>.tmp-<pid>-<8 hex>``) needs up to 22 more
MAX_NAME_BYTES = 200
#: transcript suffixes in the order they are preferred when several sit next to a video
TRANSCRIPT_SUFFIXES = (".srt", ".vtt", ".json", ".txt")


@dataclass(frozen=True)
class VideoInput:
    """One video of a run: where it is, where its output goes, and its transcript (if any)."""

    path: Path
    output_name: str  # relative POSIX path under the output directory, ends with .h5
    transcript: Path | None = None
    #: the directory the video was found under (None for an explicit file); used for pairing
    root: Path | None = None


def _names_its_extension(pattern: str) -> bool:
    """Whether a ``--glob`` pattern ends in a literal extension (``*.mts``, ``cam1_*.MXF``):
    then it chooses the files itself; otherwise (``cam1_*``) it only narrows the videos."""
    suffix = PurePosixPath(pattern).suffix
    return bool(suffix) and not any(char in suffix for char in "*?[")


def _walk(directory: Path, *, recursive: bool, pattern: str | None, notes: list[str] | None = None) -> list[Path]:
    found: list[Path] = []
    if recursive:
        # symlinked folders are walked (datasets are often linked together), each real folder
        # once and under its real name when it is inside the tree: a link to a folder of the
        # tree, or back up it, adds nothing and must not rename its videos' outputs
        in_tree = {os.path.realpath(current) for current, _, _ in os.walk(directory, followlinks=False)}
        visited = {os.path.realpath(directory)}
        for current, dirnames, filenames in os.walk(directory, followlinks=True):
            kept = []
            for name in sorted(dirnames):
                path = os.path.join(current, name)
                real = os.path.realpath(path)
                if real in visited or (os.path.islink(path) and real in in_tree):
                    continue
                visited.add(real)
                kept.append(name)
            dirnames[:] = kept
            for name in sorted(filenames):
                found.append(Path(current) / name)
    else:
        found = sorted(p for p in directory.iterdir() if not p.is_dir())
    videos_only = pattern is None or not _names_its_extension(pattern)
    selected = []
    for path in found:
        name = path.name
        if pattern is not None:
            relative = path.relative_to(directory).as_posix()
            if not (fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(relative, pattern)):
                continue
        if videos_only and path.suffix.lower() not in VIDEO_EXTENSIONS:
            continue
        if name.startswith("."):
            continue
        selected.append(path)
    if not selected and not recursive and notes is not None:
        folders = sum(1 for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        if folders:  # a cron job on a folder of dated sub-folders would otherwise do nothing forever
            notes.append(f"{directory}: no videos at its top level; its {folders} sub-folder(s) are searched "
                         "only with --recursive")
    return selected


def read_path_list(stream: TextIO) -> list[str]:
    """Paths one per line (blank lines and ``#`` comments skipped), as from ``find``."""
    return [line.rstrip("\n\r") for line in stream if line.strip() and not line.lstrip().startswith("#")]


def expand_inputs(
    specs: Iterable[str],
    *,
    recursive: bool = False,
    pattern: str | None = None,
    list_files: Iterable[str | Path] = (),
    stdin: TextIO | None = None,
    notes: list[str] | None = None,
) -> list[tuple[Path, Path | None]]:
    """Resolve command-line inputs into ``(video path, root directory or None)`` pairs.

    ``-`` reads paths from ``stdin``; directories are listed (recursively with ``recursive``)
    and give their files with a known video extension, narrowed by ``pattern`` (a pattern that
    ends in a literal extension, such as ``*.dv``, picks its files whatever the extension);
    explicit files are always taken (a bad one is reported per input, not rejected up front).
    Duplicates are dropped. ``notes`` (if given) gets a line for each directory with no videos
    at its top level whose sub-folders were not searched.
    """
    expanded: list[tuple[Path, Path | None]] = []
    pending = list(specs)
    for list_file in list_files:
        try:
            with open(list_file, encoding="utf-8", errors="surrogateescape") as handle:
                pending.extend(read_path_list(handle))
        except OSError as exc:
            raise UsageError(f"cannot read list file: {exc.strerror}", path=list_file) from exc
    for spec in pending:
        if spec == "-":
            pending_stdin = read_path_list(stdin if stdin is not None else sys.stdin)
            expanded.extend((Path(p), None) for p in pending_stdin)
            continue
        path = Path(spec)
        if path.is_dir():
            expanded.extend((found, path) for found in _walk(path, recursive=recursive, pattern=pattern, notes=notes))
        else:
            expanded.append((path, None))
    seen: set[str] = set()
    unique = []
    for path, root in expanded:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            unique.append((path, root))
    return unique


def _safe_relative(parts: Iterable[str]) -> str:
    """Join name parts into a relative POSIX path that cannot leave the output directory."""
    clean = []
    for part in parts:
        if part in ("", ".", ".."):
            continue
        clean.append(part.replace("/", "_").replace("\\", "_").replace("\x00", "_"))
    if not clean:
        clean = ["_unnamed"]  # an input called ".." or "/" still gets a name inside OUT_DIR
    return str(PurePosixPath(*clean))


class ExistingOutputs:
    """The feature files already in an output directory, as far as naming needs them."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)

    def exists(self, name: str) -> bool:
        return (self.out_dir / name).is_file()

    def source(self, name: str) -> str | None:
        """The (resolved) source path the file ``name`` was made from, or None."""
        from videobert_cli.store.hdf5 import read_attrs

        try:
            return read_attrs(self.out_dir / name).get("source_path")
        except Exception:  # missing, unreadable, foreign: nobody's
            return None


def output_names(videos: list[tuple[Path, Path | None]], existing: ExistingOutputs | None = None) -> list[str]:
    """Stable output names: the video's path under its input directory with ``.h5``.

    Videos whose names collide (``a/x.mp4`` and ``b/x.mp4`` given as files, or ``x.mp4`` and
    ``x.mkv`` in one folder) keep their extension in the name (``x.mp4.h5``); if that still
    collides, a short hash of the absolute path is added (``x.mp4-1a2b3c4d.h5``). A name is
    never reused for two inputs of one run, so nothing is overwritten. A file name longer than
    :data:`MAX_NAME_BYTES` is cut and gets the hash too.

    With ``existing`` (the output directory's files) a video keeps the name its file already
    has there, as long as no other input of the run takes it: ``x.h5`` stays ``x.h5`` when an
    ``x.webm`` joins ``x.mp4`` in the folder, instead of the video being done again as
    ``x.mp4.h5`` next to a stale ``x.h5``. And a name whose file was made from another video
    that still exists (``x.mp4`` done last night, ``x.mkv`` given alone tonight) is not taken;
    a copy of the same file (same size and time) counts as the same video.
    """
    candidates = [_name_candidates(path, root) for path, root in videos]
    groups: dict[str, list[int]] = defaultdict(list)
    for index, names in enumerate(candidates):
        groups[names[0].lower()].append(index)  # case-insensitive file systems collide too
    chosen = [names[0] for names in candidates]
    for members in groups.values():
        if len(members) < 2:
            continue
        counts = Counter(candidates[i][1].lower() for i in members)
        for i in members:
            chosen[i] = candidates[i][1] if counts[candidates[i][1].lower()] == 1 else candidates[i][2]
    _make_unique(candidates, chosen)  # x.mp4's x.mp4.h5 is also x.mp4.mkv's plain name
    if existing is not None:
        _keep_existing_names(videos, candidates, chosen, existing)
    return chosen


def _make_unique(candidates, chosen: list[str]) -> None:
    """Give every video whose name another video of the run also got its hashed name (in place);
    hashed names differ by the video's path."""
    while True:
        counts = Counter(name.lower() for name in chosen)
        clashing = [i for i, name in enumerate(chosen) if counts[name.lower()] > 1 and name != candidates[i][2]]
        if not clashing:
            return
        for i in clashing:
            chosen[i] = candidates[i][2]


def _name_candidates(path: Path, root: Path | None) -> tuple[str, str, str]:
    """The names a video can get: plain (``x.h5``), with its extension (``x.mp4.h5``), and with
    the extension and its path's hash (``x.mp4-1a2b3c4d.h5``)."""
    parts = [path.name] if root is None else list(path.relative_to(root).parts)
    with_extension = _safe_relative(parts) + ".h5"
    parts[-1] = Path(parts[-1]).stem or parts[-1]
    plain = _safe_relative(parts) + ".h5"
    hashed = with_extension[: -len(".h5")] + f"-{_path_digest(path)}.h5"
    return tuple(_within_name_limit(name) for name in (plain, with_extension, hashed))


def _keep_existing_names(videos, candidates, chosen: list[str], existing: ExistingOutputs) -> None:
    """Give each video the candidate name its existing file has, if it is free, and move it off
    a name whose file belongs to another video that still exists (in place)."""
    used = Counter(name.lower() for name in chosen)

    def move(index: int, name: str) -> None:
        used[chosen[index].lower()] -= 1
        used[name.lower()] += 1
        chosen[index] = name

    for index, (path, _) in enumerate(videos):
        source = str(Path(path).resolve())
        owner = existing.source(chosen[index]) if existing.exists(chosen[index]) else None
        if owner == source:
            continue
        # a stat per candidate; a file is opened only where one exists
        others = [name for name in candidates[index] if name != chosen[index] and not used[name.lower()]]
        mine = next((name for name in others if existing.exists(name) and existing.source(name) == source), None)
        if mine is not None:
            move(index, mine)
        elif owner and owner != source and _another_video(owner, path):
            # another video's features, and that video is still there: not ours to overwrite
            free = next((name for name in others if not existing.exists(name)), candidates[index][2])
            move(index, free)


def _another_video(owner: str, path: Path) -> bool:
    """Whether ``owner`` (the source of an existing output) is a video other than ``path`` that
    still exists; a copy with the same size and time (``cp -a``, ``rsync -a``) is the same."""
    try:
        theirs, mine = os.stat(owner), os.stat(path)
    except OSError:
        return False  # gone (moved or deleted): its name is free to take over
    return theirs.st_size != mine.st_size or abs(theirs.st_mtime - mine.st_mtime) > 1e-6


def _path_digest(path: Path) -> str:
    return hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _within_name_limit(name: str) -> str:
    """``name`` with its file name cut to :data:`MAX_NAME_BYTES` if it is longer, made unique by
    a hash of the whole name (not of the video's path: the name must not change when the
    dataset moves): a long title (82 CJK characters are 246 bytes) plus ``.mp4.h5`` would
    otherwise be a name the file system refuses."""
    folder, _, file_name = name.rpartition("/")
    if len(file_name.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    tail = f"-{digest}.h5"
    stem = file_name[: -len(".h5")]
    while len((stem + tail).encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        stem = stem[:-1]  # whole characters, never half of one
    return f"{folder}/{stem}{tail}" if folder else stem + tail


#: the language part of a subtitle name such as yt-dlp's ``NAME.en.vtt``: en, pt-BR, zh-Hans, en-orig
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")


class TranscriptFinder:
    """Pairs videos with the transcript of the same stem: in ``transcripts_dir`` (mirroring the
    video's sub-folder, then flat) or, without it, next to the video; preference .srt, .vtt,
    .json, .txt.

    Besides ``NAME.srt`` it finds language variants such as ``NAME.en.vtt`` (yt-dlp's
    subtitles): the only one there is, or the one of ``language``. Each folder is listed once.
    """

    def __init__(self, transcripts_dir: Path | None = None, language: str | None = None):
        self.transcripts_dir = transcripts_dir
        self.language = language.lower() if language else None
        self._variants: dict[Path, dict[str, list[tuple[str, Path]]]] = {}
        #: videos left without a transcript because several languages were there
        self.ambiguous: list[Path] = []

    def find(self, video: Path, root: Path | None) -> Path | None:
        """The transcript of ``video`` found under its input directory ``root`` (None: a file)."""
        directories: list[Path] = []
        if self.transcripts_dir is not None:
            if root is not None:
                directories.append(self.transcripts_dir / video.parent.relative_to(root))
            directories.append(self.transcripts_dir)
        else:
            directories.append(video.parent)
        for directory in directories:
            for suffix in TRANSCRIPT_SUFFIXES:
                candidate = directory / (video.stem + suffix)
                if candidate.is_file() or (candidate.exists() and not candidate.is_dir()):
                    return candidate
            variants = self._listing(directory).get(video.stem, [])
            if self.language is not None:
                # the exact tag first ("pt" over "pt-BR"), else the language's regional ones
                variants = ([(tag, path) for tag, path in variants if tag == self.language]
                            or [(tag, path) for tag, path in variants if tag.startswith(self.language + "-")])
            if len({tag for tag, _ in variants}) == 1:
                return min(variants, key=lambda variant: TRANSCRIPT_SUFFIXES.index(variant[1].suffix.lower()))[1]
            if variants:
                self.ambiguous.append(video)
                return None
        return None

    def _listing(self, directory: Path) -> dict[str, list[tuple[str, Path]]]:
        """``{stem: [(language, path), ...]}`` of the language variants in ``directory``.

        ``interview.raw.srt`` next to a video ``interview.raw.mp4`` is that video's transcript,
        not a "raw" variant of ``interview.mp4``'s."""
        if directory not in self._variants:
            variants: dict[str, list[tuple[str, Path]]] = defaultdict(list)
            try:
                names = os.listdir(directory)
            except OSError:
                names = []
            video_stems = {Path(name).stem for name in names if Path(name).suffix.lower() in VIDEO_EXTENSIONS}
            for name in names:
                path = Path(name)
                if path.suffix.lower() not in TRANSCRIPT_SUFFIXES or path.stem in video_stems:
                    continue
                stem, _, tag = path.stem.rpartition(".")
                if stem and _LANGUAGE_TAG.fullmatch(tag) and (directory / name).is_file():
                    variants[stem].append((tag.lower(), directory / name))
            self._variants[directory] = variants
        return self._variants[directory]


def plan_inputs(
    specs: Iterable[str],
    *,
    recursive: bool = False,
    pattern: str | None = None,
    list_files: Iterable[str | Path] = (),
    stdin: TextIO | None = None,
    transcripts_dir: str | Path | None = None,
    with_transcripts: bool = True,
    out_dir: str | Path | None = None,
    notes: list[str] | None = None,
    transcript_language: str | None = None,
) -> list[VideoInput]:
    """Everything a run will process, with output names and paired transcripts.

    ``out_dir``: where the run writes; videos keep the names their files have there already
    (see :func:`output_names`). ``transcript_language`` picks among language variants such as
    ``NAME.en.vtt`` and ``NAME.de.vtt`` (:class:`TranscriptFinder`). ``notes`` gets a line for
    what the user may want to know (sub-folders not searched, transcripts in several languages)."""
    videos = expand_inputs(specs, recursive=recursive, pattern=pattern, list_files=list_files, stdin=stdin,
                           notes=notes)
    names = output_names(videos, ExistingOutputs(out_dir) if out_dir is not None else None)
    tdir = Path(transcripts_dir) if transcripts_dir is not None else None
    if tdir is not None and not tdir.is_dir():
        raise UsageError(f"--transcripts {tdir}: not a directory", path=tdir)
    finder = TranscriptFinder(tdir, transcript_language)
    items = [
        VideoInput(
            path=path,
            output_name=name,
            transcript=finder.find(path, root) if with_transcripts else None,
            root=root,
        )
        for (path, root), name in zip(videos, names)
    ]
    if finder.ambiguous and notes is not None:
        example = finder.ambiguous[0]
        notes.append(f"{len(finder.ambiguous)} video(s) have transcripts in several languages and none was "
                     f"paired (e.g. {example.stem}.<language>.vtt next to {example.name}); choose one with "
                     "--transcript-lang LANG")
    return items
