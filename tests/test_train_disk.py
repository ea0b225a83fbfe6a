"""Disks that fill up or turn read-only under a run: the system's words, and what survives (the last checkpoint)."""
from __future__ import annotations

import errno
import os

import pytest

torch = pytest.importorskip("torch")

from test_train_trust import _in_process_run, _unfinished_run  # noqa: E402


@pytest.mark.parametrize("full_from,kept", [(2, "the last good checkpoint is"), (1, "no checkpoint was written")])
def test_full_disk_while_logging_metrics_keeps_the_checkpoint(tmp_path, monkeypatch, full_from, kept):
    """The disk fills up as the second (or the first) metrics row is written: the system's words, and what is
    kept (the checkpoint after the first row, or none yet: the message must not claim one)."""
    from resdsl.train import metrics

    real_append, calls = metrics.open_append, {"n": 0}

    def full_disk_append(path, *a, **k):
        calls["n"] += 1
        if calls["n"] >= full_from:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_append(path, *a, **k)

    monkeypatch.setattr(metrics, "open_append", full_disk_append)
    result, failure = _in_process_run(tmp_path)
    assert result is None and failure[1] == 1
    assert "No space left on device" in failure[0] and kept in failure[0], failure[0]
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    if full_from == 2:
        assert torch.load(checkpoint, weights_only=True)["state"]["iter"] == 2
    else:
        assert not checkpoint.exists()


def test_full_disk_under_tensorboard_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch, capfd):
    """The disk fills up as TensorBoard's writer thread writes the second evaluation's points: that thread's
    failure comes back at the next call, as the run's one-line error (no thread traceback, no internal error),
    and the checkpoint after the first evaluation is kept."""
    pytest.importorskip("tensorboard")
    from tensorboard.summary.writer import record_writer

    real_write = record_writer.RecordWriter.write

    def full_disk_write(self, data):  # from the first checkpoint on: the second evaluation's points
        if (tmp_path / "run" / "checkpoint.pt").exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", full_disk_write)
    result, failure = _in_process_run(tmp_path)
    err = capfd.readouterr().err
    assert result is None and failure[1] == 1, failure
    assert failure[0].startswith(f"cannot write TensorBoard's files in {tmp_path / 'run' / 'tensorboard'}: No "
                                 "space left on device"), failure[0]
    assert "the last good checkpoint is" in failure[0] and "Traceback" not in err, err
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

    real_mkstemp = rundir.tempfile.mkstemp

    def read_only_mkstemp(*a, dir=None, **k):  # every new file in the run's folder: the probe's, a record's
        if dir is not None and str(dir).startswith(str(run)):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real_mkstemp(*a, dir=dir, **k)

    monkeypatch.setattr(rundir.tempfile, "mkstemp", read_only_mkstemp)
    result, failure = _in_process_run(tmp_path, resume=str(run), iters=None, eval_every=None,
                                      checkpoint_every=None, data=None, train_subset=None, test_subset=None,
                                      batch_size=None)
    assert failure[1] == 1 and "Read-only file system" in failure[0] and "copy the run" in failure[0]
