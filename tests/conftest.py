from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def at_root(monkeypatch):
    """Run with the repository root as working directory, so spec paths read as in the README."""
    monkeypatch.chdir(ROOT)
    return ROOT


@pytest.fixture
def write_spec(tmp_path):
    """Write spec text (and optional sibling files) into a temp dir; returns the main file's path."""

    def _write(text: str, name: str = "net.res", **others: str) -> str:
        for fname, body in others.items():
            (tmp_path / fname.replace("__", "/")).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / fname.replace("__", "/")).write_text(body)
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return _write


CIFAR20 = """\
network resnet20
input 3x32x32
stem cifar 16
unit basic
shortcut A
stages 16x3, 32x3 /2, 64x3 /2
head avgpool fc 10
"""
