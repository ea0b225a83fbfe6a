"""What `resdsl reproduce` says of its runs, against hand computation: each row's statistics (the sample std, the
median a median row of [I] is compared by), the difference from the paper's figure, and the degradation sentence
of [R] section 4.1, which must say "higher" only where the deeper net's training error is higher."""
from __future__ import annotations

import statistics

import pytest

from resdsl.experiment import report
from resdsl.experiment.model import Experiment, Figure, Paper, Row
from resdsl.experiment.runner import Job

ERRORS = {"a": 6.0, "b": 7.0, "c": 11.0}  # run folder -> final test error of a finished run


@pytest.fixture
def finished(monkeypatch):
    """Runs whose final rows are ERRORS (training error = test error + 1)."""
    monkeypatch.setattr(report, "final_row", lambda run_dir: {"test_error": ERRORS[run_dir],
                                                               "train_error": ERRORS[run_dir] + 1})


def _jobs(row: Row) -> list[Job]:
    return [Job(row, seed, run_dir) for seed, run_dir in enumerate(ERRORS)]


@pytest.mark.parametrize("paper, ours", [(Paper("median", {"median": 6.5}), 7.0),  # [I]: median of 5
                                         (Paper("best-mean-std", {"best": 6.0, "mean": 6.5, "std": 0.2}), 8.0),
                                         (Paper("single", {"error": 6.5}), 8.0)])
def test_a_rows_statistics_and_its_difference_from_the_paper(finished, paper, ours):
    row = Row("ResNet-110", "resnet110", paper=paper)
    res = report.row_results(row, _jobs(row), params=1_700_000)
    errors = list(ERRORS.values())
    assert res["mean"] == 8.0 and res["median"] == 7.0 and res["best"] == 6.0
    assert res["std"] == pytest.approx(statistics.stdev(errors)) and res["std"] == pytest.approx(2.6458, abs=1e-4)
    assert res["difference"] == pytest.approx(ours - 6.5)  # the paper's convention picks our statistic
    assert report.row_results(row, _jobs(row), params=None, compared=False)["difference"] is None


@pytest.mark.parametrize("deep, shallow, verb", [(12.0, 6.0, "higher"), (6.0, 12.0, "lower")])
def test_the_degradation_sentence_follows_the_training_errors(deep, shallow, verb):
    exp = Experiment("x", "t", "[R] Fig. 6", "cifar10", 1, (Row("plain-20", "plain20"), Row("plain-56", "plain56")),
                     figures=(Figure("curves", "fig6", (("plain", ("plain-20", "plain-56")),)),))
    rows = [{"label": "plain-20", "train_error_mean": shallow}, {"label": "plain-56", "train_error_mean": deep}]
    assert report.degradation(exp, rows) == [f"plain: plain-56 ends with {verb} training error than plain-20: "
                                             f"{deep:.1f}% vs {shallow:.1f}%."]


def test_the_papers_whole_figure_is_kept(finished):
    """[I] Table 4 gives "4.92 (4.89+-0.14)": the median with the mean +- std; the report and results.csv keep all."""
    import csv
    import io

    row = Row("ResNet-1001", "resnet1001_preact", paper=Paper("median", {"median": 4.92, "mean": 4.89, "std": 0.14}))
    res = report.row_results(row, _jobs(row), params=10_327_706)
    assert "| 4.92 median (4.89 +- 0.14) |" in report.table([res], "cifar10")
    line = next(csv.DictReader(io.StringIO(report.csv_text([res]))))
    assert (line["paper"], line["paper_median"], line["paper_mean"], line["paper_std"]) == ("4.92", "4.92", "4.89",
                                                                                          "0.14")


