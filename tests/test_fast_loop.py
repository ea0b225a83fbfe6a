"""The loop that does not wait for the device each step gives the plain loop's results bit for bit, and still
never lets a non-finite loss reach a checkpoint."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT  # noqa: E402
from test_train import QUICK, resdsl  # noqa: E402

TINY = "tests/specs/tiny.res"


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    r = resdsl("train", TINY, *QUICK, "--iters", "24", "--eval-every", "8", "--checkpoint-every", "4",
               "--out", str(out), *extra)
    assert r.returncode == 0, r.stderr
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    rows = [{k: v for k, v in json.loads(x).items() if k != "seconds"}
            for x in (out / "metrics.jsonl").read_text().splitlines()]
    return ck, rows


@pytest.mark.parametrize("recipe", [[], ["--set", "warmup=6 iterations lr 0.01 until-error 95%"]])
def test_sync_free_loop_equals_the_plain_loop(tmp_path, recipe):
    fast, fast_rows = _run(tmp_path, "fast", *recipe)
    plain, plain_rows = _run(tmp_path, "plain", "--sync-every-step", *recipe)
    assert fast["model"].keys() == plain["model"].keys()
    assert all(torch.equal(fast["model"][k], plain["model"][k]) for k in fast["model"])
    assert fast_rows == plain_rows and len(fast_rows) == 3
    drop = lambda state: {k: v for k, v in state.items() if k != "elapsed"}  # noqa: E731 - wall time differs
    assert drop(fast["state"]) == drop(plain["state"]) and fast["schedule"] == plain["schedule"]


@pytest.mark.parametrize("mode", [[], ["--sync-every-step"]])
def test_non_finite_loss_never_reaches_a_checkpoint(tmp_path, mode):
    out = tmp_path / "run"
    r = resdsl("train", TINY, *QUICK, "--iters", "40", "--lr", "1e12", "--checkpoint-every", "1", "--out", str(out),
               *mode)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "the loss became" in r.stderr or "the weights diverged" in r.stderr
    if (out / "checkpoint.pt").exists():
        ck = torch.load(out / "checkpoint.pt", weights_only=True)
        assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def _folder_run(tmp_path, name, imgs, workers, **kw):
    import resdsl as rd
    from resdsl.train.loop import RunOptions, train

    net = rd.compile_spec(str(ROOT / "tests/specs/tiny_folder.res"))
    opts = RunOptions(data=str(imgs), workers=workers, device="cpu", quiet=True, iters=8, eval_every=4,
                      checkpoint_every=2, out=str(tmp_path / name), **kw)
    train(lambda shape, k: rd.build_model(net, num_classes=k, input_size=tuple(shape[1:])), net.recipe, opts)
    return torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["model"]


def test_image_folder_runs_do_not_depend_on_workers_or_resume(tmp_path, monkeypatch):
    """Each image's augmentation is seeded by (seed, epoch, position): 0 or 2 workers, and a run stopped at
    iteration 4 and resumed, all give the same weights."""
    import shutil

    from resdsl.train import loop
    from test_train_data import make_folder

    make_folder(tmp_path / "imgs", per_class=8, size=(48, 40))
    one = _folder_run(tmp_path, "w0", tmp_path / "imgs", 0)
    two = _folder_run(tmp_path, "w2", tmp_path / "imgs", 2)
    assert all(torch.equal(one[k], two[k]) for k in one)

    real_save = loop.save_checkpoint

    def save_and_copy_at_4(s, state, path, optimizer_state):  # keep the run as it was at iteration 4, as a kill would
        real_save(s, state, path, optimizer_state)
        if state["iter"] == 4:
            shutil.copytree(tmp_path / "full", tmp_path / "stopped", ignore=shutil.ignore_patterns(".lock"))

    monkeypatch.setattr(loop, "save_checkpoint", save_and_copy_at_4)
    _folder_run(tmp_path, "full", tmp_path / "imgs", 2)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = _folder_run(tmp_path, "stopped", tmp_path / "imgs", 2, resume=str(tmp_path / "stopped"))
    assert all(torch.equal(one[k], resumed[k]) for k in one)
