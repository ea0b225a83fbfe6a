"""The trainer never loses work and never runs a file's contents: planted checkpoints, used run directories,
mismatched resumes, damaged run records, full disks, bad data folders and bad flags all end in a clear message."""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT  # noqa: E402
from test_train import ENV, QUICK, resdsl  # noqa: E402

TINY = "tests/specs/tiny.res"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 4-iteration run of tiny.res (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("runs") / "done"
    resdsl("train", TINY, *QUICK, "--iters", "4", "--eval-every", "2", "--out", str(out), check=True)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


class _Evil:
    """Unpickling this object runs a command: what a planted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path, wrapped: bool) -> None:
    import pickle

    if wrapped:  # a well-formed torch zip checkpoint with the resdsl marker, carrying one hostile object
        torch.save({"format": "resdsl-checkpoint", "version": 2, "model": _Evil(marker), "optimizer": {},
                    "schedule": {}, "state": {}, "rng": {}}, path)
    else:  # a bare pickle, which torch.load(weights_only=False) would execute
        path.write_bytes(pickle.dumps({"model": _Evil(marker)}))


@pytest.mark.parametrize("wrapped", [True, False])
def test_planted_checkpoint_is_refused_everywhere(finished_run, tmp_path, wrapped):
    marker = tmp_path / "PWNED"
    run = _copy(finished_run, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["iterations"] = 8  # make the run look unfinished so that resume gets as far as loading
    (run / "config.json").write_text(json.dumps(cfg))
    _plant(run / "checkpoint.pt", marker, wrapped)
    r = resdsl("train", "--resume", str(run), "--quiet")
    assert r.returncode == 1 and "not a resdsl checkpoint" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = resdsl("eval", TINY, "--checkpoint", str(run), "--data", "synthetic", "--test-subset", "64")
    assert r.returncode == 1 and "not a resdsl checkpoint" in r.stderr, r.stderr
    assert "Warning" not in r.stderr, r.stderr  # torch's warning of the pickle's protocol, with a source line
    folder = tmp_path / "trainer"
    resdsl("compile", TINY, "--emit-trainer", str(folder), check=True)
    r = subprocess.run([sys.executable, str(folder / "train.py"), "--resume", str(run), "--quiet"],
                       capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert r.returncode == 1 and "not a resdsl checkpoint" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not marker.exists()


def test_used_run_directory_is_refused_and_overwrite_replaces(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    before = (run / "checkpoint.pt").read_bytes()
    r = resdsl("train", TINY, *QUICK, "--iters", "2", "--out", str(run))
    assert r.returncode == 1 and "already holds a run" in r.stderr and f"--resume {run}" in r.stderr
    assert (run / "checkpoint.pt").read_bytes() == before
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    (run / "notes.txt").write_text("mine")
    r = resdsl("train", TINY, *QUICK, "--iters", "2", "--out", str(run), "--overwrite")
    assert r.returncode == 1 and "notes.txt" in r.stderr and (run / "notes.txt").exists()
    (run / "notes.txt").unlink()
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    r = resdsl("train", TINY, *QUICK, "--iters", "2", "--out", str(run), "--overwrite", "--batch-size", "100000")
    assert r.returncode == 1 and "larger than the training set" in r.stderr, r.stderr  # found once the data is read:
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == files  # kept
    r = resdsl("train", TINY, *QUICK, "--iters", "2", "--eval-every", "2", "--out", str(run), "--overwrite")
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["iter"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [2]


def test_undecodable_names_are_refused_or_escaped(tmp_path):
    """A run directory whose name is not UTF-8 is refused before anything is made (config.json, train.log and
    TensorBoard record it); a spec file so named trains, its name escaped in what is printed and logged."""
    bad = os.fsdecode(b"r\xfaun")
    r = resdsl("train", TINY, *QUICK, "--iters", "2", "--out", str(tmp_path / bad))
    assert r.returncode == 1 and "not valid UTF-8" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / bad)
    spec = tmp_path / os.fsdecode(b"\xff\xfe.res")
    spec.write_text((ROOT / TINY).read_text().replace('"../../specs/', f'"{ROOT}/specs/'))
    r = resdsl("train", str(spec), *QUICK, "--iters", "2", "--eval-every", "2", "--out", str(tmp_path / "ok"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "\\udcff\\udcfe.res" in (tmp_path / "ok" / "train.log").read_text(encoding="utf-8")


def test_a_run_directory_in_use_is_locked(tmp_path):
    from resdsl.train.fileio import FolderLock

    run = tmp_path / "run"
    run.mkdir()
    with FolderLock(str(run)):
        r = resdsl("train", TINY, *QUICK, "--iters", "2", "--out", str(run))
    assert r.returncode == 1 and "in use by another process" in r.stderr, r.stderr
    assert not (run / "config.json").exists()


def test_a_run_in_use_or_not_a_run_is_named_as_such(finished_run, tmp_path):
    """--resume of a run another process trains (not yet checkpointed) says it is in use; eval of a folder that is
    no run speaks of eval, not of --resume; a file is no folder."""
    from resdsl.train.fileio import FolderLock

    run = _copy(finished_run, tmp_path)
    (run / "checkpoint.pt").unlink()
    with FolderLock(str(run)):
        r = resdsl("train", "--resume", str(run), "--quiet")
    assert r.returncode == 1 and "in use by another process" in r.stderr, r.stderr
    r = resdsl("train", "--resume", str(run), "--quiet")
    assert r.returncode == 1 and "no checkpoint.pt" in r.stderr and "--overwrite" in r.stderr, r.stderr
    (tmp_path / "notes").mkdir()
    r = resdsl("eval", str(tmp_path / "notes"))
    assert r.returncode != 0 and "resdsl eval" in r.stderr and "--resume" not in r.stderr, r.stderr
    (tmp_path / "file.txt").write_text("x")
    r = resdsl("train", "--resume", str(tmp_path / "file.txt"), "--quiet")
    assert r.returncode == 1 and "a file, not a folder" in r.stderr, r.stderr


def test_resume_checks_spec_flags_and_finished_runs(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    r = resdsl("train", "--resume", str(run), "--quiet")
    assert r.returncode == 1 and "already finished all 4 iterations" in r.stderr, r.stderr
    cfg = json.loads((run / "config.json").read_text())
    cfg["iterations"] = 8
    (run / "config.json").write_text(json.dumps(cfg))
    other = tmp_path / "other.res"  # the same network with another recipe: silently accepted before
    other.write_text(f'extends "{ROOT / TINY}"\nnetwork tiny\nrecipe other\nrecipe other {{\n  lr 0.3\n'
                     "  batch 32\n  length 8 iterations\n}\n")
    r = resdsl("train", str(other), "--resume", str(run), "--quiet")
    assert r.returncode == 1 and "not the one this run was trained from" in r.stderr, r.stderr
    wider = tmp_path / "wider.res"  # another network: an internal error before
    wider.write_text(f'extends "{ROOT / TINY}"\nnetwork tiny\nstages 8x1, 16x1 /2, 64x1 /2\n')
    r = resdsl("train", str(wider), "--resume", str(run), "--quiet")
    assert r.returncode == 1 and "not the one this run was trained from" in r.stderr, r.stderr
    r = resdsl("train", "--resume", str(run), "--iters", "50", "--quiet")
    assert r.returncode == 1 and "--iters 50 cannot change" in r.stderr, r.stderr
    for flags, words in ((["--out", str(tmp_path / "elsewhere")], "cannot go to --out"),
                         (["--overwrite"], "--overwrite would start it afresh")):  # both ignored silently before
        r = resdsl("train", "--resume", str(run), *flags, "--quiet")
        assert r.returncode == 1 and words in r.stderr, r.stderr
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("damage,fragment", [
    (lambda run: (run / "config.json").unlink(), "config.json is missing, so the run's settings are unknown"),
    (lambda run: (run / "config.json").write_text('{"recipe": {"lr": 0.1'), "config.json is damaged"),
    (lambda run: (run / "config.json").write_text("[1, 2]"), "not a resdsl run record"),
    (lambda run: (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated"), "cannot read checkpoint"),
    (lambda run: (run / "checkpoint.pt").write_bytes(b"garbage\n"), "it is not a file torch.save writes"),
    # a value of the wrong kind, edited by hand: an internal error (TypeError) deep in the trainer before
    (lambda run: _edit_config(run, lambda c: c["recipe"].update(lr="x")), "(recipe.lr is 'x', not a number)"),
    (lambda run: _edit_config(run, lambda c: c["options"].update(iters="5")),
     "(options.iters is '5', not a whole number)"),
])
def test_damaged_run_records_are_clear_errors(finished_run, tmp_path, damage, fragment):
    run = _copy(finished_run, tmp_path)
    damage(run)
    r = resdsl("train", "--resume", str(run), "--quiet")
    assert r.returncode == 1 and fragment in r.stderr and "internal error" not in r.stderr, r.stderr


def _edit_config(run: Path, change) -> None:
    cfg = json.loads((run / "config.json").read_text())
    change(cfg)
    (run / "config.json").write_text(json.dumps(cfg))


def _unfinished_run(tmp_path: Path) -> Path:
    """A 12-iteration run stopped (by SIGTERM) after a checkpoint at iteration 4."""
    run = tmp_path / "run"
    args = [TINY, *QUICK, "--iters", "4", "--eval-every", "2", "--out", str(run)]
    resdsl("train", *args, check=True)
    cfg = json.loads((run / "config.json").read_text())
    cfg["iterations"], cfg["options"]["iters"] = 12, 12
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def test_another_runs_checkpoint_does_not_continue_this_one(finished_run, tmp_path):
    """Each run has an id in config.json and in every checkpoint: a checkpoint copied in from another run of the
    same network (here: the same checkpoint under another run's id) is refused before anything is loaded."""
    run = _copy(finished_run, tmp_path)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["run_id"] == json.loads((run / "config.json").read_text())["run_id"]
    torch.save(dict(state, run_id="0" * 32), run / "checkpoint.pt")
    r = resdsl("train", "--resume", str(run), "--quiet")
    assert r.returncode == 1 and "another run's checkpoint" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_half_written_metrics_line_is_dropped_on_resume(tmp_path):
    run = _unfinished_run(tmp_path)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"iter": 6, "epoch": 0.7, "lr": 0.1, "train_lo')  # a kill or a full disk mid-line
    r = resdsl("train", "--resume", str(run), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "dropped unreadable line" in r.stderr
    assert "done: 12 iterations" in r.stdout
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["iter"] for row in rows] == [2, 4, 6, 8, 10, 12]



@pytest.mark.parametrize("line", [1, 2])
def test_damaged_metrics_line_before_the_checkpoint_is_said_to_be_lost(tmp_path, line):
    """A row up to the checkpoint (line 2: the checkpoint's own, written just before it) cannot be evaluated again
    (the weights have moved on): the warning says it is lost, and the run resumes and finishes with every other
    row."""
    run = _unfinished_run(tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[line - 1] = "{damaged"
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    r = resdsl("train", "--resume", str(run), "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"line {line} came before the checkpoint's iteration 4: its row is lost" in r.stderr, r.stderr
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["iter"] for row in rows] == [i for i in (2, 4, 6, 8, 10, 12) if i != 2 * line]

def _in_process_run(tmp_path, **kw):
    import resdsl as rd
    from resdsl.train.loop import RunOptions, run_with_errors, train

    net = rd.compile_spec(str(ROOT / TINY))
    settings = {"data": "synthetic", "train_subset": 64, "test_subset": 32, "batch_size": 16, "iters": 6,
                "eval_every": 2, "checkpoint_every": 2, **kw}
    opts = RunOptions(device="cpu", quiet=True, out=str(tmp_path / "run"), **settings)
    return run_with_errors(train, lambda shape, k: rd.build_model(net, num_classes=k), net.recipe, opts)


def test_a_learning_rate_beyond_float32_is_refused(tmp_path):
    result, failure = _in_process_run(tmp_path, lr=1e300)
    assert failure[1] == 1 and "--lr 1e+300: must be a positive number up to 3.4e+38" in failure[0], failure
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--workers", "-3"], "--workers"),
    (["--lr", "1e300"], "--lr"),
    (["--seed", str(10**23)], "--seed"),
])
def test_out_of_range_flags(args, fragment, tmp_path):
    r = resdsl("train", TINY, *QUICK, "--iters", "2", "--out", str(tmp_path / "run"), *args)
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_nproc_that_does_not_divide_the_batch_is_one_clear_message(tmp_path):
    r = resdsl("train", TINY, *QUICK, "--iters", "2", "--out", str(tmp_path / "run"), "--nproc", "3")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("does not split evenly over --nproc 3") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_leaves_no_run_directory(tmp_path):
    args = [a for a in QUICK if a not in ("--device", "cpu")]
    r = resdsl("train", TINY, *args, "--iters", "2", "--device", "cuda", "--out", str(tmp_path / "run"))
    assert r.returncode == 1 and "no CUDA GPU" in r.stderr
    assert not (tmp_path / "run").exists()


def test_failed_start_leaves_no_empty_run_directory(tmp_path):
    r = resdsl("train", TINY, *QUICK, "--iters", "2", "--data", "imagenette", "--out", str(tmp_path / "run"))
    assert r.returncode == 1 and not (tmp_path / "run").exists()


def test_imagenet_recipe_says_to_pass_the_folder(tmp_path):
    r = resdsl("train", "specs/resnet50.res", "--out", str(tmp_path / "run"), "--quiet")
    assert r.returncode == 1 and "--data /path/to/imagenet" in r.stderr, r.stderr


def test_a_spec_without_a_recipe_is_told_what_to_add_and_that_works(tmp_path):
    spec = tmp_path / "mine.res"  # outside specs/: the hint must name the packaged recipes as found from anywhere
    spec.write_text("network mine\ninput 3x32x32\nstem cifar 8\nunit basic\norder post\nshortcut A\n"
                    "stages 8x1, 16x1 /2\nhead avgpool fc 10\n")
    r = resdsl("train", str(spec), *QUICK, "--iters", "2", "--out", str(tmp_path / "run"))
    assert r.returncode == 1 and "names no training recipe" in r.stderr, r.stderr
    include, recipe = re.findall(r"'([^']+)'", r.stderr.split("hint:", 1)[1])[:2]
    spec.write_text(spec.read_text() + f"{include}\n{recipe}\n")
    r = resdsl("train", str(spec), *QUICK, "--iters", "2", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr


def _write_idx(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        images = "images" in name
        header = struct.pack(">BBBB", 0, 0, 8, 3 if images else 1) + struct.pack(">I", 8)
        header += struct.pack(">II", 28, 28) if images else b""
        body = bytes(8 * 28 * 28) if images else bytes(8)
        with gzip.open(folder / f"{name}.gz", "wb") as fh:
            fh.write(header + body)


def test_data_dir_is_the_only_place_looked_at(tmp_path):
    from resdsl.train.data import DataError, load_dataset

    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", str(tmp_path / "nowhere"), download=False)
    assert "/usr/share/datasets" not in str(info.value) and "nowhere" in str(info.value)
    three = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]
    _write_idx(tmp_path / "three", three)
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", str(tmp_path / "three"), download=False)
    assert "3 of the 4 IDX files" in str(info.value) and "t10k-labels-idx1-ubyte" in str(info.value)
    _write_idx(tmp_path / "three", ["t10k-labels-idx1-ubyte"])
    assert load_dataset("fashion-mnist", str(tmp_path / "three"), download=False).train_x.shape == (8, 1, 28, 28)


def test_idx_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    from resdsl.train import data

    path = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as fh:  # promises 60000x1000x1000 bytes, holds 1 MB of zeros
        fh.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 60000, 1000, 1000) + bytes(1 << 20))
    monkeypatch.setenv("RESDSL_MAX_IDX_BYTES", str(10 << 20))
    with pytest.raises(data.DataError) as info:
        data.read_idx(str(path))
    assert "60,000,000,000 bytes" in str(info.value) and "RESDSL_MAX_IDX_BYTES" in str(info.value)


