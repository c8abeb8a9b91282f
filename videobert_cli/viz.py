"""Pictures of what was extracted: a feature file's self-similarity and cue-by-frame similarity
(``videobert plot``), and a contact sheet of search hits (``search --thumbnails``).

Each picture is built from arrays that the functions here return (:class:`PlotData`,
:class:`ContactSheet`), so they are tested by their data; drawing uses matplotlib's Agg backend
(the optional ``plot`` extra).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from videobert_cli.errors import ConfigError
from videobert_cli.search.files import read_video
from videobert_cli.search.moments import Windows, normalise

PLOT_HINT = "pip install 'videobert-cli[plot]'"
#: contact sheet tile size (width, height) in pixels, and tiles per row
TILE = (160, 120)
COLUMNS = 5
PLACEHOLDER_GREY = 96


def pyplot():
    """matplotlib.pyplot on the Agg backend; ConfigError with the install line when missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("drawing needs matplotlib, which is not installed", hint=PLOT_HINT) from None
    return plt


def _save(fig, out: str | Path) -> Path:
    from videobert_cli.store.atomic import atomic_write

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    pyplot().close(fig)
    atomic_write(Path(out), buffer.getvalue(), what="picture")
    return Path(out)


# --------------------------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------------------------
@dataclass
class PlotData:
    """What ``videobert plot`` draws."""

    times: np.ndarray  # (N,) seconds of the video rows
    row_end: np.ndarray  # (N,) when each row's span ends (the next row, or the video's end)
    self_similarity: np.ndarray  # (N, N) cosine of the video rows
    cue_start: np.ndarray  # (C,) seconds
    cue_end: np.ndarray  # (C,)
    cue_text: list[str]
    cross: np.ndarray | None = None  # (C, N) cosine of cue c and frame n in the shared space
    space: str | None = None  # "fusion" / "aligned"; None: no shared space, no cross panel
    title: str = ""


def _cues(path: Path) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, np.ndarray]]:
    import h5py

    from videobert_cli.store.schema import open_file

    with open_file(path, "r") as f:
        text = f.get("text")
        if not isinstance(text, h5py.Group):
            return np.zeros(0), np.zeros(0), [], {}
        arrays = {name: text[name][()] for name in ("token_features", "token_ids", "token_cue", "token_start", "token_end")}
        return (np.asarray(text["cue_start"][()], np.float64), np.asarray(text["cue_end"][()], np.float64),
                [str(s) for s in text["cue_text"].asstr()[()]], arrays)


def plot_data(path: str | Path, *, fusion_weights: str | Path | None = None, device: str = "cpu") -> PlotData:
    """The arrays of ``path``'s plot; the cross panel in the fusion space of ``fusion_weights``,
    or in an aligned pair's space, else none.

    Fusion space: cue c is the text-only [CLS] of its stored tokens (at their fusion times),
    frame n the video-only [CLS] of that one frame; aligned: the cue text through the pair's
    text tower against the frame features. Cosine throughout.
    """
    from videobert_cli.search import spaces

    path = Path(path)
    models, features, times, ends = read_video(path)
    frames = normalise(features)
    data = PlotData(times=times, row_end=ends, self_similarity=frames @ frames.T, cue_start=np.zeros(0), cue_end=np.zeros(0),
                    cue_text=[], title=f"{path.name}: {models.video_model or 'video'}")
    data.cue_start, data.cue_end, data.cue_text, tokens = _cues(path)
    if not data.cue_text:
        return data
    if fusion_weights is not None:
        from types import SimpleNamespace

        from videobert_cli.pipeline.text_stages import fusion_token_times

        space = spaces.load_fusion_space(fusion_weights, models, device=device)
        token_times = fusion_token_times(SimpleNamespace(**{k: tokens[k] for k in ("token_start", "token_end", "token_cue")}))
        single = Windows(np.arange(len(times)), np.arange(1, len(times) + 1), times, ends)
        frame_cls = spaces.fusion_video(space, features, times, single)
        data.cross = np.full((len(data.cue_text), len(times)), np.nan, np.float32)
        for c in range(len(data.cue_text)):
            rows = np.flatnonzero(tokens["token_cue"] == c)
            if rows.size:
                sample = spaces.token_sample(space, tokens["token_features"][rows], token_times[rows], tokens["token_ids"][rows])
                data.cross[c] = spaces.fusion_text_cls(space, [sample])[0] @ frame_cls.T
        data.space = "fusion"
    elif spaces.aligned_models(models):
        data.cross = spaces.aligned_text(models, data.cue_text, device=device) @ frames.T
        data.space = "aligned"
    return data


