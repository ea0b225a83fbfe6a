"""`--nproc` runs (torchrun's workers, gloo on the CPU) that end other than by finishing: stopped by a signal, a
worker or the launcher killed outright. Each ends in words and an exit status, never an "internal error", with
its last checkpoint intact; and the run resumes only in as many processes as it was started in."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch")

from test_seeds import _same_run  # noqa: E402
from test_train import QUICK, resdsl, start  # noqa: E402

LONG = ["--iters", "3000", "--eval-every", "1000", "--checkpoint-every", "5", "--batch-size", "16"]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _start(run, args=LONG):
    """A 2-process run in a session of its own (as a terminal's Ctrl-C reaches a process group), once it has
    written its first checkpoint. Its temporary folder is the test's: a launcher killed outright cannot remove
    torchrun's log folder."""
    tmp = run.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    proc = start("train", "tests/specs/tiny.res", *QUICK, *args, "--nproc", "2", "--out", str(run), TMPDIR=str(tmp))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (run / "checkpoint.pt").exists():
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    return proc


def _workers(launcher: int) -> dict[int, int]:
    """rank -> pid of the launcher's workers (its children that have a RANK)."""
    ranks = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = dict(v.split(b"=", 1) for v in fh.read().split(b"\0") if b"=" in v)
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher and b"RANK" in env:
            ranks[int(env[b"RANK"])] = int(entry)
    return ranks


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_ctrl_c_stops_every_worker_and_the_run_resumes_only_in_as_many(tmp_path):
    run = tmp_path / "run"
    proc = _start(run)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    assert "stopped: SIGINT received" in err and f"--resume {run}" in err
    assert "internal error" not in err and "Traceback" not in err, err
    for extra in ([], ["--nproc", "3"]):  # another number of processes: refused, before any starts
        r = resdsl("train", "--resume", str(run), *extra)
        assert r.returncode == 1 and "the run was started in 2 processes" in r.stderr, r.stderr
        assert "resume it with --nproc 2" in r.stderr


def test_a_signal_to_one_worker_stops_all_after_the_same_iteration_and_resumes_exactly(tmp_path):
    """SIGINT to process 1 alone (between two checkpoints): the processes share their requests, so both stop
    after the same iteration and the checkpoint holds both shares of the training figures; resumed, the run ends
    with the weights and every metrics row of an uninterrupted one."""
    args = ["--iters", "200", "--eval-every", "50", "--batch-size", "16"]
    whole = tmp_path / "whole"
    resdsl("train", "tests/specs/tiny.res", *QUICK, *args, "--nproc", "2", "--out", str(whole), check=True)
    run = tmp_path / "run"
    proc = _start(run, args)
    os.kill(_workers(proc.pid)[1], signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130 and "stopped: SIGINT received: stopped after iteration" in err, err
    assert "internal error" not in err and "lost contact" not in err, err
    r = resdsl("train", "--resume", str(run), "--nproc", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    _same_run(run, whole)


def test_a_killed_worker_is_named_with_the_way_to_resume(tmp_path):
    run = tmp_path / "run"
    proc = _start(run)
    os.kill(_workers(proc.pid)[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err
    assert f"process 1 of 2 was killed by SIGKILL; resume the run from its last checkpoint with --resume {run} " \
           "--nproc 2" in err, err
    assert "internal error" not in err and "Traceback" not in err and "killed by SIGTERM" not in err, err


def test_workers_stop_with_a_launcher_killed_outright(tmp_path):
    """SIGKILL cannot be passed on: the kernel sends each worker SIGTERM as the launcher dies, and each checkpoints
    and stops instead of training on as an orphan holding the folder."""
    run = tmp_path / "run"
    proc = _start(run)
    workers = _workers(proc.pid)
    assert sorted(workers) == [0, 1]
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.time() + 120
    while time.time() < deadline and any(_alive(pid) for pid in workers.values()):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers.values())
    assert "checkpoint written" in (run / "train.log").read_text()


def test_the_launcher_names_only_the_workers_that_were_killed_first(tmp_path):
    """torchrun stops the others of a failed run with SIGTERM: those are not named beside the worker that failed
    (which said why itself) or that was killed otherwise; the way to resume is given where there is a checkpoint."""
    from resdsl.train.cli import _failure_lines

    run = tmp_path / "a"
    run.mkdir()
    assert _failure_lines({0: 1, 1: -15}, 2, str(run)) == []
    assert _failure_lines({0: -15, 1: -9}, 2, str(run)) == [f"process 1 of 2 was killed by SIGKILL; {run} has no "
                                                            "checkpoint yet"]
    (run / "checkpoint.pt").write_bytes(b"")
    assert _failure_lines({0: -15, 1: -9}, 2, str(run)) == [
        f"process 1 of 2 was killed by SIGKILL; resume the run from its last checkpoint with --resume {run} --nproc 2"]
    assert _failure_lines({1: -15}, 2, None) == ["process 1 of 2 was killed by SIGTERM"]


def test_an_out_that_is_a_file_is_said_to_be_one(tmp_path):
    (tmp_path / "afile").write_text("mine")
    r = resdsl("train", "tests/specs/tiny.res", *QUICK, "--iters", "2", "--out", str(tmp_path / "afile"))
    assert r.returncode == 1 and "it is a file, not a folder; choose another --out" in r.stderr, r.stderr
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("world", ["2", None])
def test_a_finished_worker_ends_without_the_interpreters_teardown(world):
    """A torchrun worker ends with os._exit once its run is over (its output flushed first): in the teardown,
    a thread of gloo's process group (which DistributedDataParallel keeps alive) could abort the process, and a
    finished run was reported as killed by SIGABRT. Outside torchrun a run ends as usual."""
    code = ("import atexit; atexit.register(lambda: print(' teardown', end=''))\n"
            "from resdsl.train.cli import end_worker\n"
            "print('run over', end='')\nend_worker(3)\nprint(' went on', end='')\n")
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(env, WORLD_SIZE=world) if world else env)
    if world:
        assert (r.returncode, r.stdout) == (3, "run over"), r.stderr
    else:
        assert (r.returncode, r.stdout) == (0, "run over went on teardown"), r.stderr


@pytest.mark.parametrize("world", ["2", None])
def test_a_worker_with_an_internal_error_ends_without_the_teardown_too(world):
    """The same for a worker that stops on a bug: its 'internal error' line, then os._exit, not the teardown."""
    code = ("import atexit; atexit.register(lambda: print('teardown', end=''))\n"
            "from resdsl_cli.common import guard, EXIT_INTERNAL\n"
            "def bug(): raise RuntimeError('a bug')\n"
            "try:\n    guard(bug)()\nexcept SystemExit as e:\n    assert e.code == EXIT_INTERNAL, e.code\n")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RESDSL_DEBUG")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(env, WORLD_SIZE=world) if world else env)
    assert "resdsl: internal error: RuntimeError: a bug" in r.stderr, r.stderr
    if world:
        from resdsl_cli.common import EXIT_INTERNAL

        assert (r.returncode, r.stdout) == (EXIT_INTERNAL, ""), r.stderr
    else:
        assert (r.returncode, r.stdout) == (0, "teardown"), r.stderr
