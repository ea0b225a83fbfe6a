"""The emitted trainer's train.py and `resdsl train` say the same things of the same misuses: a network without a
classifier has no trainer; flags that do not go together are usage errors (exit 2); a --seeds folder that cannot
be one, a resumed run of another network and a Ctrl-C before training are one line each, never a traceback."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from conftest import ROOT  # noqa: E402
from resdsl_cli.main import main  # noqa: E402
from test_train import resdsl  # noqa: E402

TINY = str(ROOT / "tests" / "specs" / "tiny.res")
QUICK = ["--data", "synthetic", "--train-subset", "128", "--test-subset", "32", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("front") / "t"
    r = CliRunner().invoke(main, ["compile", TINY, "--emit-trainer", str(folder)])
    assert r.exit_code == 0, r.output
    return folder


def train_py(trainer, *args, cwd=None):
    return subprocess.run([sys.executable, str(trainer / "train.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_a_network_without_a_classifier_has_no_trainer(tmp_path):
    """`resdsl train` refuses it (the data's classes cannot be set); the trainer trained it on 10 classes with its
    32 outputs, or failed at the first batch with a traceback."""
    spec = tmp_path / "nofc.res"
    spec.write_text(f'extends "{TINY}"\nnetwork nofc\nstages 8x1, 16x1 /2, 32x1 /2\nhead avgpool\n')
    r = CliRunner().invoke(main, ["compile", str(spec), "--emit-trainer", str(tmp_path / "t")])
    assert r.exit_code == 1 and "nofc.res:4:1: error: this network has no classifier" in r.output, r.output
    assert not (tmp_path / "t").exists()


def test_misuses_are_said_alike_by_both_front_ends(trainer, tmp_path):
    (tmp_path / "afile").write_text("x")
    for args, code, words in ((["--parallel", "2"], 2, "--parallel goes with --seeds"),
                              (["--iters", "5", "--epochs", "2"], 2, "give --iters or --epochs, not both"),
                              (["--out", "", "--iters", "2"], 2, "--out needs a name, not an empty one"),
                              (["--seeds", "0,1", "--out", str(tmp_path / "afile")], 1,
                               f"cannot use the folder of the seeds' runs {tmp_path / 'afile'}: it is a file")):
        r = CliRunner().invoke(main, ["train", TINY, *QUICK, *args])
        assert r.exit_code == code and words in r.output, r.output
        if args[0] != "--iters":  # (the table's check, the same function for both)
            r = train_py(trainer, *QUICK, *args)
            assert r.returncode == code and f"train.py: error: {words}" in r.stderr, r.stderr
            assert "Traceback" not in r.stderr
    assert (tmp_path / "afile").read_text() == "x"


def test_a_run_of_another_network_is_refused_in_the_trainers_words(trainer, tmp_path):
    """The emitted trainer has no SPEC argument to drop: it names its own files and the command that resumes the
    run; a run of a trainer whose model.py was edited is resumed by that trainer alone."""
    other = tmp_path / "other"
    resdsl("train", "tests/specs/tiny_random.res", *QUICK, "--iters", "2", "--out", str(other), check=True)
    r = train_py(trainer, "--resume", str(other))
    assert r.returncode == 1 and "this trainer's network or recipe (its model.py and recipe.json" in r.stderr
    assert f"`resdsl train --resume {other}` resumes it" in r.stderr and "SPEC" not in r.stderr, r.stderr
    edited = tmp_path / "edited"
    subprocess.run(["cp", "-r", str(trainer), str(edited)], check=True)
    with open(edited / "model.py", "a") as fh:
        fh.write("# edited\n")
    run = tmp_path / "run"
    assert train_py(edited, *QUICK, "--iters", "4", "--checkpoint-every", "2", "--out", str(run)).returncode == 0
    config = json.loads((run / "config.json").read_text())
    json.dump(dict(config, iterations=8), open(run / "config.json", "w"))  # as if stopped half way
    r = resdsl("train", "--resume", str(run))
    assert r.returncode == 1 and "started by an emitted trainer whose model.py or recipe.json had been edited" in \
        r.stderr, r.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals as on Linux")
def test_ctrl_c_while_the_trainer_starts_is_one_line(trainer, tmp_path):
    """Ctrl-C while torch loads (the first second or two): a line and 130, as a Ctrl-C during the run's loop ends
    (which checkpoints), not a KeyboardInterrupt traceback; nothing is left of the run."""
    for cmd, line in (([sys.executable, str(trainer / "train.py")], "train.py: stopped: SIGINT received (Ctrl-C)"),
                      ([sys.executable, "-c", "import resdsl_cli; resdsl_cli.run()", "train", TINY],
                       "resdsl: stopped: SIGINT received (Ctrl-C)")):
        run = tmp_path / "run"
        proc = subprocess.Popen([*cmd, *QUICK, "--iters", "2", "--out", str(run)], stderr=subprocess.PIPE,
                                text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(0.3)  # the interpreter is up (its own start takes some 20 ms) and torch is still loading
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and err.strip().splitlines()[-1] == line, err
        assert "Traceback" not in err and not run.exists()
