"""PyAV (``--decoder pyav``, and ``auto`` wherever it applies): decord's frames, pixel for pixel,
decoded in the caller's thread, for the sampled frames only.

decord decodes in a thread of its own and keeps decoding ahead into a queue with no bound
after each call (see ``docs/benchmarks.md``, "decord decodes ahead"); that costs CPU the
model could use and memory that depends on timing. Here the caller's thread demuxes and
decodes, only the sampled frames are converted to RGB, and frames that are neither sampled nor
referenced by others are not decoded at all (:func:`_decoded`), so nothing runs while the
consumer waits and memory stays at the decoder's own reference frames.

The frames must be the ones decord gives, pixel for pixel, when it decodes in order (on
open-GOP streams decord's own skipping and seeking return shifted frames; see docs/decoding.md,
known limitations), so decord is this decoder's reference (``base.Decoder.reference``): the
probe checks that PyAV's packets of the video stream, in presentation order, are decord's
frames (:func:`pyav_plan`), and frames are matched by their exact integer pts. Its own probe
(without a reference, :func:`probe`) computes the frame times as decord does. Equality with
decord was checked for 8-bit 4:2:0, 4:2:2 and 4:4:4 (limited and full range, BT.601 and BT.709
tags), H.264, VP9 and MPEG-4 Part 2, and rotated MP4s (``tests/test_pyav_decoder.py``). Where
it is not known to hold (other pixel formats, e.g. 10-bit, where the two libswscale versions
convert differently; containers whose seeking is unchecked), where PyAV's packet index
disagrees with decord's, or where several video streams could be the one decord decodes (the
two FFmpeg versions rank streams differently), :class:`~videobert_cli.decoders.base.Unsuitable`
says why and decord decodes the video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from videobert_cli.decoders.base import (
    DEFAULT_CHUNK_FRAMES,
    Chunks,
    Decoder,
    OpenVideo,
    Unsuitable,
    VideoInfo,
    check_input_file,
    chunk_decoded_frames,
    decode_failure,
    decoding_failed,
    refuse_cut_matroska,
    refuse_cut_mp4,
    register,
    video_ended_early,
)
from videobert_cli.errors import ConfigError, VideoDecodeError

#: container formats (FFmpeg demuxer names) where PyAV's seeking was checked against decord;
#: others (MPEG-TS/PS, whose byte-based seeking missed frames, FLV, Ogg, ...) go to decord
CHECKED_CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi"})
#: codecs whose decoders, told to skip non-reference frames (FFmpeg's ``skip_frame = NONREF``),
#: skip exactly the frames no other frame is predicted from, so the frames that are decoded
#: are unchanged (checked against decoding every frame in ``tests/test_pyav_decoder.py``);
#: HEVC only with one temporal sub-layer (see :func:`_skippable`)
SKIPPABLE_CODECS = frozenset({"h264", "hevc", "mpeg2video", "mpeg4"})
#: pixel formats whose RGB conversion was checked equal to decord's
EQUAL_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})


def import_av():
    """PyAV, or a :class:`ConfigError` that says how to install it."""
    try:
        import av
    except ImportError as exc:  # an optional dependency
        raise ConfigError(
            "--decoder pyav needs PyAV, which is not installed",
            hint="pip install 'videobert-cli[pyav]' (or pip install av), or use --decoder decord",
        ) from exc
    return av


@dataclass(frozen=True)
class PyAVPlan:
    """What PyAV needs to decode decord's frames: the stream, every frame's pts, the keyframes."""

    pts: np.ndarray  # (num_frames,) int64, presentation order = decord's frame order
    keyframes: np.ndarray  # sorted frame indices of keyframes
    stream_index: int = 0  # the container's index of the video stream decord decodes


@dataclass
class _Packets:
    """One video stream's packets, in decoding order (no decoding needed to read them)."""

    index: int
    pix_fmt: str | None
    time_base: object
    start_time: int | None
    rate: object  # the stream's average frame rate (a Fraction), or None
    pts: list = None
    ends: list = None
    keys: list = None

    def plan(self) -> PyAVPlan:
        sorted_pts, keyframes = _display_order(self.pts, self.keys)
        return PyAVPlan(sorted_pts, keyframes, self.index)


