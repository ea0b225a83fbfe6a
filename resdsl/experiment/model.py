"""What an experiment file says, as data: the rows to train (spec, recipe overrides), the paper's published figure
for each row in the paper's own convention, and the figures to draw. Parsed by ``parse.py``; run by ``runner.py``;
reported by ``report.py``."""
from __future__ import annotations

from dataclasses import dataclass, field

# How a paper states a row's figure: one number ("single"), the median of several runs ("median", [I] CIFAR),
# or best and mean +- std over several runs ("best-mean-std", [R] Table 6's ResNet-110).
CONVENTIONS = ("single", "median", "best-mean-std")
# What a figure is: [R] Fig. 6-style training curves in panels, or [R] Fig. 7's layer responses.
FIGURE_KINDS = ("curves", "loss-curves", "responses")


@dataclass(frozen=True)
class Where:
    """A location in an experiment file, for errors: ``file:line:column``."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Paper:
    """A row's published figure. ``values`` holds the convention's numbers, test error in %: {"error": x} for
    single, {"median": x} for median, {"best": b, "mean": m, "std": s} for best-mean-std; an optional "top5"
    (ImageNet) beside them."""

    convention: str
    values: dict

    @property
    def headline(self) -> float:
        """The one number a row is compared with: the error, the median, or the mean."""
        return self.values.get("error", self.values.get("median", self.values.get("mean")))


@dataclass(frozen=True)
class Row:
    """One network of the experiment: trained once per seed."""

    label: str  # as the paper names it: "ResNet-110", "plain-20", "(e) full pre-activation"
    spec: str  # a packaged spec name (resnet110) or a path (a relative one from the experiment file's folder)
    overrides: tuple = ()  # recipe overrides, each FIELD=VALUE as `resdsl train --set` takes it
    paper: Paper | None = None
    where: Where | None = None
    override_at: tuple = ()  # where each override's text starts in the file: (line, column) past its quote

    @property
    def key(self) -> str:
        """A file-name-safe name for the row's run folders: the label's letters and digits."""
        return "".join(c if c.isalnum() else "-" for c in self.label.lower()).strip("-") or "row"


@dataclass(frozen=True)
class Figure:
    """A figure to draw: ``kind`` (curves or responses), its file stem, and panels of row labels."""

    kind: str
    name: str
    panels: tuple  # ((panel title, (row label, ...)), ...)
    where: Where | None = None


@dataclass(frozen=True)
class Experiment:
    name: str  # r-table6
    title: str  # "Classification error on the CIFAR-10 test set"
    source: str  # "[R] Table 6"
    dataset: str  # the paper's dataset: cifar10, cifar100, imagenet
    seeds: int  # runs per row (the paper's count: 5 for [R] Table 6's ResNet-110 and [I]'s medians)
    rows: tuple  # (Row, ...)
    figures: tuple = ()  # (Figure, ...)
    notes: tuple = ()  # free text lines from the file, shown in the report
    path: str | None = None
    metric: str = "error"  # what the paper reports: "error" (top-1 %); ImageNet rows may add top5
    extra: dict = field(default_factory=dict)

    @property
    def heading(self) -> str:
        """"[R] Table 6: Classification error on the CIFAR-10 test set"; a file may give neither part."""
        return ": ".join(w for w in (self.source, self.title) if w) or self.name

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)
