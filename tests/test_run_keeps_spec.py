"""A run keeps the text of every spec file it was compiled from (config.json's spec_files): resuming, evaluating and
analysing it rebuild that network, whatever has since happened to the files on disk (edited, moved, deleted, or
a packaged spec changed by a newer resdsl)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT  # noqa: E402
from test_train import QUICK, resdsl, weights  # noqa: E402

RECIPE = """\
recipe quick {
  dataset synthetic
  optimizer sgd
  momentum 0.9
  weight-decay 1e-4
  batch 32
  lr 0.05
  length 12 iterations
  schedule step 6, 9
}
"""
NET = 'network small\ninclude "rec.res"\nextends "{base}"\nstages 8x1, 16x1 /2\nrecipe quick\n'


def _write_spec(folder: Path) -> Path:
    """A spec that extends a packaged spec's file and includes a recipe file of its own: three files."""
    folder.mkdir()
    (folder / "rec.res").write_text(RECIPE)
    spec = folder / "small.res"
    spec.write_text(NET.format(base=ROOT / "tests" / "specs" / "tiny.res"))
    return spec


def _stopped_run(tmp_path: Path) -> tuple[Path, Path]:
    """A 12-iteration run of small.res stopped after its checkpoint at iteration 4 (as a kill leaves it: the
    record says 12, the checkpoint holds 4), and its spec file."""
    spec = _write_spec(tmp_path / "specs")
    run = tmp_path / "run"
    resdsl("train", str(spec), *QUICK, "--iters", "4", "--out", str(run), check=True)
    cfg = json.loads((run / "config.json").read_text())
    cfg["iterations"], cfg["options"]["iters"] = 12, 12
    (run / "config.json").write_text(json.dumps(cfg))
    return run, spec


def test_the_record_holds_every_file_the_spec_was_compiled_from(tmp_path):
    run, spec = _stopped_run(tmp_path)
    record = json.loads((run / "config.json").read_text())["spec_files"]
    assert record["path"] == str(spec)
    assert set(record["files"]) == {str(spec), str(spec.parent / "rec.res"), str(ROOT / "tests/specs/tiny.res"),
                                    str(ROOT / "specs/resnet20.res"), str(ROOT / "specs/recipes.res")}
    assert record["files"][str(spec.parent / "rec.res")] == RECIPE


def test_a_run_resumes_from_its_own_copy_after_its_files_changed(tmp_path):
    run, spec = _stopped_run(tmp_path)
    twin = tmp_path / "twin"  # the same stopped run, resumed while its files are as they were
    shutil.copytree(run, twin)
    resdsl("train", "--resume", str(twin), check=True)
    # the spec now describes a wider network with another recipe, and the recipe file is gone
    spec.write_text(NET.format(base=ROOT / "tests" / "specs" / "tiny.res").replace("16x1", "32x1"))
    (spec.parent / "rec.res").unlink()
    r = resdsl("train", "--resume", str(run))
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["iter"] == 12
    mine, its = weights(run), weights(twin)
    assert mine.keys() == its.keys() and all(torch.equal(mine[k], its[k]) for k in mine)
    r = resdsl("eval", str(run), "--device", "cpu")  # eval and analyze rebuild the recorded network too
    assert r.returncode == 0 and "small on synthetic" in r.stdout and "warning" not in r.stderr, r.stderr
    r = resdsl("analyze", "responses", str(run), "--device", "cpu", "--test-subset", "32", "--out",
               str(tmp_path / "fig"))
    assert r.returncode == 0, r.stderr


def test_a_changed_spec_given_with_resume_points_to_the_runs_copy(tmp_path):
    run, spec = _stopped_run(tmp_path)
    spec.write_text(spec.read_text().replace("16x1", "32x1"))
    r = resdsl("train", str(spec), "--resume", str(run))
    assert r.returncode == 1 and "not the one this run was trained from" in r.stderr, r.stderr
    assert "drop the SPEC argument" in r.stderr, r.stderr


