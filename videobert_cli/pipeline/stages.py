"""The video stage (decode -> preprocess -> encode); text and fusion are in
:mod:`videobert_cli.pipeline.text_stages`.

Each stage owns its model, built once and reused for every input. Stages return in-memory
feature containers; writing is the runner's business.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from videobert_cli.config import PipelineConfig
from videobert_cli.devices import (
    apply_torch_threads, default_decode_threads, default_decode_workers, resolve_device, resolve_precision,
)
from videobert_cli.errors import ConfigError
from videobert_cli.features import VideoFeatures
from videobert_cli.decoders.base import VideoInfo
from videobert_cli.decoders.sampling import plan_clips, plan_sampling
from videobert_cli.pipeline.decoding import (  # noqa: F401  (CropChunk, decode_crops re-exported)
    DEFAULT_CHUNK_FRAMES, CropChunk, DecodeRequest, check_frame_decoder, decode_crops, read_ahead,
)
from videobert_cli.pipeline.overlap import DecodePlan
from videobert_cli.pipeline.timing import StageTimer
from videobert_cli.video.encoder import FrameEncoder
from videobert_cli.video.export_card import ExportCard, card_path, read_card
from videobert_cli.video.models import load_video_model, may_have_export_card
from videobert_cli.video.runtimes import ONNXRUNTIME, choose_runtime


def _timed_stream(stream: Iterator[CropChunk], timer: StageTimer) -> Iterator[CropChunk]:
    """``stream``'s chunks; the time spent waiting for them is the "idle" stage."""
    while True:
        waited = time.perf_counter()
        chunk = next(stream, None)
        timer.add("idle", time.perf_counter() - waited)
        if chunk is None:
            return
        yield chunk


def resolve_sampling(sampling, kind: str, model_name: str, clip_len: int | None = None):
    """The sampling a model of ``kind`` uses: clip defaults for clip models (the clip length the
    model was built for, where it says); refuse mismatches."""
    if kind == "clip":
        if clip_len is not None and sampling.clip_len is None:
            sampling = replace(sampling, clip_len=clip_len)
        return sampling.for_clips()
    if sampling.asks_for_clips:
        raise ConfigError(
            f"clip_len/clip_fps/clip_stride/drop_tail need a clip model, but {model_name!r} encodes single frames",
            hint="choose a clip model (s3d, r3d_18, r2plus1d_18, mc3_18, mvit_v2_s) or sample frames by fps/num_frames",
        )
    return sampling