def _read_packets(path: str | Path, frame_size: tuple[int, int] | None) -> list[_Packets]:
    """The candidate video streams' packets; :class:`Unsuitable` where PyAV cannot vouch for any."""
    av = import_av()
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise Unsuitable(f"PyAV cannot open it ({exc})") from None
    try:
        if container.format.name not in CHECKED_CONTAINERS:
            raise Unsuitable(f"container format {container.format.name} (PyAV's seeking is only checked in "
                             "MP4/MOV, Matroska/WebM and AVI)")
        streams = list(container.streams.video)
        if not streams:
            raise Unsuitable("PyAV finds no video stream")
        if len(streams) > 1:
            if frame_size is None:
                raise Unsuitable("several video streams, and decord's frame size is not known")
            streams = [s for s in streams if sorted((s.codec_context.width, s.codec_context.height)) == sorted(frame_size)]
            if not streams:
                raise Unsuitable("no video stream has decord's frame size")
        if all(s.codec_context.pix_fmt not in EQUAL_PIXEL_FORMATS for s in streams):  # no need to demux
            raise Unsuitable(_unchecked_pixel_format(streams[0].codec_context.pix_fmt))
        # read before close(), which clears them
        packets = {s.index: _Packets(s.index, s.codec_context.pix_fmt, s.time_base, s.start_time, s.average_rate,
                                         [], [], [])
                   for s in streams}
        for packet in container.demux(*streams):
            if packet.pts is None:
                continue  # the flush packet, or a packet without a time
            stream = packets[packet.stream.index]
            stream.pts.append(packet.pts)
            stream.ends.append(packet.pts + (packet.duration or 0))
            stream.keys.append(packet.is_keyframe)
    except av.error.FFmpegError as exc:
        raise Unsuitable(f"PyAV cannot read its packets ({exc})") from None
    finally:
        container.close()
    return list(packets.values())


def pyav_plan(
    path: str | Path, num_frames: int, frame_starts: np.ndarray, frame_size: tuple[int, int] | None = None
) -> tuple[PyAVPlan | None, str]:
    """Index the video stream's packets; ``(None, reason)`` where PyAV cannot match decord.

    decord's timestamps are float32 seconds (a tick off past ~9 minutes at 1/15360 s), so
    the comparison allows 1 ms; the frames themselves are matched by the integer pts.

    With several video streams, the two FFmpeg versions do not always pick the same one, so
    the stream must match decord's ``frame_size`` (width, height of its frames) and frame
    times, and be the only one that does.
    """
    try:
        candidates = _read_packets(path, frame_size)
    except Unsuitable as why:
        return None, str(why)
    reasons, plans = [], []
    for packets in candidates:
        why_not = _mismatch(packets, num_frames, frame_starts)
        if why_not:
            reasons.append(why_not)
        else:
            plans.append(packets.plan())
    if len(plans) > 1:
        return None, "several video streams match decord's frames; cannot tell which one decord decodes"
    if not plans:
        return None, reasons[0] if len(reasons) == 1 else "no video stream matches decord's frames"
    return plans[0], ""


def _mismatch(packets: _Packets, num_frames: int, frame_starts: np.ndarray) -> str:
    """Why this stream's packets are not decord's frames; "" where they are."""
    if packets.pix_fmt not in EQUAL_PIXEL_FORMATS:
        return _unchecked_pixel_format(packets.pix_fmt)
    if len(packets.pts) != num_frames:
        return f"PyAV counts {len(packets.pts)} frames, decord {num_frames}"
    sorted_pts = np.sort(np.asarray(packets.pts, dtype=np.int64))
    if len(np.unique(sorted_pts)) != len(sorted_pts):
        return "several frames share a timestamp"
    seconds = sorted_pts * float(packets.time_base)
    if not np.allclose(seconds, frame_starts, rtol=0, atol=1e-3):
        return "PyAV's frame times differ from decord's"
    return ""


def decode_order_differs(path: str | Path, decord_keyframes: np.ndarray) -> bool:
    """Whether decord's keyframe indices (decoding order) differ from the keyframes' places in
    display order: on such open-GOP streams decord's skipping and seeking return shifted
    frames. ``False`` where PyAV is missing or cannot read the file (nothing is known)."""
    try:
        av = import_av()
    except ConfigError:
        return False
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return False
            stream = container.streams.best("video")
            packets = [(packet.pts, packet.is_keyframe) for packet in container.demux(stream) if packet.pts is not None]
    except av.error.FFmpegError:
        return False
    pts, keys = zip(*packets) if packets else ((), ())
    _, keyframes = _display_order(pts, keys)
    return not np.array_equal(np.asarray(decord_keyframes), keyframes)


