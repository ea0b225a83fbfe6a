"""Experiment file text -> ``model.Experiment``; every problem is a located ``SpecError`` (``file:line:col``).

An experiment file names the rows of a paper's table (a spec each, trained once per seed, with the paper's
published figure) and the figures to draw from them, e.g. [R] Table 6: "For ResNet-110, we run it 5 times and
show 'best (mean+-std)'"; [I]: "accuracy is reported as the median of 5 runs". Specs are checked at parse time:
each must be a packaged spec or a file beside the experiment file.
"""
from __future__ import annotations

import difflib
import math
import os
from pathlib import Path

from lark import Token, Tree, UnexpectedInput

from .. import catalog
from ..errors import Span, SpecError
from ..reading import read_spec_text
from .model import CONVENTIONS, FIGURE_KINDS, Experiment, Figure, Paper, Row, Where
from .parse_errors import line_col, parser, reworded, syntax_error

MAX_SEEDS = 1000
MAX_KEY_BYTES = 200  # a row's run folder (Row.key); a file name has at most 255 bytes on most systems


def parse_experiment(path: str | os.PathLike) -> Experiment:
    """Read and parse the experiment file at ``path`` (a regular file only: never a pipe or a device)."""
    path = os.fspath(path)
    try:
        text = read_spec_text(path)
    except SpecError as err:
        raise reworded(err) from None
    return _parse(text, path, path)


def parse_experiment_text(text: str, name: str = "<experiment>") -> Experiment:
    """Parse experiment text; ``name`` is the file name used in errors, and its folder is where relative spec
    paths are looked up (the working directory for the default name)."""
    return _parse(text, name, None)


def spec_path(spec: str, folder: str | os.PathLike) -> str | None:
    """The spec file a row names: a file relative to ``folder`` (an existing file wins, as everywhere in resdsl),
    else the packaged spec of that name; None when it is neither."""
    candidate = Path(folder) / spec
    if candidate.is_file():
        return str(candidate)
    if spec in catalog.names():
        return catalog.locate(spec)
    return None


def _parse(text: str, name: str, path: str | None) -> Experiment:
    if "\x00" in text:
        line, col = line_col(text, text.index("\x00"))
        raise SpecError("experiment file contains a NUL byte; is it a binary file?", Span(name, line, col),
                        source=text)
    text = text.removeprefix("\ufeff")
    try:
        tree = parser().parse(text)
    except UnexpectedInput as exc:
        raise syntax_error(exc, text, name) from None
    try:
        return _Builder(name, Path(name).parent).build(tree, path)
    except SpecError as err:
        err.source = text
        raise


# ---------------------------------------------------------------------------------------------
# parse tree -> Experiment


def _span(path: str, tok: Token) -> Span:
    return Span(path, tok.line, tok.column, tok.end_column if tok.end_line == tok.line else None)


def _unquote(tok: Token) -> str:
    return str(tok)[1:-1]


def _choice(word: Token, allowed: tuple, what: str, path: str) -> str:
    """``word`` if it is one of ``allowed``, else a located 'unknown WHAT' error with the closest choice."""
    if str(word) in allowed:
        return str(word)
    close = difflib.get_close_matches(str(word), allowed, n=1, cutoff=0.5)
    hint = (f"did you mean '{close[0]}'? " if close else "") + "expected one of: " + ", ".join(allowed)
    raise SpecError(f"unknown {what} '{word}'", _span(path, word), hint=hint)


# reserved: the names of the experiment folder's own files (reproduce.write_report, runner.RECORD)
_TAKEN_NAMES = ("report", "results", "experiment")
_PLAIN = {"experiment": str, "dataset": str, "title": _unquote, "source": _unquote}


