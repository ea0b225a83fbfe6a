"""What a new user meets first: the training banner and train.log, config.json recording what ran, --set, one CLI
style with examples, `resdsl eval RUNDIR`, and metrics that are valid JSON."""
from __future__ import annotations

import json

import click
import pytest

torch = pytest.importorskip("torch")

from test_train import QUICK, resdsl  # noqa: E402

TINY = "tests/specs/tiny.res"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("first") / "run"
    r = resdsl("train", TINY, *QUICK, "--iters", "6", "--eval-every", "3", "--out", str(out), "--set",
               "momentum=0.8", "--set", "weight_decay=0")
    assert r.returncode == 0, r.stderr
    return out, r


def test_banner_says_what_trains_where_on_what_and_how(run):
    out, r = run
    lines = r.stdout.splitlines()
    assert lines[0].startswith("network tiny (tests/specs/tiny.res): 19,218 parameters")
    assert lines[1] == "device cpu (1 thread), fp32"
    assert lines[2] == "data synthetic, 3x32x32 images, 10 classes: 256 train / 64 test"
    assert lines[3] == "recipe cifar_resnet: sgd lr 0.1, momentum 0.8, weight decay 0, batch 32, seed 3"
    # the recipe's milestones 32000, 48000 of 64000, scaled to a 6-iteration run
    assert lines[4] == "schedule 6 iterations (0.75 epochs of 8), lr x0.1 at 3, 4"
    assert lines[5] == f"run directory {out}"
    assert lines[-1].startswith("done: 6 iterations, test error")


def test_the_banner_says_when_sync_bn_does_nothing():
    from resdsl.train.report import precision_words
    from resdsl.train.session import RunOptions

    assert precision_words(RunOptions(sync_bn=True)) == "fp32, --sync-bn unused (one process)"
    assert precision_words(RunOptions(sync_bn=True), world=4) == "fp32, SyncBatchNorm over 4 processes"


def test_train_log_holds_everything_printed(run):
    out, r = run
    log = (out / "train.log").read_text().splitlines()
    assert log[:6] == r.stdout.splitlines()[:6] and log[-1] == r.stdout.splitlines()[-1]
    assert [line.split(":")[0] for line in log if line.startswith("iter ")] == ["iter 3", "iter 6"]


def test_config_records_what_actually_ran(run):
    out, _ = run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["recipe"]["schedule"]["milestones"] == [3, 4]
    assert cfg["recipe"]["length"] == {"value": 6, "unit": "iterations"}
    assert cfg["spec_recipe"]["schedule"]["milestones"] == [32000, 48000]
    assert cfg["recipe"]["momentum"] == 0.8 and cfg["recipe"]["weight_decay"] == 0
    assert cfg["set"] == ["momentum=0.8", "weight_decay=0"]
    groups = torch.load(out / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]
    assert all(g["momentum"] == 0.8 and g["weight_decay"] == 0 for g in groups)  # what trained, not only what is said
    assert cfg["device"] == "cpu (1 thread)" and cfg["options"]["device"] == "cpu" and cfg["options"]["threads"] == 1
    assert "train" in cfg["command"] and "--set" in cfg["command"]
    assert cfg["resdsl"] and "git_commit" in cfg and len(cfg["spec_hash"]) == 64


def test_resume_reads_back_the_effective_schedule(tmp_path):
    out = tmp_path / "run"
    resdsl("train", TINY, *QUICK, "--iters", "4", "--eval-every", "2", "--out", str(out), check=True)
    cfg = json.loads((out / "config.json").read_text())
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert cfg["recipe"]["schedule"]["milestones"] == [2, 3]
    # pretend the run was stopped at iteration 2 of 4: resume must follow the same milestones
    ck["state"]["iter"] = 2
    torch.save(ck, out / "checkpoint.pt")
    r = resdsl("train", "--resume", str(out), "--quiet", check=True)
    assert "schedule 4 iterations (0.5 epochs of 8), lr x0.1 at 2, 3" in r.stdout
    assert "resumed at iteration 2" in r.stdout


