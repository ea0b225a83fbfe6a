"""An experiment's results set beside the paper's: ``report.md``, ``results.csv``, ``results.json`` and the figures.

Every number here is read from the runs' own records (metrics.jsonl, config.json); every sentence about the
results (the degradation statement) is computed from them, never written by hand.
"""
from __future__ import annotations

import csv
import io
import math
import statistics

from .model import Experiment, Row
from ..shown import csv_safe, literal, md_text
from ..errors import printable
from ..train.rundir import metrics_rows
from .runner import Job, final_row, last_row, status

# the test of a run without a final test in its recipe's view (resdsl/train/final.py): its last evaluation, on the
# whole test images of an in-memory dataset or an image folder's single center crops
LAST_EVALUATION = "the last evaluation"
# how a paper's convention is matched by our seeds: the statistic compared with its headline figure
OURS_FOR = {"single": "mean", "median": "median", "best-mean-std": "mean"}


def row_results(row: Row, row_jobs: list[Job], params: int | None, compared: bool = True) -> dict:
    """One row: its finished runs' final test and training errors, their statistics, the paper's figure and,
    where the runs follow the paper's setup (``compared``), our figure minus the paper's."""
    finals = [(j.seed, final_row(j.run_dir)) for j in row_jobs]
    done = [(seed, r) for seed, r in finals if number(r, "test_error") is not None]
    errors = [number(r, "test_error") for _, r in done]
    top5 = [number(r, "test_top5_error") for _, r in done if number(r, "test_top5_error") is not None]
    res = {"label": row.label, "spec": row.spec, "overrides": list(row.overrides), "params": params,
           "seeds": [seed for seed, _ in done], "test_errors": errors, "test_top5_errors": top5,
           "views": sorted({_view(r) for _, r in done}),
           "train_errors": [number(r, "train_error") for _, r in done], "runs": len(row_jobs)}
    if errors:
        res.update(mean=statistics.mean(errors), median=statistics.median(errors), best=min(errors),
                   std=statistics.stdev(errors) if len(errors) > 1 else None)
    res["top5_mean"] = statistics.mean(top5) if top5 else None
    train = [e for e in res["train_errors"] if e is not None]
    res["train_error_mean"] = statistics.mean(train) if train else None
    if row.paper is not None:
        res["paper"] = {"convention": row.paper.convention, **row.paper.values}
        ours = res.get(OURS_FOR[row.paper.convention])
        res["difference"] = None if ours is None or not compared else ours - row.paper.headline
    return res


def number(row: dict | None, key: str) -> float | None:
    """``row[key]`` where it is a finite number, else None: a metrics row or final test edited by hand, or
    written by something else, may hold text, null or nothing there, which is then no figure (not a crash)."""
    value = row.get(key) if isinstance(row, dict) else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


def _view(row: dict) -> str:
    """The view a run's final test error was tested in (a name the trainer wrote; anything else is none)."""
    view = row.get("view")
    return printable(view) if isinstance(view, str) and view else LAST_EVALUATION


def _pm(res: dict) -> str:
    if "mean" not in res:
        return "-"
    std = f" +- {res['std']:.2f}" if res.get("std") is not None else ""
    return f"{res['mean']:.2f}{std}"


def _paper_words(paper: dict | None) -> str:
    if not paper:
        return "-"
    top5 = f" (top-5 {paper['top5']:g})" if "top5" in paper else ""
    if paper["convention"] == "best-mean-std":
        return f"{paper['best']:g} best, {paper['mean']:g} +- {paper['std']:g}{top5}"
    if paper["convention"] == "median":  # [I] Table 4 gives the mean +- std beside some medians
        spread = f" ({paper['mean']:g} +- {paper['std']:g})" if "mean" in paper and "std" in paper else ""
        return f"{paper['median']:g} median{spread}{top5}"
    return f"{paper['error']:g}{top5}"


def table(rows: list[dict], paper_dataset: str, compared: bool = True) -> str:
    """The report's table: one line per paper row; our top-5 error where the paper gives one, the difference
    column only where the runs are comparable."""
    top5 = any("top5" in (r.get("paper") or {}) for r in rows)
    head = (["network", "params (spec)", "runs", "test error %: mean +- std", "median", "best"]
            + ["top-5 %: mean"] * top5 + [f"paper ({paper_dataset})"] + ["ours - paper"] * compared)
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        diff = r.get("difference")
        cells = ([md_text(r["label"]), f"{r['params'] / 1e6:.2f}M" if number(r, "params") else "-",
                  f"{len(r['test_errors'])} of {r['runs']}", _pm(r), _fmt(r.get("median")), _fmt(r.get("best"))]
                 + [_fmt(r.get("top5_mean"))] * top5 + [_paper_words(r.get("paper"))]
                 + ["-" if diff is None else f"{diff:+.2f}"] * compared)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tested_words(rows: list[dict]) -> str:
    """How the runs' final test errors were tested: 'the last evaluation', or their final tests' views."""
    views = {v for r in rows for v in r.get("views", [])}
    finals = sorted(views - {LAST_EVALUATION})
    if not finals:
        return ""
    last = ", or at their last evaluation (runs recorded without a final test)" if LAST_EVALUATION in views else ""
    return "; tested " + " and ".join(map(md_text, finals)) + f" (final-test.json){last}"


