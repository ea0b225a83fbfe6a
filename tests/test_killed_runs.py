"""What a run killed outright (SIGKILL, a node lost) or a damaged file leaves behind must not block or fool the
next command: its temporary files, a checkpoint older than its last metrics row, a checkpoint damaged on disk."""
from __future__ import annotations

import pytest

from resdsl.train import rundir

torch = pytest.importorskip("torch")


def test_a_killed_writes_leftovers_do_not_block_the_folder(tmp_path):
    """A process killed mid-write leaves `.resdsl-*.tmp` behind (the atomic write's temporary file, or the
    writability probe): `--overwrite` and `--resume` remove them rather than calling the folder someone else's."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "checkpoint.pt", ".resdsl-2ddstx6e.tmp", ".resdsl-write-test.tmp"):
        (run / name).write_text("x")
    lock = rundir.resume(str(run))
    lock.release()
    assert sorted(p.name for p in run.iterdir() if p.name != ".lock") == ["checkpoint.pt", "config.json"]
    (run / ".resdsl-abc.tmp").write_text("x")
    with pytest.raises(rundir.RunDirError, match="already holds a run"):  # without --overwrite: refused as before
        rundir.start(str(run))
    lock = rundir.start(str(run), overwrite=True)
    lock.release()
    assert not (run / ".resdsl-abc.tmp").exists()
    (run / ".resdsl-mine.txt").write_text("a user's")  # not a temporary file of resdsl's: kept, and refused
    with pytest.raises(rundir.RunDirError, match="not a resdsl run's"):
        rundir.start(str(run), overwrite=True)
