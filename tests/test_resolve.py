"""Extends, include and recipes: inheritance rules and their located errors."""
from __future__ import annotations

from pathlib import Path

import pytest

import resdsl
from resdsl.errors import SpecError
from conftest import CIFAR20

RECIPES = """\
recipe base {
  lr 0.1
  batch 128
  length 100 iterations
  schedule step 50, 75
}
recipe small extends base {
  batch 64
}
"""


def test_child_overrides_and_expect_not_inherited(write_spec):
    write_spec(CIFAR20 + "expect params 1\n", name="parent.res")
    path = write_spec('extends "parent.res"\nnetwork child\nstages 16x1, 32x1 /2, 64x1 /2\nexpect layers 8\n')
    net = resdsl.compile_spec(path)
    assert net.name == "child" and net.layers == 8
    assert [e.what for e in net.expects] == ["layers"] and net.ok  # the parent's failing expect is not inherited


def test_recipe_include_and_extends(write_spec):
    path = write_spec(CIFAR20 + 'include "r/recipes.res"\nrecipe small\n', **{"r__recipes.res": RECIPES})
    r = resdsl.compile_spec(path).recipe
    assert (r["name"], r["batch"], r["lr"], r["momentum"]) == ("small", 64, 0.1, 0.9)
    assert r["schedule"]["milestones"] == [50, 75]


def test_a_files_own_recipe_wins_over_an_included_one_of_its_name(write_spec):
    """A spec that defines a recipe named as one its parent includes (cifar_resnet, from recipes.res) trains with
    its own: the nearest definition is the one meant, as with every other setting a child gives."""
    own = ("recipe cifar_resnet {\n  dataset cifar10\n  optimizer sgd\n  momentum 0.9\n  weight-decay 1e-4\n"
           "  batch 64\n  lr 0.05\n  length 100 iterations\n  schedule step 50\n}\n")
    r = resdsl.compile_spec(write_spec('extends "resnet20"\nnetwork mine\n' + own)).recipe
    assert (r["name"], r["lr"], r["batch"]) == ("cifar_resnet", 0.05, 64)


def _err(path) -> SpecError:
    with pytest.raises(SpecError) as info:
        resdsl.compile_spec(path)
    return info.value


def test_cyclic_extends_is_located(write_spec):
    write_spec('extends "net.res"\n' + CIFAR20, name="b.res")
    path = write_spec('extends "b.res"\n' + CIFAR20)
    err = _err(path)
    assert "cyclic extends" in err.message and err.span.path.endswith("b.res") and err.span.line == 1


def test_missing_parent_points_at_extends_line(write_spec):
    path = write_spec(CIFAR20 + 'extends "nope.res"\n')
    err = _err(path)
    assert err.span.path == path and err.span.line == 8 and "no such file" in err.message


def test_a_spec_outside_the_package_names_packaged_parents_by_name(write_spec):
    """`extends "resnet20"` / `include "recipes"`: packaged files by name (no .res), as the command line takes
    them, where no file of that name is beside the spec. A path is never read as a packaged name (a copy of
    specs/torchvision/resnet101.res extends "resnet50.res", torchvision's, which specs/ also has): a missing one
    names the packaged files it may mean."""
    from conftest import ROOT
    from resdsl.catalog import specs_root

    copy = write_spec((ROOT / "specs" / "resnet20.res").read_text(), name="my20.res")
    err = _err(copy)
    assert "cannot read spec" in err.message and err.hint == ('packaged files are named without .res: '
                                                             'include "recipes" or include "family/recipes"')
    net = resdsl.compile_spec(write_spec(Path(copy).read_text().replace('"recipes.res"', '"recipes"'),
                                         name="my20.res"))
    assert net.params == 269_722 and net.recipe["lr"] == 0.1 and net.ok
    assert str(specs_root() / "recipes.res") in net.spec.sources
    for parent, name in (("resnet20", "resnet20"), ("torchvision/resnet50", "resnet50")):
        child = write_spec(f'extends "{parent}"\nexpect layers 50\n', name="child.res")
        assert resdsl.compile_spec(child).name == name
    err = _err(write_spec('extends "resnet50.res"\n', name="tv.res"))
    assert 'extends "resnet50" or extends "torchvision/resnet50"' in err.hint
    mine = write_spec("recipe cifar_resnet {\n  lr 0.3\n}\n", name="recipes")  # a file there wins
    assert _err(write_spec(Path(copy).read_text().replace('"recipes.res"', '"recipes"'))).span.path == mine
    for name in ("../specs/resnet20", str(ROOT / "specs" / "nope"), "x" * 5000):
        assert "cannot read spec" in _err(write_spec(f'extends "{name}"\n', name="esc.res")).message
    # a mistyped name: the close packaged names, as the command line suggests them
    assert _err(write_spec('extends "resnet2"\n', name="typo.res")).hint.startswith(
        'did you mean extends "resnet20", extends "resnet32"')


