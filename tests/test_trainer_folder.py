"""`resdsl compile --emit-trainer DIR` into a folder that exists: it replaces only what it wrote there itself and
the user has not changed since (resdsl-trainer.json records that, by hash), removes the files of an earlier trainer
that a newer one no longer has, and refuses to replace a file the user edited or wrote unless --overwrite."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from conftest import ROOT, within  # noqa: E402
import resdsl  # noqa: E402
from resdsl.backends.trainer_folder import MANIFEST  # noqa: E402
from resdsl_cli.main import main  # noqa: E402

TINY = "tests/specs/tiny.res"


def emit(folder, *extra: str):
    return CliRunner().invoke(main, ["compile", TINY, "--emit-trainer", str(folder), *extra])


def test_a_trainer_emitted_again_replaces_its_own_files(tmp_path):
    folder = tmp_path / "tr dir"
    r = emit(folder)
    assert r.exit_code == 0 and f"run: python '{folder}/train.py' --data" in r.output, r.output  # quoted
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {"model.py", "train.py", "recipe.json", "resdsl_train/loop.py"} <= set(manifest["sha256"])
    (folder / "runs").mkdir()  # the user's things beside the trainer stay
    (folder / "notes.txt").write_text("mine")
    # an earlier resdsl's module that this one no longer has, unchanged since it was written: removed
    (folder / "resdsl_train" / "gone.py").write_text("old = 1\n")
    manifest["sha256"]["resdsl_train/gone.py"] = __import__("hashlib").sha256(b"old = 1\n").hexdigest()
    manifest["sha256"]["../outside.txt"] = manifest["sha256"]["resdsl_train/gone.py"]  # a hand-made entry: ignored
    (tmp_path / "outside.txt").write_text("old = 1\n")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    r = emit(folder)
    assert r.exit_code == 0, r.output
    assert not (folder / "resdsl_train" / "gone.py").exists() and (tmp_path / "outside.txt").exists()
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "runs").is_dir()
    assert "resdsl_train/gone.py" not in json.loads((folder / MANIFEST).read_text())["sha256"]
    # another spec's trainer into the same folder: every file of the first is resdsl's, spec.json too
    r = CliRunner().invoke(main, ["compile", "tests/specs/tiny_plain.res", "--emit-trainer", str(folder)])
    assert r.exit_code == 0, r.output
    assert "tiny_plain.res" in json.loads((folder / "spec.json").read_text())["path"]


@pytest.mark.parametrize("edited", ["train.py", "spec.json", "resdsl_train/loop.py"])
def test_an_edited_trainer_file_is_refused_unless_overwrite(tmp_path, edited):
    """`--emit-trainer` into the same folder after editing train.py replaced the user's train.py without a word."""
    folder = tmp_path / "tr"
    assert emit(folder).exit_code == 0
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    (folder / edited).write_text((folder / edited).read_text() + "# my change\n")
    r = emit(folder)
    assert r.exit_code == 1 and f"{edited} in {folder} was changed since resdsl wrote it" in r.stderr, r.output
    assert "--overwrite" in r.stderr
    assert (folder / edited).read_text().endswith("# my change\n")  # nothing written: the refusal comes first
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p != folder / edited} == \
        {p: b for p, b in before.items() if p != folder / edited}
    assert emit(folder, "--overwrite").exit_code == 0
    assert (folder / edited).read_bytes() == before[folder / edited]


