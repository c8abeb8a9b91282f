"""Tests of videobert_cli.text.transcripts: every format, encodings, and the failure modes."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from videobert_cli.errors import ConfigError, TranscriptError
from videobert_cli.text.transcripts import (
    Cue,
    Transcript,
    format_for_path,
    list_formats,
    parse_text,
    parse_transcript,
    register_format,
    split_sentences,
)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


def timed(transcript: Transcript) -> list[tuple[str, float, float]]:
    return [(c.text, c.start, c.end) for c in transcript.cues]


def untimed(transcript: Transcript) -> list[str]:
    # NaN != NaN, so check times separately instead of comparing Cue objects.
    for cue in transcript.cues:
        assert math.isnan(cue.start) and math.isnan(cue.end), cue
    return [c.text for c in transcript.cues]


# --- registry ------------------------------------------------------------------------------
def test_list_formats() -> None:
    assert list_formats() == ["json", "srt", "txt", "vtt"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.srt", "srt"),
        ("a.SRT", "srt"),
        ("dir.v1/a.vtt", "vtt"),
        ("a.en.json", "json"),
        ("a.txt", "txt"),
        ("a.text", "txt"),
    ],
)
def test_format_for_path(name: str, expected: str) -> None:
    assert format_for_path(name) == expected


def test_register_format_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_format("srt", (".srt2",))(lambda text, source: [])
    with pytest.raises(ValueError, match="already belongs to format 'vtt'"):
        register_format("vtt-again", (".VTT",))(lambda text, source: [])
    # A failed registration must not leave a half-registered format behind.
    assert list_formats() == ["json", "srt", "txt", "vtt"]


def test_unknown_suffix_lists_formats(tmp_path: Path) -> None:
    path = write(tmp_path, "talk.ass", "[Script Info]\n")
    with pytest.raises(TranscriptError) as info:
        parse_transcript(path)
    err = info.value
    assert "unknown transcript suffix '.ass'" in err.message
    for known in ("json (.json)", "srt (.srt)", "txt (.txt, .text)", "vtt (.vtt, .webvtt)"):
        assert known in err.message
    assert err.path == str(path)
    assert err.hint is not None and "--transcript-format" in err.hint
    assert err.reason == "transcript"


def test_explicit_format_overrides_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "talk.ass", "00:00:01,000 --> 00:00:02,000\nhi\n")
    result = parse_transcript(path, format="srt")
    assert result.format == "srt"
    assert timed(result) == [("hi", 1.0, 2.0)]


def test_unknown_format_name_is_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.srt", "")
    with pytest.raises(ConfigError, match="unknown transcript format 'ass'"):
        parse_transcript(path, format="ass")


# --- txt / literal -------------------------------------------------------------------------
def test_txt(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", "  First line.  \n\n\tSecond   line\r\nThird\rFourth\n   \n")
    result = parse_transcript(path)
    assert untimed(result) == ["First line.", "Second line", "Third", "Fourth"]
    assert result.format == "txt"
    assert result.source == str(path)
    assert result.encoding == "utf-8"
    assert result.warnings == ()
    assert not result.timed
    assert not result.cues[0].timed


def test_parse_text_literal() -> None:
    result = parse_text("A cat sits.\n\n  A dog runs  \n")
    assert untimed(result) == ["A cat sits.", "A dog runs"]
    assert result.format == "literal"
    assert result.source is None
    assert result.warnings == ()


def test_parse_text_empty() -> None:
    result = parse_text("  \n ")
    assert result.cues == ()
    assert result.warnings == ("transcript is empty",)


# --- srt -----------------------------------------------------------------------------------
SRT = """1
00:00:00,000 --> 00:00:01,500
<i>A red square</i> slides
to the <b>right</b>.

2
00:00:01,500 --> 00:00:03,250
<font color="#ff0000">Then</font> it stops.

