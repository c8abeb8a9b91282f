"""The package's public names: every one resolves, and importing one submodule imports no others."""

from __future__ import annotations

import subprocess
import sys

import videobert_cli


def test_every_public_name_resolves():
    for name in videobert_cli.__all__:
        assert getattr(videobert_cli, name) is not None, name
    assert set(videobert_cli.__all__) <= set(dir(videobert_cli))


def test_an_unknown_name_is_an_attribute_error():
    try:
        videobert_cli.no_such_thing  # noqa: B018
    except AttributeError as error:
        assert "no_such_thing" in str(error)
    else:
        raise AssertionError("expected AttributeError")


def test_the_decode_worker_imports_neither_the_api_nor_h5py():
    code = ("import sys, videobert_cli.pipeline.decode_worker; "
            "print(sorted(m for m in ('videobert_cli.api', 'h5py', 'transformers', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