def _unchecked_pixel_format(pix_fmt: str | None) -> str:
    return f"pixel format {pix_fmt} (PyAV's RGB conversion is only checked equal to decord's for 8-bit YUV)"


def _display_order(pts, keys) -> tuple[np.ndarray, np.ndarray]:
    """Packets' pts sorted into display order, and the display-order indices of the keyframes."""
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    keyframes = np.nonzero(np.asarray(keys, dtype=bool)[order])[0]  # ascending already
    return np.asarray(pts, dtype=np.int64)[order], keyframes


def _rgb(frame, threads: int) -> np.ndarray:
    """The frame as decord shows it: RGB, turned by the stream's display rotation.

    ``threads``: libswscale's threads for the conversion; PyAV >= 17 otherwise starts one per
    CPU, next to the model's own threads.
    """
    image = frame.to_ndarray(format="rgb24", threads=threads)
    quarter_turns = (int(round(frame.rotation / 90.0)) % 4) if frame.rotation else 0
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


def iter_frame_chunks_pyav(
    path: str | Path,
    plan: PyAVPlan,
    indices: np.ndarray,
    *,
    chunk_frames: int,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    threads: int = 1,
) -> Chunks:
    """Yield ``(indices, frames)`` for ``indices`` (playback order) of the planned stream.

    Decodes forward in playback order and seeks only when the next wanted frame lies beyond
    a keyframe that the decoder has not reached (seeking then saves decoding everything up to
    that keyframe).
    """
    return chunk_decoded_frames(indices, lambda unique: _pyav_frames(path, plan, unique, threads),
                                chunk_frames=chunk_frames, transform=transform)


def _skippable(context) -> bool:
    """Whether the stream's unreferenced frames can be skipped without changing the others.

    HEVC's "sub-layer non-reference" pictures, which FFmpeg skips, are references for the
    pictures of higher temporal sub-layers; so HEVC only where its configuration record
    (hvcC, in MP4 and Matroska) says there is one temporal sub-layer.
    """
    if context.name not in SKIPPABLE_CODECS:
        return False
    return context.name != "hevc" or hevc_temporal_layers(context.extradata) == 1


def hevc_temporal_layers(extradata: bytes | None) -> int | None:
    """numTemporalLayers of an HEVC decoder configuration record; ``None`` where not known."""
    if not extradata or len(extradata) < 23 or extradata[0] != 1:
        return None  # no hvcC (e.g. Annex B parameter sets in the stream)
    return (extradata[21] >> 3) & 0x07 or None  # 0: "unknown"


def _decoded(container, stream, wanted: set[int] | None) -> Iterator:
    """The stream's frames from the container's position on; with ``wanted`` (pts), frames
    outside it that are not references for others are skipped instead of decoded (x264's
    defaults make about half of a B-frame-rich stream such frames)."""
    context = stream.codec_context
    for packet in container.demux(stream):
        if wanted is not None:  # the flush packet has no pts: it drains the decoder in full
            context.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
        yield from packet.decode()


def _open_stream(container, plan: PyAVPlan, threads: int):
    stream = next(s for s in container.streams.video if s.index == plan.stream_index)
    stream.thread_count = threads
    if threads > 1:
        # frame threads as well as slice threads (PyAV's default is slices only, which gains
        # nothing on the usual one slice per frame); FFmpeg hands each frame thread the
        # caller's skip_frame with the packet it submits, so skipping stays per packet
        stream.thread_type = "AUTO"
    return stream