def test_included_file_may_not_define_network(write_spec):
    path = write_spec(CIFAR20 + 'include "other.res"\n', **{"other.res": CIFAR20})
    err = _err(path)
    assert err.span.path.endswith("other.res") and "only define recipes" in err.message


def test_an_error_in_a_reached_file_says_how_it_was_reached(write_spec, tmp_path):
    """An error in a file the spec extends or includes names that file, then each statement that led to it."""
    bad_recipes = RECIPES.replace("  length 100 iterations\n", "")
    write_spec(CIFAR20 + 'include "r/recipes.res"\nrecipe small\n', name="base.res",
               **{"r__recipes.res": 'include "more.res"\n', "r__more.res": bad_recipes})
    err = _err(write_spec('extends "base.res"\nnetwork child\n', name="child.res"))
    base, recipes, more = (str(tmp_path / f) for f in ("base.res", "r/recipes.res", "r/more.res"))
    assert err.span.path == more and "does not set 'length'" in err.message
    assert err.notes == [f"{more} is included by {recipes}:1:1", f"{recipes} is included by {base}:8:1",
                         f"{base} is extended by {tmp_path / 'child.res'}:1:1"]
    assert err.render().splitlines()[-3:] == [f"note: {n}" for n in err.notes]
    # an error found after resolution, by the shape checks, at a statement the child inherits
    (tmp_path / "r" / "more.res").write_text(RECIPES)
    err = _err(write_spec('extends "base.res"\nnetwork child\nstem cifar 64\n', name="wide.res"))
    assert err.span.path == base and "cannot shrink channels" in err.message and err.source.startswith("network")
    assert err.notes == [f"{base} is extended by {tmp_path / 'wide.res'}:1:1"]


def test_duplicate_statement(write_spec):
    err = _err(write_spec(CIFAR20 + "unit bottleneck\n"))
    assert "'unit' is given twice" in err.message and err.span.line == 8


def test_missing_required(write_spec):
    err = _err(write_spec(CIFAR20.replace("head avgpool fc 10\n", "")))
    assert "never says 'head'" in err.message and (err.span.line, err.span.column) == (1, 1)


@pytest.mark.parametrize("body,fragment", [
    ("lr 0.1\nbatch 1\n", "does not set 'length'"),
    ("lr 0\nbatch 1\nlength 5 epochs\n", "learning rate must be positive"),
    ("lr 0.1\nbatch 1\nlength 5 epochs\nschedule step 3, 2\n", "milestones must increase"),
    ("lr 0.1\nbatch 1\nlength 5 epochs\nschedule step 5\n", "not before the end"),
    ("lr 0.1\nbatch 1\nlength 5 epochs\ndataset imagenette\n", "unknown dataset"),
    ("lr 0.1\nbatch 1\nlength 5 epochs\noptimizer adam\n", "unknown optimizer"),
    ("lr 0.1\nbatch 1\nlength 5 epochs\nmomentum 1\n", "momentum"),
    # a batch padded or resized to this would not fit in memory
    ("lr 0.1\nbatch 1\nlength 5 epochs\naugment pad-crop 100000, flip\n", "pad-crop sizes are at most 4096"),
    ("lr 0.1\nbatch 1\nlength 5 epochs\naugment scale 256-99999 crop 224\n", "scale sizes are at most 4096"),
    ("lr 0.1\nbatch 1\nlength 5 epochs\naugment random-resized-crop 5000\n", "crop sizes are at most 4096"),
    # the trainer cut by the last crop step alone, silently
    ("lr 0.1\nbatch 1\nlength 5 epochs\naugment scale 32-40 crop 32, random-resized-crop 32, lighting\n",
     "one crop step, not 2 (scale, random-resized-crop)"),
])
def test_recipe_validation(write_spec, body, fragment):
    err = _err(write_spec(CIFAR20 + "recipe r {\n" + body + "}\nrecipe r\n"))
    assert fragment in err.message


def test_unknown_recipe_lists_known(write_spec):
    err = _err(write_spec(CIFAR20 + 'include "r.res"\nrecipe nope\n', **{"r.res": RECIPES}))
    assert "unknown recipe 'nope'" in err.message and "base, small" in err.hint


def test_stage_override_out_of_range(write_spec):
    err = _err(write_spec(CIFAR20 + "stage 4: shortcut B\n"))
    assert "stage 4 does not exist" in err.message and err.span.column == 7  # at the 4, not at 'shortcut B'


