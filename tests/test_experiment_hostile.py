"""`resdsl reproduce` with what a user's files may hold: labels, titles and sources with '$', '|', '<', '=' and
control characters; links, folders and damaged rows in the experiment folder. The report shows every text as
written (never as maths, Markdown, HTML or a formula), replaces what resdsl names itself rather than write through
it, and says what it cannot write as an error of its own."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from conftest import ROOT  # noqa: E402
from test_reproduce import FAST, reproduce  # noqa: E402

DOLLAR, FORMULA = "$\\foo$ x", "=1+2 | B <script>"  # row labels: mathtext that stops matplotlib; a formula, a cell
EXPERIMENT = f"""\
experiment hostile
title "evil \x1bc title"
source "cost $5 vs $6"
dataset synthetic
seeds 1
row "{DOLLAR}" spec "{ROOT / 'tests/specs/tiny.res'}" paper 50
row "{FORMULA}" spec "{ROOT / 'tests/experiments/plain_tiny.res'}"
figure curves curves panel "$\\bar$ cost $5" "{DOLLAR}" "{FORMULA}"
figure responses fig7 panel "p" "{DOLLAR}" "{FORMULA}"
note "a <b>note</b> | `x`"
"""
OWN = ("report.md", "results.csv", "results.json", "curves.png", "fig7.png", "fig7.csv")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The experiment trained once (two tiny runs); its first command's result. Tests work on copies."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "e.exp").write_text(EXPERIMENT)
    r = reproduce(str(root / "e.exp"), *FAST, "--seeds", "1", "--out", str(root / "out"))
    assert (root / "out" / "foo--x" / "seed-0" / "checkpoint.pt").exists(), r.stderr
    return {"exp": root / "e.exp", "out": root / "out", "first": r}


def _copy(hostile, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(hostile["out"], out, symlinks=True)
    return out


def _report(hostile, out):
    """write_report as the command calls it, in this process."""
    from resdsl.experiment.parse import parse_experiment
    from resdsl.experiment.reproduce import write_report

    return write_report(parse_experiment(str(hostile["exp"])), str(out), {"iters": 3, "train_subset": 128,
                                                                          "test_subset": 32}, 1, "resdsl x", 1.0)


def test_the_command_reports_and_says_the_title_with_its_control_characters_escaped(hostile):
    r = hostile["first"]
    assert r.returncode == 0 and "internal error" not in r.stderr, r.stderr  # was 70: mathtext's Unknown symbol
    assert "\x1b" not in r.stdout + r.stderr and "evil \\x1bc title" in r.stdout, r.stdout
    assert all((hostile["out"] / name).is_file() for name in OWN)


def test_the_figures_draw_labels_titles_and_sources_as_written(hostile, tmp_path, monkeypatch):
    """'$\\foo$' stopped the drawing; 'cost $5 vs $6' was drawn as maths. Every text holding '$' is drawn as it
    is written (no mathtext), in the curves and in the responses figure."""
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    drawn, save = [], Figure.savefig

    def spy(fig, *args, **kwargs):
        drawn.append({t.get_text(): t.get_parse_math() for t in fig.findobj(Text) if "$" in t.get_text()})
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    out = _copy(hostile, tmp_path)
    _report(hostile, out)
    curves, responses = drawn
    assert {DOLLAR, "$\\bar$ cost $5"} <= set(curves) and any(t.startswith("cost $5 vs $6:") for t in curves)
    assert DOLLAR in responses
    assert not any(parsed for texts in drawn for parsed in texts.values())  # none of them read as maths
    with open(out / "fig7.csv", newline="") as fh:
        assert {row["run"] for row in csv.DictReader(fh)} == {DOLLAR, "'" + FORMULA}


def test_report_md_and_results_csv_show_labels_as_written(hostile, tmp_path):
    out = _copy(hostile, tmp_path)
    text = _report(hostile, out)
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len({len(line.replace("\\|", "").split("|")) for line in table}) == 1, table  # no cell adds a column
    assert "| =1+2 \\| B &lt;script> |" in text and "| \\$\\\\foo\\$ x |" in text
    assert "<script>" not in text and "<b>" not in text and "> a &lt;b>note&lt;/b> \\| \\`x\\`" in text
    assert "# cost \\$5 vs \\$6: evil \\\\x1bc title" in text
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == [DOLLAR, "'" + FORMULA]  # no formula; the other text as it is
    assert all(float(r["mean"]) >= 0 for r in rows)  # numbers stay numbers
    assert [r["label"] for r in json.loads((out / "results.json").read_text())["rows"]] == [DOLLAR, FORMULA]


def test_links_in_the_experiment_folder_are_replaced_not_written_through(hostile, tmp_path):
    """`ln -s ~/victim OUT/report.md` then reproduce overwrote the victim: the files resdsl names in its own
    folder are replaced (the link with them), whatever stands in their place."""
    out = _copy(hostile, tmp_path)
    victims = {}
    for name in OWN:
        victim = tmp_path / f"victim-{name}"
        victim.write_text(f"MINE {name}")
        (out / name).unlink()
        (out / name).symlink_to(victim)
        victims[victim] = f"MINE {name}"
    r = reproduce(str(hostile["exp"]), *FAST, "--seeds", "1", "--out", str(out))
    assert r.returncode == 0 and "every run is finished" in r.stdout, r.stderr
    assert all(victim.read_text() == was for victim, was in victims.items())
    assert all((out / name).is_file() and not (out / name).is_symlink() for name in OWN)
    assert (out / "report.md").read_text().startswith("# cost")


def test_a_report_that_cannot_be_written_is_an_error_that_keeps_the_runs(hostile, tmp_path):
    """A folder in report.md's place (or a full disk) was an internal error; now it is said, with the runs kept."""
    out = _copy(hostile, tmp_path)
    (out / "report.md").unlink()
    (out / "report.md").mkdir()
    r = reproduce(str(hostile["exp"]), *FAST, "--seeds", "1", "--out", str(out))
    assert r.returncode == 1 and "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "resdsl: error: the report was not written: cannot write" in r.stderr and "it is a folder" in r.stderr
    assert "The runs are kept in" in r.stderr and (out / "foo--x" / "seed-0" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("last, errors", [({"iter": 3}, []),
                                          ({"iter": 3, "test_error": "x", "train_error": "x", "seconds": "x"}, []),
                                          ({"iter": 3, "test_error": 5.0}, [5.0])])
def test_metrics_rows_of_the_wrong_types_cost_only_their_run(hostile, tmp_path, last, errors):
    """A run whose last metrics row holds text where numbers go, or nothing but its iteration, is no figure; one
    that lacks some figures has the others: the report is written (it was an internal error, TypeError or
    KeyError)."""
    out = _copy(hostile, tmp_path)
    metrics = out / "foo--x" / "seed-0" / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()[:-1]) + json.dumps(last))
    _report(hostile, out)
    rows = {r["label"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows[DOLLAR]["test_errors"] == errors and rows[DOLLAR]["train_errors"] == [None] * len(errors)
    assert len(rows[FORMULA]["test_errors"]) == 1  # the other row's run, as it was


def test_another_experiments_folder_and_an_empty_rows_filter_are_said_plainly(tmp_path):
    """An --out of another experiment names both experiments (not 'r-table6 started with experiment r-table6');
    --rows '' is a usage error, not every row."""
    import dataclasses

    from resdsl.experiment.folder import check_record
    from resdsl.experiment.parse import parse_experiment
    from resdsl.experiment.runner import ExperimentRunError

    exp = parse_experiment(str(ROOT / "tests" / "experiments" / "tiny.exp"))
    out = str(tmp_path / "exp")
    check_record(out, exp, {}, 1)
    with pytest.raises(ExperimentRunError, match=r"exp holds experiment tiny; this command asks for experiment "
                                                 r"other\. Use another --out"):
        check_record(out, dataclasses.replace(exp, name="other"), {}, 1)
    r = reproduce(str(ROOT / "tests" / "experiments" / "tiny.exp"), "--rows", "", "--dry-run", "--no-estimate")
    assert r.returncode == 2 and "--rows needs row labels, not an empty text" in r.stderr, r.stderr
