"""What an evaluation point costs the loop, without changing what it records: curves.png is redrawn at most every
PLOT_EVERY_S seconds and always when the run ends, however it ends; the test figures are read from the device
once per evaluation and equal the per-batch reads they replace."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT  # noqa: E402
from test_train import QUICK, resdsl  # noqa: E402

ROW = {"epoch": 1.0, "lr": 0.1, "train_loss": 1.0, "train_error": 30.0, "test_loss": 1.0, "test_error": 20.0,
       "test_top5_error": 2.0, "seconds": 1.0}


def _log(tmp_path, monkeypatch):
    from resdsl.train import metrics

    log = metrics.MetricsLog(str(tmp_path), enabled=True)
    drawn = []
    real = log.plot
    monkeypatch.setattr(log, "plot", lambda: (drawn.append(len(log.rows)), real()))
    return log, drawn


def test_curves_are_drawn_at_the_first_evaluation_then_at_most_every_interval(tmp_path, monkeypatch):
    log, drawn = _log(tmp_path, monkeypatch)
    for it in range(1, 6):
        log.write({"iter": it, **ROW})
    assert drawn == [1] and (tmp_path / "curves.png").exists()
    log.plotted_at -= 31.0  # as if half a minute had passed
    log.write({"iter": 6, **ROW})
    assert drawn == [1, 6]
    log.write({"iter": 7, **ROW})
    log.close()
    assert drawn == [1, 6, 7]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 7


def test_closing_draws_nothing_when_the_curves_are_current(tmp_path, monkeypatch):
    log, drawn = _log(tmp_path, monkeypatch)
    log.write({"iter": 1, **ROW})
    log.close()
    assert drawn == [1]


def test_a_run_stopped_by_an_error_still_draws_its_last_rows(tmp_path, monkeypatch):
    """The NaN stop: the loop closes the log quietly, and curves.png shows every row metrics.jsonl has."""
    from resdsl.train import loop, metrics

    drawn = []
    real = metrics.MetricsLog.plot
    monkeypatch.setattr(metrics.MetricsLog, "plot", lambda self: (drawn.append(len(self.rows)), real(self)))
    real_check = loop._check_finite
    calls = []

    def fail_at_third(s, window, path):
        calls.append(1)
        if len(calls) == 5:  # the third evaluation point (evaluation and checkpoint read once each)
            raise loop.TrainingError("the loss became non-finite (simulated)")
        real_check(s, window, path)

    monkeypatch.setattr(loop, "_check_finite", fail_at_third)
    import resdsl as rd

    net = rd.compile_spec(str(ROOT / "tests/specs/tiny.res"))
    out = tmp_path / "run"
    opts = loop.RunOptions(data="synthetic", train_subset=256, test_subset=64, batch_size=32, device="cpu",
                           quiet=True, iters=12, eval_every=2, out=str(out))
    with pytest.raises(loop.TrainingError):
        loop.train(lambda shape, k: rd.build_model(net, num_classes=k, input_size=tuple(shape[1:])), net.recipe, opts)
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and drawn == [1, 2]


def _per_batch_reference(model, batches):
    """The evaluation as it was written before (a read per batch), by hand."""
    import torch.nn.functional as F

    model.eval()
    total, loss_sum, wrong1, wrong5 = 0, 0.0, 0, 0
    with torch.no_grad():
        for x, y in batches:
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            top = logits.topk(5, dim=1).indices
            wrong1 += (top[:, 0] != y).sum().item()
            wrong5 += (~(top == y[:, None]).any(1)).sum().item()
            total += y.numel()
    return {"loss": loss_sum / total, "error": 100.0 * wrong1 / total, "top5_error": 100.0 * wrong5 / total,
            "images": total}


def test_evaluation_reads_once_and_equals_reading_each_batch():
    import resdsl as rd
    from resdsl.train.evaluation import evaluate

    torch.manual_seed(0)
    model = rd.build_model("resnet20", num_classes=10)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen))
               for n in (16, 16, 7)]
    assert evaluate(model, batches, torch.device("cpu")) == _per_batch_reference(model, batches)
    assert evaluate(model, [], torch.device("cpu")) == {"loss": 0.0, "error": 0.0, "top5_error": 0.0, "images": 0}


def test_a_checkpoint_names_the_first_diverged_tensor():
    from resdsl.train.loop import _first_non_finite

    good = {"a.weight": torch.ones(3), "a.num_batches_tracked": torch.tensor(4)}
    assert _first_non_finite(good) is None and _first_non_finite({}) is None
    bad = {**good, "b.weight": torch.tensor([1.0, float("inf")]), "c.weight": torch.tensor([float("nan")])}
    assert _first_non_finite(bad) == "b.weight"


def test_a_finished_run_draws_all_its_rows(tmp_path):
    out = tmp_path / "run"
    r = resdsl("train", "tests/specs/tiny.res", *QUICK, "--iters", "12", "--eval-every", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "curves.png").stat().st_mtime >= (out / "metrics.jsonl").stat().st_mtime - 1


def test_a_failed_drawing_is_tried_again_at_the_end(tmp_path, monkeypatch):
    from resdsl.train import fileio, metrics

    log = metrics.MetricsLog(str(tmp_path), enabled=True)
    real = metrics.atomic_write

    def full_disk(path, write):
        raise fileio.OutputError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(metrics, "atomic_write", full_disk)
    with pytest.raises(fileio.OutputError):
        log.write({"iter": 1, **ROW})
    log.close(quietly=True)  # a run stopping on that error: nothing raised here hides it
    assert not (tmp_path / "curves.png").exists()
    monkeypatch.setattr(metrics, "atomic_write", real)
    log.write({"iter": 2, **ROW})
    assert (tmp_path / "curves.png").exists()


def test_a_resumed_log_redraws_at_its_close(tmp_path, monkeypatch):
    """Rows after the checkpoint are dropped on resume: curves.png is redrawn even if no evaluation follows."""
    first, _ = _log(tmp_path, monkeypatch)
    for it in (1, 2, 3):
        first.write({"iter": it, **ROW})
    first.close()
    log, drawn = _log(tmp_path, monkeypatch)
    log.resume(2)
    log.close()
    assert drawn == [2]
