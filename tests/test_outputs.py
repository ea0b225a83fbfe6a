"""Every file resdsl writes leaves what is in its place what it was: a device stays a device, a named pipe a pipe,
a symbolic link a link; regular files are replaced atomically."""
from __future__ import annotations

import os
import stat
import threading

import pytest
from click.testing import CliRunner

from resdsl.train.fileio import FolderLock, OutputError, atomic_write, write_output
from resdsl_cli.main import main

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file types")


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("command", [
    ["viz", "specs/resnet20.res", "--format", "dot", "-o"],
    ["compile", "specs/resnet20.res", "--emit-python"],
])
def test_dev_null_stays_a_device(at_root, command):
    before = os.stat("/dev/null")
    r = run(*command, "/dev/null")
    assert r.exit_code == 0, r.output
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_dev_full_is_a_clear_error(at_root):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    r = run("viz", "specs/resnet20.res", "--format", "dot", "-o", "/dev/full")
    assert r.exit_code == 1 and "No space left on device" in r.output
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_fifo_without_a_reader_is_refused_and_stays_a_fifo(at_root, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    r = run("compile", "specs/resnet20.res", "--emit-python", str(fifo))
    assert r.exit_code == 1 and "nothing is reading from it" in r.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_fifo_with_a_reader_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = {}

    def reader():
        with open(fifo, "rb") as fh:
            got["data"] = fh.read()

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(200):  # the writer may only open once the reader has
        try:
            write_output(str(fifo), b"digraph {}\n")
            break
        except OutputError:
            threading.Event().wait(0.01)
    t.join(timeout=10)
    assert got.get("data") == b"digraph {}\n" and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_symlink_stays_a_link_to_the_replaced_file(at_root, tmp_path):
    target, link = tmp_path / "real.dot", tmp_path / "link.dot"
    target.write_text("old")
    link.symlink_to(target)
    r = run("viz", "specs/resnet20.res", "--format", "dot", "-o", str(link))
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("digraph")


def test_dangling_symlink_is_refused(tmp_path):
    link = tmp_path / "link.dot"
    link.symlink_to(tmp_path / "nowhere" / "x.dot")
    with pytest.raises(OutputError, match="does not exist"):
        write_output(str(link), "x")
    assert link.is_symlink()


def test_folder_is_refused(tmp_path):
    with pytest.raises(OutputError, match="it is a folder"):
        write_output(str(tmp_path), "x")


def test_failed_write_keeps_the_old_file_and_its_mode(tmp_path):
    path = tmp_path / "model.py"
    path.write_text("old")
    os.chmod(path, 0o640)

    def fill(fh):
        fh.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="previous file is intact"):
        atomic_write(str(path), fill)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["model.py"]
    write_output(str(path), "new")
    assert path.read_text() == "new" and stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_folder_lock_is_exclusive_and_released_on_close(tmp_path):
    lock = FolderLock(str(tmp_path))
    with pytest.raises(OutputError, match="in use by another process"):
        FolderLock(str(tmp_path))
    lock.release()
    FolderLock(str(tmp_path)).release()
