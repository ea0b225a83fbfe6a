"""The shipped experiment files: each parses, each row's spec resolves with its recipe overrides to the experiment's
dataset, and every published figure is the paper's, as docs/reference/resnet-papers.md prints it beside its row."""
from __future__ import annotations

import re

import pytest

from conftest import ROOT
from resdsl.catalog import locate as locate_spec
from resdsl.experiment import catalog
from resdsl.experiment.parse import parse_experiment, spec_path
from resdsl.recipes import recipe_with_settings
from resdsl.resolve import resolve_path

REFERENCE = (ROOT / "docs/reference/resnet-papers.md").read_text(encoding="utf-8")
NAMES = sorted(p.stem for p in (ROOT / "experiments").glob("*.exp"))
CIFAR = ("cifar10", "cifar100")

# Where each file's figures stand in the reference: the line that opens the paragraph or table (it must occur once),
# then per row with a paper clause the reference's own words around its figures. In an anchor, {key:.Nf} is the
# row's figure as the paper prints it (N decimals), <cell> any text within one table cell, <num> any other figure.
R_TABLE3 = {label: f"| {label} | {{error:.2f}} | {{top5:.2f}} |" for label in
            ("plain-34", "ResNet-34 A", "ResNet-34 B", "ResNet-34 C", "ResNet-50", "ResNet-101", "ResNet-152")}
R_TABLE4 = {label: R_TABLE3[label] for label in ("ResNet-34 B", "ResNet-34 C", "ResNet-50", "ResNet-101", "ResNet-152")}
ORDERS = {"(a) original": "(a) original, post-activation", "(b) BN after addition": "(b) BN after addition",
          "(c) ReLU before addition": "(c) ReLU before addition",
          "(d) ReLU-only pre-activation": "(d) ReLU-only pre-activation",
          "(e) full pre-activation": "(e) full pre-activation"}
I_TABLE2 = {**{f"ResNet-110, {k}": f"| {v} | <cell> | {{median:.2f}} |" for k, v in ORDERS.items()},
            **{f"ResNet-164, {k}": f"| {v} | <cell> | <cell> | {{median:.2f}} |" for k, v in ORDERS.items()}}
