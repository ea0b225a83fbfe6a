"""What a process owns is locked (FolderLock, an flock on FOLDER/.lock), and a folder a run refused is left as it
was: the lock file it made goes with the refusal, without ever letting two processes hold one folder."""
from __future__ import annotations

import fcntl
import os
import threading

import pytest

from resdsl.train import rundir
from resdsl.train.fileio import LOCK_FILE, FolderLock, OutputError, _locked_in_place, is_locked

def test_a_refused_folder_is_left_as_it_was(tmp_path):
    """A run refused a folder of the user's (notes.txt in it) and left its .lock file there; the lock file of a
    folder that had one (a run's) stays, and one held by a running process still says so."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(rundir.RunDirError, match="not a resdsl run's"):
            rundir.start(str(mine), overwrite=overwrite)
        assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    run = tmp_path / "run"
    rundir.start(str(run)).release()
    (run / "config.json").write_text("{}")
    with pytest.raises(rundir.RunDirError, match="already holds a run"):
        rundir.start(str(run))
    assert (run / ".lock").exists()
    held = rundir.resume(str(run))
    with pytest.raises(rundir.RunDirError, match="in use by another process"):
        rundir.start(str(run), overwrite=True)
    held.release()


def test_a_lock_on_a_removed_lock_file_is_no_lock(tmp_path):
    """B opens .lock, A (refused) removes it, then B takes its flock: B held the removed file, and C, opening the
    new .lock, held the folder too. B's lock is now taken only where the path still names its file."""
    a = FolderLock(str(tmp_path))
    b = os.open(tmp_path / LOCK_FILE, os.O_RDWR)
    a.release(remove=True)
    try:
        assert not _locked_in_place(b, str(tmp_path / LOCK_FILE))  # a lock on the removed file would lock nothing
    finally:
        os.close(b)
    c = FolderLock(str(tmp_path))
    with pytest.raises(OutputError, match="in use by another process"):
        FolderLock(str(tmp_path))
    c.release()


def test_asking_whether_a_folder_is_locked_does_not_refuse_its_owner(tmp_path, monkeypatch):
    """is_locked holds a shared lock for an instant: a run starting in that instant was refused as 'in use'."""
    from resdsl.train import fileio

    monkeypatch.setattr(fileio, "LOCK_PAUSE", 0.25)  # a second of asking: the probe's end is late on a busy machine
    FolderLock(str(tmp_path)).release()
    probe = os.open(tmp_path / LOCK_FILE, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # is_locked's probe, caught in its instant
    threading.Timer(0.015, os.close, args=(probe,)).start()
    owner = FolderLock(str(tmp_path))  # waits out the probe
    pid = os.fork()
    if pid == 0:  # a dry run in another process sees it held
        os._exit(0 if is_locked(str(tmp_path)) else 1)
    assert os.waitpid(pid, 0)[1] == 0
    owner.release()
    assert not is_locked(str(tmp_path))
