"""Bounded read-ahead: a decoder that is closed while the encoder catches up, and reopened."""

from __future__ import annotations

import time

import numpy as np

import synth
from videobert_cli.pipeline.prefetch import prefetch
from videobert_cli.video.decode import ReaderHandle, iter_frame_chunks, open_video


def test_suspended_reader_reopens_and_yields_the_same_frames(tmp_path):
    path = synth.make_video(tmp_path / "v.mp4", width=64, height=48, fps=25, num_frames=120)
    wanted = np.arange(0, 120, 7)
    reference = np.concatenate([f for _, f in iter_frame_chunks(open_video(path), wanted, chunk_frames=3)])
    handle = ReaderHandle(open_video(path), lambda: open_video(path))
    got = []
    for count, (_, frames) in enumerate(iter_frame_chunks(handle, wanted, chunk_frames=3)):
        got.append(frames)
        handle.suspend()  # as the read-ahead does when its budget is full
    np.testing.assert_array_equal(np.concatenate(got), reference)
    assert handle.reopened == count  # reopened before every chunk but the first


def test_prefetch_byte_budget_calls_on_full_and_waits():
    produced, full_calls = [], []

    def items():
        for index in range(20):
            produced.append(index)
            yield index

    stream = prefetch(items(), depth=100, max_bytes=5, on_full=lambda: full_calls.append(len(produced)),
                      size_of=lambda item: 1)
    first = next(stream)  # starts the producer
    time.sleep(0.3)
    assert len(produced) <= 7 and full_calls  # stopped at the budget and said so
    assert [first, *stream] == list(range(20))  # nothing lost or reordered
