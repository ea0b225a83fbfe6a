"""`resdsl reproduce`: plan an experiment (its runs and an estimate of their time from a step measured here),
run what is not finished, and write the report beside the paper's figures."""
from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import re
import textwrap
import time

from ..errors import printable
from ..shown import md_text
from ..train.rundir import record_of
from . import report
from .datasets import SHAPES, data_departure, dataset_of, training_images
from .model import Experiment
from .folder import check_record, check_runs
from .runner import ExperimentRunError, Job, jobs, run_local, run_submitit, spec_path, status

def only_rows(exp: Experiment, text: str) -> Experiment:
    """The experiment with the rows ``--rows`` names, in file order: comma-separated labels or shell-style
    patterns, where a label may itself hold commas ('ResNet-110, (a) original'), in any case. Its figures keep
    those rows. A part that matches no row is an error naming the rows there are."""
    import dataclasses
    import fnmatch

    def matches(pattern: str) -> list:  # a label as it is ('ResNet-164 [ours]'), or a pattern; in any case, as
        pattern = pattern.lower()       # the run folders spell them in lower case (resnet-20/seed-0)
        return [r for r in exp.rows if r.label.lower() == pattern or fnmatch.fnmatchcase(r.label.lower(), pattern)]

    def joined(start: int, end: int) -> str:
        return ",".join(pieces[start:end]).strip()

    labels = {r.label.lower() for r in exp.rows}
    pieces, keep, start = text.split(","), set(), 0
    while start < len(pieces):
        # the longest run of pieces that, joined again by commas, is a label (a label's own commas); else the
        # shortest that matches as a pattern ('ResNet-110*,*(e)*' is two patterns, not one)
        end = next((e for e in range(len(pieces), start, -1) if joined(start, e).lower() in labels), None) or \
            next((e for e in range(start + 1, len(pieces) + 1) if matches(joined(start, e))), None)
        part = joined(start, end or start + 1)
        if end is None and part:
            raise ExperimentRunError(f"--rows: {part!r} matches no row of {exp.name}; its rows: "
                                     + ", ".join(repr(r.label) for r in exp.rows))
        if part:
            keep.update(r.label for r in matches(part))
        start = end or start + 1
    if not keep:
        raise ExperimentRunError(f"--rows {text!r} names no row of {exp.name}")
    figures = tuple(dataclasses.replace(f, panels=tuple((t, tuple(lb for lb in ls if lb in keep))
                                                        for t, ls in f.panels)) for f in exp.figures)
    return dataclasses.replace(exp, rows=tuple(r for r in exp.rows if r.label in keep), figures=figures)


def departures(exp: Experiment, options: dict) -> list[str]:
    """How runs with these options depart from the paper's setup: another dataset, another length, a part of the
    data. Their figures are then not the paper's experiment, and the report does not set them against it."""
    words = [away] if (away := data_departure(exp, options)) else []
    for key, unit in (("iters", "iteration"), ("epochs", "epoch")):
        if options.get(key):
            words.append(f"{options[key]:,} {unit}{'' if options[key] == 1 else 's'} a run, not its recipe's length")
    for key, which in (("train_subset", "training"), ("test_subset", "test")):
        if options.get(key):
            words.append(f"only {options[key]:,} of the {which} images")
    return words


def setup_words(away: list[str]) -> str:
    """The plan's and the report's sentence on runs that depart from the paper's setup (``departures``)."""
    return f"not the paper's setup ({'; '.join(away)}): the paper's figures stand beside ours, not compared with them"


def row_recipe(exp: Experiment, row, resolved) -> dict:
    """The row's recipe: its spec's with the row's `set` overrides applied as `resdsl train --set` applies them;
    a bad override is located at its `set` in the experiment file (not at `--set`, which the user never typed)."""
    from resdsl.errors import Span, SpecError
    from resdsl.recipes import SET_PATH, recipe_with_settings, setting_column

    try:
        return recipe_with_settings(resolved, list(row.overrides))
    except SpecError as err:
        if err.span is None or err.span.path != SET_PATH or not 1 <= err.span.line <= len(row.override_at):
            raise
        line, column = row.override_at[err.span.line - 1]
        item = row.overrides[err.span.line - 1]
        start = column + setting_column(item, err.span.column) - 1
        end = err.span.end_column and column + setting_column(item, err.span.end_column - 1)
        with open(exp.path, encoding="utf-8-sig") as fh:
            source = fh.read()
        raise SpecError(err.message, Span(exp.path, line, start, end), hint=err.hint, source=source) from None


