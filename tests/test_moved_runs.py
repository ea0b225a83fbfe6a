"""Runs moved, copied and used from another folder: a run records its data folders from the root and checks on
resume that it finds the data it trained on; a checkpoint copied in from another run is refused by eval and
analyze as by --resume; an experiment folder counts only the runs its rows and seeds name; a resumed run says that
it changed device; what a resumed run cannot write is said before its first iteration."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import ROOT
from test_train import QUICK, resdsl

pytest.importorskip("torch")

TINY = str(ROOT / "tests" / "specs" / "tiny.res")


def _cli(cwd, *args):
    return resdsl(*args, cwd=cwd)


def _edit_config(run, **changes):
    """config.json as another resdsl, another machine or a longer run would have written it."""
    cfg = json.loads((run / "config.json").read_text())
    for key, value in changes.items():
        where, _, name = key.rpartition("__")
        (cfg[where] if where else cfg)[name] = value
    (run / "config.json").write_text(json.dumps(cfg))


def test_a_relative_data_folder_is_recorded_from_the_root_and_checked_on_resume(tmp_path):
    from test_train_data import make_mnist

    proj, other = tmp_path / "proj", tmp_path / "other"
    make_mnist(proj / "data", n_train=64, n_test=16)
    make_mnist(other / "data", n_train=64, n_test=24)  # other files under the same relative name
    r = _cli(proj, "train", TINY, "--data", "mnist", "--data-dir", "data", "--no-download", "--iters", "4",
             "--eval-every", "4", "--batch-size", "16", "--device", "cpu", "--quiet", "--out", "run")
    assert r.returncode == 0, r.stderr
    run = proj / "run"
    assert json.loads((run / "config.json").read_text())["options"]["data_dir"] == str(proj / "data")
    r = _cli(other, "eval", "../proj/run")
    assert r.returncode == 0 and "on 16 test images" in r.stdout, (r.stdout, r.stderr)
    # as an older resdsl recorded it (the folder as typed), a stopped run resumed from the other folder
    _edit_config(run, options__data_dir="data", options__iters=8, iterations=8)
    r = _cli(other, "train", "--resume", "../proj/run")
    assert r.returncode == 1 and "the data found now is not the data the run was trained on (test_size 16 then, 24 " \
                                 "now)" in r.stderr, r.stderr
    # trained on a GPU, resumed on this CPU: said, and the run goes on
    _edit_config(run, device="cuda:0 (NVIDIA H100 80GB HBM3)")
    r = _cli(proj, "train", "--resume", "run")
    assert r.returncode == 0, r.stderr
    assert "note: the run trained on cuda and goes on on cpu" in r.stdout + r.stderr


def test_a_checkpoint_copied_from_another_run_is_refused_by_eval_and_analyze(tmp_path):
    common = ["train", "tests/specs/tiny.res", *QUICK, "--iters", "2", "--eval-every", "2"]
    resdsl(*common, "--out", str(tmp_path / "a"), check=True)
    resdsl(*common, "--seed", "4", "--out", str(tmp_path / "b"), check=True)
    mixed = tmp_path / "mixed"
    shutil.copytree(tmp_path / "a", mixed)
    shutil.copy(tmp_path / "b" / "checkpoint.pt", mixed / "checkpoint.pt")
    for args in (["eval", str(mixed)], ["analyze", "responses", str(mixed), "--out", str(tmp_path / "resp")]):
        r = resdsl(*args)
        assert r.returncode == 1 and "is another run's checkpoint" in r.stderr, (args, r.stderr)
        assert "evaluate the run it came from" in r.stderr or "measure the run it came from" in r.stderr
    assert resdsl("eval", str(tmp_path / "a")).returncode == 0


def test_an_experiment_folder_counts_only_the_runs_it_names(tmp_path):
    """A run copied into an experiment folder from elsewhere (another seed, another length) is not counted as the
    row's: restarted, the command names it and why."""
    exp = tmp_path / "e.exp"
    exp.write_text(f'experiment e\ntitle "t"\nsource "test"\ndataset synthetic\nseeds 1\nrow "R" spec "{TINY}"\n')
    out, fast = tmp_path / "out", ["--iters", "3", "--train-subset", "128", "--test-subset", "32", "--device", "cpu"]
    assert resdsl("reproduce", str(exp), *fast, "--no-estimate", "--out", str(out)).returncode == 0
    stray = tmp_path / "stray"
    resdsl("train", TINY, "--data", "synthetic", *fast, "--seed", "3", "--quiet", "--out", str(stray), check=True)
    shutil.rmtree(out / "r" / "seed-0")
    shutil.copytree(stray, out / "r" / "seed-0")
    r = resdsl("reproduce", str(exp), *fast, "--no-estimate", "--out", str(out), "--dry-run")
    assert r.returncode == 1 and "r/seed-0 (trained with seed 3)" in r.stderr, r.stderr
    _edit_config(out / "r" / "seed-0", seed=0, options__iters=4)
    r = resdsl("reproduce", str(exp), *fast, "--no-estimate", "--out", str(out), "--dry-run")
    assert r.returncode == 1 and "r/seed-0 (trained with --iters 4)" in r.stderr, r.stderr
    (out / "r" / "seed-0" / "checkpoint.pt").unlink()  # a start that died before its checkpoint: started anew
    r = resdsl("reproduce", str(exp), *fast, "--no-estimate", "--out", str(out), "--dry-run")
    assert r.returncode == 0 and "r/seed-0" in r.stdout, r.stderr