@pytest.mark.parametrize("workers, decode", [("0", "workers"), ("2", "workers"), ("2", "device")])
def test_corrupt_image_is_named(tmp_path, workers, decode):
    from test_train_data import make_folder

    make_folder(tmp_path / "imgs", per_class=4, size=(48, 40))
    bad = tmp_path / "imgs" / "train" / "cat" / "0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    r = resdsl("train", "tests/specs/tiny_folder.res", "--data", str(tmp_path / "imgs"), "--workers", workers,
               "--decode", decode, "--device", "cpu", "--quiet", "--out", str(tmp_path / "run"))
    assert r.returncode == 1 and str(bad) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


def test_eval_of_another_networks_checkpoint_names_the_keys(finished_run):
    r = resdsl("eval", "specs/resnet20.res", "--checkpoint", str(finished_run), "--data", "synthetic",
               "--test-subset", "64")
    assert r.returncode == 1 and "weights of another network" in r.stderr, r.stderr
    assert "layer1.1" in r.stderr or "of another shape" in r.stderr


def test_an_out_that_cannot_be_a_folder_is_said_why_and_nothing_is_made(tmp_path, monkeypatch):
    """A link to nothing is said to be one (not 'a file'); a '..' after a folder that does not exist names no
    folder, and makedirs would have made that folder before failing with 'File exists'."""
    from resdsl.train.rundir import RunDirError, make_folder

    monkeypatch.chdir(tmp_path)
    os.symlink("/nonexistent/zz", "dangling")
    Path("spec.res").write_text("")
    with pytest.raises(RunDirError, match="dangling: it is a link to /nonexistent/zz, which does not exist"):
        make_folder("dangling")
    with pytest.raises(RunDirError, match=r"typo does not exist, so typo/\.\. is no folder"):
        make_folder("typo/../spec.res")
    assert sorted(os.listdir(".")) == ["dangling", "spec.res"]
    os.mkdir("made")
    make_folder("made/../made/run")  # '..' after a folder that is there is fine
    assert os.path.isdir("made/run")
