"""The experiment-file language: statements, the paper's conventions, continuation lines, and a located
``file:line:col`` error, with a useful hint, for each way a file can be wrong."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from resdsl.errors import SpecError
from resdsl.experiment import catalog
from resdsl.experiment.model import Where
from resdsl.experiment.parse import parse_experiment, parse_experiment_text, spec_path

EXAMPLE = '''\
# [R] Table 6 and Fig. 6: an example using every statement
experiment r-table6
title "Classification error on the CIFAR-10 test set"
source "[R] Table 6, Fig. 6"
dataset cifar10
seeds 5
convention single          # how the paper states a row's number unless the row says otherwise

row "plain-20"   spec plain20
row "ResNet-20"  spec resnet20   paper 8.75
row "ResNet-110" spec resnet110  paper best 6.43 mean 6.61 std 0.16
row "ResNet-1001 (batch 64)" spec resnet1001_preact set "batch=64" set "lr=0.1" paper median 4.62
row "ResNet-1001 [ours]" spec "resnet1001_preact"
  paper median 4.92 mean 4.89 std 0.14
row "ResNet-152 pre-act" spec torchvision/resnet152
  set "schedule=step 30, 60 gamma 0.1"
  paper 21.1 top5 5.5
row "ResNet-56" spec resnet56 paper error 6.97

figure curves fig6 panel "plain" "plain-20" panel "ResNet" "ResNet-20" "ResNet-110"
  panel "deep" "ResNet-110"
figure responses fig7
  panel "std" "plain-20" "ResNet-20"
note "Plain-110 is above 60% error in [R]; its row has no published figure."
note "second note"
'''
HEAD = "experiment e\ndataset cifar10\n"


def error_of(text: str, name: str = "t.exp") -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_experiment_text(text, name)
    return info.value


def test_every_statement():
    exp = parse_experiment_text(EXAMPLE, "ex.exp")
    assert (exp.name, exp.title, exp.source, exp.dataset, exp.seeds) == (
        "r-table6", "Classification error on the CIFAR-10 test set", "[R] Table 6, Fig. 6", "cifar10", 5)
    assert exp.path is None and exp.metric == "error"
    assert exp.notes == ("Plain-110 is above 60% error in [R]; its row has no published figure.", "second note")
    assert [r.label for r in exp.rows] == ["plain-20", "ResNet-20", "ResNet-110", "ResNet-1001 (batch 64)",
                                           "ResNet-1001 [ours]", "ResNet-152 pre-act", "ResNet-56"]
    assert exp.row("plain-20").paper is None and exp.row("plain-20").where == Where("ex.exp", 9, 1)
    assert exp.row("ResNet-1001 (batch 64)").key == "resnet-1001--batch-64"


def test_conventions():
    """A bare figure takes the experiment's convention; keys name the row's own."""
    exp = parse_experiment_text(EXAMPLE, "ex.exp")
    papers = {r.label: (r.paper.convention, r.paper.values) for r in exp.rows if r.paper}
    assert papers == {
        "ResNet-20": ("single", {"error": 8.75}),
        "ResNet-110": ("best-mean-std", {"best": 6.43, "mean": 6.61, "std": 0.16}),
        "ResNet-1001 (batch 64)": ("median", {"median": 4.62}),
        "ResNet-1001 [ours]": ("median", {"median": 4.92, "mean": 4.89, "std": 0.14}),
        "ResNet-152 pre-act": ("single", {"error": 21.1, "top5": 5.5}),
        "ResNet-56": ("single", {"error": 6.97}),
    }
    assert exp.row("ResNet-110").paper.headline == 6.61 and exp.row("ResNet-1001 [ours]").paper.headline == 4.92
    median = parse_experiment_text(HEAD + "convention median\nrow \"a\" spec resnet20 paper 6.61\n")
    assert (median.rows[0].paper.convention, median.rows[0].paper.values) == ("median", {"median": 6.61})
    default = parse_experiment_text(HEAD + "row \"a\" spec resnet20 paper 6.61\n")
    assert default.rows[0].paper.values == {"error": 6.61} and default.seeds == 1 and default.title == ""


def test_overrides_and_continuation_lines():
    exp = parse_experiment_text(EXAMPLE, "ex.exp")
    assert exp.row("ResNet-1001 (batch 64)").overrides == ("batch=64", "lr=0.1")
    assert exp.row("ResNet-152 pre-act").overrides == ("schedule=step 30, 60 gamma 0.1",)
    assert exp.row("ResNet-152 pre-act").spec == "torchvision/resnet152"
    assert exp.row("ResNet-1001 [ours]").spec == "resnet1001_preact"  # a quoted spec is the same


def test_figures_and_panels():
    fig6, fig7 = parse_experiment_text(EXAMPLE, "ex.exp").figures
    assert (fig6.kind, fig6.name, fig6.where) == ("curves", "fig6", Where("ex.exp", 20, 1))
    assert fig6.panels == (("plain", ("plain-20",)), ("ResNet", ("ResNet-20", "ResNet-110")), ("deep", ("ResNet-110",)))
    assert (fig7.kind, fig7.panels) == ("responses", (("std", ("plain-20", "ResNet-20")),))


def test_file_path_and_relative_specs(tmp_path):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "mine.res").write_text("network mine\n")
    (tmp_path / "resnet20").write_text("network shadow\n")  # a file beside the experiment wins over the name
    path = tmp_path / "mine.exp"
    path.write_text(HEAD + 'row "mine" spec nets/mine.res\nrow "twenty" spec resnet20\nrow "32" spec resnet32\n')
    exp = parse_experiment(path)
    assert exp.path == str(path) and exp.rows[0].spec == "nets/mine.res"
    assert spec_path("nets/mine.res", tmp_path) == str(tmp_path / "nets" / "mine.res")
    assert spec_path("resnet20", tmp_path) == str(tmp_path / "resnet20")
    assert spec_path("resnet32", tmp_path) == str(ROOT / "specs" / "resnet32.res")
    assert spec_path("nets", tmp_path) is None  # a folder is no spec
    err = error_of(HEAD + 'row "mine" spec nets/mine.res\n', str(ROOT / "x.exp"))  # looked up beside the file
    assert "no packaged spec or file named 'nets/mine.res'" in err.message
    absolute = tmp_path / "nets" / "mine.res"  # a path from the root, unquoted as the hint offers it
    path.write_text(HEAD + f'row "mine" spec {absolute}\n')
    assert spec_path(parse_experiment(path).rows[0].spec, tmp_path) == str(absolute)


def test_bom_crlf_and_comments():
    text = "\ufeff# c\r\nexperiment e # c\r\ndataset cifar10\r\nrow \"a # b\" spec resnet20 paper 1 # c\r\n"
    exp = parse_experiment_text(text)
    assert exp.rows[0].label == "a # b" and exp.rows[0].paper.values == {"error": 1.0}


LOCATED = [
    # syntax
    (HEAD + 'row "a" spec resnet20\nrows "b" spec resnet20\n', "t.exp:4:1", "unknown statement 'rows'",
     "did you mean 'row'?"),
    (HEAD + 'row "a" spec resnet20 paper 8.75 tpo5 2\n', "t.exp:3:34", "unexpected 'tpo5'", "did you mean 'top5'?"),
    (HEAD + 'row "a" spec resnet20 paper\n', "t.exp:3:28", "unexpected end of line", "best, error, mean, median"),
    (HEAD + 'row "a spec resnet20\n', "t.exp:3:5", "unterminated string", None),
    (HEAD + 'row "a" spec resnet20 paper -1\n', "t.exp:3:29", "unexpected '-1'", "a number"),
    (HEAD + 'row "a" spec\n', "t.exp:3:13", "unexpected end of line", "a spec name"),
    # names
    (HEAD + 'convention mediam\nrow "a" spec resnet20\n', "t.exp:3:12", "unknown convention 'mediam'",
     "did you mean 'median'?"),
    (HEAD + 'row "a" spec resnet20\nfigure curvs f panel "x" "a"\n', "t.exp:4:8", "unknown figure kind 'curvs'",
     "did you mean 'curves'?"),
    (HEAD + 'row "ResNet-20" spec resnet20\nfigure curves f\n  panel "x" "ResNet-2"\n', "t.exp:5:13",
     "names no row \"ResNet-2\"", "did you mean 'ResNet-20'?"),
    (HEAD + 'row "a" spec resnet20\nfigure curves f\n', "t.exp:4:15", "figure 'f' has no panels", "panel"),
    # a figure's files beside the report's own: responses `results` wrote results.csv, which the report replaced
    (HEAD + 'row "a" spec resnet20\nfigure responses results panel "x" "a"\n', "t.exp:4:18",
     "figure name 'results' is reserved: the experiment folder's own files are report.md, results.csv", "e.g. fig6"),
    (HEAD + 'row "a" spec resnet20\nfigure curves Report panel "x" "a"\n', "t.exp:4:15",
     "figure name 'Report' is reserved", None),
    (HEAD + 'row "a" spec resnet20\nfigure curves experiment panel "x" "a"\n', "t.exp:4:15",
     "figure name 'experiment' is reserved", None),
    (HEAD + 'row "a" spec resnet20\nfigure curves f panel "x" "a"\nfigure curves f panel "y" "a"\n', "t.exp:5:15",
     "figure 'f' is given twice", None),
    (HEAD + 'row "a" spec resnet2O\n', "t.exp:3:14", "no packaged spec or file named 'resnet2O'",
     "did you mean resnet20"),
    (HEAD + 'row "a" spec "nets/none.res"\n', "t.exp:3:14", "no packaged spec or file named 'nets/none.res'",
     "from the experiment file's folder"),
    # rows
    (HEAD + 'row "a" spec resnet20\nrow "a" spec resnet32\n', "t.exp:4:5", "row 'a' is given twice (first at line 3)",
     None),
    (HEAD + 'row "ResNet 20" spec resnet20\nrow "resnet-20" spec resnet32\n', "t.exp:4:5",
     "would share the run folder 'resnet-20'", None),
    (HEAD + 'row "" spec resnet20\n', "t.exp:3:5", "label is empty", None),
    (HEAD + 'set "batch=64"\nrow "a" spec resnet20\n', "t.exp:3:1", "'set' must follow the row", None),
    (HEAD + 'row "a" spec resnet20\nnote "n"\n  paper 3\n', "t.exp:5:3", "'paper' must follow the row", None),
    (HEAD + 'row "a" spec resnet20\npanel "p" "a"\n', "t.exp:4:1", "'panel' must follow the figure", None),
    (HEAD + 'row "a" spec resnet20 set "batch"\n', "t.exp:3:27", 'write one recipe field as "FIELD=VALUE"',
     'set "batch=64"'),
    # required and one-per-file statements
    ('dataset cifar10\nrow "a" spec resnet20\n', "t.exp:1:1", "no 'experiment' line", "experiment r-table6"),
    ('experiment e\nrow "a" spec resnet20\n', "t.exp:1:1", "no 'dataset' line", "dataset cifar10"),
    ('experiment e\ndataset svhn\nrow "a" spec resnet20\n', "t.exp:2:9", "unknown dataset 'svhn'",
     "use one of cifar10, cifar100, fashion-mnist, mnist, synthetic, imagenet, or the name of an image folder"),
    ('experiment e\ndataset  cifar1\nrow "a" spec resnet20\n', "t.exp:2:10", "unknown dataset",
     "did you mean 'cifar10'?"),
    (HEAD + "# nothing else\n", "t.exp:1:1", "has no rows", 'row "ResNet-20" spec resnet20'),
    (HEAD + 'dataset cifar100\nrow "a" spec resnet20\n', "t.exp:3:1", "'dataset' is given twice (first at line 2)",
     None),
    (HEAD + 'seeds 0\nrow "a" spec resnet20\n', "t.exp:3:7", "seeds must be between 1 and 1000, not 0", None),
    (HEAD + "seeds " + "9" * 5000 + '\nrow "a" spec resnet20\n', "t.exp:3:7", "not 999999999999...", None),
    # paper figures and conventions
    (HEAD + 'convention best-mean-std\nrow "a" spec resnet20 paper 6.43\n', "t.exp:4:29",
     "does not fit the convention best-mean-std", "paper best B mean M std S"),
    (HEAD + 'row "a" spec resnet20 paper best 6.43 mean 6.61\n', "t.exp:3:23",
     "best-mean-std needs best, mean and std; missing: std", None),
    (HEAD + 'row "a" spec resnet20 paper median 4.62 mean 4.69\n', "t.exp:3:23", "mean and std together", None),
    (HEAD + 'row "a" spec resnet20 paper error 6.4 median 6.5\n', "t.exp:3:23", "stands alone", None),
    (HEAD + 'row "a" spec resnet20 paper error 6.4 best 6.5\n', "t.exp:3:23", "stands alone", None),
    (HEAD + 'row "a" spec resnet20 paper top5 2\n', "t.exp:3:23", "only top5", None),
    (HEAD + 'row "a" spec resnet20 paper 6.4 6.5\n', "t.exp:3:33", "paper gives 'error' twice", None),
    (HEAD + 'row "a" spec resnet20 paper 120\n', "t.exp:3:29", "paper figure 120 is not a percentage", None),
    (HEAD + 'row "a" spec resnet20 paper 8.75\n  paper 9\n', "t.exp:4:3", "has two 'paper' clauses", None),
]


@pytest.mark.parametrize("text,where,message,hint", LOCATED, ids=[c[2][:40] for c in LOCATED])
def test_located_errors(text, where, message, hint):
    err = error_of(text)
    rendered = err.render()
    assert rendered.startswith(f"{where}: error: "), rendered
    assert message in err.message, rendered
    if hint is not None:
        assert err.hint and hint in err.hint, rendered
    assert "^" in rendered  # the source line is shown with a caret


def test_nul_byte_and_non_utf8(tmp_path):
    assert str(error_of(HEAD + "no\x00te\n").span) == "t.exp:3:3"
    path = tmp_path / "bad.exp"
    path.write_bytes(HEAD.encode() + b'note "\xff"\n')
    with pytest.raises(SpecError) as info:
        parse_experiment(path)
    assert str(info.value.span) == f"{path}:3:7" and "experiment file is not UTF-8" in info.value.message


@pytest.mark.parametrize("target,word", [("/dev/zero", "a character device"), ("/", "is a directory"),
                                         ("/nonexistent/x.exp", "no such file")])
def test_only_regular_files_are_read(target, word):
    if target.startswith("/dev") and not os.path.exists(target):
        pytest.skip(f"no {target}")
    with pytest.raises(SpecError) as info:
        parse_experiment(target)
    assert word in info.value.message and "experiment file" in info.value.message
    assert str(info.value.span) == f"{target}:1:1"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_named_pipe_is_refused_without_blocking(tmp_path):
    """In its own process, so that a read that blocks fails the test instead of hanging it."""
    fifo = tmp_path / "pipe.exp"
    os.mkfifo(fifo)
    code = ("import sys; from resdsl.experiment.parse import parse_experiment\n"
            "try: parse_experiment(sys.argv[1])\nexcept Exception as e: print(e.render()); sys.exit(1)")
    r = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert r.returncode == 1 and f"{fifo}:1:1: error: cannot read experiment file" in r.stdout, r.stdout + r.stderr
    assert "named pipe" in r.stdout


# ---- the catalogue ------------------------------------------------------------------------------------------------

def test_locate_by_name_and_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert catalog.locate("r-table6") == ROOT / "experiments" / "r-table6.exp"
    (tmp_path / "r-table6").write_text(HEAD + 'row "a" spec resnet20\n')  # an existing file wins over a name
    assert catalog.locate("r-table6") == Path("r-table6")
    (tmp_path / "r-table4").mkdir()  # a folder does not hide the name
    assert catalog.locate("r-table4") == ROOT / "experiments" / "r-table4.exp"


def test_locate_unknown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        catalog.locate("r-tabel6")
    assert "no experiment file or packaged experiment named 'r-tabel6'" in info.value.message
    assert info.value.hint.startswith("did you mean r-table6") and "resdsl list experiments" in info.value.hint
    with pytest.raises(SpecError) as info:
        catalog.locate("r-table6.exp")
    assert "no such file" in info.value.message and "given by name" in info.value.hint


def test_entries_list_each_file():
    entry = next(e for e in catalog.entries() if e.name == "r-table6")
    assert (entry.source, entry.rows, entry.seeds) == ("[R] Table 6, Fig. 6", 11, 5)
    assert entry.title == "Classification error on the CIFAR-10 test set" and entry.path.is_file()


def test_nothing_imports_torch():
    code = ("import sys; from resdsl.experiment import catalog, parse; catalog.entries(); "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.stdout.strip() == "False", r.stderr


def test_rows_are_picked_by_labels_that_hold_commas():
    """--rows 'ResNet-110, (a) original,ResNet-164, (e)*': a label's own commas are not separators (8 of the
    packaged experiments have such labels; none could be picked before)."""
    from resdsl.experiment.reproduce import only_rows
    from resdsl.experiment.runner import ExperimentRunError

    exp = parse_experiment(catalog.locate("i-table2"))
    picked = only_rows(exp, "ResNet-110, (a) original,ResNet-164, (e)*")
    assert [r.label for r in picked.rows] == ["ResNet-110, (a) original", "ResNet-164, (e) full pre-activation"]
    assert [r.label for r in only_rows(exp, "ResNet-110*, ResNet-164, (a) original").rows][-1] == \
        "ResNet-164, (a) original"
    assert len(only_rows(exp, "ResNet-110*,*(e)*").rows) == 6  # two patterns: each ends at a comma
    table4 = parse_experiment(catalog.locate("i-table4"))  # '[ours]' is a label's text, not a character class
    assert [r.label for r in only_rows(table4, "ResNet-164 [ours],ResNet-1001 [ours], batch 64").rows] == [
        "ResNet-164 [ours]", "ResNet-1001 [ours], batch 64"]
    with pytest.raises(ExperimentRunError, match=r"'nope' matches no row of i-table2; its rows: 'ResNet-110, \(a\)"):
        only_rows(exp, "ResNet-110, (a) original,nope")
    # in any case, as the run folders spell them (resnet-20/seed-0)
    table6 = parse_experiment(catalog.locate("r-table6"))
    assert [r.label for r in only_rows(table6, "resnet-20,PLAIN-2*").rows] == ["plain-20", "ResNet-20"]
    assert [r.label for r in only_rows(exp, "resnet-110, (A) original").rows] == ["ResNet-110, (a) original"]


def test_a_bad_override_is_located_at_its_set(tmp_path):
    """An error in a row's `set "FIELD=VALUE"` points into the experiment file (it said `--set:1:4`, a flag the
    user never typed)."""
    from resdsl.experiment.reproduce import row_recipe
    from resdsl.pipeline import compile_spec

    path = tmp_path / "e.exp"
    path.write_text('experiment e\ntitle "t"\nsource "[R] Table 6"\ndataset cifar10\nseeds 1\nconvention single\n'
                    'row "b" spec resnet20\n  set "batch=64"\n  set "momentum=7"\n', encoding="utf-8")
    exp = parse_experiment(path)
    with pytest.raises(SpecError) as info:
        row_recipe(exp, exp.rows[0], compile_spec("resnet20").spec)
    err = info.value
    assert (err.span.path, err.span.line, err.span.column) == (str(path), 9, 8) and "momentum" in err.message
    assert '      set "momentum=7"\n           ^^^^^^^^^^' in err.render()
    from resdsl.recipes import setting_column

    item = "schedule =   step 10 gamma x"  # becomes "schedule step 10 gamma x": the x at 25 is at 29 as written
    assert [setting_column(item, c) for c in (1, 8, 10, 25)] == [1, 8, 14, 29]


def test_docs_experiments_describes_every_word_of_the_language():
    """docs/experiments.md is the experiment language's reference: every keyword of its grammar is there."""
    import re

    from conftest import ROOT

    grammar = (ROOT / "resdsl" / "experiment" / "grammar.lark").read_text()
    words = set(re.findall(r'"([a-z0-9]+)"', grammar))
    doc = (ROOT / "docs" / "experiments.md").read_text()
    assert words >= {"experiment", "row", "panel", "top5"}
    assert not [w for w in words if not re.search(rf"`[^`\n]*\b{w}\b[^`\n]*`", doc)]  # each in a code span