def test_an_older_record_is_read_as_it_was_written(tmp_path, monkeypatch):
    """An experiment folder an older resdsl started: a relative --data-dir in experiment.json and in its runs'
    config.json is the folder it named from where the command runs; a row whose `set` schedule a shorter run did
    not scale then (its config.json has no set_scaled) is not averaged with runs that scale it now."""
    from resdsl.experiment.folder import _stale, check_record
    from resdsl.experiment.model import Row
    from resdsl.experiment.parse import parse_experiment
    from resdsl.experiment.runner import Job

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dd").mkdir()
    exp_file = tmp_path / "e.exp"
    exp_file.write_text(f'experiment e\ntitle "t"\nsource "test"\ndataset synthetic\nseeds 1\nrow "R" spec "{TINY}"\n')
    exp, out = parse_experiment(exp_file), tmp_path / "out"
    check_record(str(out), exp, {"data_dir": "dd", "iters": 3}, 1)  # as the older resdsl wrote it: relative
    (out / "r" / "seed-0").mkdir(parents=True)
    (out / "r" / "seed-0" / "checkpoint.pt").write_bytes(b"x")  # a run has checkpointed: options are fixed
    check_record(str(out), exp, {"data_dir": str(tmp_path / "dd"), "iters": 3}, 1)  # this resdsl's spelling
    row = Row(label="R", spec=TINY, overrides=("schedule=step 2, 3",))
    job, net = Job(row, 0, str(out / "r" / "seed-0")), type("Net", (), {"is_trained_from": lambda self, c: None})()
    old = {"set": ["schedule=step 2, 3"], "seed": 0, "options": {"iters": 3, "data_dir": "dd"}}
    assert "counted in the run's length" in _stale(job, old, net, {"iters": 3, "data": "synthetic"})
    assert _stale(job, dict(old, set_scaled=True), net, {"iters": 3}) is None
    whole = dict(old, options={"data_dir": "dd"})  # the whole recipe: nothing was scaled either way
    assert _stale(job, whole, net, {}) is None


def test_what_a_resumed_run_appends_to_must_be_writable_before_it_starts(tmp_path, monkeypatch):
    """A read-only metrics.jsonl (a copy of a protected run) is refused before the first iteration, not after
    the first evaluation (root may write anything, so the permission is what os.access says)."""
    from resdsl.train import rundir

    run = tmp_path / "run"
    resdsl("train", "tests/specs/tiny.res", *QUICK, "--iters", "2", "--out", str(run), check=True)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("metrics.jsonl") else real(p, mode))
    with pytest.raises(rundir.RunDirError, match="metrics.jsonl is read-only; resuming adds to the run's records"):
        rundir.resume(str(run))
    with pytest.raises(rundir.RunDirError, match="not valid UTF-8 .* rename the folder .* to a UTF-8 name"):
        rundir.resume(str(tmp_path / "bs\udcff"))  # a name undecodable bytes made; --out does not go with --resume


def test_a_run_shared_without_its_metrics_resumes_and_says_its_rows_are_lost(tmp_path):
    run = tmp_path / "run"
    resdsl("train", "tests/specs/tiny.res", *QUICK, "--iters", "4", "--eval-every", "2", "--out", str(run),
           check=True)
    _edit_config(run, options__iters=6, iterations=6)
    (run / "metrics.jsonl").unlink()
    r = resdsl("train", "--resume", str(run))
    missing = "metrics.jsonl is missing: the rows up to the checkpoint's iteration 4 are lost (the training is not)"
    assert r.returncode == 0 and missing in r.stderr, r.stderr


def test_a_run_folder_moved_while_it_trained_is_said_so():
    from resdsl.train.rundir import what_is_kept as _kept

    assert "is gone (moved or deleted while the run trained)" in _kept("/nonexistent/run/checkpoint.pt")
    assert _kept(os.path.join(os.getcwd(), "no-such-checkpoint.pt")) == "no checkpoint was written"


def test_the_recipes_own_image_folder_is_recorded_from_the_root(tmp_path, monkeypatch):
    """`dataset imagenet` without --data reads ./imagenet: the run records that folder from the root, as it records
    --data's, so that resumed from another folder it reads the same pictures (or none)."""
    import resdsl
    from resdsl.train.session import RunOptions, apply_overrides

    whole = resdsl.compile_spec("resnet20").recipe
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imagenet").mkdir()
    opts = RunOptions()
    recipe = apply_overrides(dict(whole, dataset="imagenet"), opts)
    assert recipe["dataset"] == opts.data == str(tmp_path / "imagenet")
    opts = RunOptions()
    recipe = apply_overrides(dict(whole, dataset="mnist"), opts)
    assert recipe["dataset"] == "mnist" and opts.data is None


def test_reproduce_on_an_image_folder_refuses_rows_it_cannot_normalise(tmp_path):
    """`reproduce --data FOLDER` of a CIFAR experiment: the rows' per-pixel mean is not what a folder has; refused
    once, before any run, with the fix an experiment file has (each run failed alone, pointing at --set)."""
    from test_images import make_jpeg_folder

    make_jpeg_folder(tmp_path / "pictures")
    r = _cli(ROOT, "reproduce", "tests/experiments/tiny.exp", "--data", str(tmp_path / "pictures"), "--iters", "1",
             "--out", str(tmp_path / "exp"), "--dry-run", "--no-estimate")
    assert r.returncode == 1 and "'plain-8' (normalize per-pixel-mean)" in r.stderr, r.stderr
    assert 'set "normalize=imagenet-mean-std"' in r.stderr and not (tmp_path / "exp").exists()
