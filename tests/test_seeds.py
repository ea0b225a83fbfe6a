"""`--seeds`: one run per seed side by side, each exactly the run `--seed N` alone makes, each resumable."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_train import ENV, resdsl, start  # noqa: E402

BASE = ["train", "tests/specs/tiny.res", "--data", "synthetic", "--train-subset", "256", "--test-subset", "64",
        "--batch-size", "32", "--device", "cpu", "--quiet", "--deterministic"]


LINUX = sys.platform.startswith("linux")


def _ended(log) -> bool:
    """The run whose train.log this is stopped or finished (seed 0 may finish before seed 1 is far enough). A run
    still starting when its launcher died has no log yet: it stops at its first iteration (stop_with_launcher)."""
    try:
        text = log.read_text()
    except FileNotFoundError:
        return False
    return "stopped: SIGTERM" in text or "done: " in text


def _weights(run):
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def _rows(run):
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"}
            for x in (run / "metrics.jsonl").read_text().splitlines()]


def _same_run(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _rows(a) == _rows(b)


def test_seeds_equal_single_runs(tmp_path):
    r = resdsl(*BASE, "--iters", "6", "--eval-every", "3", "--seeds", "0-2", "--out", str(tmp_path / "multi"))
    assert r.returncode == 0, r.stderr
    assert "done: 3 runs (seeds 0, 1, 2)" in r.stdout and "[seed 2] done: 6 iterations" in r.stdout
    # the same runs as threads of one process (on a GPU each on its own CUDA stream)
    r = resdsl(*BASE, "--iters", "6", "--eval-every", "3", "--seeds", "0-2", "--seed-runs", "threads", "--out",
               str(tmp_path / "threads"))
    assert r.returncode == 0, r.stderr
    assert "done: 3 runs (seeds 0, 1, 2)" in r.stdout and "[seed 1] done: 6 iterations" in r.stdout
    for seed in (0, 1, 2):
        single = tmp_path / f"single-{seed}"
        resdsl(*BASE, "--iters", "6", "--eval-every", "3", "--seed", str(seed), "--out", str(single), check=True)
        _same_run(tmp_path / "multi" / f"seed-{seed}", single)
        _same_run(tmp_path / "threads" / f"seed-{seed}", single)
        assert json.loads((single / "config.json").read_text())["seed"] == seed
    assert not torch.equal(_weights(tmp_path / "single-0")["fc.weight"], _weights(tmp_path / "single-1")["fc.weight"])


def test_one_seed_of_a_killed_multi_seed_run_resumes_exactly(tmp_path):
    """The launcher killed outright (SIGKILL, which it cannot pass on): its runs are sent SIGTERM by the kernel, so
    each checkpoints and stops rather than train on as an orphan holding its folder (they did); a resumed seed ends
    as the uninterrupted run of that seed does."""
    multi = tmp_path / "multi"
    args = [*BASE, "--iters", "80", "--eval-every", "20", "--checkpoint-every", "5"]
    proc = start(*args, "--seeds", "0,1", "--seed-runs", "processes", "--out", str(multi))
    ck = multi / "seed-1" / "checkpoint.pt"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                if ck.exists() and torch.load(ck, weights_only=True)["state"]["iter"] >= 10:
                    break
            except Exception:  # noqa: BLE001 - caught mid-rename; look again
                pass
            time.sleep(0.05)
        proc.kill()  # the launcher alone
        proc.wait()
        logs = [multi / f"seed-{seed}" / "train.log" for seed in (0, 1)]
        while LINUX and time.time() < deadline and not all(_ended(log) for log in logs):
            time.sleep(0.1)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left, when the test fails
        except ProcessLookupError:
            pass
    if LINUX:  # the kernel's parent-death signal; elsewhere the runs go on
        assert "stopped: SIGTERM received" in logs[1].read_text() and all(_ended(log) for log in logs)
    stopped = torch.load(ck, weights_only=True)["state"]["iter"]
    assert 10 <= stopped < 80, "the run finished before it could be killed"
    r = resdsl("train", "--resume", str(multi / "seed-1"), "--quiet", check=True)
    assert "done: 80 iterations" in r.stdout
    single = tmp_path / "single"
    resdsl(*args, "--seed", "1", "--out", str(single), check=True)
    _same_run(multi / "seed-1", single)


def test_threads_stop_on_sigterm_and_each_seed_resumes_exactly(tmp_path):
    """SIGTERM to a --seed-runs threads process: every run checkpoints and stops (exit 143); a resumed seed ends as
    the uninterrupted run of that seed does."""
    multi = tmp_path / "multi"
    args = [*BASE, "--iters", "40", "--eval-every", "20", "--checkpoint-every", "5"]
    proc = start(*args, "--seeds", "0,1", "--seed-runs", "threads", "--out", str(multi))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (multi / "seed-0" / "checkpoint.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err  # 128 + SIGTERM
    assert "[seed 0] resdsl: stopped: SIGTERM received" in err and "[seed 1] resdsl: stopped" in err
    for seed in (0, 1):
        assert torch.load(multi / f"seed-{seed}" / "checkpoint.pt", weights_only=True)["state"]["iter"] < 40
    resdsl("train", "--resume", str(multi / "seed-0"), "--quiet", check=True)
    single = tmp_path / "single"
    resdsl(*args, "--seed", "0", "--out", str(single), check=True)
    _same_run(multi / "seed-0", single)


def test_processes_stop_on_sigterm_to_the_parent(tmp_path):
    """SIGTERM to the --seeds process alone (a scheduler's or `kill PID`): it passes the stop on, so each running
    run checkpoints and stops (none is left training on its own), no further seed starts, and it exits 143."""
    multi = tmp_path / "multi"
    args = [*BASE, "--iters", "3000", "--eval-every", "1000", "--checkpoint-every", "5"]
    proc = start(*args, "--seeds", "0-2", "--parallel", "2", "--out", str(multi))
    deadline = time.time() + 240
    started = [multi / f"seed-{seed}" / "checkpoint.pt" for seed in (0, 1)]  # a run signalled before it has set
    while time.time() < deadline and proc.poll() is None and not all(p.exists() for p in started):  # up ends
        time.sleep(0.05)  # at once, with nothing to save
    proc.send_signal(signal.SIGTERM)
    out = "".join(proc.communicate(timeout=240))
    assert proc.returncode == 143, out
    assert "[seed 0] resdsl: stopped: SIGTERM received" in out and "[seed 1] resdsl: stopped" in out
    assert "stopped by SIGTERM" in out and "seed 2 did not start" in out and not (multi / "seed-2").exists()
    for seed in (0, 1):
        run = multi / f"seed-{seed}"
        assert torch.load(run / "checkpoint.pt", weights_only=True)["state"]["iter"] < 3000
        assert "checkpoint written" in (run / "train.log").read_text()  # it ended before the parent did


@pytest.mark.parametrize("args,fragment", [
    (["--seeds", "0,1", "--seed", "3"], "does not go with --seed"),
    (["--seeds", "0,0"], "given twice"),
    (["--seeds", "3-1"], "runs backwards"),
    (["--parallel", "2"], "--parallel goes with --seeds"),
    (["--seed-runs", "threads"], "--seed-runs goes with --seeds"),
    (["--scale-set"], "--scale-set goes with --set and --iters or --epochs"),
    (["--seeds", "0,1", "--seed-runs", "threads", "--parallel", "1"], "--parallel goes with --seed-runs processes"),
])
def test_bad_seed_lists(args, fragment, tmp_path):
    r = resdsl(*BASE, "--iters", "2", "--out", str(tmp_path / "x"), *args)
    assert r.returncode == 2 and fragment in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_emitted_trainer_runs_seeds(tmp_path):
    folder = tmp_path / "trainer"
    resdsl("compile", "tests/specs/tiny.res", "--emit-trainer", str(folder), check=True)
    r = subprocess.run([sys.executable, str(folder / "train.py"), *BASE[2:], "--iters", "2", "--seeds", "4,5",
                        "--out", str(tmp_path / "runs")], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["seed-4", "seed-5"]
    assert json.loads((tmp_path / "runs" / "seed-5" / "config.json").read_text())["seed"] == 5


def test_seed_runs_auto_makes_threads_on_one_gpu_only():
    from resdsl.train.seeds import seed_runs_way

    assert seed_runs_way("auto", gpus=1, dropout=False, parallel=None, runs=5) == "threads"
    assert seed_runs_way("auto", gpus=0, dropout=False, parallel=None, runs=5) == "processes"  # a CPU: its cores
    assert seed_runs_way("auto", gpus=4, dropout=False, parallel=None, runs=5) == "processes"  # dealt out over the GPUs
    assert seed_runs_way("auto", gpus=1, dropout=True, parallel=None, runs=5) == "processes"  # a shared generator
    assert seed_runs_way("auto", gpus=1, dropout=False, parallel=2, runs=5) == "processes"
    assert seed_runs_way("threads", gpus=0, dropout=False, parallel=None, runs=5) == "threads"  # asked for: as asked
    # each thread takes CUDA streams from PyTorch's pool of 32 a GPU: no two threads may share one
    assert seed_runs_way("auto", gpus=1, dropout=False, parallel=None, runs=11) == "processes"


def test_threads_refuse_a_network_with_dropout(tmp_path):
    """Dropout draws from torch's one generator while the runs train: threads would share it (the IR says so,
    before anything is built or trained)."""
    spec = tmp_path / "tiny_dropout.res"
    spec.write_text(f'extends "{Path("tests/specs/tiny.res").resolve()}"\nnetwork tiny_dropout\n'
                    "shortcut A dropout 0.5\n")
    args = ["train", str(spec), *BASE[2:], "--iters", "2", "--out", str(tmp_path / "x")]
    r = resdsl(*args, "--seeds", "0,1", "--seed-runs", "threads")
    assert r.returncode == 2 and "this network has dropout" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_the_summary_says_what_each_seed_left(tmp_path, capsys):
    """A seed killed outright (it could say nothing) is named with its signal and how to resume it, and the status
    is a failure (not -9, which a shell reads as 247); a stop names the runs that checkpointed, those that stopped
    before their first checkpoint (no folder to resume) and those that never started."""
    from resdsl.train import seeds

    out = tmp_path / "out"
    for seed in (0, 1):
        (out / f"seed-{seed}").mkdir(parents=True)
        (out / f"seed-{seed}" / "checkpoint.pt").write_bytes(b"x")
    assert seeds._summary([0, 1], str(out), {0: 0, 1: -9}) == 1
    err = capsys.readouterr().err
    assert f"[seed 1] was killed by SIGKILL; resume it with --resume {out / 'seed-1'}" in err
    assert "seed 1 failed (their errors are above" in err and "the others finished" in err
    (out / "seed-1" / "checkpoint.pt").unlink()
    (out / "seed-3").mkdir()
    (out / "seed-3" / "checkpoint.pt").write_bytes(b"x")
    assert seeds._summary([0, 1, 2, 3], str(out), {0: 130, 1: 130, 3: 0}, stopped=2) == 130
    err = capsys.readouterr().err
    assert err == (f"stopped by SIGINT: seed 3 finished; seed 0 checkpointed (resume one with --resume "
                   f"{out / 'seed-N'}); seed 1 ended without a checkpoint; seed 2 did not start\n"), err


def test_a_runs_own_folder_is_no_folder_of_seeds(tmp_path):
    from resdsl.train import seeds
    from resdsl.train.rundir import RunDirError

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="it holds a run \\(config.json\\); the seeds' runs go in a folder of"):
        seeds.run_seeds([0], str(tmp_path), lambda seed, folder: ["true"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_resuming_the_folder_of_a_seeds_run_points_at_its_runs(tmp_path):
    from resdsl.train.rundir import RunDirError, read_config

    (tmp_path / "seed-3").mkdir()
    (tmp_path / "seed-3" / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match=f"it holds a --seeds run's runs: give one, e.g. --resume {tmp_path}/seed-3"):
        read_config(str(tmp_path))