def render_plot(data: PlotData, out: str | Path) -> Path:
    """Draw ``data`` into the PNG ``out``: self-similarity on a time axis, cue spans under it,
    and the cue-by-frame similarity when there is a shared space."""
    plt = pyplot()
    panels = 3 if data.cross is not None else 2
    heights = [4, 1] + ([2] if data.cross is not None else [])
    fig, axes = plt.subplots(panels, 1, figsize=(6, 1.6 * sum(heights) / 1.6 * 0.9), sharex=True,
                             gridspec_kw={"height_ratios": heights})
    t0 = float(data.times[0]) if len(data.times) else 0.0
    t1 = float(data.row_end[-1]) if len(data.times) else 1.0
    t1 = t1 if t1 > t0 else t0 + 1.0
    ax = axes[0]
    ax.imshow(data.self_similarity, extent=(t0, t1, t1, t0), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_ylabel("time (s)")
    ax.set_title(f"{data.title} - frame self-similarity (cosine)", fontsize=9)
    ax = axes[1]
    timed = [(s, e, text) for s, e, text in zip(data.cue_start, data.cue_end, data.cue_text)
             if math.isfinite(s) and math.isfinite(e)]
    for i, (s, e, text) in enumerate(timed):
        ax.broken_barh([(s, max(e - s, 1e-3))], (i % 2, 0.9), color="tab:orange" if i % 2 else "tab:blue")
        ax.text(s, i % 2 + 0.45, text[:24], fontsize=6, va="center", clip_on=True)
    ax.set_yticks([])
    ax.set_ylim(0, 2)
    ax.set_ylabel("cues", fontsize=8)
    if data.cross is not None:
        ax = axes[2]
        ax.imshow(data.cross, extent=(t0, t1, len(data.cue_text), 0), aspect="auto", cmap="magma",
                  interpolation="nearest")
        ax.set_ylabel("cue")
        ax.set_title(f"cue-by-frame similarity ({data.space} space)", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(t0, t1)
    fig.tight_layout()
    return _save(fig, out)


# --------------------------------------------------------------------------------------------
# contact sheet
# --------------------------------------------------------------------------------------------
@dataclass
class ContactSheet:
    """The tiles of a contact sheet: one per moment, decoded or a placeholder."""

    tiles: np.ndarray  # (K, H, W, 3) uint8
    labels: list[str]
    decoded: list[bool]  # False: placeholder
    frame_index: list[int | None]  # the decoded frame of each tile
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None


def _fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(frame)
    scale = min(size[0] / image.width, size[1] / image.height)  # up or down, keeping the aspect
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    canvas = np.zeros((size[1], size[0], 3), np.uint8)
    h, w = image.height, image.width
    y, x = (size[1] - h) // 2, (size[0] - w) // 2
    canvas[y:y + h, x:x + w] = np.asarray(image)
    return canvas


def frame_at_time(source: str | Path, t: float, decoder: str = "auto") -> tuple[int, np.ndarray]:
    """(frame index, RGB frame) on screen at ``t`` seconds of ``source``, through the decoders."""
    from videobert_cli.decoders import open_video
    from videobert_cli.decoders.sampling import frame_at

    opened = open_video(source, decoder)
    try:
        index = frame_at(opened.info.frame_starts, t)
        for _, frames in opened.chunks(np.array([index], np.int64)):
            return index, np.asarray(frames[0])
    finally:
        opened.close()
    raise ValueError(f"no frame decoded at {t:g} s")


def _source_problem(moment: Any) -> str | None:
    """Why ``moment``'s source cannot be trusted: gone, or changed since extraction."""
    from videobert_cli.store.reader import read_attrs

    source = Path(moment.source_path) if moment.source_path else None
    if source is None:
        return "the feature file records no source video"
    if not source.is_file():
        return f"source video {source} is gone (moved or deleted)"
    attrs = read_attrs(moment.path)
    size = attrs.get("source_size")
    if size is not None and int(size) != source.stat().st_size:
        return f"source video {source} changed since extraction"
    return None


def contact_sheet(moments: Sequence[Any], out: str | Path | None, *, decoder: str = "auto",
                  tile: tuple[int, int] = TILE) -> ContactSheet:
    """Tiles of the frame at the middle of each moment (``search`` results), drawn into ``out``.

    A source that is gone, changed or undecodable gets a grey placeholder tile and a warning;
    it never raises for one moment.
    """
    tiles, labels, decoded, indices, warnings = [], [], [], [], []
    for m in moments:
        middle = (m.start + m.end) / 2
        labels.append(f"#{m.rank} {m.video} {m.start:.1f}-{m.end:.1f}s ({m.score:.2f})")
        problem = _source_problem(m)
        frame = None
        if problem is None:
            try:
                index, frame = frame_at_time(m.source_path, middle, decoder)
            except Exception as error:  # one bad video must not cost the sheet
                problem = f"cannot decode {m.source_path} at {middle:.2f} s: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        if frame is None:
            warnings.append(f"#{m.rank} {m.video}: {problem}; placeholder drawn")
            tiles.append(np.full((tile[1], tile[0], 3), PLACEHOLDER_GREY, np.uint8))
            decoded.append(False)
            indices.append(None)
        else:
            tiles.append(_fit(frame, tile))
            decoded.append(True)
            indices.append(index)
    sheet = ContactSheet(np.stack(tiles) if tiles else np.zeros((0, tile[1], tile[0], 3), np.uint8), labels, decoded,
                         indices, warnings)
    if out is not None:
        sheet.path = render_sheet(sheet, out)
    return sheet


def render_sheet(sheet: ContactSheet, out: str | Path) -> Path:
    """Draw ``sheet``'s tiles in a grid with their labels into the PNG ``out``."""
    plt = pyplot()
    n = max(len(sheet.labels), 1)
    cols = min(COLUMNS, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.9 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < len(sheet.labels):
            ax.imshow(sheet.tiles[i])
            ax.set_title(sheet.labels[i] + ("" if sheet.decoded[i] else "\n(source missing)"), fontsize=6)
    fig.tight_layout()
    return _save(fig, out)