3
00:00:03,250 --> 01:02:03,004
{\\an8}The scene changes.
"""


def test_srt(tmp_path: Path) -> None:
    result = parse_transcript(write(tmp_path, "a.srt", SRT))
    assert result.format == "srt"
    assert result.warnings == ()
    assert timed(result) == [
        ("A red square slides to the right.", 0.0, 1.5),
        ("Then it stops.", 1.5, 3.25),
        ("The scene changes.", 3.25, 3723.004),
    ]
    assert result.timed


def test_srt_dot_separator_no_index_crlf(tmp_path: Path) -> None:
    text = "00:00:01.000 --> 00:00:02.000\r\nfirst\r\n\r\n00:00:02.5 --> 00:00:03.25\r\nsecond\r\n"
    result = parse_transcript(write(tmp_path, "a.srt", text))
    assert timed(result) == [("first", 1.0, 2.0), ("second", 2.5, 3.25)]


def test_srt_blank_line_inside_cue_and_stray_text(tmp_path: Path) -> None:
    text = (
        "junk before\n\n"
        "1\n00:00:01,000 --> 00:00:02,000\nfirst half\n\nsecond half\n\n"
        "2\n00:00:03,000 --> 00:00:04,000\n1984\n"
    )
    result = parse_transcript(write(tmp_path, "a.srt", text))
    assert timed(result) == [("first half second half", 1.0, 2.0), ("1984", 3.0, 4.0)]
    assert result.warnings == ("ignored 1 line(s) of text before the first SRT cue",)


def test_srt_drops_cues_empty_after_tags(tmp_path: Path) -> None:
    text = (
        "1\n00:00:01,000 --> 00:00:02,000\n<i></i>\n\n"
        "2\n00:00:02,000 --> 00:00:03,000\nkept\n\n"
        "3\n00:00:04,000 --> 00:00:05,000\n"
    )
    result = parse_transcript(write(tmp_path, "a.srt", text))
    assert timed(result) == [("kept", 2.0, 3.0)]
    assert result.warnings == ("dropped 2 cue(s) with no text",)


def test_srt_keeps_lone_angle_bracket(tmp_path: Path) -> None:
    text = "00:00:01,000 --> 00:00:02,000\n3 < 4 and 5 > 2\n"
    assert timed(parse_transcript(write(tmp_path, "a.srt", text))) == [
        ("3 < 4 and 5 > 2", 1.0, 2.0)
    ]


def test_srt_malformed_timestamp_reports_line(tmp_path: Path) -> None:
    text = (
        "1\n00:00:01,000 --> 00:00:02,000\nok\n\n"
        "2\n00:00:03,000 --> 00:00:04,000\nok\n\n"
        "3\n00:00:xx,000 --> 00:00:09,000\nbad\n"
    )
    path = write(tmp_path, "a.srt", text)
    with pytest.raises(TranscriptError) as info:
        parse_transcript(path)
    err = info.value
    assert err.message == "line 10: malformed SRT timestamp '00:00:xx,000 --> 00:00:09,000'"
    assert err.path == str(path)
    assert err.hint is not None and "HH:MM:SS,mmm --> HH:MM:SS,mmm" in err.hint
    assert str(err).startswith(f"{path}: line 10: malformed SRT timestamp")


@pytest.mark.parametrize(
    "timing",
    [
        "00:00:01,000 -> 00:00:02,000 -->",
        "00:00:61,000 --> 00:00:62,000",  # seconds out of range
        "00:60:00,000 --> 00:61:00,000",  # minutes out of range with hours
        "00:00:01,0000 --> 00:00:02,000",
        "00:00:01,000 --> ",
    ],
)
def test_srt_malformed_variants(tmp_path: Path, timing: str) -> None:
    with pytest.raises(TranscriptError) as info:
        parse_transcript(write(tmp_path, "a.srt", f"1\n{timing}\ntext\n"))
    assert info.value.message == f"line 2: malformed SRT timestamp {timing.strip()!r}"


def test_srt_end_before_start(tmp_path: Path) -> None:
    path = write(tmp_path, "a.srt", "1\n00:00:05,000 --> 00:00:04,000\nbackwards\n")
    with pytest.raises(TranscriptError) as info:
        parse_transcript(path)
    assert info.value.message.startswith("line 2: cue ends before it starts (4.000 s < 5.000 s)")
    assert info.value.path == str(path)


def test_zero_length_cue_is_allowed(tmp_path: Path) -> None:
    result = parse_transcript(write(tmp_path, "a.srt", "00:00:05,000 --> 00:00:05,000\nblink\n"))
    assert timed(result) == [("blink", 5.0, 5.0)]


# --- vtt -----------------------------------------------------------------------------------
VTT = """WEBVTT - some title
Kind: captions
Language: en

