"""The built wheel holds every module, the grammar, every spec and the CLI, and works without the repository.

The wheel is built the way `pip install .` builds it (isolated build, setuptools from the index), but from a clean
copy of the source tree: an in-tree build would reuse build/, whose stale files end up in the wheel. Nothing is
installed; the wheel is unpacked and imported through PYTHONPATH.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

# build output and local state that a fresh checkout does not have
NOT_SOURCE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", "runs",
                                    ".pytest_cache", ".hypothesis")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "resdsl"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (built,) = out.glob("resdsl-*.whl")
    return built


@pytest.fixture(scope="module")
def names(wheel) -> set[str]:
    return set(zipfile.ZipFile(wheel).namelist())


def _source(folder: str, pattern: str) -> list[Path]:
    return [p for p in sorted((ROOT / folder).rglob(pattern)) if "__pycache__" not in p.parts]


def test_every_module_is_in_the_wheel(names):
    """Every .py under resdsl/ (backends/ and train/ included) and cli/ (as resdsl_cli/), and the grammar."""
    expected = {p.relative_to(ROOT).as_posix() for p in _source("resdsl", "*.py")}
    expected |= {"resdsl_cli/" + p.relative_to(ROOT / "cli").as_posix() for p in _source("cli", "*.py")}
    assert {"resdsl/backends/torch_module.py", "resdsl/train/loop.py", "resdsl_cli/main.py"} <= expected
    assert sorted(expected - names) == []
    assert {"resdsl/grammar.lark", "resdsl/experiment/grammar.lark"} <= names


def test_every_experiment_is_in_the_wheel(names):
    expected = {"resdsl/experiments/" + p.name for p in _source("experiments", "*.exp")}
    assert "resdsl/experiments/r-table6.exp" in expected
    assert {n for n in names if n.startswith("resdsl/experiments/")} == expected


def test_every_spec_is_in_the_wheel(names):
    expected = {"resdsl/specs/" + p.relative_to(ROOT / "specs").as_posix() for p in _source("specs", "*.res")}
    assert {"resdsl/specs/recipes.res", "resdsl/specs/torchvision/resnet50.res"} <= expected
    assert sorted(expected - names) == []
    assert {n for n in names if n.startswith("resdsl/specs/")} == expected  # nothing else rides along


def test_wheel_metadata(wheel, names):
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"resdsl", "resdsl_cli"}  # no tests/, benchmarks/ or a generic `cli` package
    z = zipfile.ZipFile(wheel)
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "resdsl = resdsl_cli:run" in z.read(info).decode()
    metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for extra in ("train", "viz", "onnx", "test"):
        assert f"Provides-Extra: {extra}" in metadata
    from resdsl import __version__  # one version: the package's, which emitted code and run records name

    assert f"\nVersion: {__version__}\n" in metadata


def test_unpacked_wheel_compiles_by_name_from_its_own_files(wheel, tmp_path):
    """Imported from the unpacked wheel (not the repository), names resolve to the wheel's resdsl/specs/."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    code = ("import json, sys, resdsl\n"
            "from resdsl import catalog\n"
            "from resdsl_cli.list_cmd import list_cmd\n"
            "net = resdsl.compile_spec('resnet1001_preact')\n"
            "src = resdsl.emit_python('torchvision/resnet50')\n"
            "print(json.dumps({'file': resdsl.__file__, 'root': str(catalog.specs_root()), 'spec': net.spec.path,"
            " 'params': net.params, 'names': len(catalog.names()), 'torch': 'torch' in sys.modules,"
            " 'emitted': 'def build' in src}))\n")
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of site-packages, where an editable resdsl may be
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    assert facts["file"] == str(site / "resdsl" / "__init__.py")
    assert facts["root"] == str(site / "resdsl" / "specs")
    assert facts["spec"] == str(site / "resdsl" / "specs" / "resnet1001_preact.res")
    assert facts["params"] == 10_327_706 and facts["emitted"] and not facts["torch"]
    assert facts["names"] == len([p for p in _source("specs", "*.res") if p.name != "recipes.res"])
    r = subprocess.run([sys.executable, "-m", "resdsl_cli", "list"], capture_output=True, text=True, cwd=work,
                       env=env)  # how resdsl starts its own processes (torchrun's, --seeds', an experiment's)
    assert r.returncode == 0 and "resnet1001_preact" in r.stdout, r.stderr