def test_seeds_run_from_1_to_1000():
    """`seeds N` takes 1 to 1000 runs a row (reproduce --seeds the same): both ends are allowed, past them an error."""
    from resdsl.experiment.parse import parse_experiment_text

    for n in (1, 1000):
        assert parse_experiment_text(HEAD + f'seeds {n}\nrow "a" spec resnet20\n', "t.exp").seeds == n
    for n in (0, 1001):
        with pytest.raises(SpecError, match="seeds must be between 1 and 1000"):
            parse_experiment_text(HEAD + f'seeds {n}\nrow "a" spec resnet20\n', "t.exp")


def test_a_label_too_long_for_a_folder_name_is_located():
    """A row's run folder is named after its label: one over 200 bytes is refused where it is written, not when
    its run cannot make its folder."""
    with pytest.raises(SpecError, match="names a run folder of 300 bytes, over the 200") as info:
        parse_experiment_text(HEAD + f'row "{"r" * 300}" spec resnet20\n')
    assert info.value.span.column == 5


def test_a_dataset_may_name_an_image_folder_there_is(tmp_path, monkeypatch):
    """`dataset myimages`, a folder in the current folder, as `resdsl train --data myimages` reads it."""
    monkeypatch.chdir(tmp_path)
    text = 'experiment e\ndataset myimages\nrow "a" spec resnet20\n'
    assert "unknown dataset 'myimages'" in error_of(text).message
    (tmp_path / "myimages").mkdir()
    assert parse_experiment_text(text, "t.exp").dataset == "myimages"
