"""Transcript reading: SRT, WebVTT, Whisper-style JSON and plain text into timed cues.

Every format is a parser registered with :func:`register_format`; :func:`parse_transcript`
picks one by the file's suffix (or by name), decodes the bytes, runs the parser and returns a
:class:`Transcript`. Problems that make a file unusable raise
:class:`~videobert_cli.errors.TranscriptError` (with the path, the line when there is one, and
a hint); problems that do not (odd encoding, missing WEBVTT header, empty file) become strings
in ``Transcript.warnings`` so that a batch over thousands of files keeps going.

Times are seconds as floats; formats without times (plain text, literal strings) use
``math.nan``. Cue text is whitespace-normalised: runs of whitespace, line breaks included,
become one space, and leading/trailing whitespace is removed.
"""

from __future__ import annotations

import html
import json
import math
import re
import stat
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from videobert_cli.errors import ConfigError, TranscriptError

__all__ = [
    "Cue",
    "Transcript",
    "Parser",
    "register_format",
    "list_formats",
    "format_for_path",
    "parse_transcript",
    "parse_text",
    "report_warning",
    "split_sentences",
]


@dataclass(frozen=True)
class Cue:
    """One piece of transcript text and when it is spoken.

    ``start``/``end`` are seconds, or ``math.nan`` when the format has no times. Note that
    NaN never equals itself, so compare untimed cues field by field with ``math.isnan``.
    """

    text: str
    start: float
    end: float

    @property
    def timed(self) -> bool:
        """Whether the cue carries times (both ends are numbers, not NaN)."""
        return not (math.isnan(self.start) or math.isnan(self.end))


@dataclass(frozen=True)
class Transcript:
    """The cues of one transcript, plus how it was read.

    ``format`` is the registered format name (or ``"literal"`` for :func:`parse_text`),
    ``source`` the file path (``None`` for a literal string), ``encoding`` the codec the bytes
    were decoded with, and ``warnings`` non-fatal problems met while reading.
    """

    cues: tuple[Cue, ...]
    format: str
    source: str | None
    encoding: str
    warnings: tuple[str, ...]

    @property
    def timed(self) -> bool:
        """Whether every cue carries times (False for an empty transcript)."""
        return bool(self.cues) and all(c.timed for c in self.cues)


#: A format parser: decoded text and the source name (for messages) in, cues out, in file
#: order. Cues whose text is empty are dropped by the caller, so parsers need not filter.
Parser = Callable[[str, str], list[Cue]]


@dataclass(frozen=True)
class _Format:
    name: str
    suffixes: tuple[str, ...]
    parser: Parser


_FORMATS: dict[str, _Format] = {}
_BY_SUFFIX: dict[str, str] = {}

# Parsers report non-fatal problems through report_warning(); a context variable keeps the
# parser signature to (text, source) while still giving each parse_transcript call (and each
# thread) its own list.
_WARNINGS: ContextVar[list[str] | None] = ContextVar("videobert_transcript_warnings", default=None)

_EMPTY_WARNING = "transcript is empty"


def register_format(name: str, suffixes: str | Iterable[str]) -> Callable[[Parser], Parser]:
    """Decorator registering ``parser(text, source) -> list[Cue]`` as transcript format ``name``.

    ``suffixes`` (``".srt"`` or ``"srt"``, matched case-insensitively) are the file suffixes
    :func:`format_for_path` maps to this format. Registering a name or a suffix twice is a
    programming error and raises ``ValueError``.
    """
    if isinstance(suffixes, str):
        suffixes = (suffixes,)
    norm = tuple(s.lower() if s.startswith(".") else "." + s.lower() for s in suffixes)
    if not name or not norm:
        raise ValueError("a transcript format needs a name and at least one suffix")

    def decorator(parser: Parser) -> Parser:
        if name in _FORMATS:
            raise ValueError(f"transcript format {name!r} is already registered")
        for suffix in norm:
            if suffix in _BY_SUFFIX:
                raise ValueError(
                    f"suffix {suffix!r} already belongs to format {_BY_SUFFIX[suffix]!r}"
                )
        _FORMATS[name] = _Format(name, norm, parser)
        for suffix in norm:
            _BY_SUFFIX[suffix] = name
        return parser

    return decorator


def list_formats() -> list[str]:
    """Names of the registered transcript formats, sorted (the ``--transcript-format`` choices)."""
    return sorted(_FORMATS)