@pytest.mark.parametrize("setting,where,message", [
    ("momentum=1.5", "--set:1:1: error: momentum must be in [0, 1)", "momentum 1.5"),
    ("bogus=3", "--set:1:1: error: unexpected 'bogus'", "hint: expected one of: augment, batch"),
    ("length=100 weeks", "--set:1:12: error: unexpected 'weeks'", "length 100 weeks"),
    ("lr", "--set:1:1: error: --set 'lr': write one recipe field as FIELD=VALUE", "momentum=0.95"),
    # a network line is the spec's: the hint says how a spec changes it
    (" shortcut = B",
     "--set:1:1: error: 'shortcut' is a line of the network, and a setting changes only the training recipe",
     f"'extends \"{TINY}\"', 'network NAME', 'shortcut B'"),
])
def test_set_is_checked_like_a_recipe_block(setting, where, message, tmp_path):
    r = resdsl("train", TINY, *QUICK, "--iters", "2", "--out", str(tmp_path / "run"), "--set", "lr=0.05",
               "--set", setting)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith(where.replace("--set:1:", "--set:2:")) and message in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_set_on_resume_is_refused(run):
    out, _ = run
    r = resdsl("train", "--resume", str(out), "--set", "lr=0.2")
    assert r.returncode == 2 and "a resumed run keeps its own" in r.stderr


def test_iters_and_epochs_together_are_a_usage_error_as_in_reproduce(tmp_path):
    for command in (["train", TINY], ["reproduce", "r-table6", "--dry-run"]):
        r = resdsl(*command, "--iters", "1", "--epochs", "1", "--out", str(tmp_path / "x"))
        assert r.returncode == 2 and "give --iters or --epochs, not both" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_every_command_and_option_has_help_and_examples():
    from resdsl_cli.main import main

    ctx = click.Context(main)
    for name, cmd in main.commands.items():
        options = [p for p in cmd.params if isinstance(p, click.Option)]
        assert all(p.help for p in options), (name, [p.name for p in options if not p.help])
        assert cmd.help and "Examples:" in (cmd.epilog or ""), name
        assert "Examples:" in cmd.get_help(click.Context(cmd, parent=ctx, info_name=name))


def test_emitted_trainer_help_has_the_same_options_and_examples(tmp_path):
    import subprocess
    import sys

    from resdsl.train.options import OPTIONS

    resdsl("compile", TINY, "--emit-trainer", str(tmp_path / "t"), check=True)
    r = subprocess.run([sys.executable, str(tmp_path / "t" / "train.py"), "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "examples:" in r.stdout
    assert all(opt.flag in r.stdout for opt in OPTIONS)


def test_eval_takes_a_run_directory_alone(run):
    out, _ = run
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    r = resdsl("eval", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("tiny on synthetic (single view)")
    assert f"top-1 error {row['test_error']:.2f}%" in r.stdout
    assert "warning" not in r.stderr
    # tiny_plain's layers have tiny's names and shapes: its weights load, and the other spec is said
    r = resdsl("eval", "tests/specs/tiny_plain.res", "--checkpoint", str(out))
    assert r.returncode == 0 and "was trained from tests/specs/tiny.res" in r.stderr, r.stderr
    assert "warning" not in resdsl("eval", TINY, "--checkpoint", str(out)).stderr


def test_metrics_write_null_for_nan(tmp_path):
    from resdsl.train.metrics import MetricsLog

    log = MetricsLog(str(tmp_path), enabled=True)
    log.tb = None
    log.write({"iter": 1, "epoch": 0.1, "lr": 0.1, "train_loss": float("nan"), "train_error": 50.0,
               "test_loss": float("inf"), "test_error": 40.0, "test_top5_error": 5.0, "seconds": 1.0})
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    row = json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert row["train_loss"] is None and row["test_loss"] is None
    assert (tmp_path / "curves.png").exists()