class _Builder:
    """Walks the statements in file order; `set`, `paper` and `panel` lines join the row or figure above."""

    def __init__(self, path: str, folder: Path):
        self.path, self.folder = path, folder
        self.single: dict[str, tuple] = {}  # statement -> (value, line, the value's column)
        self.rows: list[dict] = []
        self.figures: list[dict] = []
        self.notes: list[str] = []
        self.last: tuple | None = None  # ("row", dict) or ("figure", dict): what continuation lines join
        self.spec_names = frozenset(catalog.names())

    def build(self, tree: Tree, path: str | None) -> Experiment:
        for stmt in tree.children:
            if stmt.data in _PLAIN:  # experiment, dataset, title, source: one word or string each
                self._once(stmt, _PLAIN[stmt.data](stmt.children[0]))
            else:
                getattr(self, "on_" + stmt.data)(stmt)
        name = self._required("experiment", "experiment r-table6")
        dataset = self._dataset()
        convention = self._get("convention", "single")
        rows = tuple(self._make_row(r, convention) for r in self.rows)
        self._check_labels(rows)
        figures = tuple(self._make_figure(f, {r.label for r in rows}) for f in self.figures)
        return Experiment(name=name, title=self._get("title", ""), source=self._get("source", ""), dataset=dataset,
                          seeds=self._get("seeds", 1), rows=rows, figures=figures, notes=tuple(self.notes),
                          path=path)

    # one-per-file statements
    def _once(self, stmt: Tree, value) -> None:
        key = stmt.data
        if key in self.single:
            raise SpecError(f"'{key}' is given twice (first at line {self.single[key][1]})", self._at(stmt),
                            hint=f"an experiment file has one '{key}' line")
        word = stmt.children[0] if stmt.children else None
        self.single[key] = (value, stmt.meta.line, getattr(word, "column", stmt.meta.column))
        self.last = None

    def _at(self, stmt: Tree) -> Span:
        return Span(self.path, stmt.meta.line, stmt.meta.column)

    def _where(self, meta) -> Where:
        return Where(self.path, meta.line, meta.column)

    def _get(self, key: str, default):
        return self.single[key][0] if key in self.single else default

    def _required(self, key: str, example: str):
        if key not in self.single:
            raise SpecError(f"the experiment file has no '{key}' line", Span(self.path, 1, 1),
                            hint=f"add one, e.g. '{example}'")
        return self.single[key][0]

    def _dataset(self) -> str:
        """The paper's dataset: a name the trainer knows, or a folder there is (read as ``resdsl train --data`` reads
        it, from the current folder)."""
        from ..train.vocabulary import RECIPE_DATASETS, names_a_folder  # words only: no torch

        name = self._required("dataset", "dataset cifar10")
        if name not in RECIPE_DATASETS and not names_a_folder(name):
            close = difflib.get_close_matches(name, RECIPE_DATASETS, n=1)
            raise SpecError(f"unknown dataset '{name}'", Span(self.path, *self.single["dataset"][1:]),
                            hint=(f"did you mean '{close[0]}'? " if close else "") + "use one of "
                            f"{', '.join(RECIPE_DATASETS)}, or the name of an image folder (train/ and val/ inside) in "
                            "the current folder")
        return name

    def on_convention(self, stmt):
        self._once(stmt, _choice(stmt.children[0], CONVENTIONS, "convention", self.path))

    def on_seeds(self, stmt):
        tok = stmt.children[0]
        if len(str(tok)) > 6 or not 1 <= int(tok) <= MAX_SEEDS:
            shown = str(tok) if len(str(tok)) <= 12 else str(tok)[:12] + "..."
            raise SpecError(f"seeds must be between 1 and {MAX_SEEDS}, not {shown}", _span(self.path, tok),
                            hint="seeds is the number of runs per row: 5 for [I]'s medians and [R]'s ResNet-110")
        self._once(stmt, int(tok))

    def on_note(self, stmt):
        self.notes.append(_unquote(stmt.children[0]))
        self.last = None

    # rows
    def on_row(self, stmt):
        label, spec, *options = stmt.children
        row = {"label": label, "spec": spec, "set": [], "set_at": [], "paper": None, "meta": stmt.meta}
        self.rows.append(row)
        self.last = ("row", row)
        for option in options:
            getattr(self, "on_" + option.data)(option)

    def on_setting(self, stmt):
        row = self._owner(stmt, "row", "set")
        tok = stmt.children[0]
        key, sep, value = _unquote(tok).partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SpecError(f"set {tok}: write one recipe field as \"FIELD=VALUE\"", _span(self.path, tok),
                            hint='as `resdsl train --set` takes it, e.g. set "batch=64"')
        row["set"].append(_unquote(tok))
        row["set_at"].append((tok.line, tok.column + 1))

    def on_paper(self, stmt):
        row = self._owner(stmt, "row", "paper")
        if row["paper"] is not None:
            raise SpecError(f"row {row['label']} has two 'paper' clauses", self._at(stmt))
        row["paper"] = stmt

    def _owner(self, stmt: Tree, kind: str, word: str) -> dict:
        if self.last is None or self.last[0] != kind:
            raise SpecError(f"'{word}' must follow the {kind} it belongs to", self._at(stmt),
                            hint=f"write it on the {kind}'s line or on the lines just below it")
        return self.last[1]

    def _make_row(self, row: dict, convention: str) -> Row:
        spec_tok = row["spec"]
        spec = _unquote(spec_tok) if spec_tok.type == "STRING" else str(spec_tok)
        if not (self.folder / spec).is_file() and spec not in self.spec_names:
            close = catalog.close_names(spec)
            hint = (f"did you mean {', '.join(close)}? " if close else "") + \
                "`resdsl list` shows every packaged spec; a relative path is read from the experiment file's folder"
            raise SpecError(f"no packaged spec or file named '{spec}'", _span(self.path, spec_tok), hint=hint)
        paper = _paper_of(row["paper"], convention, self.path) if row["paper"] is not None else None
        return Row(label=_unquote(row["label"]), spec=spec, overrides=tuple(row["set"]), paper=paper,
                   where=self._where(row["meta"]), override_at=tuple(row["set_at"]))

    def _check_labels(self, rows: tuple) -> None:
        if not rows:
            raise SpecError("the experiment file has no rows", Span(self.path, 1, 1),
                            hint="add one per network, e.g. 'row \"ResNet-20\" spec resnet20 paper 8.75'")
        seen: dict[str, Row] = {}
        for row, raw in zip(rows, self.rows):
            if not row.label.strip():
                raise SpecError("a row's label is empty", _span(self.path, raw["label"]))
            if len(row.key.encode("utf-8")) > MAX_KEY_BYTES:  # the run folder's name: most file systems take 255
                size = len(row.key.encode("utf-8"))
                raise SpecError(f"a row's label names a run folder of {size} bytes, over the {MAX_KEY_BYTES} resdsl "
                                "allows (most file systems take 255)", _span(self.path, raw["label"]),
                                hint="give the row a shorter label")
            first = seen.get(row.key)
            if first is not None:
                same = first.label == row.label
                message = (f"row '{row.label}' is given twice (first at line {first.where.line})" if same else
                           f"rows '{first.label}' (line {first.where.line}) and '{row.label}' would share the run "
                           f"folder '{row.key}'")
                raise SpecError(message, _span(self.path, raw["label"]), hint="give each row its own label")
            seen[row.key] = row

    # figures
    def on_figure(self, stmt):
        kind, name, *panels = stmt.children
        figure = {"kind": kind, "name": name, "panels": [], "meta": stmt.meta}
        if any(str(f["name"]) == str(name) for f in self.figures):
            raise SpecError(f"figure '{name}' is given twice", _span(self.path, name),
                            hint="each figure is drawn to its own file: give it its own name")
        if str(name).lower() in _TAKEN_NAMES:  # in any case: a case-insensitive disk would mix them up too
            raise SpecError(f"figure name '{name}' is reserved: the experiment folder's own files are report.md, "
                            "results.csv, results.json and experiment.json (a responses figure named results "
                            "would write results.csv)", _span(self.path, name), hint="name it otherwise, e.g. fig6")
        self.figures.append(figure)
        self.last = ("figure", figure)
        for panel in panels:
            self.on_panel(panel)

    def on_panel(self, stmt):
        self._owner(stmt, "figure", "panel")["panels"].append(stmt.children)

    def _make_figure(self, figure: dict, labels: set) -> Figure:
        kind = _choice(figure["kind"], FIGURE_KINDS, "figure kind", self.path)
        if not figure["panels"]:
            raise SpecError(f"figure '{figure['name']}' has no panels", _span(self.path, figure["name"]),
                            hint='add e.g. panel "ResNet" "ResNet-20" "ResNet-56": a title, then row labels')
        for _, *members in figure["panels"]:
            for tok in members:
                if _unquote(tok) not in labels:
                    close = difflib.get_close_matches(_unquote(tok), sorted(labels), n=3, cutoff=0.6)
                    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
                    raise SpecError(f"figure '{figure['name']}' names no row {tok}", _span(self.path, tok),
                                    hint=hint + "a panel lists row labels exactly as the rows give them")
        panels = tuple((_unquote(title), tuple(_unquote(t) for t in members))
                       for title, *members in figure["panels"])
        return Figure(kind=kind, name=str(figure["name"]), panels=panels, where=self._where(figure["meta"]))


