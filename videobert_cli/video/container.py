"""Checks on a container's own bookkeeping, which decord does not look at.

decord indexes a video by reading its packets. A Matroska/WebM file cut short (an interrupted
download or copy) keeps no index at the end the way MP4 does, so decord reads the packets up
to the cut and reports a shorter, seemingly complete video. The file's header still declares
the full size of its Segment, which is how the cut can be seen.
"""

from __future__ import annotations

from pathlib import Path

_EBML_HEADER_ID = 0x1A45DFA3
_SEGMENT_ID = 0x18538067
_HEAD_BYTES = 4096  # the EBML header and the Segment's size field are in the first few dozen bytes


def _element_id(data: bytes, pos: int) -> tuple[int, int]:
    """An EBML element ID (length marker kept, as IDs are written) and the position after it."""
    first = data[pos]
    length = next((n for n in range(1, 5) if first & (0x80 >> (n - 1))), 0)
    if not length or pos + length > len(data):
        raise ValueError("not an EBML element ID")
    return int.from_bytes(data[pos : pos + length], "big"), pos + length


def _element_size(data: bytes, pos: int) -> tuple[int | None, int]:
    """An EBML size (``None`` for the reserved 'unknown size') and the position after it."""
    first = data[pos]
    length = next((n for n in range(1, 9) if first & (0x80 >> (n - 1))), 0)
    if not length or pos + length > len(data):
        raise ValueError("not an EBML size")
    value = first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    unknown = value == (1 << (7 * length)) - 1  # all value bits set: written while streaming
    return (None if unknown else value), pos + length


def matroska_shortfall(path: str | Path) -> tuple[int, int] | None:
    """``(declared bytes, actual bytes)`` when a Matroska/WebM file is shorter than its header says.

    ``None`` for other formats, for complete files, and for files written as a stream (their
    Segment size is 'unknown', so a cut cannot be told from the end).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(_HEAD_BYTES)
    try:
        element, pos = _element_id(head, 0)
        if element != _EBML_HEADER_ID:
            return None
        header_size, pos = _element_size(head, pos)
        if header_size is None:
            return None
        element, pos = _element_id(head, pos + header_size)
        if element != _SEGMENT_ID:
            return None
        segment_size, pos = _element_size(head, pos)
    except (ValueError, IndexError):
        return None
    if segment_size is None:
        return None
    declared, actual = pos + segment_size, path.stat().st_size
    return (declared, actual) if actual < declared else None


#: ISO BMFF (MP4/MOV) top-level boxes a file can start with
_MP4_FIRST_BOXES = {b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}
#: boxes whose loss loses frames or the index: a cut trailing metadata box loses neither
_MP4_ESSENTIAL_BOXES = {b"mdat", b"moov", b"moof"}
_MP4_MAX_BOXES = 1_000_000  # a fragmented file has two boxes per fragment


def mp4_defect(path: str | Path) -> str | None:
    """What makes an MP4/MOV file incomplete, in words, or ``None``.

    Walks the top-level boxes (a few bytes read per box): a media-data, index or fragment box
    that runs past the end of the file (a cut download of a "faststart" file, whose index is at
    the front, still opens), or no index at all (a recording that was never finalised). ``None``
    for other formats and for files whose boxes cannot be read (the decoder decides there).
    """
    path = Path(path)
    size = path.stat().st_size
    boxes: set[bytes] = set()
    offset = 0
    with open(path, "rb") as handle:
        for _ in range(_MP4_MAX_BOXES):
            if offset + 8 > size:
                break
            handle.seek(offset)
            header = handle.read(16)
            box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if not boxes and kind not in _MP4_FIRST_BOXES:
                return None
            header_size = 8
            if box_size == 1:  # a 64-bit size follows
                if len(header) < 16:
                    break
                box_size, header_size = int.from_bytes(header[8:16], "big"), 16
            elif box_size == 0:  # the last box: up to the end of the file
                box_size = size - offset
            if box_size < header_size:
                return None  # not boxes after all
            boxes.add(kind)
            if offset + box_size > size:
                if kind not in _MP4_ESSENTIAL_BOXES:
                    break
                missing = offset + box_size - size
                return (f"truncated MP4/MOV file: its '{kind.decode('latin-1')}' box declares {box_size} bytes, "
                        f"the file ends {missing} bytes short ({100 * missing / (offset + box_size):.0f}% missing)")
            offset += box_size
        else:
            return None
    if not boxes & {b"moov", b"moof"}:
        return "truncated or incomplete MP4 (its index, the moov atom, is missing)"
    if b"mdat" not in boxes:
        # an index with no media after it: a faststart file cut right after its index, or a
        # fragmented one cut before its first fragment
        return "truncated MP4/MOV file: it ends before its media data (no mdat box)"
    return None