NOTE This is a comment
that spans --> two lines

STYLE
::cue { color: yellow; }

REGION
id:fred width:40%

intro
00:01.000 --> 00:02.500 align:start position:10%
<v Roger>Hello</v> <c.colorE5E5E5>there</c>

00:02.500 --> 00:04.000
Wo<00:00:03.000><c>rd</c> by <00:00:03.500>word
&amp; more &lt;text&gt;

2
01:00:00.000 --> 01:00:01.250 line:0
<i>An hour in</i>
"""


def test_vtt(tmp_path: Path) -> None:
    result = parse_transcript(write(tmp_path, "a.vtt", VTT))
    assert result.format == "vtt"
    assert result.warnings == ()
    assert timed(result) == [
        ("Hello there", 1.0, 2.5),
        ("Word by word & more <text>", 2.5, 4.0),
        ("An hour in", 3600.0, 3601.25),
    ]


def test_vtt_without_header_warns(tmp_path: Path) -> None:
    result = parse_transcript(write(tmp_path, "a.vtt", "00:00.000 --> 00:01.000\nno header\n"))
    assert timed(result) == [("no header", 0.0, 1.0)]
    assert result.warnings == ("missing WEBVTT header",)


def test_vtt_header_without_blank_line_and_block_without_timing(tmp_path: Path) -> None:
    text = (
        "WEBVTT\n00:00.000 --> 00:01.000\nfirst\n\n"
        "orphan id\norphan text\n\n"
        "00:02.000 --> 00:03.000\nsecond\n"
    )
    result = parse_transcript(write(tmp_path, "a.vtt", text))
    assert timed(result) == [("first", 0.0, 1.0), ("second", 2.0, 3.0)]
    assert result.warnings == ("ignored 1 WebVTT block(s) without a timing line (line 5)",)


def test_vtt_timing_line_right_after_junk_block_still_counts(tmp_path: Path) -> None:
    text = "WEBVTT\n\nstray one\nstray two\n00:01.000 --> 00:02.000\nkept\n"
    result = parse_transcript(write(tmp_path, "a.vtt", text))
    assert timed(result) == [("kept", 1.0, 2.0)]
    assert result.warnings == ("ignored 1 WebVTT block(s) without a timing line (line 3)",)


def test_vtt_note_block_hides_its_lines(tmp_path: Path) -> None:
    text = "WEBVTT\n\nNOTE\n00:01.000 --> 00:02.000\nnot a cue\n\n00:03.000 --> 00:04.000\ncue\n"
    result = parse_transcript(write(tmp_path, "a.vtt", text))
    assert timed(result) == [("cue", 3.0, 4.0)]
    assert result.warnings == ()


def test_vtt_malformed_timestamp(tmp_path: Path) -> None:
    path = write(tmp_path, "a.vtt", "WEBVTT\n\n1\n00:01.000 --> 00:0x.000\nbad\n")
    with pytest.raises(TranscriptError) as info:
        parse_transcript(path)
    assert info.value.message == "line 4: malformed WebVTT timestamp '00:01.000 --> 00:0x.000'"
    assert info.value.hint is not None


def test_vtt_end_before_start(tmp_path: Path) -> None:
    path = write(tmp_path, "a.vtt", "WEBVTT\n\n00:03.000 --> 00:01.000\nbad\n")
    with pytest.raises(TranscriptError, match="line 3: cue ends before it starts"):
        parse_transcript(path)


def test_vtt_header_only_has_no_cues(tmp_path: Path) -> None:
    result = parse_transcript(write(tmp_path, "a.vtt", "WEBVTT\n\n"))
    assert result.cues == ()
    assert result.warnings == ("transcript has no cues",)


# --- json ----------------------------------------------------------------------------------
def test_whisper_json(tmp_path: Path) -> None:
    data = {
        "text": " Hello there. General Kenobi.",
        "segments": [
            {"id": 0, "start": 0.0, "end": 1.84, "text": " Hello there."},
            {"id": 1, "start": 1.84, "end": 3, "text": "  General\nKenobi. "},
            {"id": 2, "start": 3.0, "end": 3.5, "text": "   "},
        ],
        "language": "en",
    }
    result = parse_transcript(write(tmp_path, "a.json", json.dumps(data)))
    assert result.format == "json"
    assert timed(result) == [("Hello there.", 0.0, 1.84), ("General Kenobi.", 1.84, 3.0)]
    assert result.warnings == ("dropped 1 cue(s) with no text",)


def test_bare_list_json(tmp_path: Path) -> None:
    data = [{"start": 1, "end": 2.5, "text": "one"}, {"start": 2.5, "end": 4, "text": "two"}]
    result = parse_transcript(write(tmp_path, "a.json", json.dumps(data)))
    assert timed(result) == [("one", 1.0, 2.5), ("two", 2.5, 4.0)]


def test_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", '{"segments": [\n{"start": 1, "end": 2, "text": "x"},\n]}')
    with pytest.raises(TranscriptError) as info:
        parse_transcript(path)
    assert info.value.message.startswith("line 3: invalid JSON")
    assert info.value.path == str(path)
    assert info.value.hint is not None and "segments" in info.value.hint


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"text": "no segments here"}, "JSON has no 'segments' key"),
        ({"segments": {"start": 0}}, "JSON segments must be a list, got dict"),
        ("just a string", "JSON segments must be a list, got str"),
        ([{"start": 0, "text": "x"}], "segments[0]: missing 'end'"),
        ([1], "segments[0]: expected an object, got int"),
        ([{"start": "0", "end": 1, "text": "x"}], "segments[0]: 'start' is not a number ('0')"),
        ([{"start": True, "end": 1, "text": "x"}], "segments[0]: 'start' is not a number (True)"),
        (
            [{"start": -1, "end": 1, "text": "x"}],
            "segments[0]: 'start' must be a finite time >= 0, got -1",
        ),
        ([{"start": 0, "end": 1, "text": None}], "segments[0]: 'text' is not a string"),
        (
            [{"start": 0, "end": 1, "text": "ok"}, {"start": 3, "end": 2, "text": "x"}],
            "segments[1]: segment ends before it starts (2.000 s < 3.000 s)",
        ),
    ],
)
def test_bad_json_structure(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(TranscriptError) as info:
        parse_transcript(write(tmp_path, "a.json", json.dumps(data)))
    assert info.value.message == message


# --- encodings -----------------------------------------------------------------------------
def test_cp1252_fallback(tmp_path: Path) -> None:
    result = parse_transcript(write(tmp_path, "a.txt", b"caf\xe9 \x93quoted\x94\n"))
    assert untimed(result) == ["caf\u00e9 \u201cquoted\u201d"]
    assert result.encoding == "cp1252"
    assert result.warnings == ("not valid UTF-8; decoded as cp1252",)


def test_latin1_fallback_when_cp1252_fails(tmp_path: Path) -> None:
    # 0x81 is undefined in cp1252, so only latin-1 can decode it.
    result = parse_transcript(write(tmp_path, "a.txt", b"caf\xe9\x81\n"))
    assert untimed(result) == ["caf\u00e9\x81"]
    assert result.encoding == "latin-1"
    assert result.warnings == ("not valid UTF-8; decoded as latin-1",)


def test_bom_with_invalid_bytes_is_replaced_not_fatal(tmp_path: Path) -> None:
    result = parse_transcript(write(tmp_path, "a.txt", b"\xef\xbb\xbfok \xff\xfe end\n"))
    assert untimed(result) == ["ok \ufffd\ufffd end"]
    assert result.encoding == "utf-8-sig"
    assert result.warnings == (
        "has a UTF-8 byte-order mark but is not valid UTF-8; undecodable bytes replaced",
    )


def test_utf8_bom(tmp_path: Path) -> None:
    data = "\ufeff1\n00:00:01,000 --> 00:00:02,000\nna\u00efve\n".encode()
    result = parse_transcript(write(tmp_path, "a.srt", data))
    assert timed(result) == [("na\u00efve", 1.0, 2.0)]
    assert result.encoding == "utf-8-sig"
    assert result.warnings == ()


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_bom(tmp_path: Path, codec: str) -> None:
    text = "\ufeffWEBVTT\n\n00:01.000 --> 00:02.000\ncaf\u00e9 \u65e5\u672c\n"
    result = parse_transcript(write(tmp_path, "a.vtt", text.encode(codec)))
    assert timed(result) == [("caf\u00e9 \u65e5\u672c", 1.0, 2.0)]
    assert result.encoding == "utf-16"
    assert result.warnings == ()


def test_utf16_without_bom_is_detected(tmp_path: Path) -> None:
    result = parse_transcript(write(tmp_path, "a.txt", "hello\nworld\n".encode("utf-16-le")))
    assert untimed(result) == ["hello", "world"]
    assert result.encoding == "utf-16-le"
    assert len(result.warnings) == 1 and "UTF-16-LE" in result.warnings[0]


def test_plain_utf8(tmp_path: Path) -> None:
    result = parse_transcript(write(tmp_path, "a.txt", "\u00fcber \u2014 \U0001f600\n"))
    assert untimed(result) == ["\u00fcber \u2014 \U0001f600"]
    assert result.encoding == "utf-8"


# --- files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a.txt", "a.srt", "a.vtt", "a.json"])
@pytest.mark.parametrize("content", [b"", b"  \n\r\n\t \n", b"\xef\xbb\xbf\n"])
def test_empty_file(tmp_path: Path, name: str, content: bytes) -> None:
    result = parse_transcript(write(tmp_path, name, content))
    assert result.cues == ()
    assert result.warnings == ("transcript is empty",)
    assert result.format == name.split(".")[1]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.srt"
    with pytest.raises(TranscriptError) as info:
        parse_transcript(path)
    assert info.value.message == "transcript file not found"
    assert info.value.path == str(path)


def test_missing_file_with_unknown_suffix_says_not_found(tmp_path: Path) -> None:
    with pytest.raises(TranscriptError, match="transcript file not found"):
        parse_transcript(tmp_path / "nope.xyz")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "subs.srt"
    folder.mkdir()
    with pytest.raises(TranscriptError) as info:
        parse_transcript(folder)
    assert info.value.message == "is a directory, not a transcript file"


def test_fifo_is_rejected_without_blocking(tmp_path: Path) -> None:
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "pipe.srt"
    os.mkfifo(fifo)
    with pytest.raises(TranscriptError, match="not a regular file"):
        parse_transcript(fifo)


def test_str_path_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", "x\n")
    assert parse_transcript(str(path)).source == str(path)


# --- long input ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a.txt", "a.srt", "a.vtt"])
def test_one_megabyte_line(tmp_path: Path, name: str) -> None:
    # Many '<' without '>' and '{\' without '}' are what would make a careless tag regex
    # quadratic; 1 MB of them must still parse in well under a second.
    line = "word <b " * 80_000 + "{\\x " * 89_999 + "end."
    assert len(line) == 1_000_000
    header = {
        "a.txt": "",
        "a.srt": "1\n00:00:00,000 --> 00:00:10,000\n",
        "a.vtt": "WEBVTT\n\n00:00.000 --> 00:10.000\n",
    }[name]
    path = write(tmp_path, name, header + line + "\n")
    started = time.perf_counter()
    result = parse_transcript(path)
    elapsed = time.perf_counter() - started
    assert len(result.cues) == 1
    assert result.cues[0].text == " ".join(line.split())
    assert elapsed < 5.0, elapsed


def test_one_megabyte_json_segment(tmp_path: Path) -> None:
    text = "x" * 1_000_000
    result = parse_transcript(
        write(tmp_path, "a.json", json.dumps([{"start": 0, "end": 1, "text": text}]))
    )
    assert timed(result) == [(text, 0.0, 1.0)]


def test_split_sentences_one_megabyte_is_fast() -> None:
    text = "." * 500_000 + " " + '"' * 499_999
    started = time.perf_counter()
    assert split_sentences(text) == ["." * 500_000, '"' * 499_999]
    assert time.perf_counter() - started < 5.0


# --- split_sentences ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("   ", []),
        ("One sentence", ["One sentence"]),
        ("Hi. There!  Why? Because\u2026 ok", ["Hi.", "There!", "Why?", "Because\u2026", "ok"]),
        ("Pi is 3.14 roughly. Yes.", ["Pi is 3.14 roughly.", "Yes."]),
        ('He said "Stop." Then (he left.) Fine', ['He said "Stop."', "Then (he left.)", "Fine"]),
        ("Wait... what?! No.\nNext line", ["Wait...", "what?!", "No.", "Next line"]),
        ("  leading and trailing.   ", ["leading and trailing."]),
        ("keeps  inner   space. here", ["keeps  inner   space.", "here"]),
        ("ends with mark.", ["ends with mark."]),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "A red square slides to the right. Then it stops! Does it? Yes\u2026 it does.",
        '"Quoted." (Bracketed!) Plain? Final words without a mark',
        "No sentence end at all in this one",
        "Numbers like 1.5 and v2.0.1 stay. Whole.",
    ],
)
def test_split_sentences_round_trip(text: str) -> None:
    normalised = " ".join(text.split())
    parts = split_sentences(normalised)
    assert " ".join(parts) == normalised
    assert all(p and p == p.strip() for p in parts)


def test_split_sentences_loses_only_whitespace() -> None:
    text = "  First.\tSecond!\n\nThird?  fourth "
    parts = split_sentences(text)
    assert parts == ["First.", "Second!", "Third?", "fourth"]
    assert "".join(parts) == "".join(text.split())


# --- dataclasses ---------------------------------------------------------------------------
def test_cue_and_transcript_are_frozen() -> None:
    cue = Cue("x", 1.0, 2.0)
    with pytest.raises(AttributeError):
        cue.text = "y"  # type: ignore[misc]
    result = parse_text("a")
    with pytest.raises(AttributeError):
        result.cues = ()  # type: ignore[misc]
    assert cue.timed
    assert Cue("x", 1.0, 2.0) == cue


# --- the shipped sample transcripts -----------------------------------------------------------
SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="sample_data/ not generated")
def test_sample_transcripts_parse() -> None:
    kitchen = parse_transcript(SAMPLE / "kitchen.srt")
    assert [(c.start, c.end) for c in kitchen.cues] == [
        (0.0, 1.5),
        (1.5, 3.0),
        (3.0, 4.5),
        (4.5, 6.0),
    ]
    assert (
        kitchen.cues[0].text == "A red square slides to the right across a warm orange background."
    )
    portrait = parse_transcript(SAMPLE / "portrait.vtt")
    assert [(c.start, c.end) for c in portrait.cues] == [(0.0, 2.0), (2.0, 3.0), (3.0, 4.0)]
    assert (
        untimed(parse_transcript(SAMPLE / "square.txt"))[1] == "Then a grey checkerboard appears."
    )
    street = parse_transcript(SAMPLE / "street.json")
    assert timed(street)[1] == (
        "Night falls and two headlights come closer from the right.",
        1.5,
        3.0,
    )
    for t in (kitchen, portrait, street):
        assert t.warnings == () and t.encoding == "utf-8"