def _pyav_frames(path: str | Path, plan: PyAVPlan, unique: np.ndarray, threads: int) -> Iterator[tuple[int, np.ndarray]]:
    """PyAV's RGB frames at ``unique`` (sorted, distinct indices), matched by pts."""
    av = import_av()
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:  # it opened for the plan; changed or vanished since
        raise decode_failure(path, str(exc)) from exc
    try:
        stream = _open_stream(container, plan, threads)
        # frames that no other frame refers to and that are not sampled are not decoded
        wanted = set(plan.pts[unique].tolist()) if _skippable(stream.codec_context) else None
        frames_out: Iterator | None = None
        position = 0  # frame index of the next frame the decoder returns
        for frame_index in unique.tolist():
            target = int(plan.pts[frame_index])
            key_before = plan.keyframes[plan.keyframes <= frame_index]
            key = int(key_before[-1]) if len(key_before) else 0
            try:
                if frames_out is None or frame_index < position or key > position:
                    container.seek(int(plan.pts[key]), stream=stream, backward=True, any_frame=False)
                    frames_out = _decoded(container, stream, wanted)
                    position = key
                while True:
                    frame = next(frames_out)
                    if frame.pts is None or frame.pts < target:
                        continue  # decoded as a reference only, never converted
                    if frame.pts > target:
                        raise VideoDecodeError(
                            f"frame {frame_index} is missing from the stream (decoding jumped past it)",
                            path=path, reason="truncated",
                        )
                    break
            except StopIteration:
                raise video_ended_early(frame_index, path) from None
            except av.error.FFmpegError as exc:
                raise decoding_failed(frame_index, path, exc) from exc
            position = frame_index + 1
            yield frame_index, _rgb(frame, threads)
    finally:
        container.close()


def probe(path: str | Path, *, threads: int = 1) -> tuple[PyAVPlan, VideoInfo]:
    """PyAV's own probe of a video with one video stream, the frame times computed as decord
    computes them: float32 seconds since the stream's start time, from each packet's pts
    (start) and pts + duration (end). One frame is decoded, for the size as shown."""
    path = Path(path)
    check_input_file(path)
    refuse_cut_mp4(path)
    refuse_cut_matroska(path)
    candidates = _read_packets(path, None)
    packets = candidates[0]
    if packets.pix_fmt not in EQUAL_PIXEL_FORMATS:
        raise Unsuitable(_unchecked_pixel_format(packets.pix_fmt))
    if not packets.pts:
        raise VideoDecodeError("video has no frames", path=path, reason="zero-frames")
    plan = packets.plan()
    if len(np.unique(plan.pts)) != len(plan.pts):
        raise Unsuitable("several frames share a timestamp")
    order = np.argsort(np.asarray(packets.pts, dtype=np.int64), kind="stable")
    start = packets.start_time or 0
    factor = float(packets.time_base)
    starts = np.asarray([(p - start) * factor for p in plan.pts.tolist()], dtype=np.float32).astype(np.float64)
    ends = np.asarray([(e - start) * factor for e in np.asarray(packets.ends)[order].tolist()],
                      dtype=np.float32).astype(np.float64)
    frames = _pyav_frames(path, plan, np.array([0]), threads)
    try:
        first = next(frames)[1]
    finally:
        frames.close()  # closes the container
    native_fps = float(packets.rate) if packets.rate else 0.0
    ends = np.where(ends > starts, ends, starts + (1.0 / native_fps if native_fps > 0 else 0.0))
    info = VideoInfo(path=str(path), num_frames=len(plan.pts), native_fps=native_fps, duration=float(ends.max()),
                     width=int(first.shape[1]), height=int(first.shape[0]), frame_starts=starts, frame_ends=ends,
                     decoder="pyav")
    return plan, info


class PyAVVideo(OpenVideo):
    """A video whose planned stream PyAV decodes; nothing runs between calls, so there is
    nothing to suspend while the consumer waits."""

    def __init__(self, path: str | Path, plan: PyAVPlan, info: VideoInfo, threads: int):
        super().__init__(info)
        self.path, self.plan, self.threads = path, plan, threads

    def chunks(self, indices, *, chunk_frames=DEFAULT_CHUNK_FRAMES, transform=None) -> Chunks:
        return iter_frame_chunks_pyav(self.path, self.plan, indices, chunk_frames=chunk_frames,
                                      transform=transform, threads=self.threads)


class PyAVDecoder(Decoder):
    name = "pyav"
    title = "PyAV"
    reference = "decord"

    def check(self) -> None:
        import_av()

    def open(self, path, *, threads=1, like=None) -> OpenVideo:
        if like is None:
            plan, info = probe(path, threads=threads)
            return PyAVVideo(path, plan, info, threads)
        plan, why_not = pyav_plan(path, like.num_frames, like.frame_starts, (like.width, like.height))
        if plan is None:
            raise Unsuitable(why_not)
        return PyAVVideo(path, plan, like, threads)


register(PyAVDecoder())