def _known_formats_text() -> str:
    formats = sorted(_FORMATS.values(), key=lambda f: f.name)
    return ", ".join(f"{f.name} ({', '.join(f.suffixes)})" for f in formats)


def format_for_path(path: str | Path) -> str:
    """The registered format name for ``path``'s suffix; TranscriptError when none matches."""
    suffix = Path(path).suffix.lower()
    name = _BY_SUFFIX.get(suffix)
    if name is None:
        what = (
            f"unknown transcript suffix {suffix!r}" if suffix else "transcript file has no suffix"
        )
        raise TranscriptError(
            f"{what}; known formats: {_known_formats_text()}",
            path=path,
            hint=f"rename the file or pass --transcript-format ({', '.join(list_formats())})",
        )
    return name


def report_warning(message: str) -> None:
    """Record a non-fatal problem from inside a parser; it ends up in ``Transcript.warnings``.

    Outside :func:`parse_transcript` / :func:`parse_text` the message is dropped.
    """
    sink = _WARNINGS.get()
    if sink is not None:
        sink.append(message)


# --- decoding ------------------------------------------------------------------------------
_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32-LE's BOM starts with UTF-16-LE's, so it must be tried first.
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def _decode(data: bytes) -> tuple[str, str, list[str]]:
    """Decode transcript bytes; returns (text, encoding, warnings). Never raises."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec), codec, []
            except UnicodeDecodeError:
                # A BOM followed by garbage (often a truncated file): keep what decodes.
                shown = codec.removesuffix("-sig").upper()
                warning = (
                    f"has a {shown} byte-order mark but is not valid {shown}; "
                    "undecodable bytes replaced"
                )
                return data.decode(codec, errors="replace"), codec, [warning]
    guessed = _guess_bomless_utf16(data)
    if guessed is not None:
        return (
            data.decode(guessed, errors="replace"),
            guessed,
            [f"no byte-order mark but NUL-byte pattern of {guessed.upper()}; decoded as {guessed}"],
        )
    try:
        return data.decode("utf-8"), "utf-8", []
    except UnicodeDecodeError:
        pass
    try:
        # cp1252 leaves five bytes undefined, so it can fail where latin-1 cannot.
        return data.decode("cp1252"), "cp1252", ["not valid UTF-8; decoded as cp1252"]
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1", ["not valid UTF-8; decoded as latin-1"]


def _guess_bomless_utf16(data: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when the bytes look like BOM-less UTF-16 text, else None.

    ASCII-range text in UTF-16 is valid UTF-8 (full of NULs), so without this check such a
    file would "decode" into text with a NUL between every character.
    """
    if len(data) < 4 or b"\x00" not in data[:4096]:
        return None
    head = data[:4096]
    pairs = len(head) // 2
    even = head[0::2].count(0)
    odd = head[1::2].count(0)
    if odd > 0.4 * pairs and even < 0.05 * pairs:
        return "utf-16-le"
    if even > 0.4 * pairs and odd < 0.05 * pairs:
        return "utf-16-be"
    return None


def _lines(text: str) -> list[str]:
    # str.splitlines() would also split on form feeds, \x1c-\x1e, U+2028..., which shifts the
    # line numbers quoted in error messages away from what an editor shows.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


# --- text clean-up -------------------------------------------------------------------------
# Tags start with a letter, '/', or a digit (WebVTT inline timestamps such as <00:00:01.000>),
# so a lone '<' in "a < b" is left alone. [^<>] keeps the regex linear on long lines: a
# match attempt from one '<' never runs past the next '<'.
_TAG_RE = re.compile(r"<(?:/?[A-Za-z]|[0-9])[^<>]*>")
# SSA/ASS override blocks that many SRT files carry, e.g. {\an8} or {\i1}.
_ASS_RE = re.compile(r"\{\\[^{}]*\}")


def _normalise_space(text: str) -> str:
    return " ".join(text.split())


def _strip_tags(text: str) -> str:
    return _ASS_RE.sub("", _TAG_RE.sub("", text))


# --- timestamps ----------------------------------------------------------------------------
# Hours are optional (WebVTT's MM:SS.mmm, and SRT files written by sloppy tools); ',' and '.'
# are both accepted before the fraction. Bounded digit counts keep backtracking constant.
_TS = r"(?:([0-9]{1,9}):)?([0-9]{1,2}):([0-9]{1,2})[,.]([0-9]{1,3})"
_TIMING_RE = re.compile(rf"\s*{_TS}\s*-->\s*{_TS}(?:\s+(.*))?\s*")