I_TABLE3 = "[I] Table 3: CIFAR-10 baseline -> pre-act:"
I_TABLE4 = "[I] Table 4, CIFAR-10 and CIFAR-100, median of 5 runs"
ANCHORS = {
    "r-table6": ("[R] Table 6, CIFAR-10 test error (%):", {
        "ResNet-20": "ResNet-20 {error:.2f} (0.27M params)",
        "ResNet-32": ", 32 {error:.2f} (0.46M)",
        "ResNet-44": ", 44 {error:.2f} (0.66M)",
        "ResNet-56": ", 56 {error:.2f} (0.85M)",
        "ResNet-110": ", 110 {best:.2f} best / {mean:.2f}+-{std:.2f} mean (1.7M)",
        "ResNet-1202": ", 1202 {error:.2f} (19.4M)"}),
    "r-fig7": ("[R] Fig. 7: std of each 3x3 layer's response", {}),
    "r-table2": ("[R] Table 2/3 ImageNet top-1 (10-crop):", {
        "plain-18": "plain-18 {error:.2f},", "plain-34": "plain-34 {error:.2f},",
        "ResNet-18": "ResNet-18 {error:.2f},", "ResNet-34": "ResNet-34 A {error:.2f},"}),
    "r-table3": ("[R] Table 3, ImageNet validation, 10-crop testing", R_TABLE3),
    "r-table4": ("[R] Table 4, single-model results on ImageNet validation", R_TABLE4),
    "i-table1": ("[I] Table 1 (ResNet-110, original post-activation unit)", {
        "original": "| original | 1 | 1 | {median:.2f} |",
        "constant scaling 0.5, F 0.5 (frozen gating)": '| constant scaling ("frozen gating") | 0.5 | 0.5 | '
                                                       '{median:.2f} |',
        "exclusive gating, init b_g = -6": "| exclusive gating, init b_g = -6 | 1-g(x) | g(x) | {median:.2f} |",
        "exclusive gating, init b_g = -7": "| exclusive gating, init b_g = -7 | 1-g(x) | g(x) | {median:.2f} |",
        "shortcut-only gating, init b_g = 0": "| shortcut-only gating, b_g = 0 | 1-g(x) | 1 | {median:.2f} |",
        "shortcut-only gating, init b_g = -6": "| shortcut-only gating, b_g = -6 | 1-g(x) | 1 | {median:.2f} |",
        "1x1 conv shortcut": "| 1x1 conv shortcut | 1x1 conv | 1 | {median:.2f} |"}),
    "i-table2": ("| order | unit | ResNet-110 | ResNet-164 |", I_TABLE2),
    "i-fig6": ("| order | unit | ResNet-110 | ResNet-164 |", {
        "110, original": I_TABLE2["ResNet-110, (a) original"],
        "110, BN after add": I_TABLE2["ResNet-110, (b) BN after addition"],
        "164, original": I_TABLE2["ResNet-164, (a) original"],
        "164, proposed (pre-act)": I_TABLE2["ResNet-164, (e) full pre-activation"]}),
    "i-table3": (I_TABLE3, {
        "ResNet-110 (1layer skip), baseline unit": "ResNet-110(1-layer skip) {median:.2f} -> <num>,",
        "ResNet-110 (1layer skip), pre-activation unit": "ResNet-110(1-layer skip) <num> -> {median:.2f},",
        "ResNet-110, baseline unit": ", ResNet-110 {median:.2f} -> <num>, ResNet-164",
        "ResNet-110, pre-activation unit": ", ResNet-110 <num> -> {median:.2f}, ResNet-164",
        "ResNet-164, baseline unit": ", ResNet-164 {median:.2f} -> <num>, ResNet-1001 <num> -> <num>;",
        "ResNet-164, pre-activation unit": ", ResNet-164 <num> -> {median:.2f}, ResNet-1001 <num> -> <num>;",
        "ResNet-1001, baseline unit": ", ResNet-1001 {median:.2f} -> <num>;",
        "ResNet-1001, pre-activation unit": ", ResNet-1001 <num> -> {median:.2f};"}),
    "i-table3-cifar100": (I_TABLE3, {
        "ResNet-164, baseline unit": "CIFAR-100: ResNet-164 {median:.2f} -> <num>,",
        "ResNet-164, pre-activation unit": "CIFAR-100: ResNet-164 <num> -> {median:.2f},",
        "ResNet-1001, baseline unit": ", ResNet-1001 {median:.2f} -> <num>.",
        "ResNet-1001, pre-activation unit": ", ResNet-1001 <num> -> {median:.2f}."}),
    "i-fig1": (I_TABLE3, {
        "ResNet-1001, original": ", ResNet-1001 {median:.2f} -> <num>;",
        "ResNet-1001, proposed": ", ResNet-1001 <num> -> {median:.2f};"}),
    "i-table4": (I_TABLE4, {
        "ResNet-164 [ours]": "| CIFAR-10 | ResNet-164 [ours] (1.7M) | {median:.2f} |",
        "ResNet-1001 [ours]": "| CIFAR-10 | ResNet-1001 [ours] (10.2M) | {median:.2f} ({mean:.2f} +- {std:.2f}) |",
        "ResNet-1001 [ours], batch 64": "| CIFAR-10 | ResNet-1001 [ours] (10.2M), batch 64 | {median:.2f} "
                                        "({mean:.2f} +- {std:.2f}) |"}),
    "i-table4-cifar100": (I_TABLE4, {
        "ResNet-164 [ours]": "| CIFAR-100 | ResNet-164 [ours] (1.7M) | {median:.2f} |",
        "ResNet-1001 [ours]": "| CIFAR-100 | ResNet-1001 [ours] (10.2M) | {median:.2f} ({mean:.2f} +- {std:.2f}) |"}),
    "i-table5": ("[I] Table 5, ILSVRC 2012 validation, single crop", {
        label: f"| {label} | scale | 224x224 | 320x320 | {{error:.1f}} | {{top5:.1f}} |" for label in (
            "ResNet-152, original Residual Unit", "ResNet-152, pre-act Residual Unit",
            "ResNet-200, original Residual Unit", "ResNet-200, pre-act Residual Unit")}),
}
_PART = re.compile(r"\{(\w+):(\.\d+f)\}|<cell>|<num>")


def block(opening: str) -> str:
    """The reference's paragraph or table that starts with ``opening``, its whitespace runs made single spaces."""
    assert REFERENCE.count(opening) == 1, f"{opening!r} must open exactly one block of the reference"
    start = REFERENCE.index(opening)
    ends = [i for i in (REFERENCE.find(sep, start + 1) for sep in ("\n\n", "\n[", "\n## ")) if i > 0]
    return " ".join(REFERENCE[start: min(ends, default=len(REFERENCE))].split())


def anchor_pattern(anchor: str, values: dict) -> str:
    """The anchor as a regular expression, with the row's figures written in as the paper prints them."""
    out, pos = [], 0
    anchor = " ".join(anchor.split())
    for m in _PART.finditer(anchor):
        out.append(re.escape(anchor[pos:m.start()]))
        if m.group(1):
            out.append(re.escape(format(values[m.group(1)], m.group(2))))
        else:
            out.append(r"[^|]*" if m.group() == "<cell>" else r"\d+(?:\.\d+)?")
        pos = m.end()
    return "".join(out) + re.escape(anchor[pos:])


def fields(anchor: str) -> set[str]:
    return {m.group(1) for m in _PART.finditer(anchor) if m.group(1)}


