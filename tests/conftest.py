from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# cuBLAS reads this once, at a process's first call: a --deterministic run in a test process that has already
# multiplied on the GPU would find it too late (the trainer sets it for a process of its own, before any call)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# The suite runs one xdist worker per core, and many tests start further processes. With torch's default of one
# thread per core in each, the cores are oversubscribed, and OpenMP's threads, which spin while they wait for each
# other, then made an in-process test 15 times slower than alone (2.4 s -> 36 s). So each worker, and every process
# it starts, shares the cores: one thread per worker on a machine with as many cores as workers.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
# xdist's controller reads this file too, as one worker (a thread per core), before it starts the workers, which
# inherit its environment: so a value this file set is replaced in a worker (it was kept, and every worker ran a
# thread per core: the in-process tests 3 to 13 times slower); a value the user set stays.
_OURS = "RESDSL_TESTS_OMP_NUM_THREADS"
if os.environ.get("OMP_NUM_THREADS") in (None, os.environ.get(_OURS)):
    os.environ["OMP_NUM_THREADS"] = os.environ[_OURS] = str(max(1, (os.cpu_count() or 1) // _WORKERS))


@contextlib.contextmanager
def within(seconds: int):
    """Fail, rather than hang, where a regression would block for good (a pipe read as a file)."""
    def too_long(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


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
