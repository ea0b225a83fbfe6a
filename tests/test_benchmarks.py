"""The benchmarks' CPU parts still run against the code they time: a benchmark broken by a change to the trainer
is found here, not on the day a GPU is lent (benchmarks/eval_point.py called the loop's checkpoint writer with
what it no longer took). What they measure is recorded in benchmarks/RESULTS.md, never asserted."""
from __future__ import annotations

import sys

import pytest

pytest.importorskip("torch")

from conftest import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import eval_point  # noqa: E402


def test_eval_point_times_the_loops_own_records_and_checkpoint(tmp_path):
    from resdsl.train.metrics import PLOT_EVERY_S

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert eval_point._records(str(tmp_path / "a"), PLOT_EVERY_S) > 0
    assert eval_point._checkpoint(str(tmp_path / "b"), n=1) > 0
    assert (tmp_path / "b" / "checkpoint.pt").stat().st_size > 1_000_000  # ResNet-20 and its momentum