def test_a_folder_of_the_users_keeps_its_files(tmp_path):
    """Without a manifest nothing in place is known to be resdsl's: a train.py there is the user's."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "train.py").write_text("print('my own trainer')\n")
    r = emit(folder)
    assert r.exit_code == 1 and "train.py in" in r.stderr and "not written by resdsl" in r.stderr, r.output
    assert sorted(p.name for p in folder.iterdir()) == ["train.py"]
    r = CliRunner().invoke(main, ["compile", TINY, "--overwrite"])
    assert r.exit_code == 2 and "--overwrite goes with --emit-trainer" in r.output


@pytest.mark.parametrize("name", ["model.py", "train.py", "resdsl_train/cli.py"])
def test_not_even_overwrite_replaces_the_spec_with_its_trainer(tmp_path, name):
    """A spec kept as DIR/model.py became generated Python with `--emit-trainer DIR --overwrite` (--emit-python and
    --onnx refused to write over it)."""
    spec = tmp_path / name
    spec.parent.mkdir(exist_ok=True)
    text = (ROOT / TINY).read_text().replace('"../../specs/resnet20.res"', f'"{ROOT}/specs/resnet20.res"')
    spec.write_text(text)
    r = CliRunner().invoke(main, ["compile", str(spec), "--emit-trainer", str(tmp_path), "--overwrite"])
    assert r.exit_code == 2, r.output  # as --emit-python refuses it
    assert f"the trainer would replace {spec}, a file the network is compiled from, with its {name}" in r.output
    assert spec.read_text() == text and sorted(p.name for p in tmp_path.rglob("*")) == sorted(name.split("/"))
    from resdsl.backends.trainer_folder import emit_trainer
    with pytest.raises(FileExistsError, match="the trainer would replace"):  # from Python too
        emit_trainer(resdsl.compile_spec(str(spec)), str(tmp_path), overwrite=True)
    assert spec.read_text() == text


def test_a_hand_made_manifest_reaches_nothing_outside_the_trainers_files(tmp_path):
    """Trainer folders are shipped to others: a manifest naming a user's file by its hash, or a resdsl_train that
    is a link to another folder, made resdsl delete that file or write the trainer's modules elsewhere."""
    import hashlib
    import os

    folder, outside = tmp_path / "tr", tmp_path / "outside"
    assert emit(folder).exit_code == 0
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    (folder / "notes.txt").write_text("mine")
    manifest = json.loads((folder / MANIFEST).read_text())
    digest = hashlib.sha256(b"keep me").hexdigest()
    manifest["sha256"].update({"notes.txt": hashlib.sha256(b"mine").hexdigest(), "resdsl_train/precious.txt": digest})
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert emit(folder).exit_code == 0 and (folder / "notes.txt").read_text() == "mine"  # not a trainer's name
    os.rename(folder / "resdsl_train", tmp_path / "package")
    os.symlink(outside, folder / "resdsl_train")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    r = emit(folder, "--overwrite")
    assert r.exit_code == 1 and "resdsl_train is a link" in r.stderr, r.output
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]
    os.unlink(folder / "resdsl_train")
    os.rename(tmp_path / "package", folder / "resdsl_train")
    (folder / MANIFEST).unlink()
    os.mkfifo(folder / MANIFEST)  # taken for no manifest, not waited on for good
    with within(20):
        r = emit(folder)
    assert r.exit_code == 0 and (folder / MANIFEST).is_file(), r.output  # every file as this emit writes it


def test_an_emitted_trainer_says_when_the_data_is_too_small_for_its_network(tmp_path):
    """model.py has no shape check: the trainer tries the data's images on it first, so a network that cannot take
    them is an error naming the shape (as `resdsl train` gives a located one), not a traceback at the first step,
    and no run folder is left."""
    import subprocess
    import sys

    spec = tmp_path / "patchy.res"  # 256x256 patchified by 8 then pooled by 8: a 32x32 image is gone in the stem
    spec.write_text(f'extends "{ROOT / "tests" / "specs" / "tiny.res"}"\nnetwork patchy\ninput 3x256x256\n'
                    "stem conv 8x8 /8 8 pool avg 8x8 /8\n")
    assert CliRunner().invoke(main, ["compile", str(spec), "--emit-trainer", str(tmp_path / "t")]).exit_code == 0
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, str(tmp_path / "t" / "train.py"), "--data", "synthetic", "--train-subset",
                        "64", "--test-subset", "32", "--iters", "1", "--device", "cpu", "--out", str(run)],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "train.py: error: the network cannot take the data's 3x32x32 images" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not run.exists()


def test_a_packaged_spec_is_recorded_by_its_name(tmp_path):
    """A run of the emitted trainer names a packaged spec as any command takes it (`resnet20`): not this machine's
    install path, and not specs/resnet20.res, which no command finds outside a checkout."""
    from resdsl.pipeline import compile_run

    r = CliRunner().invoke(main, ["compile", "resnet20", "--emit-trainer", str(tmp_path / "tr")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "tr" / "train.py").read_text()
    assert "\"spec\": 'resnet20'" in text and str(ROOT) not in text
    name, net = compile_run({"spec": "resnet20"}, str(tmp_path))  # a record without its spec's files still rebuilds
    assert net.name == "resnet20"
