"""Bounded read-ahead: a decoder that is closed while the encoder catches up, and reopened."""

from __future__ import annotations

import time

import numpy as np

import synth
from videobert_cli.pipeline.prefetch import prefetch
from videobert_cli.decoders.decord import ReaderHandle, iter_frame_chunks
from videobert_cli.decoders.decord import open_reader as open_video


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


def test_encoder_takes_what_is_there_when_the_decoder_is_behind(tmp_path):
    """A slow decoder: the encoder does not wait for a full batch; it encodes each chunk as it
    comes, on one torch thread fewer (the decoder's core; torch's threads, so with torch as the
    runtime), and the features do not change."""
    import torch

    from videobert_cli.config import PipelineConfig, RuntimeConfig, SamplingConfig, VideoModelConfig
    from videobert_cli.pipeline.decoding import CropChunk, decode_crops
    from videobert_cli.pipeline.stages import VideoStage
    from videobert_cli.pipeline.timing import StageTimer

    path = synth.make_video(tmp_path / "v.mp4", width=64, height=48, fps=10, num_frames=40)
    config = PipelineConfig(
        sampling=SamplingConfig(fps=10.0),
        video_model=VideoModelConfig(name="mobilenet_v3_small", weights="none", seed=0),
        runtime=RuntimeConfig(device="cpu", precision="fp32", batch_size=32, model_runtime="torch"),
    )
    stage = VideoStage(config)
    info, chunks = decode_crops(path, stage.decode_config, stage.model.preprocessing, chunk_frames=4)
    decoded = list(chunks)
    assert sum(len(c.frame_indices) for c in decoded) == 40

    def slow_decoder():
        for chunk in decoded:
            time.sleep(0.2)  # far slower than encoding 4 tiny frames
            yield CropChunk(chunk.frame_indices, chunk.timestamps, chunk.crops)

    batches = []
    real_encode = stage.encoder.encode
    threads_before = torch.get_num_threads()

    def encode(crops):
        batches.append((len(crops), torch.get_num_threads()))
        return real_encode(crops)

    stage.encoder.encode = encode
    slow = stage.encode_chunks(info, slow_decoder(), StageTimer())
    assert max(size for size, _ in batches) < 32  # never waited for a full batch
    assert sum(size for size, _ in batches) == 40
    if threads_before >= 2:
        assert {threads for _, threads in batches[:-1]} == {threads_before - 1}
    assert torch.get_num_threads() == threads_before  # restored

    batches.clear()
    stage.encoder.encode = real_encode
    reference = stage.encode_chunks(info, iter(decoded), StageTimer())
    np.testing.assert_allclose(slow.features, reference.features, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(slow.frame_indices, reference.frame_indices)


def test_a_suspended_reader_is_really_released(tmp_path):
    """While the consumer holds a chunk, nothing but the handle may reference the reader: a
    suspension must free decord's reader (and the frames it decodes ahead into memory)."""
    import gc
    import weakref

    path = synth.make_video(tmp_path / "v.mp4", width=64, height=48, fps=25, num_frames=60)
    handle = ReaderHandle(open_video(path), lambda: open_video(path))
    chunks = iter_frame_chunks(handle, np.arange(0, 60, 2), chunk_frames=4)
    for _ in range(3):
        next(chunks)
        reader = weakref.ref(handle.get())
        handle.suspend()
        gc.collect()
        assert reader() is None, "the paused chunk iterator still holds the decord reader"
    assert sum(len(i) for i, _ in chunks) == 30 - 12  # and it goes on after reopening