def recipe_of(exp: Experiment, row):
    """The recipe a row's runs train with: its spec's, with the row's `set` overrides (None: a spec without one)."""
    from resdsl.pipeline import compile_spec

    net = compile_spec(spec_path(exp, row))
    return row_recipe(exp, row, net.spec) if row.overrides else net.recipe


def run_iterations(exp: Experiment, job: Job, options: dict) -> tuple[int, int]:
    """(iterations, batch) of a run, from its spec's recipe with the row's overrides and the length flags."""
    from resdsl.train.schedule import from_recipe

    recipe = recipe_of(exp, job.row)
    if recipe is None:
        return 0, 0
    n_train = training_images(exp, options)
    if options.get("train_subset"):
        n_train = min(n_train, options["train_subset"])
    batch = recipe["batch"]
    length = (options["iters"], "iterations") if options.get("iters") else \
        ((options["epochs"], "epochs") if options.get("epochs") else None)
    _, total = from_recipe(recipe, max(1, n_train // batch), length)
    return total, batch


def step_seconds(exp: Experiment, spec: str, batch: int, options: dict) -> float:
    """Seconds of one training step of ``spec`` at ``batch`` on this machine: the median of the eager steps timed
    after one (two at least, ten at most, until a second has passed: one or two steps swung the estimate twofold
    on a busy machine), at a batch of at most 16 off CUDA (then scaled), on random tensors of the dataset's
    shape."""
    import torch
    import torch.nn.functional as F

    import resdsl
    from resdsl.train.session import pick_device

    device = pick_device(options.get("device") or "auto")
    c, size, classes, _ = SHAPES[dataset_of(exp, options)]
    b = batch if device.type == "cuda" else min(batch, 16)
    model = resdsl.build_model(spec, num_classes=classes, in_channels=c, input_size=(size, size)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(b, c, size, size, device=device), torch.randint(0, classes, (b,), device=device)
    times = []
    while len(times) < 3 or (len(times) < 11 and sum(times[1:]) < 1.0):
        start = time.perf_counter()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) * batch / b


def plan(exp: Experiment, out: str, options: dict, seeds: int | None, estimate: bool = True) -> list[dict]:
    """One line per run: its job, state, iterations done and to do, and estimated seconds left."""
    from resdsl.train.fileio import is_locked

    lines, cost = [], {}
    for job in jobs(exp, out, seeds):
        state, done = status(job)
        state = "training" if state != "finished" and is_locked(job.run_dir) else state  # by another command
        total, batch = run_iterations(exp, job, options)
        left = max(0, total - done)
        seconds = None
        if estimate and left and total:
            key = (job.row.spec, batch)
            if key not in cost:
                cost[key] = step_seconds(exp, spec_path(exp, job.row), batch, options)
            seconds = cost[key] * left
        lines.append({"job": job, "state": state, "done": done, "iterations": total, "seconds": seconds})
    return lines


def plan_text(lines: list[dict], parallel: int) -> str:
    rows = [f"{'run':<36} {'state':<9} {'iterations':>16} {'estimate':>10}"]
    for ln in lines:
        est = "-" if ln["seconds"] is None else _duration(ln["seconds"])
        rows.append(f"{ln['job'].name:<36} {ln['state']:<9} {ln['done']:>7,}/{ln['iterations']:<8,} {est:>10}")
    left = sum(ln["seconds"] or 0 for ln in lines)
    todo = sum(ln["state"] != "finished" for ln in lines)
    if not todo:
        rows.append(f"0 of {len(lines)} runs to do: every run is finished")
    elif any(ln["seconds"] is None and ln["done"] < ln["iterations"] for ln in lines):
        rows.append(f"{todo} of {len(lines)} runs to do; time not estimated")
    else:
        rows.append(f"{todo} of {len(lines)} runs to do; about {_duration(left / max(1, parallel))} with {parallel} "
                    "at a time (eager steps timed here; the GPU fast path is faster)")
    return "\n".join(rows)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else (f"{seconds / 60:.1f} min" if seconds >= 60
                                                             else f"{seconds:.0f} s")


def take(exp: Experiment, out: str, options: dict, seeds: int | None):
    """The experiment folder for this command: its record written or checked, its runs checked against the rows,
    and the folder locked (a FolderLock: ``release()`` it when the report is written) so that a second command
    into it is refused at once rather than share out the runs and write the report over this one's."""
    from resdsl.train.fileio import FolderLock, OutputError

    check_record(out, exp, options, seeds or exp.seeds, write=False)  # a file or another's folder: nothing made
    try:
        os.makedirs(out, exist_ok=True)
        lock = FolderLock(out, "experiment folder")  # before the record is written: it is this command's
    except OSError as exc:
        raise ExperimentRunError(f"cannot make the experiment folder {out}: {exc.strerror or exc}") from None
    except OutputError as exc:
        raise ExperimentRunError(str(exc)) from None
    try:
        check_record(out, exp, options, seeds or exp.seeds)
        check_runs(exp, out, seeds, options)
    except BaseException:
        lock.release()
        raise
    return lock


def launch(exp: Experiment, out: str, options: dict, seeds: int | None, launcher: str, parallel: int,
           gpus: int, slurm: dict, say=print) -> list[str]:
    """Run every unfinished job of a folder this command has taken (:func:`take`); the names of the failed ones."""
    todo = [j for j in jobs(exp, out, seeds) if status(j)[0] != "finished"]
    if not todo:
        say("every run is finished")
        return []
    if launcher == "local":
        return run_local(exp, todo, options, parallel, gpus, say)
    if launcher not in ("slurm", "submitit-local"):
        raise ExperimentRunError(f"unknown launcher {launcher}: use local, slurm or submitit-local")
    return run_submitit(exp, todo, options, os.path.join(out, "submitit"),
                        "slurm" if launcher == "slurm" else "local", slurm, say)


def write_report(exp: Experiment, out: str, options: dict, seeds: int | None, command: str, wall: float,
                 commit: str = "unknown") -> str:
    """report.md, results.csv, results.json and the figures in ``out``; returns the report's text. Each is
    replaced whatever is in its place, never written through a link (``out`` is resdsl's experiment folder); one
    that cannot be written raises OutputError."""
    from resdsl.train.fileio import write_owned

    all_jobs = jobs(exp, out, seeds)
    by_row = {row.label: [j for j in all_jobs if j.row is row] for row in exp.rows}
    away = departures(exp, options)
    rows = [report.row_results(row, by_row[row.label], _params(by_row[row.label]), compared=not away)
            for row in exp.rows]
    title = exp.heading + (f", on {options['data']} (the paper's column: {exp.dataset})"
                                            if options.get("data") and options["data"] != exp.dataset else "")
    info = {"experiment": exp.name, "title": title, "source": exp.source,
            "dataset": dataset_of(exp, options) if options.get("data") else exp.dataset,
            "paper_dataset": exp.dataset, "command": command, "commit": commit, "device": _device(all_jobs),
            "date": dt.date.today().isoformat(), "wall_seconds": round(wall, 1),
            "training_seconds": round(report.training_seconds(all_jobs), 1), "departures": away, "rows": rows,
            "statements": report.degradation(exp, rows), "notes": list(exp.notes)}
    text = _report_text(exp, info, _figures(exp, by_row, out, away))
    write_owned(os.path.join(out, "report.md"), (text.rstrip() + "\n").encode())
    csv = report.csv_text(rows, options.get("data") or exp.dataset, away)  # the folder's path, not "imagenet"
    write_owned(os.path.join(out, "results.csv"), csv.encode())
    write_owned(os.path.join(out, "results.json"), (json.dumps(info, indent=2) + "\n").encode())
    return text


def _figures(exp: Experiment, by_row: dict, out: str, away: list[str]) -> list[str]:
    """Draw the experiment's figures into ``out``; the report's lines that show them."""
    from resdsl.train.fileio import OutputError, remove_owned

    lines = []
    for fig in exp.figures:
        if fig.kind in ("curves", "loss-curves"):
            report.curves_png(exp, fig, by_row, os.path.join(out, f"{fig.name}.png"), "; ".join(away))
            lines.append(f"![{fig.name}]({fig.name}.png)")
        elif fig.kind == "responses":
            for ext in ("png", "csv"):  # an earlier report's is never taken for one this cannot draw
                remove_owned(os.path.join(out, f"{fig.name}.{ext}"))
            try:
                lines += _responses(fig, by_row, out, away)
            except OutputError:  # the folder cannot take the figure: it cannot take the report either
                raise
            except Exception as exc:  # noqa: BLE001 - one unreadable run must not cost the whole report
                why = str(exc).splitlines()[0] if str(exc) else repr(exc)
                lines.append(f"({fig.name} not drawn: {md_text(why)})")
    return lines


def _report_text(exp: Experiment, info: dict, figures: list[str]) -> str:
    """report.md: where and how the runs ran, the table beside the paper's, the statements, the figures."""
    away = info["departures"]
    setup = [f"- {md_text(setup_words(away))}", ""] if away else []
    compared = "" if away else ", compared with our " + ", ".join(f"{v} for {k}" for k, v in report.OURS_FOR.items())
    md = md_text  # every text the user's files or the runs' records hold is shown as written
    return "\n".join([f"# {md(info['title'])}", "", *setup, f"- command: {_code(info['command'])}",
                      f"- commit: {md(info['commit'])}", f"- device: {md(info['device'])}", f"- date: {info['date']}",
                      f"- training time of the runs: {_duration(info['training_seconds'])} (summed from their "
                      f"records); wall time of this command: {_duration(info['wall_seconds'])}", "",
                      report.table(info["rows"], exp.dataset, compared=not away), "",
                      "Ours: final test error of each seed's run (mean +- sample std, median, best)"
                      f"{report.tested_words(info['rows'])}; the paper's figure in its own convention{compared}.",
                      ""]
                     + [f"- {md(w)}" for w in info["statements"]] + [""] + figures + [""]
                     + [f"> {md(n)}" for n in exp.notes])


_BACKTICKS = re.compile("`+")


def _code(text: str) -> str:
    """``text`` as a Markdown code span: fenced by one backtick more than its longest run of them (a backslash
    does not escape one inside a span), padded where it starts or ends with one."""
    text = printable(text)
    fence = "`" * (1 + max((len(m) for m in _BACKTICKS.findall(text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _responses(fig, by_row: dict, out: str, away: list[str]) -> list[str]:
    """[R] Fig. 7 for the figure's rows (seed 0 of each), through `resdsl analyze responses`'s functions; the
    title says how the runs depart from the paper's setup, as the curves' does."""
    import resdsl.analysis as resp
    from resdsl.train.fileio import write_owned

    labels, measured = [], []
    for _, labels_of_panel in fig.panels:
        for label in labels_of_panel:
            runs = [j for j in by_row.get(label, []) if status(j)[0] == "finished"]
            if runs and label not in labels:
                labels.append(label)
                measured.append(resp.measure_run(runs[0].run_dir))
    if not measured:
        return []
    results = resp.labelled(measured, labels)
    about = "\n".join(filter(None, [resp.images_words(measured), textwrap.fill("; ".join(away), 90)]))
    write_owned(os.path.join(out, f"{fig.name}.png"), resp.figure_png(results, about))
    write_owned(os.path.join(out, f"{fig.name}.csv"), resp.csv_text(results))
    return [f"![{fig.name}]({fig.name}.png)"]


def _params(row_jobs: list[Job]):
    """The row's parameter count, from its first run's record (a whole number, else none)."""
    records = [r for r in map(record_of, (j.run_dir for j in row_jobs)) if r is not None]
    params = records[0].get("params") if records else None
    return params if isinstance(params, int) and not isinstance(params, bool) else None


def _device(all_jobs: list[Job]) -> str:
    """Where the runs ran, as the first run's record says (text from a file: control characters escaped)."""
    records = [r for r in map(record_of, (j.run_dir for j in all_jobs)) if r is not None]
    return printable(f"{records[0].get('device')}, {records[0].get('precision')}") if records else "no run finished"