# ---------------------------------------------------------------------------------------------
# a row's published figure

def _paper_of(stmt: Tree, convention: str, path: str) -> Paper:
    """The row's figure in its convention: a bare number takes the experiment's convention; keys name theirs
    ('best 6.43 mean 6.61 std 0.16' is [R]'s best (mean+-std); 'median 4.62' is [I]'s median of 5 runs)."""
    values: dict[str, float] = {}
    where = Span(path, stmt.meta.line, stmt.meta.column)
    for item in stmt.children:
        key_tok, number = (item.children if len(item.children) == 2 else (None, item.children[0]))
        key = str(key_tok) if key_tok is not None else _bare_key(convention, number, path)
        if key in values:
            raise SpecError(f"paper gives '{key}' twice", _span(path, key_tok or number))
        values[key] = _percent(number, path)
    return Paper(_convention_of(values, where), values)


def _bare_key(convention: str, number: Token, path: str) -> str:
    if convention == "best-mean-std":
        raise SpecError(f"a bare figure ({number}) does not fit the convention best-mean-std",
                        _span(path, number), hint="write paper best B mean M std S, or name the row's own "
                                                  "convention: paper median X")
    return "error" if convention == "single" else "median"


def _percent(number: Token, path: str) -> float:
    value = float(number)
    if not (math.isfinite(value) and 0 <= value <= 100):
        shown = str(number) if len(str(number)) <= 12 else str(number)[:12] + "..."
        raise SpecError(f"paper figure {shown} is not a percentage", _span(path, number),
                        hint="figures are test errors in %, between 0 and 100")
    return value


def _convention_of(values: dict, where: Span) -> str:
    """Which convention the keys of a paper clause make, or a located error when they fit none."""
    keys = set(values) - {"top5"}
    if keys == {"error"}:
        return "single"
    if "median" in keys and keys <= {"median", "mean", "std"} and len(keys) != 2:
        return "median"  # [I] Table 4: the median, with (mean +- std) beside it
    if keys == {"best", "mean", "std"}:
        return "best-mean-std"
    if not keys:
        raise SpecError("paper gives only top5; give the top-1 error first", where, hint="e.g. paper 21.1 top5 5.5")
    if "error" in keys:
        raise SpecError("paper error is a single figure and stands alone (top5 aside)", where)
    if "median" in keys:
        raise SpecError("paper median takes mean and std together or neither", where,
                        hint="e.g. paper median 4.92 mean 4.89 std 0.14")
    missing = ", ".join(k for k in ("best", "mean", "std") if k not in keys)
    raise SpecError(f"best-mean-std needs best, mean and std; missing: {missing}", where,
                    hint="e.g. paper best 6.43 mean 6.61 std 0.16, as [R] Table 6 gives ResNet-110")


__all__ = ["parse_experiment", "parse_experiment_text", "spec_path", "MAX_SEEDS"]
