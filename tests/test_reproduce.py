"""`resdsl reproduce`: a tiny experiment (two tiny networks, two seeds, a few iterations) end to end, killed and
restarted, through submitit's local executor, and its refusals."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time

import pytest

pytest.importorskip("torch")

from conftest import ROOT  # noqa: E402
from test_seeds import _same_run  # noqa: E402
from test_train import resdsl, start  # noqa: E402

TINY = "tests/experiments/tiny.exp"
FAST = ["--iters", "3", "--train-subset", "128", "--test-subset", "32", "--device", "cpu", "--no-estimate"]


def reproduce(*args, timeout=600):
    """`resdsl reproduce *args` in a process of its own (forked from a warm one; its runs start afresh)."""
    return resdsl("reproduce", *args, timeout=timeout)


def results(out):
    return json.loads((out / "results.json").read_text())


def test_tiny_experiment_end_to_end(tmp_path):
    out = tmp_path / "exp"
    r = reproduce(TINY, *FAST, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "4 of 4 runs to do" in r.stdout
    assert "not the paper's setup (3 iterations a run" in r.stdout  # the plan says it as the report does
    res = results(out)
    rows = {row["label"]: row for row in res["rows"]}
    assert set(rows) == {"plain-8", "ResNet-8"}
    assert all(len(row["test_errors"]) == 2 and row["seeds"] == [0, 1] for row in rows.values())
    resnet = rows["ResNet-8"]
    assert resnet["paper"] == {"convention": "single", "error": 50.0}
    assert resnet["difference"] is None and resnet["params"] == 19218  # a scaled-down run is not compared
    assert res["departures"] == ["3 iterations a run, not its recipe's length", "only 128 of the training "
                                 "images", "only 32 of the test images"]
    assert 0 < res["training_seconds"] < 600
    for run in ("plain-8/seed-0", "resnet-8/seed-1"):  # every run is a complete run directory
        assert json.loads((out / run / "config.json").read_text())["iterations"] == 3
    line = (out / "results.csv").read_text().splitlines()[1]  # the file alone says the setup is not the paper's
    assert line.endswith(",synthetic,\"3 iterations a run, not its recipe's length; only 128 of the training images; "
                         "only 32 of the test images\""), line
    report = (out / "report.md").read_text()
    assert "| ResNet-8 | 0.02M | 2 of 2 |" in report and report.count("| 50 |") == 1 and "ours - paper" not in report
    assert "- not the paper's setup (3 iterations a run, not its recipe's length; only 128 of the" in report
    _compared_when_the_setup_is_the_papers(out, rows)
    # the degradation sentence is computed from the runs' final training errors
    plain = rows["plain-8"]["train_error_mean"]
    assert res["statements"] and f"{plain:.1f}%" in res["statements"][0]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "fig7.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # [R] Fig. 7 of seed 0 of each row
    assert {line.split(",")[0] for line in (out / "fig7.csv").read_text().splitlines()[1:]} == {"plain-8", "ResNet-8"}
    csv = (out / "results.csv").read_text().splitlines()
    assert csv[0].startswith("label,spec,params") and len(csv) == 3
    again = reproduce(TINY, *FAST, "--out", str(out))  # nothing left to do: every run is skipped
    assert again.returncode == 0 and "0 of 4 runs to do: every run is finished" in again.stdout
    assert "start " not in again.stdout
    (out / "plain-8" / "seed-0" / "checkpoint.pt").unlink()  # as if it died before its first checkpoint
    died = reproduce(TINY, *FAST, "--out", str(out))  # started again over its records (--overwrite)
    assert died.returncode == 0 and "1 of 4 runs to do" in died.stdout, died.stderr
    assert (out / "plain-8" / "seed-0" / "checkpoint.pt").exists()
    _a_run_whose_record_is_damaged_is_not_trained_anew(out)
    other = reproduce(TINY, *FAST[:1], "5", *FAST[2:], "--out", str(out))  # another experiment: refused
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert "started with options --iters 3" in other.stderr
    assert "asks for --iters 5." in other.stderr  # the flags that differ, not the two option dicts
    dry = reproduce(TINY, *FAST[:1], "5", *FAST[2:], "--out", str(out), "--dry-run")  # says what the run would
    assert dry.returncode == 1 and "asks for --iters 5." in dry.stderr and "runs to do" not in dry.stdout
    dry = reproduce(TINY, *FAST[2:], "--out", str(out), "--dry-run")  # a flag not given is said so, not 'None'
    assert dry.returncode == 1 and "asks for no --iters." in dry.stderr, dry.stderr
    _a_stopped_run_is_not_counted(out)
    _a_figure_not_drawn_leaves_no_earlier_file(out)


def _a_run_whose_record_is_damaged_is_not_trained_anew(out):
    """A trained run whose config.json is damaged is resumed (which says what is wrong), never started again over
    its checkpoint: at full length that threw hours of training away without a word."""
    config, checkpoint = out / "plain-8" / "seed-1" / "config.json", out / "plain-8" / "seed-1" / "checkpoint.pt"
    record, weights = config.read_text(), checkpoint.read_bytes()
    config.write_text("{")
    r = reproduce(TINY, *FAST, "--out", str(out))
    assert r.returncode == 1 and "seed-1: config.json is damaged" in r.stderr, r.stdout + r.stderr
    assert "its checkpoint is left as it is" in r.stderr and "1 run failed (plain-8/seed-1)" in r.stderr
    assert checkpoint.read_bytes() == weights
    config.write_text(record)


def _a_figure_not_drawn_leaves_no_earlier_file(out):
    """fig7 cannot be drawn (its runs' data is gone): the report says so, and the earlier report's fig7.png and
    fig7.csv are gone rather than shown beside it as this one's."""
    from resdsl.experiment.parse import parse_experiment
    from resdsl.experiment.reproduce import write_report

    for row in ("plain-8", "resnet-8"):
        config = out / row / "seed-0" / "config.json"
        cfg = json.loads(config.read_text())
        config.write_text(json.dumps(dict(cfg, options=dict(cfg["options"], data=str(out / "gone")))))
    text = write_report(parse_experiment(str(ROOT / TINY)), str(out), {"iters": 3}, None, "resdsl reproduce", 1.0)
    assert "(fig7 not drawn: " in text and not (out / "fig7.png").exists() and not (out / "fig7.csv").exists()


def _a_stopped_run_is_not_counted(out):
    """A run stopped before its last iteration (here: one whose record asks for more than it trained) is left out
    of its row's figures: its last row is a figure from along the way."""
    from resdsl.experiment.parse import parse_experiment
    from resdsl.experiment.reproduce import write_report

    config = out / "resnet-8" / "seed-1" / "config.json"
    config.write_text(json.dumps(dict(json.loads(config.read_text()), iterations=6)))
    text = write_report(parse_experiment(str(ROOT / TINY)), str(out), {"iters": 3}, None, "resdsl reproduce", 1.0)
    resnet = {row["label"]: row for row in results(out)["rows"]}["ResNet-8"]
    assert resnet["seeds"] == [0] and len(resnet["test_errors"]) == 1 and "| ResNet-8 | 0.02M | 1 of 2 |" in text


def _compared_when_the_setup_is_the_papers(out, rows):
    """The same runs reported as if they followed the experiment's own setup: ours - paper is there."""
    from resdsl.experiment.parse import parse_experiment
    from resdsl.experiment.reproduce import write_report

    text = write_report(parse_experiment(str(ROOT / TINY)), str(out), {}, None, "resdsl reproduce tiny", 1.0)
    mean = rows["ResNet-8"]["mean"]
    assert "ours - paper |" in text and f"| 50 | {mean - 50:+.2f} |" in text and "not the paper's setup" not in text
    assert results(out)["rows"][1]["difference"] == pytest.approx(mean - 50.0)


def test_killed_experiment_finishes_equal_to_an_uninterrupted_one(tmp_path):
    """Killed while its second run trains, the experiment's restart skips the finished run and resumes the other,
    which ends equal to the same run made in one go: weights bitwise, every metrics row."""
    args = [*FAST[:1], "8", *FAST[2:], "--parallel", "1", "--seeds", "1"]
    out = tmp_path / "killed"
    proc = start("reproduce", TINY, *args, "--out", str(out))
    second = out / "resnet-8" / "seed-0" / "checkpoint.pt"
    deadline = time.time() + 300
    while not second.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    said, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err  # 128 + SIGTERM
    assert "the same command goes on, each stopped run from its checkpoint" in err
    assert re.search(r"\n(stopped at iteration [1-8] \(checkpointed\)|done) resnet-8/seed-0\n", said), said
    r = reproduce(TINY, *args, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "start plain-8/seed-0" not in r.stdout  # finished before the kill: skipped
    whole = tmp_path / "whole"  # the command the runner gives the run (tests/experiments/tiny.exp: data synthetic)
    resdsl("train", "tests/specs/tiny.res", "--seed", "0", "--out", str(whole), "--quiet", "--data", "synthetic",
           *args[:8], check=True)
    _same_run(out / "resnet-8" / "seed-0", whole)
    final = json.loads((whole / "metrics.jsonl").read_text().splitlines()[-1])
    assert {row["label"]: row["test_errors"] for row in results(out)["rows"]}["ResNet-8"] == [final["test_error"]]


def test_submitit_local_launcher_runs_the_experiment(tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "exp"
    r = reproduce(TINY, *FAST, "--seeds", "1", "--rows", "ResNet-8", "--launcher", "submitit-local", "--out", str(out))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "through submitit" in r.stdout
    assert [(row["label"], len(row["test_errors"])) for row in results(out)["rows"]] == [("ResNet-8", 1)]
    assert (out / "submitit").is_dir()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_job_at_its_time_limit_checkpoints_is_requeued_and_resumes_exactly(tmp_path):
    """submitit's SIGUSR2 (Slurm sends it 90 s before a job's time limit, or on a preemption) to the job: the
    trainer checkpoints and stops, the job is requeued as itself and resumes the run, which ends equal to a run
    made in one go; the experiment finishes as if nothing had happened."""
    pytest.importorskip("submitit")
    args = ["--iters", "60", *FAST[2:], "--seeds", "1", "--rows", "ResNet-8"]
    out = tmp_path / "exp"
    proc = start("reproduce", TINY, *args, "--launcher", "submitit-local", "--out", str(out))
    run = out / "resnet-8" / "seed-0"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (run / "checkpoint.pt").exists():
        time.sleep(0.05)
    job = [pid for pid, cmd in _processes() if b"submitit.core._submit" in cmd and _descends(pid, proc.pid)]
    assert len(job) == 1, job  # this experiment's job (another test's may run beside it)
    os.kill(job[0], signal.SIGUSR2)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr + stdout
    assert "done resnet-8/seed-0" in stdout and "failed" not in stdout
    log = (run / "train.log").read_text()
    assert "stopped: SIGTERM received" in log and "resumed at iteration" in log, log[-2000:]
    whole = tmp_path / "whole"
    resdsl("train", "tests/specs/tiny.res", "--seed", "0", "--out", str(whole), "--quiet", "--data", "synthetic",
           *args[:8], check=True)
    _same_run(run, whole)


@pytest.mark.parametrize("args, fragment", [(["--slurm-time", "0"], "must be at least 1"),
                                             (["--slurm-option", "account"], "write one #SBATCH option as KEY=VALUE"),
                                             (["--slurm-gpus", "-1"], "x>=0"),
                                             (["--seeds", "0"], "must be at least 1"),
                                             (["--seeds", "0-4"], "not a list of seeds as train's --seeds does"),
                                             (["--seeds", "100000000000"], "at most 1000 runs per row")])
def test_options_are_checked(args, fragment):
    r = reproduce(TINY, "--dry-run", "--no-estimate", *args)
    assert r.returncode == 2 and fragment in r.stderr, r.stderr


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == ancestor:
            return True
    return False


def _processes():
    """(pid, command line) of every process."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                found.append((int(entry), fh.read()))
        except OSError:
            continue
    return found


@pytest.mark.skipif(shutil.which("srun") is not None, reason="a Slurm cluster is here")
def test_slurm_launcher_without_slurm_is_a_plain_error(tmp_path):
    pytest.importorskip("submitit")
    r = reproduce(TINY, *FAST, "--launcher", "slurm", "--out", str(tmp_path / "exp"))
    assert r.returncode == 1 and "use --launcher local" in r.stderr and "internal error" not in r.stderr, r.stderr


def test_dry_run_plans_with_an_estimate(tmp_path):
    out = tmp_path / "exp"
    r = reproduce(TINY, *FAST[:-1], "--dry-run", "--out", str(out))
    assert r.returncode == 0, r.stderr
    # each run's estimate, in seconds or minutes as a loaded machine times it
    assert re.search(r"^plain-8/seed-0 +new +0/3 +\d+(\.\d)? (s|min)$", r.stdout, re.MULTILINE), r.stdout
    assert not out.exists()  # a dry run writes nothing
    r = reproduce(TINY, *FAST[:-1], "--dry-run", "--no-estimate", "--out", str(out))
    assert r.returncode == 0 and "4 of 4 runs to do; time not estimated" in r.stdout, r.stdout + r.stderr


def test_an_imagenet_experiment_is_planned_without_data_and_for_a_folders_size(tmp_path):
    """A dry run needs no ImageNet yet (planned for its 1,281,167 images: [I]'s 90 epochs at batch 256); with a
    folder, the epochs are the folder's, as the trainer counts them; a real run needs the folder."""
    from PIL import Image

    r = reproduce("i-table5", "--rows", "ResNet-152*original*", "--dry-run", "--no-estimate")
    assert r.returncode == 0 and " 0/450,360 " in r.stdout and "planned for ImageNet's" in r.stdout, r.stdout
    for split, n in (("train", 600), ("val", 1)):  # 600 images: 2 iterations an epoch at batch 256
        for k in range(n):
            (tmp_path / "imgs" / split / "c").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / split / "c" / f"{k}.png")
    r = reproduce("i-table5", "--rows", "ResNet-152*original*", "--data", str(tmp_path / "imgs"), "--dry-run",
                  "--no-estimate", "--out", str(tmp_path / "exp"))
    assert r.returncode == 0 and " 0/180 " in r.stdout, r.stdout + r.stderr
    # any folder was taken for ImageNet, and its errors set against the paper's
    assert f"not the paper's setup (on {tmp_path / 'imgs'}: 1 class, 600 training images, not ImageNet's 1,000 and " \
        "1,281,167)" in r.stdout
    r = reproduce("i-table5", "--no-estimate", "--out", str(tmp_path / "exp"))
    assert r.returncode == 2 and "pass --data" in r.stderr


def test_broken_experiment_file_is_a_located_error(tmp_path):
    bad = tmp_path / "bad.exp"
    bad.write_text('experiment bad\ndataset cifar10\nseeds 2\nrow "x" spek resnet20\n')
    r = reproduce(str(bad), "--dry-run")
    assert r.returncode == 1 and f"{bad}:4:" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(ROOT / "runs" / "bad")


def test_a_panel_whose_rows_have_no_runs_is_not_drawn():
    """`--rows plain-20,ResNet-20` of [R] Fig. 6 draws the plain and ResNet panels, not an empty third one."""
    from types import SimpleNamespace

    from resdsl.experiment.report import drawn_panels

    fig = SimpleNamespace(panels=[("plain", ["plain-20", "plain-56"]), ("ResNet", ["ResNet-20"]),
                                  ("110 and 1202 layers", ["ResNet-110", "ResNet-1202"])])
    runs = {"plain-20": ["run"], "ResNet-20": ["run"], "ResNet-110": []}
    assert [title for title, _ in drawn_panels(fig, runs)] == ["plain", "ResNet"]


def test_an_output_folder_it_did_not_make_is_refused(tmp_path):
    """The report and results would replace files the user wrote there; a file is no folder."""
    mine = tmp_path / "mypaper"
    mine.mkdir()
    (mine / "report.md").write_text("MY DRAFT")
    r = reproduce(TINY, *FAST, "--out", str(mine))
    assert r.returncode == 1 and "already holds files" in r.stderr and "Traceback" not in r.stderr, r.stderr
    dry = reproduce(TINY, *FAST, "--out", str(mine), "--dry-run")
    assert dry.returncode == 1 and "already holds files" in dry.stderr, dry.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["report.md"] and (mine / "report.md").read_text() == "MY DRAFT"
    (tmp_path / "file").write_text("x")
    r = reproduce(TINY, *FAST, "--out", str(tmp_path / "file"))
    assert r.returncode == 1 and "is a file" in r.stderr and "internal error" not in r.stderr, r.stderr


def test_a_restart_refuses_runs_of_another_network_or_recipe_and_a_folder_in_use(tmp_path):
    """The report must not average runs of two networks: a spec edited, or a row's `set` changed, since its runs
    were trained is refused on restart (and by a dry run), naming the runs. A second command into a folder that
    one is using is refused at once."""
    from resdsl.train.fileio import FolderLock

    net = tmp_path / "net.res"
    net.write_text(f'extends "{ROOT / "tests/specs/tiny.res"}"\nnetwork net\n')
    exp = tmp_path / "e.exp"
    head = 'experiment e\ntitle "t"\nsource "test"\ndataset synthetic\nseeds 1\nconvention single\n'
    exp.write_text(head + 'row "R" spec net.res\n')
    out = tmp_path / "out"
    assert reproduce(str(exp), *FAST, "--out", str(out)).returncode == 0
    net.write_text(net.read_text() + "order preact\n")  # another network under the same row
    for dry in ([], ["--dry-run"]):
        r = reproduce(str(exp), *FAST, "--out", str(out), *dry)
        assert r.returncode == 1 and "r/seed-0 (trained from another network or recipe)" in r.stderr, r.stderr
    net.write_text(f'extends "{ROOT / "tests/specs/tiny.res"}"\nnetwork net\n')
    exp.write_text(head + 'row "R" spec net.res set "lr=0.05"\n')  # another recipe
    r = reproduce(str(exp), *FAST, "--out", str(out), "--dry-run")
    assert r.returncode == 1 and "r/seed-0 (trained with other `set` overrides)" in r.stderr, r.stderr
    exp.write_text(head + 'row "R" spec net.res\n')
    lock = FolderLock(str(out), "experiment folder")  # another reproduce at work in it
    (out / "r" / "seed-1").mkdir()
    run = FolderLock(str(out / "r" / "seed-1"), "run directory")  # training its seed 1
    try:
        dry = reproduce(str(exp), *FAST, "--seeds", "2", "--out", str(out), "--dry-run")
        r = reproduce(str(exp), *FAST, "--out", str(out))
    finally:
        lock.release()
        run.release()
    assert dry.returncode == 0 and "another command is running this experiment" in dry.stdout, dry.stdout
    assert re.search(r"r/seed-1 +training ", dry.stdout) and re.search(r"r/seed-0 +finished ", dry.stdout)
    assert r.returncode == 1 and "is in use by another process" in r.stderr and "report" not in r.stdout, r.stdout
    r = reproduce(str(exp), *FAST, "--out", str(out))
    assert r.returncode == 0 and "every run is finished" in r.stdout, r.stderr
    from resdsl.experiment.parse import parse_experiment
    from resdsl.experiment.folder import check_record

    fresh = tmp_path / "fresh"  # another command (--iters 4) has just begun here: its record, nothing checkpointed
    check_record(str(fresh), parse_experiment(exp), {"iters": 4, "device": "cpu"}, 1)
    record = (fresh / "experiment.json").read_text()
    lock = FolderLock(str(fresh), "experiment folder")
    try:  # other options, no checkpoint: were the folder free, this command's record would replace that one
        r = reproduce(str(exp), *FAST, "--out", str(fresh))
    finally:
        lock.release()
    assert r.returncode == 1 and "in use by another process" in r.stderr, r.stderr
    assert (fresh / "experiment.json").read_text() == record  # the running command's record is left as it is


def test_a_failed_run_is_an_error_after_the_report_of_the_others(tmp_path):
    """One row's run diverges (its NaN loss stops it): the others finish, the report is written with what there
    is, and the command ends in an error naming the failed run, so a script or CI sees it (it exited 0)."""
    exp = tmp_path / "diverges.exp"
    spec = ROOT / "tests" / "specs" / "tiny.res"
    exp.write_text(f'experiment diverges\ntitle "t"\nsource "test"\ndataset synthetic\nseeds 1\n'
                   f'row "ok" spec "{spec}"\nrow "diverges" spec "{spec}" set "lr=1e30"\n')
    out = tmp_path / "out"
    r = reproduce(str(exp), *FAST, "--out", str(out))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "1 run failed (diverges/seed-0)" in r.stderr and "internal error" not in r.stderr, r.stderr
    assert "failed (exit 1) diverges/seed-0" in r.stdout  # it said "stopped", as a run stopped by a signal
    rows = {row["label"]: row for row in results(out)["rows"]}
    assert len(rows["ok"]["test_errors"]) == 1 and rows["diverges"]["test_errors"] == []


def test_a_rows_warmup_and_milestones_scale_with_a_shorter_run(tmp_path):
    """A row's `set` is of the paper's recipe: `reproduce --iters 4` scales its warm-up and milestones with the
    recipe's own (a 16,000-iteration warm-up of 64,000 becomes 1 of 4), where `train --set` alone would count
    them as written and refuse a warm-up longer than the run."""
    exp = tmp_path / "warm.exp"
    spec = ROOT / "tests" / "specs" / "tiny.res"
    exp.write_text(f'experiment warm\ntitle "t"\nsource "test"\ndataset synthetic\nseeds 1\n'
                   f'row "warm" spec "{spec}" set "warmup=16000 iterations lr 0.01"\n')
    out = tmp_path / "out"
    r = reproduce(str(exp), *FAST[2:], "--iters", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (out / "warm" / "seed-0" / "metrics.jsonl").read_text().splitlines()]
    # the warm-up's 0.01 for 1 iteration, then the recipe's 0.1 divided by 10 at its milestones 32k, 48k -> 2, 3
    assert [row["lr"] for row in rows] == pytest.approx([0.01, 0.1, 0.01, 0.001]), rows


@pytest.mark.parametrize("flag", ["--data-dir", "--out", "--data"])
def test_an_empty_folder_name_is_a_usage_error_as_in_train(flag):
    """`--data-dir ''` was taken, and each run then exited 2; `--out ''` quietly meant the default folder."""
    r = reproduce("r-table6", flag, "", "--dry-run", "--no-estimate")
    assert r.returncode == 2 and f"{flag} needs a name, not an empty one" in r.stderr, r.stderr