def test_a_record_another_resdsl_compiled_otherwise_is_refused_by_name(tmp_path):
    """What a newer resdsl that lowers a spec differently meets: the run's own spec gives another hash."""
    run, _ = _stopped_run(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["spec_hash"], cfg["resdsl"] = "0" * 64, "0.0.9"
    (run / "config.json").write_text(json.dumps(cfg))
    r = resdsl("train", "--resume", str(run))
    assert r.returncode == 1 and "compiles the run's own spec" in r.stderr and "resdsl 0.0.9" in r.stderr, r.stderr
    r = resdsl("eval", str(run), "--device", "cpu")  # weights are still evaluated, with a warning
    assert r.returncode == 0 and "compiles the spec" in r.stderr and "resdsl 0.0.9" in r.stderr, r.stderr


@pytest.mark.parametrize("damage,fragment", [
    (lambda files: files.update(path=7), "spec_files.path is 7, not a text"),
    (lambda files: files["files"].clear(), "the run's record of its spec has no file"),
    (lambda files: files["files"].update({k: "network x\n" for k in files["files"]}),
     "never says 'input'"),
])
def test_a_damaged_record_of_the_spec_is_a_clear_error(tmp_path, damage, fragment):
    run, _ = _stopped_run(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    damage(cfg["spec_files"])
    (run / "config.json").write_text(json.dumps(cfg))
    for command in (["train", "--resume"], ["eval"]):
        r = resdsl(*command, str(run))
        assert r.returncode == 1 and fragment in r.stderr and "internal error" not in r.stderr, r.stderr
        assert "spec_files" in r.stderr, r.stderr


def test_a_run_without_a_record_of_its_spec_is_rebuilt_from_the_file(tmp_path):
    """Runs of resdsl before spec_files (and of emitted trainers) name their spec's path only."""
    run, spec = _stopped_run(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    del cfg["spec_files"]
    (run / "config.json").write_text(json.dumps(cfg))
    assert resdsl("train", "--resume", str(run)).returncode == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["iter"] == 12
    spec.unlink()
    r = resdsl("eval", str(run), "--device", "cpu")
    assert r.returncode == 1 and "no such file" in r.stderr, r.stderr


def _replayed(record: dict, monkeypatch, tmp_path) -> "object":
    """compile_run of a record, from another working directory, with every file it names gone from the disk."""
    from resdsl.pipeline import compile_run

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return compile_run({"spec": "x", "spec_files": record}, "RUN")[1]


def test_a_file_reached_by_two_spellings_replays_from_anywhere(tmp_path, monkeypatch):
    """base.res by its absolute path and net.res beside it both include rec.res: 'sub/rec.res' was read once (the
    include memo), so the record lacked the second spelling and a replay from another folder failed."""
    import resdsl

    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "rec.res").write_text(RECIPE)
    (sub / "base.res").write_text(f'extends "{ROOT / "tests" / "specs" / "tiny.res"}"\ninclude "rec.res"\n')
    (sub / "net.res").write_text(f'network net\nextends "{sub / "base.res"}"\ninclude "rec.res"\nrecipe quick\n')
    monkeypatch.chdir(tmp_path)
    net = resdsl.compile_spec("sub/net.res")
    record = net.files()
    shutil.rmtree(sub)
    assert _replayed(record, monkeypatch, tmp_path).spec_hash() == net.spec_hash()


def test_a_packaged_parent_named_by_a_spec_replays_on_another_install(tmp_path, monkeypatch):
    """`include "recipes"` reads the packaged file; the record replays it from its own copy, whatever this
    machine's packaged specs are (another venv, a wheel, another machine: here, none at all)."""
    import resdsl
    from resdsl import catalog
    from resdsl.errors import SpecError

    spec = tmp_path / "mine.res"
    spec.write_text((ROOT / "specs" / "resnet20.res").read_text().replace('"recipes.res"', '"recipes"'))
    net = resdsl.compile_spec(str(spec))
    record = net.files()
    assert record["aliases"] == {str(tmp_path / "recipes"): str(catalog.specs_root() / "recipes.res")}

    def no_packaged_specs():
        raise SpecError("no packaged specs here", None)

    monkeypatch.setattr(catalog, "specs_root", no_packaged_specs)
    spec.unlink()
    assert _replayed(record, monkeypatch, tmp_path).spec_hash() == net.spec_hash()


def _recipe(name: str) -> str:
    return RECIPE.replace("recipe quick", f"recipe {name}")



BODY = 'extends "{tiny}"\nnetwork n\n'.format(tiny=ROOT / "tests" / "specs" / "tiny.res")


def test_a_replay_keys_files_as_recorded_not_by_their_normal_form(tmp_path, monkeypatch):
    """d/lnk/../common.res is other/common.res to the disk (lnk is a link into other/), while normpath makes it
    d/common.res: keyed so, the replay took the second include for the first and lost recipe b."""
    import resdsl

    (tmp_path / "other" / "sub").mkdir(parents=True)
    (tmp_path / "lnk").symlink_to(tmp_path / "other" / "sub")
    (tmp_path / "common.res").write_text(_recipe("a"))
    (tmp_path / "other" / "common.res").write_text(_recipe("b"))
    (tmp_path / "net.res").write_text(BODY + f'include "{tmp_path}/common.res"\ninclude "{tmp_path}/lnk/../common.res"'
                                             "\nrecipe b\n")
    net = resdsl.compile_spec(str(tmp_path / "net.res"))
    assert _replayed(net.files(), monkeypatch, tmp_path).spec_hash() == net.spec_hash()


def test_an_include_memo_hit_is_recorded_as_the_reading_it_reuses(tmp_path, monkeypatch):
    """Y/q.res is extended, then included as X/p.res (a link to it): the include's alias must lead to the file
    as the memo read it there (X/p.res includes X/z.res), not to where `extends` first read it (Y/q.res, whose
    z.res is Y/z.res)."""
    import resdsl

    for folder in ("X", "Y"):
        (tmp_path / folder).mkdir()
    (tmp_path / "Y" / "q.res").write_text('include "z.res"\n')
    (tmp_path / "Y" / "z.res").write_text(_recipe("a"))
    (tmp_path / "X" / "z.res").write_text(_recipe("b"))
    (tmp_path / "X" / "p.res").symlink_to("../Y/q.res")
    (tmp_path / "X" / "more.res").write_text('include "p.res"\n')
    whole = "network n\ninput 3x32x32\nstem cifar 8\nunit basic\nshortcut A\nstages 8x1, 16x1 /2\nhead avgpool fc 10\n"
    (tmp_path / "net.res").write_text('extends "Y/q.res"\n' + whole + 'include "X/p.res"\ninclude "X/more.res"\n'
                                      "recipe b\n")
    monkeypatch.chdir(tmp_path)
    net = resdsl.compile_spec("net.res")
    assert _replayed(net.files(), monkeypatch, tmp_path).spec_hash() == net.spec_hash()


def test_a_hand_edited_record_is_said_to_be_one(tmp_path):
    """Same resdsl, a record that no longer gives its hash: edited or damaged, not 'another version'; a path of
    megabytes is cut in the message."""
    run, _ = _stopped_run(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    files = cfg["spec_files"]["files"]
    rec = next(p for p in files if p.endswith("rec.res"))
    files[rec] = files[rec].replace("lr 0.05", "lr 0.3")
    (run / "config.json").write_text(json.dumps(cfg))
    r = resdsl("train", "--resume", str(run))
    assert r.returncode == 1 and "config.json was edited or damaged" in r.stderr and "version" not in r.stderr
    cfg["spec_files"]["aliases"] = {str(rec): "y" * 100_000}
    files[rec] = files[rec].replace("lr 0.3", "lr 0.05")
    (run / "config.json").write_text(json.dumps(cfg))
    r = resdsl("eval", str(run))
    assert r.returncode == 1 and "has no file 'yyy" in r.stderr and len(r.stderr) < 2000, r.stderr[:300]


def test_a_record_that_names_no_spec_says_how_to_name_it(tmp_path):
    run, _ = _stopped_run(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    for key in ("spec_files", "spec", "spec_path"):
        del cfg[key]
    (run / "config.json").write_text(json.dumps(cfg))
    r = resdsl("eval", str(run))
    assert r.returncode == 1 and "config.json names no spec" in r.stderr, r.stderr
    assert f"hint: name it yourself: resdsl train SPEC --resume {run}" in r.stderr


@pytest.mark.parametrize("folder", [b"at @dir", b"line\nbreak \xff"])
def test_the_spec_hash_is_the_same_wherever_the_spec_lies(tmp_path, folder):
    """A copy of a spec in a folder whose name holds ' @' (the IR dump's location mark), a line break or a byte
    that is not UTF-8 describes the same network: the same hash (a run's resume and eval compare it)."""
    import os

    import resdsl as rd

    spec = _write_spec(tmp_path / "plain")
    moved = os.path.join(os.fsencode(tmp_path), folder)
    shutil.copytree(spec.parent, os.fsdecode(moved))
    there = os.fsdecode(os.path.join(moved, b"small.res"))
    assert rd.compile_spec(there).spec_hash() == rd.compile_spec(str(spec)).spec_hash()
