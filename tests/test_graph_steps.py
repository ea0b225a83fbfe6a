"""The fast path's iteration (stepping.GraphSteps): the batches, the schedule and the running figures of the eager
loop, its weights to rounding (SGD's fused kernel), and an exact resume. On the CPU it runs eagerly; where CUDA is
present the same tests run it as a captured CUDA graph (--deterministic, so that resume is bitwise)."""
from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")

import resdsl as rd  # noqa: E402
from conftest import ROOT  # noqa: E402
from resdsl.train import evaluation, loop, rundir, stepping  # noqa: E402
from resdsl.train.session import RunOptions  # noqa: E402
from resdsl.train.steps import InMemoryBatches  # noqa: E402

NET = rd.compile_spec(str(ROOT / "tests/specs/tiny.res"))
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOL = {"cpu": dict(rtol=1e-4, atol=1e-5), "cuda": dict(rtol=1e-3, atol=1e-4)}


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def _train(tmp_path, name, device, **kw):
    opts = RunOptions(data="synthetic", train_subset=96, test_subset=32, batch_size=16, iters=24, eval_every=8,
                      checkpoint_every=4, quiet=True, device=device, deterministic=device == "cuda",
                      out=str(tmp_path / name), **kw)
    if kw.get("resume"):
        opts.out = None
    loop.train(lambda shape, k: rd.build_model(NET, num_classes=k), NET.recipe, opts)
    run = tmp_path / name if not kw.get("resume") else kw["resume"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return torch.load(run / "checkpoint.pt", weights_only=True), [{k: v for k, v in r.items() if k != "seconds"}
                                                                  for r in rows]


@pytest.fixture
def graph_steps(monkeypatch):
    """Every run of this test takes the fast path's iteration (eagerly: there is no CUDA here)."""
    made = []
    real = stepping.GraphSteps

    def spy(*a, **k):
        made.append(real(*a, **k))
        return made[-1]

    monkeypatch.setattr(stepping, "why_eager", lambda s: None)
    monkeypatch.setattr(stepping, "GraphSteps", spy)
    return made


def test_plan_gives_the_eager_loops_batches(tmp_path, graph_steps, device):
    _train(tmp_path, "fast", device)
    steps = graph_steps[0]
    s = steps.s
    eager = InMemoryBatches(s)
    for it in (0, 5, 6, 11):  # 6 iterations an epoch: the plan of epoch 0 and of epoch 1
        steps._load_plan(it // 6, it % 6, it)
        row = steps.plan[it % 6]
        x, y = s.pipeline.assemble(row[0], row[1:])
        ex, ey = eager.batch(it)
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_graph_steps_follow_the_eager_loop(tmp_path, graph_steps, device):
    fast, fast_rows = _train(tmp_path, "fast", device)
    assert len(graph_steps) == 1 and (graph_steps[0].graph is not None) == (device == "cuda")
    plain, plain_rows = _train(tmp_path, "plain", device, no_graph=True)
    for k in fast["model"]:
        assert torch.allclose(fast["model"][k].float(), plain["model"][k].float(), **TOL[device]), k
    for a, b in zip(fast_rows, plain_rows):
        assert a["iter"] == b["iter"] and a["lr"] == b["lr"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=TOL[device]["rtol"])
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=TOL[device]["rtol"])
    assert [r["lr"] for r in fast_rows] == pytest.approx([0.1, 0.01, 0.001])  # the milestones, scaled to 24 iterations
    # the checkpoint keeps the optimizer as the eager loop does: a number for the rate, its own kernel choice
    assert [g["lr"] for g in fast["optimizer"]["param_groups"]] == [g["lr"] for g in plain["optimizer"]["param_groups"]]
    assert fast["optimizer"]["param_groups"][0]["fused"] == plain["optimizer"]["param_groups"][0]["fused"]
    # and the optimizer leaves the loop as it entered it (the loop closes its stepper, however it ends)
    groups = graph_steps[0].s.optimizer.param_groups
    assert [(type(g["lr"]), g["fused"], g["foreach"]) for g in groups] == [
        (float, f, fe) for f, fe in graph_steps[0].saved_flags]
    assert groups[0]["lr"] == pytest.approx(0.001)


def test_graph_evaluation_gives_the_eager_figures_of_the_current_weights(tmp_path, graph_steps, device, monkeypatch):
    made = []
    real = evaluation.GraphEvaluation
    monkeypatch.setattr(evaluation, "GraphEvaluation", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    _train(tmp_path, "fast", device)
    graphed = made[0]  # the loop's, after its three evaluations: a graph on CUDA
    assert (graphed.graph is not None) == (device == "cuda")
    s = graphed.s
    for _ in range(2):  # the weights change between evaluations: each one sees them as they are
        with torch.no_grad():
            for p in s.model.parameters():
                p.mul_(0.9)
        want = evaluation.evaluate(s.model, s.pipeline.test_batches(evaluation.eval_batch(s)), s.device,
                                   s.amp_dtype, s.opts.channels_last)
        got = graphed()
        assert got["error"] == want["error"] and got["top5_error"] == want["top5_error"]
        assert got["loss"] == (want["loss"] if device == "cpu" else pytest.approx(want["loss"], rel=1e-6))
    assert s.model.training  # the evaluation leaves the model in training mode


def test_stopped_graph_run_resumes_exactly(tmp_path, graph_steps, device, monkeypatch):
    one, one_rows = _train(tmp_path, "full", device)
    real_save = loop.save_checkpoint

    def save_and_copy(s, state, path, optimizer_state):  # the run as a kill at iteration 12 leaves it
        real_save(s, state, path, optimizer_state)
        if state["iter"] == 12:
            for copy in ("stopped", "stopped-too"):
                shutil.copytree(tmp_path / "again", tmp_path / copy, ignore=shutil.ignore_patterns(".lock"))

    monkeypatch.setattr(loop, "save_checkpoint", save_and_copy)
    _train(tmp_path, "again", device)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed, rows = _train(tmp_path, "x", device, resume=tmp_path / "stopped")
    assert all(torch.equal(one["model"][k], resumed["model"][k]) for k in one["model"])
    assert rows == one_rows
    eager, _ = _train(tmp_path, "y", device, resume=tmp_path / "stopped-too", no_graph=True)  # either loop resumes it
    assert all(torch.allclose(one["model"][k].float(), eager["model"][k].float(), **TOL[device])
               for k in one["model"])


@pytest.mark.parametrize("amp,cl,device_type,want", [
    ("auto", False, "cuda", ("bf16", True)), ("auto", False, "cpu", ("none", False)),
    ("none", False, "cuda", ("none", False)), ("bf16", False, "cuda", ("bf16", False)),
    (None, False, "cuda", (None, False)),  # a config.json from before --amp auto: fp32, as it was trained
])
def test_amp_auto_is_bf16_and_channels_last_on_cuda_only(amp, cl, device_type, want):
    from resdsl.train.session import resolve_precision

    opts = RunOptions(amp=amp, channels_last=cl)
    dtype = resolve_precision(opts, device_type)
    assert (opts.amp, opts.channels_last) == want
    assert dtype == (torch.bfloat16 if want[0] == "bf16" else None)


def test_a_warm_up_pass_waits_while_another_thread_captures():
    """--seed-runs threads: an eager pass before a capture (cuDNN may time algorithms, synchronising the device)
    does not run while another run's capture holds the lock."""
    import threading

    from resdsl.train import stepping

    done = []
    with stepping._CAPTURING:
        worker = threading.Thread(target=lambda: done.append(stepping.warming(None, lambda: 1)))
        worker.start()
        worker.join(0.3)
        assert not done
    worker.join(10)
    assert done == [1]


@pytest.mark.parametrize("writable", [True, False])
def test_a_failed_capture_is_recorded_in_config_json(tmp_path, monkeypatch, capsys, writable):
    """A capture that fails turns the run to eager steps; config.json (read by the benchmarks) then says so, not
    the "one CUDA graph per iteration" written when the run started. A record that cannot be updated (a full
    disk) is a note: the run goes on."""
    real = stepping.GraphSteps

    def failing(*a, **k):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(stepping, "why_eager", lambda s: None)
    monkeypatch.setattr(stepping, "step_words", lambda s: "one CUDA graph per iteration")
    monkeypatch.setattr(loop, "step_words", stepping.step_words)
    monkeypatch.setattr(stepping, "GraphSteps", lambda *a, **k: real(*a, **dict(k, capture=True)))
    monkeypatch.setattr(stepping, "captured", failing)
    monkeypatch.setattr(stepping, "WARMUP", 3)
    if not writable:
        def full(*a, **k):
            raise rundir.RunDirError("No space left on device")

        monkeypatch.setattr(rundir, "update_config", full)
    _, rows = _train(tmp_path, "fell", "cpu")
    cfg = json.loads((tmp_path / "fell" / "config.json").read_text())
    said = capsys.readouterr().err
    assert "the CUDA graph capture failed (operation not permitted" in said
    if writable:
        assert cfg["stepping"] == "eager steps (the CUDA graph capture failed at iteration 4)"
    else:
        assert "note: config.json could not say so (No space left on device)" in said
    assert rows[-1]["iter"] == 24