def _ts_seconds(h: str | None, m: str, s: str, frac: str) -> float | None:
    minutes, seconds = int(m), int(s)
    if seconds >= 60 or (h is not None and minutes >= 60):
        return None
    millis = int(frac.ljust(3, "0"))
    total_ms = ((int(h or 0) * 60 + minutes) * 60 + seconds) * 1000 + millis
    # One integer division: 12.345 parses to exactly the float literal 12.345.
    return total_ms / 1000


def _shown(line: str, limit: int = 80) -> str:
    line = line.strip()
    return repr(line if len(line) <= limit else line[:limit] + "...")


def _parse_timing(
    line: str, lineno: int, kind: str, source: str, expected: str
) -> tuple[float, float, str]:
    """Parse a 'start --> end [settings]' line; TranscriptError (with line number) if malformed."""
    m = _TIMING_RE.fullmatch(line)
    start = end = None
    if m:
        start = _ts_seconds(*m.group(1, 2, 3, 4))
        end = _ts_seconds(*m.group(5, 6, 7, 8))
    if start is None or end is None:
        raise TranscriptError(
            f"line {lineno}: malformed {kind} timestamp {_shown(line)}",
            path=source,
            hint=f"expected '{expected}'; fix or remove that line",
        )
    if end < start:
        raise TranscriptError(
            f"line {lineno}: cue ends before it starts ({end:.3f} s < {start:.3f} s): "
            f"{_shown(line)}",
            path=source,
            hint="swap or fix the two timestamps",
        )
    assert m is not None  # start/end are only set when the regex matched
    return start, end, m.group(9) or ""


# --- formats -------------------------------------------------------------------------------
@register_format("txt", (".txt", ".text"))
def _parse_txt(text: str, source: str) -> list[Cue]:
    """One untimed cue per non-empty line."""
    return [
        Cue(_normalise_space(line), math.nan, math.nan) for line in _lines(text) if line.strip()
    ]


def _is_ascii_digits(line: str) -> bool:
    return line.isascii() and line.isdigit()


@register_format("srt", (".srt",))
def _parse_srt(text: str, source: str) -> list[Cue]:
    """SubRip: optional index line, 'HH:MM:SS,mmm --> HH:MM:SS,mmm', then text lines.

    Blank lines only separate cues by convention; a cue's text runs until the next timing
    line, so a stray blank line inside a cue's text does not lose the rest of it.
    """
    lines = _lines(text)
    cues: list[Cue] = []
    current: tuple[float, float, list[str]] | None = None
    stray = 0

    def flush() -> None:
        if current is not None:
            cues.append(
                Cue(_normalise_space(_strip_tags(" ".join(current[2]))), current[0], current[1])
            )

    for i, raw in enumerate(lines):
        line = raw.strip()
        if "-->" in line:
            start, end, _ = _parse_timing(
                line, i + 1, "SRT", source, "HH:MM:SS,mmm --> HH:MM:SS,mmm"
            )
            flush()
            current = (start, end, [])
        elif not line:
            continue
        elif _is_ascii_digits(line) and i + 1 < len(lines) and "-->" in lines[i + 1]:
            continue  # the cue index: numbering carries no information
        elif current is None:
            stray += 1
        else:
            current[2].append(line)
    flush()
    if stray:
        report_warning(f"ignored {stray} line(s) of text before the first SRT cue")
    return cues


def _starts_block(line: str, keyword: str) -> bool:
    return line.startswith(keyword) and (len(line) == len(keyword) or line[len(keyword)] in " \t")


