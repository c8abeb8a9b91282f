"""The corpus index: OUT_DIR/index.h5 links every complete per-video file and tables them all."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from synth import make_video, write_srt
from videobert_cli import load
from videobert_cli.api import run
from videobert_cli.errors import EXIT_USAGE, OutputError
from videobert_cli.store.index import INDEX_NAME, read_index, write_index
from videobert_cli.pipeline.report import RunOptions


def cli_app():
    """The real app once `index` is registered in cli/app.py; until then the same command alone."""
    from videobert_cli.cli.app import app
    from videobert_cli.cli.index_cmd import HELP, index_command

    if any(command.name == "index" for command in app.registered_commands):
        return app
    local = typer.Typer()
    local.callback()(lambda: None)  # a group, so that `index` is spelled as in the real app
    local.command("index", help=HELP)(index_command)
    return local


def invoke(*args: str):
    return CliRunner().invoke(cli_app(), list(args))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("index-videos")
    make_video(root / "talk.mp4", width=64, height=48, fps=10, num_frames=25)
    write_srt(root / "talk.srt", [(0.0, 1.0, "Hello there."), (1.0, 2.4, "A moving square.")])
    make_video(root / "sub" / "quiet.mp4", width=80, height=64, fps=10, num_frames=12)
    return root


@pytest.fixture(scope="module")
def out_dir(corpus, fast_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index-out") / "features"
    report = run([str(corpus)], out, fast_config, RunOptions(), recursive=True, stdin=io.StringIO(), index=False)
    assert report.exit_code == 0, report.summary()
    assert not (out / INDEX_NAME).exists(), "index=False must not write an index"
    return out


def test_index_lists_every_file_and_links_resolve(out_dir, tmp_path, monkeypatch):
    path = write_index(out_dir)
    assert path == out_dir / INDEX_NAME
    rows = {row["id"]: row for row in read_index(out_dir)}
    assert set(rows) == {"talk", "sub__quiet"}
    for row_id, relative in (("talk", "talk.h5"), ("sub__quiet", "sub/quiet.h5")):
        row = rows[row_id]
        features = load(out_dir / relative)
        assert row["path"] == relative and row["status"] == "complete"
        assert row["video_rows"] == len(features.video.features)
        assert row["text_tokens"] == (len(features.text.token_features) if features.text is not None else 0)
        assert row["duration"] == pytest.approx(features.video.attrs["duration"])
        assert row["source_path"] == features.attrs["source_path"]
        assert row["config_hash"] == features.attrs["config_hash"]
    assert rows["talk"]["text_tokens"] > 0 and rows["sub__quiet"]["text_tokens"] == 0
    assert rows["talk"]["video_rows"] == 3 and rows["sub__quiet"]["video_rows"] == 2
    # links are relative to the index: they resolve from any working directory, after a move too
    moved = tmp_path / "elsewhere" / "features"
    shutil.copytree(out_dir, moved)
    monkeypatch.chdir(tmp_path)
    with h5py.File(moved / INDEX_NAME, "r") as index:
        assert isinstance(index["videos"].get("talk", getlink=True), h5py.ExternalLink)
        assert not Path(index["videos"].get("talk", getlink=True).filename).is_absolute()
        for row_id, relative in (("talk", "talk.h5"), ("sub__quiet", "sub/quiet.h5")):
            features = load(out_dir / relative)
            np.testing.assert_array_equal(index[f"videos/{row_id}/video/features"][()], features.video.features)
            np.testing.assert_array_equal(index[f"videos/{row_id}/fused/sequence"][()], features.fused.sequence)
        np.testing.assert_array_equal(index["videos/talk/text/token_features"][()],
                                      load(out_dir / "talk.h5").text.token_features)
        assert list(index["table/id"].asstr()[()]) == ["sub__quiet", "talk"]


def test_incomplete_and_foreign_files(out_dir, tmp_path):
    out = tmp_path / "mixed"
    shutil.copytree(out_dir, out)
    shutil.copy(out / "talk.h5", out / "half.h5")
    with h5py.File(out / "half.h5", "r+") as f:
        f.attrs["complete"] = False  # what a writer caught half-way leaves
    (out / "broken.h5").write_bytes((out / "talk.h5").read_bytes()[:2000])  # truncated
    (out / ".talk.h5.tmp-1-0123abcd").write_bytes(b"")  # a writer's temp file: not a video
    with h5py.File(out / "other.h5", "w") as f:
        f.attrs["format"] = "somebody-else"
    with h5py.File(out / "plain.h5", "w") as f:  # no format at all, nothing of a feature file
        f["x"] = np.arange(3)
    shutil.copy(out / "talk.h5", out / "future.h5")
    with h5py.File(out / "future.h5", "r+") as f:
        f.attrs["schema_version"] = "2.0"  # written by a later version: load() refuses it
    write_index(out)
    write_index(out)  # the index never lists itself
    rows = {row["id"]: row for row in read_index(out / INDEX_NAME)}
    assert set(rows) == {"talk", "sub__quiet", "half", "broken", "future"}
    assert rows["half"]["status"] == rows["broken"]["status"] == rows["future"]["status"] == "incomplete"
    assert rows["broken"]["video_rows"] is None and rows["broken"]["duration"] is None
    with h5py.File(out / INDEX_NAME, "r") as index:
        assert set(index["videos"]) == {"talk", "sub__quiet"}, "only complete files are linked"
        assert index.attrs["count"] == 5 and index.attrs["complete"] == 2
    assert not [p.name for p in out.iterdir() if ".building-" in p.name], "the index's temp file remains"


def test_temp_files_of_killed_index_writes_are_removed(out_dir, tmp_path):
    """A killed `videobert index` leaves .index.h5.building-<pid>-<hex>: the next write removes
    it when its pid is dead; a live writer's (younger than a day) and feature temps stay."""
    import os

    out = tmp_path / "leftovers"
    shutil.copytree(out_dir, out)
    dead = out / ".index.h5.building-99999999-0123abcd"
    live = out / f".index.h5.building-{os.getpid()}-89abcdef"
    feature_temp = out / ".talk.h5.tmp-99999999-0123abcd"
    for path in (dead, live, feature_temp):
        path.write_bytes(b"")
    write_index(out)
    assert not dead.exists() and live.exists() and feature_temp.exists()
    assert len(read_index(out)) == 2