def test_a_damaged_metrics_line_costs_only_itself(tmp_path):
    """One damaged row of metrics.jsonl (a disk's fault) leaves a run's last row and its curve's other points;
    a damaged last row is no figure, and the row before it is not taken for the run's last."""
    from resdsl.experiment.runner import last_row

    rows = ['{"iter": 1, "train_error": 90.0, "test_error": 91.0}', '{"iter": 2, "train_err',
            '{"iter": 3, "train_error": 70.0, "test_error": 75.0}']
    (tmp_path / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    assert last_row(str(tmp_path))["iter"] == 3
    assert report._curve(str(tmp_path)) == [(1, 90.0, 91.0), (3, 70.0, 75.0)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(rows[:1] + rows[1:2]) + "\n")
    assert last_row(str(tmp_path)) is None


@pytest.mark.parametrize("deep, shallow", [(89.84, 89.81), (5.0, 5.0)])
def test_training_errors_equal_as_shown_are_the_same_not_lower(deep, shallow):
    """'ends with lower training error than plain-20: 89.8% vs 89.8%' contradicted its own figures."""
    exp = Experiment("x", "t", "[R] Fig. 6", "cifar10", 1, (Row("plain-20", "plain20"), Row("plain-56", "plain56")),
                     figures=(Figure("curves", "fig6", (("plain", ("plain-20", "plain-56")),)),))
    rows = [{"label": "plain-20", "train_error_mean": shallow}, {"label": "plain-56", "train_error_mean": deep}]
    assert report.degradation(exp, rows) == [f"plain: plain-56 ends with the same training error as plain-20: "
                                             f"{deep:.1f}% vs {shallow:.1f}%."]


def test_labels_are_table_cells_and_spreadsheet_text_not_markdown_html_or_formulas(finished):
    """A label 'A | B <script>' added a column to report.md's table and passed HTML through; one starting with
    '=' went into results.csv as a formula. Numbers stay numbers (a difference of -1.5 is no formula)."""
    import csv
    import io

    rows = [report.row_results(Row(label, "resnet20", paper=Paper("single", {"error": 9.5})), _jobs(Row(label, "r")),
                               params=270_000) for label in ("A | B <script>`x`", "=HYPERLINK(1)", "@x", "+1", "-2")]
    lines = report.table(rows, "cifar10").splitlines()
    cells = [len(line.replace("\\|", "").split("|")) for line in lines]
    assert len(set(cells)) == 1, lines  # every line as many columns as the head: no cell's '|' makes another
    assert "| A \\| B &lt;script>\\`x\\` |" in lines[2] and "<script>" not in "\n".join(lines)
    parsed = list(csv.DictReader(io.StringIO(report.csv_text(rows))))
    assert [r["label"] for r in parsed] == ["A | B <script>`x`", "'=HYPERLINK(1)", "'@x", "'+1", "'-2"]
    assert all(r["difference"] == "-1.5" and float(r["mean"]) == 8.0 for r in parsed)  # 8.0 - 9.5: a number


@pytest.mark.parametrize("row", [{"test_error": "x", "train_error": 1.0}, {"test_error": 5.0, "train_error": "x"},
                                 {"iter": 1}, {"test_error": True}, {"test_error": [1]},
                                 {"test_error": 5.0, "test_top5_error": "x", "view": ["x"]}])
def test_metrics_rows_of_the_wrong_types_are_no_figures(monkeypatch, tmp_path, row):
    """A metrics row or final test edited by hand (text, a list, true where a number goes; a row with no errors at
    all) is no figure: the report is written without it (it raised TypeError or KeyError: an internal error)."""
    import json

    monkeypatch.setattr(report, "final_row", lambda run_dir: row)
    monkeypatch.setattr(report, "last_row", lambda run_dir: {"seconds": "x"})
    res = report.row_results(Row("a", "resnet20"), _jobs(Row("a", "resnet20")), params=None)
    assert all(isinstance(e, float) for e in res["test_errors"] + res["test_top5_errors"])
    assert all(e is None or isinstance(e, float) for e in res["train_errors"])  # None: a run without one
    assert res["views"] in ([], [report.LAST_EVALUATION]) and res.get("top5_mean") is None
    assert report.csv_text([res]) and report.table([res], "cifar10")  # written, not raised
    assert report.training_seconds(_jobs(Row("a", "resnet20"))) == 0.0
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
        row, {"iter": "3", "train_error": 1.0, "test_error": 2.0}, {"iter": 4, "train_error": 1.0, "test_error": 2.0},
        {"iter": 5, "train_error": None, "test_error": 2.0})) + "\n")
    assert report._curve(str(tmp_path)) == [(4, 1.0, 2.0)]


@pytest.mark.parametrize("kind, left, right", [("curves", "error (%)", None),
                                               ("loss-curves", "training loss", "test error (%)")])
def test_loss_curves_draw_the_training_loss_beside_the_test_error(monkeypatch, tmp_path, kind, left, right):
    """[I] Figs. 1, 3 and 6: dashed training loss on the left axis, solid test error on the right; [R] Fig. 6's
    curves: training and test error on one axis."""
    rows = ['{"iter": 10, "train_loss": 2.0, "train_error": 80.0, "test_error": 85.0}',
            '{"iter": 20, "train_loss": 1.5, "train_error": 60.0, "test_error": 70.0}']
    (tmp_path / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    row = Row("ResNet-8", "tiny", (), None, None)
    drawn = []
    monkeypatch.setattr(report, "status", lambda job: ("finished",))
    monkeypatch.setattr(report, "_save_png", lambda figure, path: drawn.extend(figure.axes))
    exp = Experiment(name="e", title="", source="[I] Fig. 6", dataset="cifar10", seeds=1, rows=(row,), figures=(),
                     notes=())
    report.curves_png(exp, Figure(kind, "f", (("p", ("ResNet-8",)),)), {"ResNet-8": [Job(row, 0, str(tmp_path))]},
                      str(tmp_path / "f.png"))
    dashed, solid = (line for ax in drawn for line in ax.get_lines())
    assert list(dashed.get_ydata()) == ([2.0, 1.5] if right else [80.0, 60.0]) and dashed.get_linestyle() == "--"
    assert list(solid.get_ydata()) == [85.0, 70.0] and solid.get_linestyle() == "-"
    assert [ax.get_ylabel() for ax in drawn] == [left] + ([right] if right else [])
