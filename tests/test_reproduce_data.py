"""`resdsl reproduce` and its runs' data: checked once before any run starts (not by every run in turn), not
needed by a restart whose runs are finished, and other rows or seeds taken in the same experiment folder."""
from __future__ import annotations

import shutil

import pytest

pytest.importorskip("torch")

from test_reproduce import FAST, TINY, reproduce, results  # noqa: E402
from test_train_data import make_folder  # noqa: E402


def test_data_every_run_would_stop_at_is_refused_before_any_starts(tmp_path):
    """A misspelt --data, data that is not there, and a recipe that in-memory images cannot have made each run
    start and stop in turn (22 runs, 100 s), then an empty report."""
    out = tmp_path / "exp"
    for args, says in (
            ((TINY, "--data", "fashion_mnist"), "unknown dataset 'fashion_mnist'"),
            ((TINY, "--data", "fashion_mnist", "--launcher", "slurm"), "unknown dataset 'fashion_mnist'"),
            ((TINY, "--data", "cifar10", "--data-dir", str(tmp_path), "--no-download"), "cifar10 is not in"),
            (("r-table2", "--data", "fashion-mnist", "--rows", "ResNet-18"),
             "fashion-mnist is held in memory, where a recipe augments with pad-crop and flip alone; these rows' "
             "recipes augment with 'scale' (ResNet-18) and 'lighting' (ResNet-18)")):
        for dry in ((), ("--dry-run",)) if "fashion_mnist" in args else ((),):
            r = reproduce(*args, *FAST, *dry, "--out", str(out))
            assert r.returncode == 1 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
            assert "runs to do" not in r.stdout and not out.exists()


def test_more_rows_or_seeds_in_the_same_folder_reuse_its_finished_runs(tmp_path):
    """`--rows plain-8 --seeds 1`, then the whole table with two seeds into the same folder: it was refused
    ("started with rows [...]"), though each run is checked on its own."""
    out = tmp_path / "exp"
    assert reproduce(TINY, *FAST, "--rows", "plain-8", "--seeds", "1", "--out", str(out)).returncode == 0
    r = reproduce(TINY, *FAST, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "start plain-8/seed-0" not in r.stdout and "start plain-8/seed-1" in r.stdout, r.stdout
    assert {row["label"]: row["seeds"] for row in results(out)["rows"]} == {"plain-8": [0, 1], "ResNet-8": [0, 1]}


def test_a_restart_whose_runs_are_finished_needs_no_data(tmp_path):
    """Every run finished, the folder of pictures moved away: the report is written again (the data check refused
    it), and says the runs are no longer known to be on ImageNet."""
    imgs, out = tmp_path / "imgs", tmp_path / "exp"
    make_folder(imgs, per_class=4, size=(40, 36))
    args = ["tests/experiments/tiny_folder.exp", "--data", str(imgs), "--iters", "2", "--device", "cpu",
            "--workers", "0", "--no-estimate", "--out", str(out)]
    assert reproduce(*args).returncode == 0
    assert results(out)["departures"][0] == f"on {imgs}: 2 classes, 8 training images, not ImageNet's 1,000 and " \
        "1,281,167"
    shutil.move(imgs, tmp_path / "elsewhere")
    r = reproduce(*args)
    assert r.returncode == 0 and "every run is finished" in r.stdout, r.stderr
    assert results(out)["departures"][0] == f"on {imgs}, whose train/ is not there now to tell that it is ImageNet's"