def test_paper_recipes(at_root):
    r = resdsl.compile_spec("specs/resnet110.res").recipe
    assert (r["lr"], r["momentum"], r["weight_decay"], r["batch"]) == (0.1, 0.9, 1e-4, 128)
    assert r["schedule"] == {"kind": "step", "milestones": [32000, 48000], "gamma": 0.1}
    assert r["length"] == {"value": 64000, "unit": "iterations"}
    # [R] 4.2: warm up "until the training error is below 80% (about 400 iterations)": the error alone ends it
    assert r["warmup"] == {"length": None, "unit": "iterations", "lr": 0.01, "until_error": 80.0}
    assert resdsl.compile_spec("specs/resnet110_preact.res").recipe["warmup"] == {
        "length": 400, "unit": "iterations", "lr": 0.01, "until_error": None}  # [I]: "the beginning 400 iterations"
    assert resdsl.compile_spec("specs/resnet1001_preact_cifar100.res").recipe["dataset"] == "cifar100"
    assert resdsl.compile_spec("specs/resnet200.res").recipe["schedule"]["milestones"] == [30, 60]


def test_file_included_many_times_is_read_once(write_spec, monkeypatch):
    """A diamond of includes 14 levels deep (2**14 paths) resolves by reading each file once."""
    from resdsl import resolve

    files = {f"f{i}.res": f'include "f{i + 1}.res"\ninclude "f{i + 1}.res"\n' for i in range(14)}
    files["f14.res"] = RECIPES
    path = write_spec(CIFAR20 + 'include "f0.res"\nrecipe small\n', **files)
    reads = []
    real = resolve.parse_file
    monkeypatch.setattr(resolve, "parse_file",
                        lambda p, span=None, recorded=None: reads.append(p) or real(p, span, recorded))
    assert resdsl.compile_spec(path).recipe["batch"] == 64
    assert len(reads) == 16  # the spec and f0 ... f14


def test_byte_order_mark_is_ignored(write_spec):
    assert resdsl.compile_spec(text="\ufeff" + CIFAR20).params == 269_722
    path = write_spec("")
    with open(path, "wb") as fh:
        fh.write(b"\xef\xbb\xbf" + CIFAR20.encode())
    assert resdsl.compile_spec(path).params == 269_722


def test_warmup_none_and_a_warmup_that_only_its_error_ends(at_root):
    from resdsl.recipes import recipe_with_settings
    from resdsl.resolve import resolve_path

    spec = resolve_path("specs/resnet110_preact.res")
    assert recipe_with_settings(spec, ["warmup=none"])["warmup"] is None
    assert recipe_with_settings(spec, ["warmup=lr 0.02 until-error 90%"])["warmup"] == {
        "length": None, "unit": "iterations", "lr": 0.02, "until_error": 90.0}
    with pytest.raises(SpecError, match="a warm-up needs a length or an 'until-error' rule") as info:
        recipe_with_settings(spec, ["momentum=0.9", "warmup=lr 0.02"])
    assert (info.value.span.path, info.value.span.line) == ("--set", 2)


def test_a_long_recipe_cycle_is_said_in_one_short_line(write_spec):
    """A cycle of thousands of recipes is named by its loop (not the way into it), shortened to a line."""
    n = 3000
    recipes = "".join(f"recipe r{i} extends r{i + 1} {{\n  lr 0.1\n}}\n" for i in range(n))
    recipes += f"recipe r{n} extends r5 {{\n  lr 0.1\n  batch 1\n  length 3 iterations\n}}\n"
    err = _err(write_spec(CIFAR20 + recipes + "recipe r0\n"))
    assert err.message.startswith("cyclic recipe extends: r5 -> r6 -> ") and err.message.endswith(f"r{n} -> r5")
    assert f"... ({n - 3} in all) ..." in err.message and len(err.message) < 300, err.message


def test_a_runs_record_of_its_spec_is_not_held_to_newer_recipe_rules(tmp_path):
    """Augmentation sizes above 4096 are refused in a spec, but a run trained before that rule (its config.json's
    copy of the spec) is still rebuilt, to be resumed and evaluated."""
    from resdsl.pipeline import compile_run

    path = str(tmp_path / "ms0.res")
    text = CIFAR20 + ("recipe r {\n  lr 0.1\n  batch 8\n  length 6 iterations\n  schedule step 0, 3\n"
                      "  warmup 0 lr 0.01\n  augment scale 256-5000 crop 224\n}\nrecipe r\n")
    with pytest.raises(SpecError, match="scale sizes are at most 4096 pixels"):
        resdsl.compile_spec(text=text, name=path)
    _, net = compile_run({"spec": path, "spec_files": {"path": path, "files": {path: text}}}, str(tmp_path))
    assert net.recipe["schedule"]["milestones"] == [0, 3] and net.recipe["warmup"]["length"] == 0


def test_a_setting_given_twice_names_the_first_by_its_set_number():
    """`--set weight-decay=0 --set lr=0.2 --set weight-decay=0`: located at --set 3, the first one is --set 1 (it
    said line 2, the line of the recipe the settings become)."""
    from resdsl.recipes import recipe_with_settings

    with pytest.raises(resdsl.SpecError) as refused:
        recipe_with_settings(resdsl.compile_spec("resnet20").spec, ["weight-decay=0", "lr=0.2", "weight-decay=0"])
    assert str(refused.value).startswith("--set:3:1: error: recipe field 'weight_decay' is given twice (first at "
                                         "line 1)")