@pytest.fixture(scope="module", params=NAMES)
def shipped(request):
    return parse_experiment(ROOT / "experiments" / f"{request.param}.exp")


def test_the_catalogue_is_every_file():
    assert catalog.experiments_root() == ROOT / "experiments"
    assert catalog.names() == NAMES and set(catalog.names()) == set(ANCHORS)
    assert [e.name for e in catalog.entries()] == catalog.names()


def test_file_says_what_it_reproduces(shipped):
    path = ROOT / "experiments" / f"{shipped.name}.exp"
    assert shipped.path == str(path) and catalog.locate(shipped.name) == path  # name is the file's stem
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert re.match(r"# \[(R|I)\] (Table|Fig\.) \d+", first), first
    assert first[2:5] == shipped.source[:3] and shipped.source.split(",")[0][4:] in first
    assert shipped.title and shipped.rows and shipped.metric == "error"


def test_seeds_are_the_papers_count(shipped):
    """[I] reports the median of 5 runs, [R] Table 6 runs ResNet-110 5 times; ImageNet rows are single runs, as are
    the figures' curves."""
    figure_only = shipped.source.startswith(("[R] Fig.", "[I] Fig."))
    assert shipped.seeds == (1 if shipped.dataset == "imagenet" or figure_only else 5)
    if shipped.source.startswith("[I]") and shipped.dataset in CIFAR:
        assert {r.paper.convention for r in shipped.rows if r.paper} <= {"median"}


def test_specs_resolve_to_the_experiments_dataset(shipped):
    """Every row's spec is packaged (or beside the file), and its recipe, with the row's overrides applied as
    `resdsl train --set` applies them, trains on the experiment's dataset."""
    for row in shipped.rows:
        found = spec_path(row.spec, ROOT / "experiments")
        assert found == locate_spec(row.spec), row
        recipe = recipe_with_settings(resolve_path(found), list(row.overrides))
        assert recipe["dataset"] == shipped.dataset, (row.label, recipe["dataset"])


# how each ImageNet table tests (the rows' recipes' `test`, which each run's final test follows): [R] 3.4's
# 10-crop for comparisons (Tables 2 and 3) and its fully-convolutional multi-scale test for best results (Table 4),
# [I] Table 5's "single 320x320 crop from s = 320"
PAPER_VIEWS = {"r-table2": "10-crop", "r-table3": "10-crop",
               "r-table4": {"view": "multi-scale", "scales": [224, 256, 384, 480, 640]},
               "i-table5": {"view": "single-view", "scale": 320, "crop": 320}}


def test_imagenet_rows_are_tested_as_the_paper_tests_them(shipped):
    if shipped.dataset != "imagenet":
        return
    for row in shipped.rows:
        recipe = recipe_with_settings(resolve_path(spec_path(row.spec, ROOT / "experiments")), list(row.overrides))
        assert recipe["test"] == PAPER_VIEWS[shipped.name], row.label


def test_figures_draw_rows_of_the_file(shipped):
    labels = {r.label for r in shipped.rows}
    for figure in shipped.figures:
        assert figure.panels and all(set(members) <= labels for _, members in figure.panels)


def test_every_published_figure_is_the_references(shipped):
    opening, anchors = ANCHORS[shipped.name]
    text = block(opening)
    published = {r.label: r for r in shipped.rows if r.paper is not None}
    assert set(anchors) == set(published), "each row with a paper clause has an anchor, and only those"
    for label, anchor in anchors.items():
        values = published[label].paper.values
        assert fields(anchor) == set(values), (label, values)  # every figure of the row is checked
        assert re.search(anchor_pattern(anchor, values), text), f"{shipped.name}: {label} {values} not in {text!r}"


def test_a_mistyped_figure_is_caught():
    anchor = ANCHORS["r-table6"][1]["ResNet-110"]
    text = block(ANCHORS["r-table6"][0])
    assert re.search(anchor_pattern(anchor, {"best": 6.43, "mean": 6.61, "std": 0.16}), text)
    for wrong in ({"best": 6.34, "mean": 6.61, "std": 0.16}, {"best": 6.43, "mean": 6.61, "std": 0.61}):
        assert not re.search(anchor_pattern(anchor, wrong), text)
    assert not re.search(anchor_pattern(ANCHORS["i-table2"][1]["ResNet-164, (b) BN after addition"],
                                        {"median": 8.17}), block(ANCHORS["i-table2"][0]))  # the 110 column's


def test_reference_copy_keeps_the_shared_text():
    """docs/reference/resnet-papers.md is the shared reference (sections 1-8) plus section 9's tables."""
    assert REFERENCE.startswith("# The two papers resdsl must express, distilled")
    heads = re.findall(r"^## (\d+)\.", REFERENCE, flags=re.MULTILINE)
    assert heads == [str(n) for n in range(1, 10)]
