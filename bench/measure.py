"""One benchmark measurement per fresh interpreter: ``python -m bench.measure '<json spec>'``.

The last line of stdout is the JSON result. Running each measurement in its own process keeps
them independent (no warm caches, allocator state or thread pools carried over) and makes its
peak RSS its own. Kinds:

``decode``  decode + resize/crop only, exactly as the decode worker runs it
            (:func:`videobert_cli.pipeline.stages.decode_crops`, ``chunk_frames=16``,
            ``decode_threads=1``, ``torch.set_num_threads(1)``); no model.
``model``   :class:`videobert_cli.video.encoder.FrameEncoder` on pre-made uint8 crops, in
            batches of the pipeline's batch size; the first batch is a warm-up and not timed.
``e2e``     :func:`videobert_cli.api.run` on one video (decode worker process + encode +
            fusion + HDF5 write), after an untimed warm-up run on a short clip; peak RSS of
            this process and of its descendants (fork server, decode worker) by /proc polling.
``text``    :func:`videobert_cli.api.extract_text` on a long transcript vs the BERT forward
            alone over the same pre-tokenised, padded windows.
``fusion``  :func:`videobert_cli.fusion.model.fuse_one` time and peak RSS at one sequence length.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


# --- memory ---------------------------------------------------------------------------------
def _status_kb(pid: int | str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class PeakRss:
    """Polls VmHWM (peak RSS) of this process and every descendant, keyed by role.

    Roles: ``main`` (this process), ``forkserver`` (multiprocessing's fork server, a child),
    ``decode_worker`` (forked by the fork server), ``other`` (anything else, e.g. the
    resource tracker). VmHWM only grows, so polling every ``interval`` seconds loses at most
    the growth of a process in the last interval before it exits.
    """

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _role(self, pid: int, depth: int) -> str:
        if depth == 0:
            return "main"
        cmd = _cmdline(pid)
        if "resource_tracker" in cmd:
            return "other"
        if depth == 1 and "forkserver" in cmd:
            return "forkserver"
        if depth >= 2 and "forkserver" in cmd:
            return "decode_worker"
        return "other"

    def poll(self) -> None:
        children = _children_map()
        stack = [(os.getpid(), 0)]
        while stack:
            pid, depth = stack.pop()
            hwm = _status_kb(pid, "VmHWM")
            if hwm:
                role = self.peaks.get(pid, (self._role(pid, depth), 0))[0]
                self.peaks[pid] = (role, max(hwm, self.peaks.get(pid, ("", 0))[1]))
            stack.extend((child, depth + 1) for child in children.get(pid, []))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def by_role(self, exclude: set[int] = frozenset()) -> dict[str, float]:
        """Peak RSS in MB per role (max over processes of that role)."""
        out: dict[str, float] = {}
        for pid, (role, kb) in self.peaks.items():
            if pid in exclude:
                continue
            out[role] = max(out.get(role, 0.0), kb / 1024)
        return {k: round(v, 1) for k, v in out.items()}


def _threads() -> dict:
    import torch

    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))


# --- measurements --------------------------------------------------------------------------
def _video_config(spec: dict):
    from videobert_cli.config import PipelineConfig, RuntimeConfig, SamplingConfig, VideoModelConfig

    return PipelineConfig(
        sampling=SamplingConfig(fps=spec.get("fps", 1.0), num_frames=spec.get("num_frames")),
        video_model=VideoModelConfig(name=spec["model"], weights=spec.get("weights", "default")),
        runtime=RuntimeConfig(
            device=spec.get("device", "cpu"),
            precision=spec.get("precision", "fp32"),
            batch_size=spec.get("batch_size", 32),
            num_threads=spec.get("threads"),
            decoder=spec.get("decoder", "auto"),
            decode_threads=int(spec.get("decode_threads", 1)),
            model_runtime=spec.get("model_runtime", "auto"),
        ),
    )


def _apply_spec_threads(spec: dict) -> None:
    """torch intra-op threads of a model-side measurement (``--threads``; default: torch's)."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))


def measure_decode(spec: dict) -> dict:
    """Decode-only, as the worker does it; optionally save up to ``save_max`` crops."""
    import torch

    from videobert_cli.pipeline.stages import decode_crops
    from videobert_cli.pipeline.timing import StageTimer
    from videobert_cli.video.models import load_video_model

    torch.set_num_threads(1)  # what decode_worker._worker_main sets
    config = _video_config(spec)
    preprocessing = load_video_model(config.video_model).preprocessing
    timer = StageTimer()
    saved: list[np.ndarray] = []
    save_max = int(spec.get("save_max", 0))
    frames = 0
    started = time.perf_counter()
    cpu_started = time.process_time()  # all threads: decord decodes in a thread of its own
    info, chunks = decode_crops(spec["video"], config, preprocessing, chunk_frames=16, timer=timer)
    opened = time.perf_counter()
    for chunk in chunks:
        frames += len(chunk.frame_indices)
        if sum(len(s) for s in saved) < save_max:
            saved.append(chunk.crops.copy())
    seconds = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    if spec.get("save_crops") and saved:
        np.save(spec["save_crops"], np.concatenate(saved)[:save_max])
    return {
        "frames": frames,
        "decoded_frames_upto": int(info.num_frames),
        "seconds": seconds,
        "open_probe_s": opened - started,
        "fps": frames / seconds,
        "cpu_s": cpu_s,
        "stage": timer.as_dict(),
        "preprocessing": preprocessing.to_dict(),
        "peak_rss_mb": _status_kb("self", "VmHWM") / 1024,  # this process does the worker's job
        **_threads(),
    }


def measure_model(spec: dict) -> dict:
    """FrameEncoder on saved crops: warm-up batch excluded; features of one pass saved."""
    import torch

    from videobert_cli.video.encoder import FrameEncoder
    from videobert_cli.video.models import VideoModelConfig, load_video_model

    _apply_spec_threads(spec)
    device = spec.get("device", "cpu")
    crops = torch.from_numpy(np.load(spec["crops"]))
    batch = int(spec.get("batch_size", 32))
    load_started = time.perf_counter()
    model = load_video_model(VideoModelConfig(name=spec["model"], weights=spec.get("weights", "default")))
    encoder = FrameEncoder(model, device=device, precision=spec["precision"],
                           model_runtime=spec.get("model_runtime", "auto"))
    load_s = time.perf_counter() - load_started
    batches = [crops[i : i + batch] for i in range(0, len(crops), batch)]
    full = [b for b in batches if len(b) == batch] or batches

    features = []
    encoder.encode(full[0])  # warm-up (oneDNN primitive creation, cudnn autotune, ...)
    _sync(device)
    for b in batches:  # one pass over every crop: the features for the agreement check
        features.append(encoder.encode(b))
    if spec.get("save_features"):
        np.save(spec["save_features"], np.concatenate(features))
    # timed: full batches only, repeated until at least min_frames were encoded
    min_frames = int(spec.get("min_frames", 256))
    times: list[float] = []
    cpu_s = 0.0
    frames = 0
    while frames < min_frames:
        for b in full:
            _sync(device)
            started, cpu_started = time.perf_counter(), time.process_time()
            encoder.encode(b)
            _sync(device)
            times.append(time.perf_counter() - started)
            cpu_s += time.process_time() - cpu_started
            frames += len(b)
            if frames >= min_frames:
                break
    seconds = sum(times)
    return {
        "frames": frames,
        "seconds": seconds,
        "fps": frames / seconds,
        "cpu_s": cpu_s,  # all threads; on the CPU, how many cores the model really keeps busy
        "batch_ms_median": 1000 * float(np.median(times)),
        "load_s": load_s,
        "channels_last": encoder.runner.channels_last,
        "model_runtime": encoder.runtime,
        **_threads(),
    }


def _engine(spec: dict) -> dict:
    """``api.run``'s engine arguments for ``spec["engine"]`` (default: the local engine).

    For Ray, one local instance with every core serves the warm-up and the timed run (its start
    is then outside both), with ``spec["engine_options"]`` (default: the engine's defaults); a
    Ray run's record seconds are the model actor's time for the video.
    """
    if spec.get("engine", "local") == "local":
        return {}
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    return {"engine": spec["engine"], "engine_options": dict(spec.get("engine_options", {}))}


def _warm_up(config, spec: dict, work: Path) -> float:
    """An untimed run on ``spec["warmup_video"]`` (starts multiprocessing's fork server, which
    imports torch + decord once, and runs the model at the real batch shape); returns what a
    timed run pays once per batch run: building the video model, measured alone."""
    from videobert_cli import api
    from videobert_cli.config import SamplingConfig
    from videobert_cli.pipeline.report import RunOptions
    from videobert_cli.video.models import load_video_model

    if spec.get("warmup_video"):
        warm = config.with_(sampling=SamplingConfig(fps=None, num_frames=int(spec.get("batch_size", 32)) + 8))
        report = api.run([spec["warmup_video"]], work / "warmup", warm, RunOptions(force=True), stdin=io.StringIO(),
                         **_engine(spec))
        if report.records[0].status != "ok":
            raise RuntimeError(f"warm-up failed: {report.records[0].message}")
    started = time.perf_counter()
    load_video_model(config.video_model)
    return time.perf_counter() - started


def measure_e2e(spec: dict) -> dict:
    """api.run on one video after a warm-up run; record timings + peak RSS by process role."""
    from videobert_cli import api
    from videobert_cli.pipeline.report import RunOptions

    config = _video_config(spec)
    work = Path(tempfile.mkdtemp(prefix="videobert-bench-"))
    try:
        load_s = _warm_up(config, spec, work)

        import gc

        gc.collect()
        reset_ok = reset_peak_rss()
        before = PeakRss()
        before.poll()
        existing = {pid for pid, (role, _) in before.peaks.items() if role == "decode_worker"}
        load = os.getloadavg()
        with PeakRss() as peaks:
            started = time.perf_counter()
            report = api.run([spec["video"]], work / "out", config, RunOptions(force=True), stdin=io.StringIO(),
                             **_engine(spec))
            wall = time.perf_counter() - started
        record = report.records[0]
        if record.status != "ok":
            raise RuntimeError(f"run failed: {record.reason}: {record.message}")
        out_bytes = sum(p.stat().st_size for p in (work / "out").glob("*.h5"))
        rss = peaks.by_role(exclude=existing)
        return {
            "frames": record.frames,
            "seconds": record.seconds,  # what the manifest says for this input
            "wall_s": wall,  # api.run as a whole (planning, manifest, worker start/stop)
            "load_s": load_s,
            "fps": record.frames / record.seconds,
            "fps_excl_load": record.frames / max(record.seconds - load_s, 1e-9),
            "timings": record.timings,
            "peak_rss_mb": rss,
            "peak_rss_reset": reset_ok,
            "output_mb": out_bytes / 1e6,
            "loadavg_at_start": [round(x, 2) for x in load],
            **_threads(),
        }
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def measure_shorts(spec: dict) -> dict:
    """api.run on a folder of ``copies`` short videos: throughput and the batch sizes the model saw."""
    import shutil

    from videobert_cli import api
    from videobert_cli.pipeline.report import RunOptions
    from videobert_cli.video.encoder import FrameEncoder

    config = _video_config(spec)
    work = Path(tempfile.mkdtemp(prefix="videobert-bench-"))
    try:
        clips = work / "clips"
        clips.mkdir()
        for index in range(int(spec["copies"])):
            shutil.copy(spec["video"], clips / f"clip_{index:03d}.mp4")
        load_s = _warm_up(config, spec, work)

        sizes: list[int] = []
        real_encode = FrameEncoder.encode

        def counting_encode(self, crops):
            sizes.append(len(crops))
            return real_encode(self, crops)

        first_input = []

        class Observer:  # the clock starts at the first video, once every model is loaded
            def on_start(self, total): pass
            def on_message(self, message): pass
            def on_input_done(self, record): pass
            def on_input_start(self, item):
                first_input.append(time.perf_counter())

        FrameEncoder.encode = counting_encode
        try:
            started = time.perf_counter()
            report = api.run([str(clips)], work / "out", config, RunOptions(force=True), stdin=io.StringIO(),
                             observer=Observer())
            wall = time.perf_counter() - started
            processing = time.perf_counter() - first_input[0]
        finally:
            FrameEncoder.encode = real_encode
        bad = [r for r in report.records if r.status != "ok"]
        if bad:
            raise RuntimeError(f"run failed: {bad[0].reason}: {bad[0].message}")
        frames = sum(r.frames for r in report.records)
        batch = int(spec.get("batch_size", 32))
        return {
            "videos": len(report.records),
            "frames": frames,
            "frames_per_video": frames / max(len(report.records), 1),
            "wall_s": wall,  # api.run as a whole, model loading included
            "seconds": processing,  # from the first video's start to the end
            "load_s": load_s,
            "fps": frames / processing,
            "batches": len(sizes),
            "full_batches": sum(1 for size in sizes if size == batch),
            "batch_sizes": sizes,
            **_threads(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_text(spec: dict) -> dict:
    """extract_text end to end vs the BERT forward alone over the same windows."""
    import torch

    from videobert_cli import api
    from videobert_cli.config import PipelineConfig, RuntimeConfig
    from videobert_cli.text.encoder import pack_windows, split_into_pieces
    from videobert_cli.text.transcripts import parse_transcript

    device = spec.get("device", "cpu")
    config = PipelineConfig(runtime=RuntimeConfig(device=device, precision=spec.get("precision", "fp32")))
    # warm-up: one untimed pass over the same transcript (the model-only side below also runs
    # its first batch untimed), so both sides are timed in the same steady state
    api.extract_text(spec["transcript"], config)
    _sync(device)
    started = time.perf_counter()
    features = api.extract_text(spec["transcript"], config)
    _sync(device)
    e2e_s = time.perf_counter() - started
    tokens = len(features.token_ids)

    stage = api._stage("text", config)  # the same loaded model extract_text used
    encoder = stage.encoder
    started = time.perf_counter()
    transcript = parse_transcript(spec["transcript"])
    parse_s = time.perf_counter() - started
    started = time.perf_counter()
    pieces = split_into_pieces(encoder.loaded.tokenizer, transcript, encoder.capacity)
    windows = pack_windows(pieces, encoder.capacity)
    window_ids = [[t for piece in window for t in piece.token_ids] for window in windows]
    tokenize_s = time.perf_counter() - started
    # the batches _forward_windows builds: sorted by length, padded per batch
    order = sorted(range(len(window_ids)), key=lambda i: len(window_ids[i]), reverse=True)
    batches = []
    for start in range(0, len(order), encoder.batch_size):
        ids = [window_ids[i] for i in order[start : start + encoder.batch_size]]
        width = max(len(x) for x in ids) + 2
        input_ids = torch.full((len(ids), width), encoder.pad_id, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            seq = [encoder.cls_id, *x, encoder.sep_id]
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
        batches.append((input_ids.to(device), attention.to(device), torch.zeros_like(input_ids).to(device)))
    from videobert_cli.devices import autocast

    def forward(b):
        with torch.inference_mode(), autocast(encoder.precision, device):
            return encoder.module(input_ids=b[0], attention_mask=b[1], token_type_ids=b[2]).last_hidden_state

    forward(batches[0])  # warm-up
    _sync(device)
    started = time.perf_counter()
    for b in batches:
        forward(b).float().cpu()
    _sync(device)
    model_s = time.perf_counter() - started
    return {
        "tokens": tokens,
        "windows": len(windows),
        "max_length": encoder.loaded.max_length,
        "cues": len(transcript.cues),
        "e2e_s": e2e_s,
        "e2e_tok_s": tokens / e2e_s,
        "model_s": model_s,
        "model_tok_s": tokens / model_s,
        "parse_s": parse_s,
        "tokenize_pack_s": tokenize_s,
        **_threads(),
    }


def measure_fusion(spec: dict) -> dict:
    """fuse_one on random features of length L (video only): time and peak RSS growth."""
    from videobert_cli.config import PipelineConfig
    from videobert_cli.pipeline.text_stages import FusionStage

    stage = FusionStage(PipelineConfig(), video_dim=1280, text_dim=384, device=spec.get("device", "cpu"))
    length = int(spec["length"])
    rng = np.random.default_rng(0)
    nv = length // 4
    nt = length - 1 - nv
    from videobert_cli.fusion.model import fuse_one

    video = rng.standard_normal((nv, 1280), dtype=np.float32)
    text = rng.standard_normal((nt, 384), dtype=np.float32)
    vt = np.arange(nv, dtype=np.float64)
    tt = np.linspace(0, nv, nt)
    fuse_one(stage.model, video[:8], vt[:8], text[:8], tt[:8])  # warm-up
    import gc

    gc.collect()
    base = _status_kb("self", "VmRSS")
    reset_peak_rss()
    started = time.perf_counter()
    fuse_one(stage.model, video, vt, text, tt)
    _sync(spec.get("device", "cpu"))
    seconds = time.perf_counter() - started
    peak = _status_kb("self", "VmHWM")
    return {"length": length, "seconds": seconds, "rss_before_mb": base / 1024, "peak_mb": peak / 1024,
            "growth_mb": (peak - base) / 1024, **_threads()}


KINDS = {"decode": measure_decode, "model": measure_model, "e2e": measure_e2e, "text": measure_text,
         "fusion": measure_fusion, "shorts": measure_shorts}


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = KINDS[spec["kind"]](spec)
    result["kind"] = spec["kind"]
    import videobert_cli

    result["package"] = str(Path(videobert_cli.__file__).parent)  # which copy was measured
    print(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
