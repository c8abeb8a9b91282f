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
