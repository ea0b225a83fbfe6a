"""Disks that fill up or turn read-only under a run: the system's words, and what survives (the last checkpoint)."""
from __future__ import annotations

import errno
import os

import pytest

torch = pytest.importorskip("torch")

from test_train_trust import _in_process_run, _unfinished_run  # noqa: E402


def test_full_disk_while_logging_metrics_keeps_the_checkpoint(tmp_path, monkeypatch):
    from resdsl.train import metrics

    real_open, calls = open, {"n": 0}

    def full_disk_open(path, mode="r", *a, **k):
        if "a" in mode:
            calls["n"] += 1
            if calls["n"] >= 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(metrics, "open", full_disk_open, raising=False)
    result, failure = _in_process_run(tmp_path)
    assert result is None and failure[1] == 1
    assert "No space left on device" in failure[0] and "last checkpoint is intact" in failure[0]
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["state"]["iter"] == 2


def test_torch_save_failure_is_a_checkpoint_error(tmp_path, monkeypatch):
    from resdsl.train import checkpoint as ckpt

    def failing_save(obj, fh, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    result, failure = _in_process_run(tmp_path)
    assert failure[1] == 1 and "cannot write checkpoint" in failure[0] and "file write failed" in failure[0]
    assert not list((tmp_path / "run").glob(".resdsl-*"))


def test_full_disk_while_checkpointing_says_so(tmp_path, monkeypatch):
    """A disk that fills up while a checkpoint is written: the system's words, and whether a checkpoint remains."""
    from resdsl.train import checkpoint as ckpt
    from resdsl.train import fileio

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(ckpt.CheckpointError, match=r"No space left on device \(nothing was written\)"):
        ckpt.save_atomic({"model": {}}, str(tmp_path / "checkpoint.pt"))
    (tmp_path / "checkpoint.pt").write_bytes(b"previous")
    with pytest.raises(ckpt.CheckpointError, match=r"No space left on device \(the previous checkpoint is intact"):
        ckpt.save_atomic({"model": {}}, str(tmp_path / "checkpoint.pt"))
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"previous" and not list(tmp_path.glob(".resdsl-*"))


def test_read_only_run_directory_is_a_clear_error(tmp_path, monkeypatch):
    from resdsl.train import rundir

    run = _unfinished_run(tmp_path)

    def read_only_open(path, mode="r", *a, **k):
        if "w" in mode and str(path).startswith(str(run)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return open(path, mode, *a, **k)

    monkeypatch.setattr(rundir, "open", read_only_open, raising=False)
    result, failure = _in_process_run(tmp_path, resume=str(run), iters=None, eval_every=None,
                                      checkpoint_every=None, data=None, train_subset=None, test_subset=None,
                                      batch_size=None)
    assert failure[1] == 1 and "Read-only file system" in failure[0] and "copy the run" in failure[0]