@register_format("vtt", (".vtt", ".webvtt"))
def _parse_vtt(text: str, source: str) -> list[Cue]:
    """WebVTT: header, optional cue identifiers, cue settings, NOTE/STYLE/REGION blocks."""
    lines = _lines(text)
    cues: list[Cue] = []
    first = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    # States: "header" (WEBVTT block), "between" (after a blank line), "id" (one non-timing
    # line seen: a cue identifier if a timing line follows), "text", "comment" (NOTE/STYLE/
    # REGION: ignored up to the next blank line), "junk" (a block that turned out to have no
    # timing line: ignored, but a timing line in it still starts a cue).
    if first < len(lines) and _starts_block(lines[first].strip(), "WEBVTT"):
        state, begin = "header", first + 1
    else:
        report_warning("missing WEBVTT header")
        state, begin = "between", first
    current: tuple[float, float, list[str]] | None = None
    no_timing: list[int] = []
    id_line = 0

    def flush() -> None:
        if current is not None:
            joined = _normalise_space(html.unescape(_strip_tags(" ".join(current[2]))))
            cues.append(Cue(joined, current[0], current[1]))

    for i in range(begin, len(lines)):
        line = lines[i].strip()
        if not line:
            flush()
            current = None
            if state == "id":
                no_timing.append(id_line)
            state = "between"
        elif state == "comment":
            continue
        elif "-->" in line:
            # Also in "header"/"text": tolerates a missing blank line before the cue.
            start, end, _settings = _parse_timing(
                line, i + 1, "WebVTT", source, "[HH:]MM:SS.mmm --> [HH:]MM:SS.mmm [settings]"
            )
            flush()
            current = (start, end, [])
            state = "text"
        elif state == "text":
            assert current is not None
            current[2].append(line)
        elif state == "between":
            if any(_starts_block(line, kw) for kw in ("NOTE", "STYLE", "REGION")):
                state = "comment"
            else:
                state, id_line = "id", i + 1
        elif state == "id":
            no_timing.append(id_line)
            state = "junk"
        # "header": metadata lines such as "Kind: captions" carry nothing we use; "junk": dropped
    flush()
    if state == "id":
        no_timing.append(id_line)
    if no_timing:
        shown = ", ".join(map(str, no_timing[:5])) + (", ..." if len(no_timing) > 5 else "")
        report_warning(
            f"ignored {len(no_timing)} WebVTT block(s) without a timing line (line {shown})"
        )
    return cues


_JSON_HINT = (
    'expected Whisper-style JSON: {"segments": [{"start": s, "end": s, "text": "..."}, ...]} '
    "or a bare list of segments"
)


def _json_time(value: object, where: str, key: str, source: str) -> float:
    # bool is an int subclass; true/false as a time is a broken file, not 1.0/0.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranscriptError(
            f"{where}: {key!r} is not a number ({value!r})", path=source, hint=_JSON_HINT
        )
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise TranscriptError(
            f"{where}: {key!r} must be a finite time >= 0, got {value!r}",
            path=source,
            hint=_JSON_HINT,
        )
    return seconds


