"""resdsl.train's Python entry, `train(model_fn, recipe, RunOptions(...))`, as a notebook calls it: values no
command line checked are refused in the flags' words, and torch's process-wide settings come back as they were."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from test_train_trust import _in_process_run  # noqa: E402


@pytest.mark.parametrize("field,value,words", [
    ("iters", 0, "--iters 0: must be at least 1"),  # trained the recipe's whole 64,000 iterations
    ("iters", -3, "--iters -3: must be at least 1"),  # 'finished' without training
    ("eval_every", 0, "--eval-every 0: must be at least 1"),
    ("workers", -1, "--workers -1: must be 0 or more"),
    ("decode", "bogus", "--decode 'bogus': choose from auto, workers, device"),
    ("batch_size", "32", "--batch-size '32': give a number, not str"),  # failed inside torch's SGD
    ("lr", True, "--lr True: give a number, not bool"),
])
def test_values_the_command_line_refuses_are_refused_in_python_too(tmp_path, field, value, words):
    result, failure = _in_process_run(tmp_path, **{field: value})
    assert result is None and failure == (words + failure[0][len(words):], 1), failure
    assert not (tmp_path / "run").exists()


def test_an_unknown_device_is_a_training_error(tmp_path):
    from resdsl.train.loop import RunOptions, TrainingError, train

    with pytest.raises(TrainingError, match="--device 'gpu': choose from auto, cuda, mps, cpu"):  # torch's own error
        train(lambda shape, k: torch.nn.Linear(1, k), {}, RunOptions(device="gpu", out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_torchs_settings_come_back_after_a_run(tmp_path):
    """A deterministic run on one thread left deterministic algorithms on (every later torch.empty NaN-filled on
    the CPU), one thread, and torch's global generator reseeded."""
    torch.manual_seed(1234)
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    result, failure = _in_process_run(tmp_path, deterministic=True, threads=1, iters=2)
    assert failure is None and result["iterations"] == 2
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_recipes_learning_rate_beyond_float32_is_refused(tmp_path):
    """A spec's lr of 1e300 compiles (a finite number) but SGD keeps it in float32: refused before a folder."""
    import resdsl as rd
    from conftest import ROOT
    from resdsl.train.loop import RunOptions, run_with_errors, train

    net = rd.compile_spec(str(ROOT / "tests" / "specs" / "tiny.res"))
    opts = RunOptions(device="cpu", quiet=True, out=str(tmp_path / "run"), data="synthetic", iters=2)
    _, failure = run_with_errors(train, lambda shape, k: rd.build_model(net, num_classes=k),
                                 dict(net.recipe, lr=1e300), opts)
    assert failure[1] == 1 and "the largest float32" in failure[0] and not (tmp_path / "run").exists(), failure