class VideoStage:
    """Frame sampling and CNN features for whole videos."""

    def __init__(self, config: PipelineConfig, *, device: str | None = None):
        check_frame_decoder(config.runtime.decoder)
        apply_torch_threads(config.runtime.num_threads)
        self.config = config
        self.device = resolve_device(device or config.runtime.device)
        self.precision = resolve_precision(config.runtime.precision, self.device)
        self.card_path = card_path(config.video_model) if may_have_export_card(config.video_model.name) else None
        self._card = self._export_card()
        # with a card, the torch model is built only if ONNX Runtime turns out to need it
        self.model = self._card.model if self._card is not None else load_video_model(config.video_model)
        self.sampling = resolve_sampling(config.sampling, self.model.kind, self.model.name, self.model.clip_len)
        self._encoder: FrameEncoder | None = None
        self._encoder_error: BaseException | None = None
        # the encoder (ONNX Runtime's check and session: ~1 s for ResNet-50) is built in a thread,
        # beside the first videos' decoding, which needs only the model's preprocessing
        # (not a daemon: ONNX Runtime aborts the process if it exits in the middle of a build)
        self._encoder_build = threading.Thread(target=self._build_encoder, name="videobert-encoder-build")
        self._encoder_build.start()

    def _export_card(self) -> ExportCard | None:
        """The card of this model's verified export, where ONNX Runtime will run it."""
        if self.card_path is None:
            return None
        try:
            runtime = choose_runtime(self.config.runtime.model_runtime, device=self.device,
                                     precision=self.precision, kind="frame")
        except ConfigError:  # an explicit onnxruntime that cannot apply: the encoder says why
            return None
        return read_card(self.card_path) if runtime == ONNXRUNTIME else None

    def _build_encoder(self) -> None:
        try:
            self._encoder = FrameEncoder(self.model, device=self.device, precision=self.precision,
                                         model_runtime=self.config.runtime.model_runtime,
                                         reload=lambda: load_video_model(self.config.video_model).module,
                                         card=self._card, card_path=self.card_path)
        except BaseException as error:  # raised by ready(), in the caller's thread
            self._encoder_error = error

    def ready(self) -> "VideoStage":
        """Wait for the encoder; raise what building it raised (a model runtime that fails)."""
        self._encoder_build.join()
        if self._encoder_error is not None:
            raise self._encoder_error
        return self

    @property
    def encoder(self) -> FrameEncoder:
        self.ready()
        return self._encoder

    @property
    def feature_dim(self) -> int:
        return self.model.feature_dim

    def identity(self) -> dict:
        return self.model.identity()

    @contextlib.contextmanager
    def _cores_while_decoder_is_behind(self):
        """torch threads for one batch: one fewer than usual while the decoder is the bottleneck.

        The decoder (one thread, in the decode worker or the read-ahead thread) and torch's
        intra-op threads share the CPU. When frames are queued the decoder is idle, so the
        model takes every core; when the model has caught up with the decoder, a thread per
        core for the model would take CPU time from the decoder, which is now what limits the
        run. Only when torch runs the model on the CPU with its default thread count
        (``--threads`` pins it).
        """
        if self.config.runtime.num_threads or self.device != "cpu" or not self.encoder.runner.in_torch:
            yield
            return
        import torch

        threads = torch.get_num_threads()
        if threads < 2:
            yield
            return
        torch.set_num_threads(threads - 1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def encode_chunks(
        self, info: VideoInfo, chunks: Iterator[CropChunk], timer: StageTimer, *, path: str = ""
    ) -> VideoFeatures:
        """Encode streamed crop chunks in full batches; decode runs ahead in a thread."""
        if self.model.kind == "clip":
            return self._encode_clips(info, chunks, timer, path=path)
        batches = SharedBatches(self)
        pending = self.stream_into(batches, info, chunks, timer, path=path)
        batches.flush()
        return pending.result()  # raises the model's error, if any

    def stream_into(
        self, batches: "SharedBatches", info: VideoInfo, chunks: Iterator[CropChunk], timer: StageTimer,
        *, path: str = "",
    ) -> "PendingVideo":
        """Queue a video's crops into ``batches``, encoding every full batch on the way.

        ``batches`` may already hold the last frames of earlier videos (cross-video batching:
        a short video's frames fill the batch the previous video left partly empty), and this
        video's last frames may stay queued for the next one; the returned
        :class:`PendingVideo` is complete once they are encoded. On an error, this video's
        queued frames are dropped (the earlier videos' stay) before it propagates.
        """
        if self.model.kind == "clip":
            raise ValueError("clip models encode whole clips; use encode_chunks")
        pending = PendingVideo(self, info, path, timer)
        batch_size = self.config.runtime.batch_size
        # after the last planned frame the stream ends, and the frames wait for the next video's
        # instead of being encoded as a partial batch
        expected = len(self._planned(info))
        received = 0
        stream = read_ahead(chunks)
        try:
            for chunk in _timed_stream(stream, timer):
                batches.add(pending, chunk)
                received += len(chunk.crops)
                if batches.rows >= batch_size:
                    batches.flush_full()
                elif received < expected and not stream.ready():
                    # The decoder is behind: waiting for a full batch would leave the model
                    # idle now and a whole batch to encode after the last frame is decoded.
                    # Encode what is here instead, leaving the decoder a core.
                    with self._cores_while_decoder_is_behind():
                        batches.flush()
                if pending.error is not None:
                    raise pending.error
        except BaseException:
            batches.drop(pending)
            raise
        pending.stream_done = True
        return pending

    def _planned(self, info: VideoInfo) -> np.ndarray:
        """The frames the decoder planned (planned here only for an info from elsewhere)."""
        return info.sampled if info.sampled is not None else plan_sampling(info, self.sampling)

    def _encode_clips(self, info: VideoInfo, chunks: Iterator[CropChunk], timer: StageTimer, *, path: str) -> VideoFeatures:
        """Group streamed frames into clips (bounded buffer) and encode batches of clips."""
        import torch

        sampling = self.sampling
        num_sampled = len(self._planned(info))
        origin = float(np.min(info.frame_starts))
        plan = plan_clips(num_sampled, sampling, origin=origin, duration=info.duration)
        clips_per_batch = max(1, self.config.runtime.batch_size // sampling.clip_len)
        frames: list["torch.Tensor"] = []  # sampled crops not yet released
        frame_indices: list[int] = []
        first_kept = 0  # sampled-frame number of frames[0]
        features: list[np.ndarray] = []
        pending: list["torch.Tensor"] = []
        clip_frame_indices = np.zeros((len(plan.starts), sampling.clip_len), dtype=np.int64)
        next_clip = 0

        def flush() -> None:
            nonlocal pending
            if pending:
                with timer.stage("encode"):
                    features.append(self.encoder.encode(torch.stack(pending)))
                pending = []

        def emit_ready(final: bool) -> None:
            nonlocal next_clip, first_kept, frames, frame_indices
            available = first_kept + len(frames)
            while next_clip < len(plan.starts):
                start, real = int(plan.starts[next_clip]), int(plan.real_frames[next_clip])
                if start + real > available:
                    break
                if start + real < start + sampling.clip_len and not final and available < num_sampled:
                    break  # a padded tail clip waits for the end of the stream
                local = [start - first_kept + k for k in range(real)]
                clip = [frames[i] for i in local] + [frames[local[-1]]] * (sampling.clip_len - real)
                clip_frame_indices[next_clip] = [frame_indices[i] for i in local] + [frame_indices[local[-1]]] * (
                    sampling.clip_len - real)
                pending.append(torch.stack(clip))
                next_clip += 1
                if len(pending) >= clips_per_batch:
                    flush()
            # release frames no later clip needs
            keep_from = int(plan.starts[next_clip]) if next_clip < len(plan.starts) else available
            drop = max(0, keep_from - first_kept)
            frames, frame_indices, first_kept = frames[drop:], frame_indices[drop:], first_kept + drop

        for chunk in _timed_stream(read_ahead(chunks), timer):
            frames.extend(torch.from_numpy(chunk.crops).unbind(0))
            frame_indices.extend(int(i) for i in chunk.frame_indices)
            emit_ready(final=False)
        emit_ready(final=True)
        flush()
        return VideoFeatures(
            features=np.concatenate(features) if features else np.zeros((0, self.feature_dim), np.float32),
            timestamps=plan.start_times.astype(np.float64),
            frame_indices=clip_frame_indices[:, 0].copy(),
            attrs={
                **self.identity(),
                "sampling": sampling.to_dict(),
                "precision": self.precision,
                "model_runtime": self.encoder.runtime,
                "source_path": str(path),
                "tail_rule": "dropped (--drop-tail)" if sampling.drop_tail else "padded by repeating the last frame",
                **info.to_attrs(),
            },
            extra={
                "clip_end": plan.end_times.astype(np.float64),
                "clip_real_frames": plan.real_frames.astype(np.int64),
                "clip_frame_indices": clip_frame_indices,
            },
        )

    def extract(self, path: str | Path, timer: StageTimer | None = None) -> VideoFeatures:
        """Features of the sampled frames of one video."""
        timer = timer or StageTimer()
        info, chunks = decode_crops(path, self.decode_config, self.model.preprocessing, timer=timer)
        return self.encode_chunks(info, chunks, timer, path=str(path))

    def _cpus_and_gpus(self) -> tuple[int, int]:
        from videobert_cli.pipeline.decode_worker import worker_cpu_count

        if not self.device.startswith("cuda"):
            return worker_cpu_count(), 0
        import torch

        return worker_cpu_count(), torch.cuda.device_count()

    @functools.cached_property
    def decode_workers(self) -> int:
        """Decode worker processes feeding this model (``RuntimeConfig.decode_workers``); decided
        once, as the default reads the memory available now."""
        if self.config.runtime.decode_workers is not None:
            return self.config.runtime.decode_workers
        return default_decode_workers(self.device, *self._cpus_and_gpus())

    @property
    def decode_config(self) -> PipelineConfig:
        """The configuration the decoder needs (sampling resolved for this model's kind, decoding
        threads for this model's device, shared by its decode workers)."""
        runtime = self.config.runtime
        if runtime.decode_threads is None:
            cpus, gpus = self._cpus_and_gpus()
            threads = default_decode_threads(self.device, max(1, cpus // self.decode_workers), gpus)
            runtime = replace(runtime, decode_threads=threads)
        return self.config.with_(sampling=self.sampling, runtime=runtime)

    def decode_request(self, path: str | Path, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> DecodeRequest:
        """What a decode worker or task needs for ``path`` (and nothing else of the configuration)."""
        return DecodeRequest.of(path, self.decode_config, self.model.preprocessing, chunk_frames)

    def decode_plan(self, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> DecodePlan:
        """How this stage's videos are decoded by a :class:`~videobert_cli.pipeline.overlap.DecodeFeed`."""
        from videobert_cli.pipeline.decode_worker import decoder_niceness

        return DecodePlan(self.decode_request("", chunk_frames), self.decode_workers, decoder_niceness(self.device))


class PendingVideo:
    """One video's features as they are encoded, possibly in batches shared with other videos."""

    def __init__(self, stage: VideoStage, info: VideoInfo, path: str, timer: StageTimer):
        self.stage = stage
        self.info = info
        self.path = path
        self.timer = timer  # gets this video's share of the time of every batch it is in
        self.indices: list[np.ndarray] = []
        self.stamps: list[np.ndarray] = []
        self.features: list[np.ndarray] = []
        self.queued = 0  # frames waiting in a batch
        self.stream_done = False
        self.error: Exception | None = None  # the model failed on this video's frames

    @property
    def complete(self) -> bool:
        """Every frame is decoded and encoded, or encoding failed (:meth:`result` raises)."""
        return self.error is not None or (self.stream_done and self.queued == 0)

    def fail(self, error: Exception) -> None:
        """The model failed on this video's frames: its features are lost."""
        self.error = error
        self.features, self.queued = [], 0

    def result(self) -> VideoFeatures:
        """The video's features (call once :attr:`complete`); raises the model's error if any."""
        if self.error is not None:
            raise self.error
        if not self.complete:
            raise RuntimeError(f"{self.path}: features requested before all frames were encoded")
        stage = self.stage
        return VideoFeatures(
            features=np.concatenate(self.features) if self.features else np.zeros((0, stage.feature_dim), np.float32),
            timestamps=np.concatenate(self.stamps) if self.stamps else np.zeros(0),
            frame_indices=np.concatenate(self.indices).astype(np.int64) if self.indices else np.zeros(0, np.int64),
            attrs={
                **stage.identity(),
                "sampling": stage.sampling.to_dict(),
                "precision": stage.precision,
                "model_runtime": stage.encoder.runtime,
                "source_path": str(self.path),
                **self.info.to_attrs(),
            },
        )


def _released(error: BaseException) -> BaseException:
    """``error`` with the local variables of its traceback's frames dropped.

    Those frames hold the failed batch and the model's activations; kept alive by the error, an
    out-of-memory batch would still occupy the GPU's memory while its videos are retried alone
    and until the failed video is recorded. File names and line numbers stay.
    """
    traceback.clear_frames(error.__traceback__)
    return error


class SharedBatches:
    """Crops waiting for the model, from one video or several in a row.

    Batches are encoded in arrival order, so every video's features come back in frame order;
    a batch that spans videos is split by owner after the forward pass (the model treats
    frames independently, so sharing a batch does not change anyone's features).
    """

    def __init__(self, stage: VideoStage):
        self.stage = stage
        self._parts: list[tuple[PendingVideo, np.ndarray]] = []
        self.rows = 0

    def add(self, owner: PendingVideo, chunk: CropChunk) -> None:
        """Queue ``chunk``'s crops for ``owner``."""
        owner.indices.append(chunk.frame_indices)
        owner.stamps.append(chunk.timestamps)
        owner.queued += len(chunk.crops)
        self._parts.append((owner, chunk.crops))
        self.rows += len(chunk.crops)

    def flush(self) -> None:
        """Encode everything queued (each video's timer gets its share of the "encode" time).

        A model error (out of memory, ...) is not raised here but given to the videos it
        concerns (:attr:`PendingVideo.error`): if the batch held several videos, each one's
        frames are encoded again on their own, so only the video that fails alone fails.
        """
        if not self._parts:
            return
        parts, self._parts, self.rows = self._parts, [], 0
        self._encode(parts)

    def flush_full(self) -> None:
        """Encode batches of exactly ``batch_size`` frames while that many are queued (a chunk
        that straddles the batch boundary is split), so the model always sees one shape."""
        batch_size = self.stage.config.runtime.batch_size
        while self.rows >= batch_size:
            taken, count = [], 0
            while count < batch_size:
                owner, crops = self._parts[0]
                room = batch_size - count
                if len(crops) <= room:
                    taken.append(self._parts.pop(0))
                    count += len(crops)
                else:
                    taken.append((owner, crops[:room]))
                    self._parts[0] = (owner, crops[room:])
                    count += room
            self.rows -= count
            self._encode(taken)

    def _encode(self, parts: list[tuple[PendingVideo, np.ndarray]]) -> None:
        try:
            features = self._timed_encode(parts)
        except Exception as error:
            failure = _released(error)
        else:
            offset = 0
            for owner, crops in parts:
                owner.features.append(features[offset : offset + len(crops)])
                owner.queued -= len(crops)
                offset += len(crops)
            return
        # out of the except block, so the failed forward pass is gone when the retries start
        owners = list(dict.fromkeys(owner for owner, _ in parts))
        if len(owners) == 1:
            owners[0].fail(failure)
            return
        for owner in owners:
            mine = [(o, crops) for o, crops in parts if o is owner]
            try:
                owner.features.append(self._timed_encode(mine))
                owner.queued -= sum(len(crops) for _, crops in mine)
            except Exception as own_error:
                owner.fail(_released(own_error))

    def _timed_encode(self, parts: list[tuple[PendingVideo, np.ndarray]]) -> np.ndarray:
        """One forward pass; each video's "encode" time gets its share of it, by frames."""
        started = time.perf_counter()
        try:
            return self.stage.encoder.encode(np.concatenate([crops for _, crops in parts]))
        finally:
            seconds = time.perf_counter() - started
            total = sum(len(crops) for _, crops in parts)
            for owner, crops in parts:
                owner.timer.add("encode", seconds * len(crops) / total)

    def drop(self, owner: PendingVideo) -> None:
        """Forget ``owner``'s queued frames (its video failed)."""
        kept = [(o, crops) for o, crops in self._parts if o is not owner]
        owner.queued = 0
        self._parts, self.rows = kept, sum(len(crops) for _, crops in kept)

