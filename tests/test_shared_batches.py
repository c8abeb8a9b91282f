"""Cross-video batching: short videos fill the model's batches together (issue 4)."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

import synth
from videobert_cli.config import PipelineConfig, RuntimeConfig, SamplingConfig, VideoModelConfig
from videobert_cli.pipeline.decoding import CropStream, decode_crops
from videobert_cli.pipeline.stages import SharedBatches, VideoStage
from videobert_cli.pipeline.timing import StageTimer


class _DecodedAhead(CropStream):
    """Chunks that are all decoded already: the stream is always ready (the model is the bottleneck)."""

    def __init__(self, chunks):
        self._chunks = list(chunks)
        super().__init__(iter(self._chunks))

    def read_ahead(self):
        chunks = iter(self._chunks)

        class Ready:
            def __iter__(self):
                return self

            def __next__(self):
                return next(chunks)

            def ready(self):
                return True

        return Ready()


@pytest.fixture(scope="module")
def stage_and_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("short")
    videos = [synth.make_video(folder / f"v{i}.mp4", num_frames=n, fps=10) for i, n in enumerate((10, 7, 3, 12, 9))]
    config = PipelineConfig(
        sampling=SamplingConfig(fps=10.0),
        video_model=VideoModelConfig(name="mobilenet_v3_small", weights="none", seed=0),
        runtime=RuntimeConfig(device="cpu", precision="fp32", batch_size=16),
    )
    return VideoStage(config), videos


def _decoded(stage, path):
    info, chunks = decode_crops(path, stage.decode_config, stage.model.preprocessing, chunk_frames=4)
    return info, _DecodedAhead(chunks)


def test_short_videos_share_full_batches_and_keep_their_features(stage_and_videos):
    stage, videos = stage_and_videos
    alone = [stage.encode_chunks(*_decoded(stage, path), StageTimer(), path=str(path)) for path in videos]

    sizes = []
    real_encode = stage.encoder.encode
    stage.encoder.encode = lambda crops: (sizes.append(len(crops)), real_encode(crops))[1]
    try:
        batches = SharedBatches(stage)
        timers = [StageTimer() for _ in videos]
        pending = [stage.stream_into(batches, *_decoded(stage, path), timer, path=str(path))
                   for path, timer in zip(videos, timers)]
        assert not pending[-1].complete  # the last frames wait for a next video...
        batches.flush()  # ...or the end of the run
    finally:
        stage.encoder.encode = real_encode

    # 41 frames in batches of 16: every batch full but the last, although no video has 16 frames
    assert sizes == [16, 16, 9]
    # every video gets its share of the encoding time of the batches it was in
    assert all(timer.as_dict().get("encode", 0) > 0 for timer in timers)
    for shared, single in zip(pending, alone):
        assert shared.complete
        result = shared.result()
        np.testing.assert_array_equal(result.frame_indices, single.frame_indices)
        np.testing.assert_array_equal(result.timestamps, single.timestamps)
        np.testing.assert_allclose(result.features, single.features, rtol=0, atol=1e-5)
        assert result.attrs["source_path"] == single.attrs["source_path"]


def test_a_failing_shared_batch_is_retried_per_video(stage_and_videos, tmp_path):
    """The model fails on a batch holding two videos; each is encoded again alone and only the
    one that fails alone loses its features."""
    stage, videos = stage_and_videos
    # synth frames depend on the frame number only: another size makes other crops
    other = synth.make_video(tmp_path / "other.mp4", num_frames=3, fps=10, width=96, height=64)
    real_encode = stage.encoder.encode
    poisoned: set[bytes] = set()
    calls = []

    def encode(crops):
        calls.append(len(crops))
        if any(np.asarray(crop).tobytes() in poisoned for crop in crops):
            raise RuntimeError("out of memory")
        return real_encode(crops)

    batches = SharedBatches(stage)
    first = stage.stream_into(batches, *_decoded(stage, videos[0]), StageTimer(), path="first")
    info, stream = _decoded(stage, other)
    poisoned.update(crop.tobytes() for chunk in stream._chunks for crop in chunk.crops)
    stage.encoder.encode = encode
    try:
        # 10 + 3 frames < 16: nothing is encoded until the flush at the end
        second = stage.stream_into(batches, info, stream, StageTimer(), path="second")
        batches.flush()
        with pytest.raises(RuntimeError, match="out of memory"):
            second.result()
    finally:
        stage.encoder.encode = real_encode
    assert calls == [13, 10, 3]  # the shared batch, then each video alone
    assert first.complete and len(first.result().features) == 10
    assert second.complete and second.error is not None


def test_a_failed_batch_is_released_before_its_videos_are_retried(stage_and_videos):
    """On a GPU the failed forward pass's batch and activations hold the memory that ran out:
    the retries of each video alone, and the failed video's recorded error, must not keep them."""
    stage, videos = stage_and_videos
    real_encode = stage.encoder.encode
    failed_batches: list[weakref.ref] = []
    alive_during_retries: list[bool] = []

    def encode(crops):
        activations = torch.empty(256, 1024)  # stands for the batch on the GPU and its activations
        if not failed_batches or len(crops) == 3:  # the shared batch, then the second video alone
            failed_batches.append(weakref.ref(activations))
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        alive_during_retries.append(failed_batches[0]() is not None)
        return real_encode(crops)

    batches = SharedBatches(stage)
    stage.encoder.encode = encode
    try:
        first = stage.stream_into(batches, *_decoded(stage, videos[0]), StageTimer(), path="first")
        second = stage.stream_into(batches, *_decoded(stage, videos[2]), StageTimer(), path="second")
        batches.flush()
    finally:
        stage.encoder.encode = real_encode
    assert alive_during_retries == [False]  # the first video's retry ran after the batch was gone
    assert len(first.result().features) == 10
    assert second.error is not None and "out of memory" in str(second.error)
    assert [ref() for ref in failed_batches] == [None, None]  # not even the kept error holds one