def test_a_video_named_index_is_never_overwritten(out_dir, tmp_path):
    out = tmp_path / "named"
    shutil.copytree(out_dir, out)
    shutil.copy(out / "talk.h5", out / INDEX_NAME)  # the output of a video called index.mp4
    before = (out / INDEX_NAME).read_bytes()
    with pytest.raises(OutputError, match="video named 'index'"):
        write_index(out)
    assert (out / INDEX_NAME).read_bytes() == before
    other = write_index(out, name="corpus.h5")
    assert "index" in {row["id"] for row in read_index(other)}


def test_index_command(out_dir, tmp_path):
    out = tmp_path / "cli"
    shutil.copytree(out_dir, out)
    result = invoke("index", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["total"], summary["complete"], summary["incomplete"]) == (2, 2, 0)
    assert summary["index"] == str(out / INDEX_NAME) and (out / INDEX_NAME).is_file()
    assert {row["path"] for row in summary["files"]} == {"talk.h5", "sub/quiet.h5"}
    result = invoke("index", str(tmp_path / "missing"))
    assert result.exit_code == EXIT_USAGE and "not a directory" in result.output
    manifest = (out / "manifest.jsonl").read_bytes()
    result = invoke("index", str(out), "--name", "manifest.jsonl")
    assert result.exit_code == EXIT_USAGE and "ending in .h5" in result.output
    assert (out / "manifest.jsonl").read_bytes() == manifest


def test_inspecting_an_index_lists_its_links_without_following_them(out_dir, tmp_path):
    from videobert_cli.cli.app import app

    out = tmp_path / "inspected"
    shutil.copytree(out_dir, out)
    write_index(out)
    result = CliRunner().invoke(app, ["inspect", str(out / INDEX_NAME), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    links = {row["name"]: row["target"] for row in rows if row["kind"] == "link"}
    assert links == {"/videos/talk": "talk.h5:/", "/videos/sub__quiet": "sub/quiet.h5:/"}
    assert not [row for row in rows if row["name"].startswith("/videos/") and row["kind"] != "link"], \
        "a linked file was described as part of the index"
    assert [row["name"] for row in rows].count("/") == 1
    tree = CliRunner().invoke(app, ["inspect", str(out / INDEX_NAME)])
    assert tree.exit_code == 0 and "talk -> talk.h5:/" in tree.stdout


def test_run_refreshes_the_index(out_dir, corpus, fast_config, tmp_path):
    out = tmp_path / "refresh"
    shutil.copytree(out_dir, out)
    write_index(out)
    make_video(tmp_path / "more" / "late.mp4", width=64, height=48, fps=10, num_frames=10)
    report = run([str(corpus), str(tmp_path / "more")], out, fast_config, RunOptions(), recursive=True,
                 stdin=io.StringIO())
    assert (report.count("ok"), report.count("skipped")) == (1, 2), report.summary()
    rows = {row["id"]: row for row in read_index(out)}
    assert set(rows) == {"talk", "sub__quiet", "late"}, "run did not refresh the existing index"
    with h5py.File(out / INDEX_NAME, "r") as index:
        np.testing.assert_array_equal(index["videos/late/video/features"][()], load(out / "late.h5").video.features)
    # without an index and without --index, a run writes none; index=False never writes one
    (out / INDEX_NAME).unlink()
    run([str(tmp_path / "more")], out, fast_config, RunOptions(), stdin=io.StringIO())
    assert not (out / INDEX_NAME).exists()
    run([str(tmp_path / "more")], out, fast_config, RunOptions(), stdin=io.StringIO(), index=True)
    assert len(read_index(out)) == 3


def test_the_index_stores_search_moments_and_file_identity(out_dir, tmp_path):
    from videobert_cli.search.files import file_moments

    out = tmp_path / "searchable"
    shutil.copytree(out_dir, out)
    write_index(out)
    rows = read_index(out)
    with h5py.File(out / INDEX_NAME, "r") as index:
        assert index.attrs["schema_version"] == "1.1"
        group = index["search"]
        for i, row in enumerate(rows):
            path = out / row["path"]
            assert (row["file_size"], row["file_mtime"]) == (path.stat().st_size, path.stat().st_mtime)
            mine = np.flatnonzero(group["file"][()] == i)
            moments = file_moments(path, group.attrs["window_s"], group.attrs["hop_s"])
            np.testing.assert_array_equal(group["start"][()][mine], moments.windows.start)
            np.testing.assert_allclose(group["embeddings"][()][mine], moments.embeddings, atol=1e-3)