def test_ctrl_c_stops_a_callers_loop_of_runs_that_skips_failed_ones(tmp_path):
    """Ctrl-C in a run checkpoints and raises Interrupted, a KeyboardInterrupt: a sweep written `except Exception:
    continue` stops (it went on to the next run), and a notebook's `except KeyboardInterrupt` catches it."""
    import os
    import signal

    import resdsl as rd
    from conftest import ROOT
    from resdsl.train.loop import RunOptions, train
    from resdsl.train.session import Interrupted

    net = rd.compile_spec(str(ROOT / "tests" / "specs" / "tiny.res"))
    calls = []

    def ctrl_c_at_the_third_pass(module, inputs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    def model_fn(shape, k):
        model = rd.build_model(net, num_classes=k)
        model.register_forward_pre_hook(ctrl_c_at_the_third_pass)
        return model

    started = []
    with pytest.raises(KeyboardInterrupt) as stop:
        for lr in (0.1, 0.05):
            try:
                started.append(lr)
                train(model_fn, net.recipe, RunOptions(device="cpu", quiet=True, out=str(tmp_path / str(lr)),
                                                       data="synthetic", train_subset=64, test_subset=32,
                                                       batch_size=16, iters=20, eval_every=10, lr=lr))
            except Exception:  # noqa: BLE001 - the sweep a researcher writes
                continue
    assert started == [0.1] and isinstance(stop.value, Interrupted) and stop.value.status == 130
    assert "SIGINT received: stopped after iteration" in str(stop.value)
    assert (tmp_path / "0.1" / "checkpoint.pt").is_file()
    assert "stopped: SIGINT received: stopped after iteration" in (tmp_path / "0.1" / "train.log").read_text()


class _TakesThreeNumbers(torch.nn.Module):
    """A model of the user's own that cannot take the data's images: it fails at the first step."""

    def __init__(self, classes):
        super().__init__()
        self.fc = torch.nn.Linear(3, classes)

    def forward(self, x):
        return self.fc(x)


def test_a_run_that_fails_at_its_first_step_can_be_started_again_as_it_was(tmp_path):
    """The notebook's loop: the model fails at the first step, is fixed, and the cell runs again with the same
    folder. The folder of the failed run (config.json, nothing trained) refused that run, telling it to --resume a
    run that had no checkpoint to resume."""
    import resdsl as rd
    from conftest import ROOT
    from resdsl.train.loop import RunOptions, train
    from resdsl.train.rundir import RunDirError, start

    net = rd.compile_spec(str(ROOT / "tests" / "specs" / "tiny.res"))

    def opts():
        return RunOptions(device="cpu", quiet=True, out=str(tmp_path / "run"), data="synthetic", train_subset=32,
                          test_subset=16, batch_size=16, iters=2)

    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        train(lambda shape, k: _TakesThreeNumbers(k), net.recipe, opts())
    assert not (tmp_path / "run").exists()
    result = train(lambda shape, k: rd.build_model(net, num_classes=k), net.recipe, opts())
    assert result["iterations"] == 2 and (tmp_path / "run" / "checkpoint.pt").is_file()

    for name in ("config.json", "checkpoint.pt"):  # a run stopped before its first checkpoint; one that lost its
        (tmp_path / name).mkdir()                    # record: neither can be resumed
        (tmp_path / name / name).write_text("{}")
        with pytest.raises(RunDirError) as refused:
            start(str(tmp_path / name)).release()
        assert "--resume" not in str(refused.value) and "pass --overwrite" in str(refused.value)


def test_a_spec_trains_resumes_and_evaluates_from_python(tmp_path):
    """resdsl.train_spec and resdsl.evaluate: what `resdsl train` and `resdsl eval` do, from Python, with the
    values Python hands over (pathlib.Path, torch.device); the run records its spec as the command line's does,
    so `resdsl eval RUN` rebuilds it; the result says how the model takes its input, which reproduces the run's
    own test error outside the trainer."""
    import json
    import pathlib

    import resdsl as rd
    from conftest import ROOT
    from resdsl.train.data import load_dataset
    from test_train import resdsl

    spec, run = ROOT / "tests" / "specs" / "tiny.res", pathlib.Path(tmp_path / "run")
    settings = {"data": "synthetic", "train_subset": 64, "test_subset": 32, "batch_size": 16, "quiet": True,
                "device": torch.device("cpu")}
    result = rd.train_spec(spec, out=run, iters=3, settings=(s for s in ["momentum=0.95"]), **settings)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["spec"] == str(spec) and cfg["spec_hash"] == rd.compile_spec(spec).spec_hash()
    assert cfg["set"] == ["momentum=0.95"] and cfg["recipe"]["momentum"] == 0.95 and result["iterations"] == 3

    tested = rd.evaluate(run)
    assert tested["error"] == result["last"]["test_error"] and tested["network"] == "tiny"
    r = resdsl("eval", str(run))
    assert r.returncode == 0 and f"top-1 error {tested['error']:.2f}%" in r.stdout, r.stderr

    data = load_dataset("synthetic", test_subset=32)  # the model outside the trainer, its input as it says
    norm, model = result["normalization"], result["model"].eval()
    with torch.no_grad():
        guesses = model((data.test_x.float() / 255 - norm["mean"]) / (norm["std"] if norm["std"] is not None else 1))
    assert (guesses.argmax(1) != data.test_y).float().mean().item() * 100 == pytest.approx(tested["error"])

    with pytest.warns(RuntimeWarning, match="describes another network or recipe"):
        with pytest.raises(rd.train.CheckpointError, match="holds the weights of another network"):
            rd.evaluate("resnet20", checkpoint=run, data="synthetic")
    with pytest.raises(rd.train.TrainingError, match="already finished all 3 iterations"):  # its recorded spec
        rd.train_spec(resume=run, quiet=True)
    with pytest.raises(TypeError, match="a spec to train, or resume=RUN_DIR"):
        rd.train_spec(iters=3)


@pytest.mark.parametrize("change,words", [
    ({"mometum": 0.5}, "the recipe has no field 'mometum' (its fields: optimizer, momentum,"),  # trained at 0.9
    ({"momentum": "0.9"}, "recipe.momentum is '0.9', not a number"),  # failed inside torch's SGD
    ({"schedule": {"kind": "step", "milestones": [2.5], "gamma": 0.1}}, "recipe.schedule.milestones is [2.5], not"),
])
def test_a_recipe_edited_in_python_is_checked_before_a_folder(tmp_path, change, words):
    """A recipe changed as a dict (in Python, or in an emitted trainer's recipe.json) went unchecked: a misspelt
    field was recorded and ignored, a value of the wrong kind failed inside torch."""
    import resdsl as rd
    from conftest import ROOT
    from resdsl.train.loop import RunOptions, TrainingError, train

    net = rd.compile_spec(str(ROOT / "tests" / "specs" / "tiny.res"))
    with pytest.raises(TrainingError) as refused:
        train(lambda shape, k: rd.build_model(net, num_classes=k), dict(net.recipe, **change),
              RunOptions(device="cpu", quiet=True, out=str(tmp_path / "run"), data="synthetic", iters=2))
    assert str(refused.value).startswith(words) and not (tmp_path / "run").exists()


def test_evaluate_takes_a_devices_name():
    """resdsl.train.evaluate(model, batches, "cpu"), as torch's own functions take a device (it needed a
    torch.device)."""
    from resdsl.train import evaluate

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    wrong = (model(x).argmax(1) != y).sum().item()
    assert evaluate(model, [(x, y)], "cpu")["error"] == 25.0 * wrong


def test_run_options_take_what_python_hands_over(tmp_path, monkeypatch):
    """A pathlib.Path; a torch.device, cuda:N included (refused where that GPU is not there); a relative folder of
    pictures recorded from the root, as `resdsl train --data` records it (a run made in Python was not evaluated or
    resumed from another folder)."""
    import pathlib

    from resdsl.train.loop import RunOptions, TrainingError, train

    (tmp_path / "pictures").mkdir()
    monkeypatch.chdir(tmp_path)
    opts = RunOptions(data="pictures", data_dir=pathlib.Path("cache"), out=pathlib.Path("run"),
                      device=torch.device("cpu"))
    assert (opts.data, opts.data_dir, opts.out, opts.device) == (str(tmp_path / "pictures"), str(tmp_path / "cache"),
                                                                 "run", "cpu")
    assert RunOptions(data="fashion-mnist").data == "fashion-mnist"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(TrainingError, match=f"--device cuda:{count}: PyTorch sees {count} CUDA GPU"):
        train(lambda shape, k: torch.nn.Linear(1, k), {}, RunOptions(device=torch.device("cuda", count), out="r"))
    assert not (tmp_path / "r").exists()


def test_train_spec_refuses_settings_it_would_ignore(tmp_path):
    """Settings for a resumed run (it keeps its recipe), scale_set without settings and a length: the command line
    refuses them; train_spec trained on as if they were not given."""
    import resdsl as rd

    with pytest.raises(ValueError, match="a resumed run keeps its own"):
        rd.train_spec(resume=str(tmp_path), settings=["momentum=0.5"])
    with pytest.raises(ValueError, match="scale_set .* goes with settings and iters or epochs"):
        rd.train_spec("resnet20", scale_set=True, iters=10)



def test_a_run_and_an_evaluation_work_under_a_callers_torch_settings(tmp_path):
    """Inside torch.no_grad() or torch.inference_mode() a run failed at its first backward; with float64 as the default dtype, the model
    met float32 images; an evaluation reseeded torch's generator (it builds the model); train() changed the
    caller's RunOptions (amp, seed, threads)."""
    import resdsl as rd
    from conftest import ROOT
    from resdsl.train.loop import RunOptions, train

    spec, before = ROOT / "tests" / "specs" / "tiny.res", torch.get_default_dtype()
    net = rd.compile_spec(spec)
    opts = RunOptions(data="synthetic", train_subset=32, test_subset=16, batch_size=16, iters=2, device="cpu",
                      quiet=True, out=str(tmp_path / "run"))
    given = dict(vars(opts))
    torch.set_default_dtype(torch.float64)
    try:
        with torch.inference_mode():
            result = train(lambda shape, k: rd.build_model(net, num_classes=k), net.recipe, opts)
        torch.manual_seed(5)
        drawn = torch.rand(3)
        torch.manual_seed(5)
        with torch.no_grad():
            tested = rd.evaluate(spec, checkpoint=tmp_path / "run", data="synthetic", test_subset=16, device="cpu")
        assert torch.equal(torch.rand(3), drawn) and torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(before)
    assert tested["error"] == result["last"]["test_error"] and vars(opts) == given


def test_a_run_that_fails_in_an_empty_folder_leaves_it_empty(tmp_path):
    """A run given an empty folder that failed before it kept anything left train.log (and its lock) there, and
    the same call was then refused: 'already holds a run (train.log)'."""
    import resdsl as rd
    from conftest import ROOT
    from resdsl.train.data import DataError

    spec, folder = ROOT / "tests" / "specs" / "tiny.res", tmp_path / "mine"
    folder.mkdir()
    settings = {"out": folder, "train_subset": 32, "test_subset": 16, "batch_size": 16, "iters": 2, "quiet": True}
    with pytest.raises(DataError):
        rd.train_spec(spec, data="no-such-data", **settings)
    assert folder.is_dir() and not list(folder.iterdir())
    assert rd.train_spec(spec, data="synthetic", device="cpu", **settings)["iterations"] == 2


@pytest.mark.parametrize("call,words", [
    (dict(settings="momentum=0.95"), "settings is a list of 'FIELD=VALUE' texts"),
    (dict(settings=[1]), "settings is a list of 'FIELD=VALUE' texts"),
    (dict(out=""), "--out needs a name, not an empty one"),  # trained into runs/ instead
    (dict(quiet="no"), "--quiet 'no': give True or False"),  # ran quietly
    (dict(threads=-2), "threads -2: a whole number of 1 or more"),  # torch's own error
])
def test_train_spec_refuses_values_of_the_wrong_kind(tmp_path, call, words):
    import resdsl as rd
    from resdsl.train import TrainingError

    with pytest.raises((TypeError, TrainingError), match=words.replace("(", r"\(").replace("[", r"\[")):
        rd.train_spec("resnet20", data="synthetic", iters=2, **call)


@pytest.mark.parametrize("call,words", [
    (dict(device="CPU"), "--device 'CPU': choose from"),  # torch's own error
    (dict(batch_size=0), "--batch-size 0: must be at least 1"),  # evaluated at 1
    (dict(test_subset=0), "--test-subset 0: must be at least 1"),  # evaluated the run's own subset
    (dict(test=5), "test is a view's name or words"),  # AttributeError in the recipe reader
    (dict(device=torch.device("cpu")), "none.pt"),  # a torch.device passes (it was refused), to the checkpoint
])
def test_evaluate_refuses_values_of_the_wrong_kind(tmp_path, call, words):
    import resdsl as rd
    from resdsl.train import CheckpointError, TrainingError

    with pytest.raises((TypeError, TrainingError, CheckpointError), match=words):
        rd.evaluate("resnet20", checkpoint=tmp_path / "none.pt", data="synthetic", **call)