@register_format("json", (".json",))
def _parse_json(text: str, source: str) -> list[Cue]:
    """Whisper-style JSON: ``{"segments": [...]}`` or a bare list of segments."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TranscriptError(
            f"line {exc.lineno}: invalid JSON: {exc.msg}", path=source, hint=_JSON_HINT
        ) from None
    except RecursionError:
        raise TranscriptError(
            "invalid JSON: nested too deeply", path=source, hint=_JSON_HINT
        ) from None
    if isinstance(data, dict):
        if "segments" not in data:
            raise TranscriptError("JSON has no 'segments' key", path=source, hint=_JSON_HINT)
        segments = data["segments"]
    else:
        segments = data
    if not isinstance(segments, list):
        raise TranscriptError(
            f"JSON segments must be a list, got {type(segments).__name__}",
            path=source,
            hint=_JSON_HINT,
        )
    cues: list[Cue] = []
    for k, seg in enumerate(segments):
        where = f"segments[{k}]"
        if not isinstance(seg, dict):
            raise TranscriptError(
                f"{where}: expected an object, got {type(seg).__name__}",
                path=source,
                hint=_JSON_HINT,
            )
        missing = [key for key in ("start", "end", "text") if key not in seg]
        if missing:
            raise TranscriptError(
                f"{where}: missing {', '.join(map(repr, missing))}", path=source, hint=_JSON_HINT
            )
        start = _json_time(seg["start"], where, "start", source)
        end = _json_time(seg["end"], where, "end", source)
        if end < start:
            raise TranscriptError(
                f"{where}: segment ends before it starts ({end:.3f} s < {start:.3f} s)",
                path=source,
                hint="fix the segment's start/end",
            )
        if not isinstance(seg["text"], str):
            raise TranscriptError(f"{where}: 'text' is not a string", path=source, hint=_JSON_HINT)
        cues.append(Cue(_normalise_space(seg["text"]), start, end))
    return cues


# --- entry points --------------------------------------------------------------------------
def _run_parser(
    fmt: _Format,
    text: str,
    source: str,
    *,
    result_source: str | None,
    encoding: str,
    warnings: list[str],
    result_format: str,
) -> Transcript:
    if not text.strip():
        return Transcript((), result_format, result_source, encoding, (*warnings, _EMPTY_WARNING))
    sink: list[str] = list(warnings)
    token = _WARNINGS.set(sink)
    try:
        parsed = fmt.parser(text, source)
    finally:
        _WARNINGS.reset(token)
    cues = tuple(c for c in parsed if c.text)
    if len(cues) < len(parsed):
        sink.append(f"dropped {len(parsed) - len(cues)} cue(s) with no text")
    if not cues:
        sink.append("transcript has no cues")
    return Transcript(cues, result_format, result_source, encoding, tuple(sink))


def parse_transcript(path: str | Path, format: str | None = None) -> Transcript:
    """Read the transcript at ``path``.

    ``format`` is a name from :func:`list_formats`; ``None`` picks it from the suffix. Raises
    TranscriptError when the file is missing, not a regular file, unreadable, of an unknown
    suffix, or malformed; ConfigError when ``format`` names no registered format (an option
    error, which no file can fix). An empty file gives zero cues and the warning
    ``"transcript is empty"``.
    """
    p = Path(path)
    source = str(p)
    if format is not None and format not in _FORMATS:
        raise ConfigError(
            f"unknown transcript format {format!r}; known formats: {_known_formats_text()}",
            hint=f"--transcript-format takes one of: {', '.join(list_formats())}",
        )
    try:
        st = p.stat()
    except FileNotFoundError:
        raise TranscriptError(
            "transcript file not found", path=source, hint="check the path and the file name"
        ) from None
    except OSError as exc:
        raise TranscriptError(
            f"cannot access transcript: {exc.strerror or exc}",
            path=source,
            hint="check the path and its permissions",
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise TranscriptError(
            "is a directory, not a transcript file",
            path=source,
            hint="pass the transcript file itself",
        )
    if not stat.S_ISREG(st.st_mode):
        # Reading a FIFO or device could block a cron job forever.
        raise TranscriptError(
            "not a regular file", path=source, hint="pass a regular transcript file"
        )
    fmt = _FORMATS[format if format is not None else format_for_path(p)]
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise TranscriptError(
            f"cannot read transcript: {exc.strerror or exc}",
            path=source,
            hint="check the file's permissions",
        ) from None
    text, encoding, warnings = _decode(data)
    return _run_parser(
        fmt,
        text,
        source,
        result_source=source,
        encoding=encoding,
        warnings=warnings,
        result_format=fmt.name,
    )


def parse_text(text: str) -> Transcript:
    """A transcript from a literal string: one untimed cue per non-empty line, format ``"literal"``.

    The string was never bytes we decoded; ``encoding`` is reported as ``"utf-8"``.
    """
    return _run_parser(
        _FORMATS["txt"],
        text,
        "<text>",
        result_source=None,
        encoding="utf-8",
        warnings=[],
        result_format="literal",
    )


# --- sentences -----------------------------------------------------------------------------
_SENTENCE_END = frozenset(".!?…")
# Closing quotes/brackets may follow the end mark: 'He said "Stop." Then...' splits after '"'.
_CLOSERS = frozenset("\"')]}»”’")
_SPACE_RE = re.compile(r"\s+")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences at '.', '!', '?' or '…' followed by whitespace.

    The end mark (and any closing quotes or brackets after it) stays with its sentence; only
    the whitespace between sentences and around the text is removed, so
    ``" ".join(split_sentences(t)) == t`` for whitespace-normalised ``t``. Whitespace not
    preceded by an end mark is kept as it is. Empty or blank text gives ``[]``.
    """
    sentences: list[str] = []
    begin = 0
    # Look at each whitespace run and back over closers: the backwards scan stops at the
    # previous whitespace run, so the total work stays linear in len(text).
    for m in _SPACE_RE.finditer(text):
        j = m.start()
        while j > begin and text[j - 1] in _CLOSERS:
            j -= 1
        if j > begin and text[j - 1] in _SENTENCE_END:
            sentence = text[begin : m.start()]
            if sentence:
                sentences.append(sentence)
            begin = m.end()
    tail = text[begin:].rstrip()
    if tail:
        sentences.append(tail)
    # Leading whitespace of the text: the first run matched but was not a sentence end.
    if sentences:
        sentences[0] = sentences[0].lstrip()
        if not sentences[0]:
            sentences.pop(0)
    return sentences