def training_seconds(all_jobs: list[Job]) -> float:
    """The runs' own training time (each run's last metrics row, which counts on across resumes), summed."""
    return sum(number(last_row(j.run_dir), "seconds") or 0.0 for j in all_jobs)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def degradation(exp: Experiment, rows: list[dict]) -> list[str]:
    """For each curves panel: does its last network end with higher training error than its first? With a
    panel of plain nets by depth, [R] section 4.1's degradation problem in the data's words; stated only from
    finished runs."""
    by_label = {r["label"]: r for r in rows}
    words = []
    for fig in exp.figures:
        if fig.kind != "curves":
            continue
        for title, labels in fig.panels:
            have = [by_label[lb] for lb in labels if by_label.get(lb, {}).get("train_error_mean") is not None]
            if len(have) < 2:
                continue
            first, last = have[0], have[-1]
            a, b = f"{last['train_error_mean']:.1f}", f"{first['train_error_mean']:.1f}"
            # compared as shown: "higher ... 89.8% vs 89.8%" would contradict its own figures
            verb = "the same" if a == b else "higher" if float(a) > float(b) else "lower"
            words.append(f"{title}: {last['label']} ends with {verb} training error "
                         f"{'as' if a == b else 'than'} {first['label']}: {a}% vs {b}%.")
    return words


def curves_png(exp: Experiment, fig, rows_jobs: dict, path: str, away: str = "") -> None:
    """[R] Fig. 6 drawn from the runs (``curves``): per panel, each row's training error (dashed) and test error
    (bold) against iterations, the mean over its finished seeds, on one error scale for all panels (as the paper's).
    [I] Figs. 1, 3 and 6 (``loss-curves``): the training loss (dashed, left axis) beside the test error (bold, right
    axis). ``away``: how the runs depart from the paper's setup, said in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = drawn_panels(fig, rows_jobs)
    if not panels:
        return
    loss = fig.kind == "loss-curves"
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False, sharey=True)
    for ax, (title, labels) in zip(axes[0], panels):
        test_ax = ax.twinx() if loss else ax
        for k, label in enumerate(labels):
            iters, train, test = _mean_curve(rows_jobs.get(label, []), "train_loss" if loss else "train_error")
            if not iters:
                continue
            ax.plot(iters, train, "--", color=f"C{k}", linewidth=1)
            test_ax.plot(iters, test, "-", color=f"C{k}", linewidth=2, label=label)
        _axes_words(ax, test_ax, title, loss)
    said = "dashed training loss (left), bold test error (right)" if loss else "dashed training error, bold test error"
    literal(figure.suptitle(f"{exp.source}: {said} (mean of each row's seeds)" + (f"\n{away}" if away else ""),
                            fontsize=10))
    figure.tight_layout()
    _save_png(figure, path)
    plt.close(figure)


def _axes_words(ax, test_ax, title: str, loss: bool) -> None:
    literal(ax.set_title(title))
    ax.set_xlabel("iter.")
    ax.set_ylabel("training loss" if loss else "error (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if loss:
        test_ax.set_ylabel("test error (%)")
        test_ax.set_ylim(bottom=0)
    if test_ax.get_legend_handles_labels()[0]:
        literal(*test_ax.legend(fontsize=8).get_texts())


def drawn_panels(fig, rows_jobs: dict) -> list:
    """The figure's panels that have a row with runs (``--rows`` may leave a panel empty; it is not drawn)."""
    return [(title, labels) for title, labels in fig.panels if any(rows_jobs.get(label) for label in labels)]


def _mean_curve(jobs_of_row: list[Job], train_key: str = "train_error"):
    """The mean over the row's finished runs (a stopped one's would cut every curve at its last row) of the
    metric ``train_key`` (training error or loss) and the test error."""
    curves = [_curve(j.run_dir, train_key) for j in jobs_of_row if status(j)[0] == "finished"]
    curves = [{it: (train, test) for it, train, test in c} for c in curves if c]
    if not curves:
        return [], [], []
    iters = sorted(set.intersection(*(set(c) for c in curves)))  # the points every run has (a damaged line: not)
    train = [statistics.mean(c[it][0] for c in curves) for it in iters]
    test = [statistics.mean(c[it][1] for c in curves) for it in iters]
    return iters, train, test


def _curve(run_dir: str, train_key: str = "train_error"):
    """(iteration, training error or loss, test error) of each metrics row that has all three as numbers."""
    points = [tuple(number(r, k) for k in ("iter", train_key, "test_error")) for r in metrics_rows(run_dir)]
    return [p for p in points if None not in p]


def _save_png(figure, path: str) -> None:
    """The figure into the experiment folder, which resdsl owns: a link in its place is replaced, not followed."""
    from resdsl.train.fileio import write_owned

    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=120)
    write_owned(path, buf.getvalue())


def csv_text(rows: list[dict], dataset: str = "", departures: tuple = ()) -> str:
    """results.csv: one line per row, each with the data its runs trained on and how they depart from the paper's
    setup (a file passed on without report.md must not pass off a scaled-down run beside the paper's figure); a
    text cell a spreadsheet would take for a formula is neutralised (:func:`csv_safe`), numbers stay numbers."""
    buf = io.StringIO()
    cols = ["label", "spec", "params", "runs", "finished", "mean", "std", "median", "best", "paper_convention",
            "paper", "paper_median", "paper_mean", "paper_std", "paper_best", "paper_top5", "difference",
            "train_error_mean", "top5_mean", "views", "dataset", "departures"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        paper = r.get("paper") or {}
        head = paper.get("error", paper.get("median", paper.get("mean")))
        w.writerow(map(csv_safe, [
            r["label"], r["spec"], number(r, "params"), r["runs"], len(r["test_errors"]), r.get("mean"),
            r.get("std"), r.get("median"), r.get("best"), paper.get("convention"), head,
            *(paper.get(k) for k in ("median", "mean", "std", "best", "top5")), r.get("difference"),
            r.get("train_error_mean"), r.get("top5_mean"), "; ".join(r["views"]), dataset, "; ".join(departures)]))
    return buf.getvalue()
