"""`resdsl analyze responses` ([R] Fig. 7): "the outputs of each 3x3 layer, after BN and before other nonlinearity
(ReLU/addition)", their std over the test set, drawn in network order and ranked in descending order."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from conftest import ROOT  # noqa: E402

import resdsl  # noqa: E402
from resdsl.analysis import (ResponsesError, draw_responses, layer_responses, measure_run,  # noqa: E402
                             responses_of_run, write_csv)

SPECS = {name: str(ROOT / "tests" / "specs" / f"{name}.res") for name in ("tiny", "tiny_plain")}
QUICK = ["--data", "synthetic", "--train-subset", "256", "--test-subset", "64", "--batch-size", "32", "--iters", "4",
         "--device", "cpu", "--quiet"]
SMALL = """\
network small
input 3x16x16
stem cifar 8
unit basic
order {order}
shortcut A
stages 8x1, 16x1 /2
head avgpool fc 10
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs, a ResNet and its plain counterpart, trained in this process by `resdsl train` itself."""
    from resdsl_cli.train_cmd import train_cmd

    root = tmp_path_factory.mktemp("runs")
    for name, spec in SPECS.items():
        r = CliRunner().invoke(train_cmd, [spec, *QUICK, "--out", str(root / name)])
        assert r.exit_code == 0, r.output
    return {name: str(root / name) for name in SPECS}


def convs_3x3(spec) -> list[str]:
    """From the compiled IR (a spec file or spec text): the 3x3 convs, in execution order."""
    g = resdsl.compile_spec(text=spec) if "\n" in spec else resdsl.compile_spec(spec)
    return [n for n, d in g.graph.nodes(data=True) if d["op"] == "conv" and d["kernel"] == (3, 3)]


def bn_after_3x3(spec) -> list[str]:
    """From the compiled IR: the node each 3x3 conv feeds (its BN in a post-activation net)."""
    g = (resdsl.compile_spec(text=spec) if "\n" in spec else resdsl.compile_spec(spec)).graph
    return [next(iter(g.successors(n))) for n in convs_3x3(spec)]


def direct_stds(model, x, names) -> list[float]:
    """The independent computation: every output of the named modules for all of ``x``, then torch.std."""
    modules, outs = dict(model.named_modules()), {n: [] for n in names}
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: outs[n].append(o.detach().clone()))
             for n in names]  # clone: an in-place ReLU follows the BN
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return [torch.cat(outs[n]).double().std(correction=0).item() for n in names]


def test_tiny_runs_one_std_per_3x3_layer_equal_to_a_direct_computation(runs):
    from resdsl.train.data import BatchPipeline, load_dataset

    for name, run_dir in runs.items():
        res = measure_run(run_dir, device="cpu", batch_size=24)  # 24 + 24 + 16: uneven batches
        bns = bn_after_3x3(SPECS[name])
        assert len(bns) == 7  # tiny: the stem's 3x3 conv and two per unit in three units
        assert [n for n, _ in res.responses] == bns and res.taken_at == "bn" and res.images == 64
        state = torch.load(f"{run_dir}/checkpoint.pt", weights_only=True)
        model = resdsl.build_model(SPECS[name])
        model.load_state_dict(state["model"])
        data = load_dataset("synthetic", test_subset=64)
        pipeline = BatchPipeline(data, state["recipe"]["normalize"], [])
        pipeline.load_stats(state["normalization"])
        x = torch.cat([b for b, _ in pipeline.test_batches(1000)])
        want = direct_stds(model, x, bns)
        assert [s for _, s in res.responses] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("order", ["post", "preact"])
def test_layers_follow_what_runs_and_pre_activation_takes_conv_outputs(order):
    model = resdsl.build_model(SMALL.format(order=order))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(n, 3, 16, 16, generator=g), None) for n in (5, 3)]
    got = layer_responses(model, batches, "cpu")
    assert model.training  # back in the mode it came in
    convs = convs_3x3(SMALL.format(order=order))
    # preact: each unit's conv2 feeds the addition with no BN of its own, so every layer's conv output is taken
    names = bn_after_3x3(SMALL.format(order=order)) if order == "post" else convs
    assert [n for n, _ in got] == names and len(names) == 5
    want = direct_stds(model, torch.cat([x for x, _ in batches]), names)
    assert [s for _, s in got] == pytest.approx(want, rel=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    if order == "preact":
        with pytest.raises(ResponsesError, match="layer1.0.conv2 has no BN of its own"):
            layer_responses(model, batches, "cpu", at="bn")
    else:
        assert [n for n, _ in layer_responses(model, batches, "cpu", at="conv")] == convs


def test_png_and_csv(runs, tmp_path):
    results = {name: responses_of_run(d, device="cpu") for name, d in runs.items()}
    draw_responses(results, str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    write_csv(results, str(tmp_path / "r.csv"))
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert list(rows[0]) == ["run", "layer", "module", "std", "rank"] and len(rows) == 14
    for name, responses in results.items():
        mine = [r for r in rows if r["run"] == name]
        assert [(r["module"], float(r["std"])) for r in mine] == responses
        ranked = sorted(mine, key=lambda r: int(r["rank"]))
        assert [int(r["rank"]) for r in ranked] == list(range(1, 8))
        assert [float(r["std"]) for r in ranked] == sorted((s for _, s in responses), reverse=True)


def test_cli_writes_figure_and_table(runs, tmp_path):
    from resdsl_cli.analyze_cmd import analyze

    out = tmp_path / "fig7"
    r = CliRunner().invoke(analyze, ["responses", runs["tiny"], runs["tiny_plain"], "--out", str(out), "--device",
                                     "cpu", "--test-subset", "32", "--batch-size", "16"])
    assert r.exit_code == 0, r.output
    assert "tiny (" in r.output and "tiny_plain (" in r.output and "7 3x3 layers, responses after BN, 32 test" \
        in r.output
    assert "warning" not in r.output  # each run was trained from the spec it names
    edited = tmp_path / "edited"  # a run whose spec has changed since: the weights are measured, with a word
    shutil.copytree(runs["tiny"], edited)
    cfg = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps(dict(cfg, spec_hash="0" * 64)))
    r = CliRunner().invoke(analyze, ["responses", str(edited), "--out", str(tmp_path / "again"), "--device", "cpu",
                                     "--test-subset", "32", "--batch-size", "16"])
    assert r.exit_code == 0 and "has changed since the run was trained" in r.output, r.output
    assert (out / "responses.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "responses.csv").read_text().splitlines()) == 15


def test_cli_through_resdsl_main(runs, tmp_path):
    from resdsl_cli.main import main

    if "analyze" not in main.commands:
        pytest.skip("cli/main.py does not register `resdsl analyze` yet")
    r = CliRunner().invoke(main, ["analyze", "responses", runs["tiny"], "--out", str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "responses.csv").exists()


def _fails(args, *words):
    from resdsl_cli.analyze_cmd import analyze

    r = CliRunner().invoke(analyze, ["responses", *args])
    assert r.exit_code not in (0, 70) and "Traceback" not in r.output, r.output  # 70: the guard's internal error
    for word in words:
        assert word in r.output
    return r


def test_clear_errors(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    _fails([str(tmp_path / "empty"), "--out", str(tmp_path)], "not a run directory", "config.json")
    _fails([str(tmp_path / "nowhere"), "--out", str(tmp_path)], "not a run directory")
    stopped = tmp_path / "stopped"
    shutil.copytree(runs["tiny"], stopped)
    (stopped / "checkpoint.pt").unlink()
    _fails([str(stopped), "--out", str(tmp_path)], "no checkpoint.pt")
    moved = tmp_path / "moved"  # a run whose data is not here, and may not be downloaded
    shutil.copytree(runs["tiny"], moved)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["options"]["data"] = str(tmp_path / "no-such-imagenet")
    (moved / "config.json").write_text(json.dumps(cfg))
    _fails([str(moved), "--out", str(tmp_path), "--device", "cpu", "--no-download"], "resdsl: error:",
           "no-such-imagenet")
    if not torch.cuda.is_available():
        _fails([runs["tiny"], "--out", str(tmp_path), "--device", "cuda"], "no CUDA GPU")
    assert not (tmp_path / "responses.png").exists()
    _fails([runs["tiny"], "--out", runs["tiny"]], "is in the run directory")  # its --overwrite would remove them
    assert not (Path(runs["tiny"]) / "responses.png").exists()


def test_import_stays_light():
    code = "import sys, resdsl_cli.analyze_cmd, resdsl.analysis; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_legend_marks_conv_outputs_and_tells_runs_of_one_network_apart():
    """Responses taken at the convs are never drawn as if after BN: '(conv outputs)' joins their label, whether
    the label is the network's (`resdsl analyze`) or an experiment row's (`resdsl reproduce`)."""
    from resdsl.analysis import RunResponses, labelled

    measured = [RunResponses("runs/a", "resnet20", "bn", 10, [("layer1.0.bn1", 0.5)]),
                RunResponses("runs/b", "resnet20", "bn", 10, [("layer1.0.bn1", 0.6)]),
                RunResponses("runs/c", "resnet20_preact", "conv", 10, [("layer1.0.conv1", 0.1)])]
    assert list(labelled(measured)) == ["resnet20 (a)", "resnet20 (b)", "resnet20_preact (conv outputs)"]
    rows = labelled(measured, ["ResNet-20", "ResNet-20 B", "pre-act"])
    assert list(rows) == ["ResNet-20", "ResNet-20 B", "pre-act (conv outputs)"] and rows["pre-act (conv outputs)"] == [
        ("layer1.0.conv1", 0.1)]


def test_the_summary_counts_a_stem_whose_response_is_taken_in_the_first_unit_as_the_stem():
    """A pre-activation net's 3x3 stem feeds the first unit's BN (layer1.0.bn1): its response is that BN's output,
    but it is the stem's line of the summary, not layer1's."""
    from resdsl.analysis import RunResponses
    from resdsl_cli.analyze_cmd import _table

    m = RunResponses("runs/p", "preact", "bn", 10, [("layer1.0.bn1", 1.0), ("layer1.0.bn3", 2.0)],
                     ["conv1", "layer1.0.conv2"])
    lines = _table(m).splitlines()
    assert lines[2].split() == ["stem", "1", "1.0000", "1.0000"] and lines[3].split() == ["layer1", "1", "2.0000",
                                                                                          "2.0000"]


def test_a_damaged_or_odd_record_is_said_as_elsewhere(runs, tmp_path):
    """config.json is read as `resdsl eval` reads it: a field of the wrong kind ("network": ["x"] was an internal
    TypeError), a named pipe in its place (the read blocked for good) and a recipe that is no table are clear
    errors; a network name with a control character is echoed escaped."""
    import os

    from conftest import within

    def tampered(name: str, **fields) -> Path:
        run = tmp_path / name
        shutil.copytree(runs["tiny"], run)
        (run / "config.json").write_text(json.dumps(dict(json.loads((run / "config.json").read_text()), **fields)))
        return run

    out = str(tmp_path / "out")
    _fails([str(tampered("listed", network=["x"])), "--out", out, "--device", "cpu"], "config.json is damaged",
           "network is ['x'], not a text")
    _fails([str(tampered("recipe", recipe="x")), "--out", out, "--device", "cpu"], "config.json is damaged")
    if hasattr(os, "mkfifo"):
        pipe = tmp_path / "pipe"
        shutil.copytree(runs["tiny"], pipe)
        (pipe / "config.json").unlink()
        os.mkfifo(pipe / "config.json")
        with within(30):
            _fails([str(pipe), "--out", out, "--device", "cpu"], "config.json", "named pipe")
    from resdsl_cli.analyze_cmd import analyze

    r = CliRunner().invoke(analyze, ["responses", str(tampered("escape", network="tiny\x1bc")), "--out", out,
                                     "--device", "cpu", "--test-subset", "16"])
    assert r.exit_code == 0 and "\x1b" not in r.output and "tiny\\x1bc (" in r.output, r.output


def test_run_folders_named_with_dollars_are_drawn_as_written(runs, tmp_path, monkeypatch):
    """Two runs of one network are told apart by their folders' names, which the legend shows: 'a$\\foo$' stopped
    matplotlib (its mathtext: Unknown symbol), an internal error; it is drawn, and written, as it is named."""
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from resdsl_cli.analyze_cmd import analyze

    legends, save = [], Figure.savefig

    def spy(fig, *args, **kwargs):
        legends.extend((t.get_text(), t.get_parse_math()) for t in fig.findobj(Text) if "$" in t.get_text())
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    folders = [tmp_path / "a$\\foo$", tmp_path / "=b$5 vs $6"]
    for folder in folders:
        shutil.copytree(runs["tiny"], folder)
    out = tmp_path / "out"
    r = CliRunner().invoke(analyze, ["responses", *map(str, folders), "--out", str(out), "--device", "cpu",
                                     "--test-subset", "16"])
    assert r.exit_code == 0, r.output
    labels = ["tiny (a$\\foo$)", "tiny (=b$5 vs $6)"]
    assert {text for text, _ in legends} == set(labels) and not any(parsed for _, parsed in legends)
    with open(out / "responses.csv", newline="") as fh:
        assert sorted({row["run"] for row in csv.DictReader(fh)}) == sorted(labels)


def test_runs_of_one_network_in_folders_of_one_name_keep_their_own_curves(runs, tmp_path):
    """reproduce's layout (ROW/seed-0): both runs are drawn, and labelled by as much of their path as tells them
    apart (the second replaced the first in the CSV and the figure)."""
    for row in ("a", "b"):
        shutil.copytree(runs["tiny"], tmp_path / row / "seed-0")
    r = CliRunner().invoke(resdsl_main(), ["analyze", "responses", str(tmp_path / "a" / "seed-0"),
                                           str(tmp_path / "b" / "seed-0"), "--device", "cpu", "--out",
                                           str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "responses.csv")))
    assert {row["run"] for row in rows} == {"tiny (a/seed-0)", "tiny (b/seed-0)"}
    from resdsl.analysis import RunResponses, labelled

    twice = [RunResponses("x", "n", "bn", 1, [("m", 1.0)])] * 2  # one run given twice: numbered, not dropped
    assert list(labelled(twice)) == ["n (x) #1", "n (x) #2"]


def test_out_is_checked_before_measuring_and_its_files_are_resdsls_own(runs, tmp_path):
    """--out names a folder: a file there, a folder in place of responses.csv and a folder inside a run are refused
    before any run is measured; a link in place of responses.csv is replaced, not written through (it wrote the
    CSV into the spec it pointed at)."""
    spec = tmp_path / "spec.res"
    spec.write_text("network x\n")
    os.mkfifo(tmp_path / "fifo")  # (a regular file click's own check refuses)
    _fails([runs["tiny"], "--out", str(tmp_path / "fifo")], "is not a folder")
    (tmp_path / "f" / "responses.csv").mkdir(parents=True)
    _fails([runs["tiny"], "--out", str(tmp_path / "f")], "responses.csv is a folder")
    _fails([runs["tiny"], "--out", str(Path(runs["tiny"]) / "figures")], "is in the run directory")
    assert not (Path(runs["tiny"]) / "figures").exists()
    (tmp_path / "l").mkdir()
    (tmp_path / "l" / "responses.csv").symlink_to(spec)
    r = CliRunner().invoke(resdsl_main(), ["analyze", "responses", runs["tiny"], "--device", "cpu", "--out",
                                           str(tmp_path / "l")])
    assert r.exit_code == 0 and spec.read_text() == "network x\n", r.output
    assert not (tmp_path / "l" / "responses.csv").is_symlink()


def test_a_stopped_run_is_said_and_other_data_is_refused(runs, tmp_path):
    """Weights from along the way are measured with a warning; data of another shape than config.json records is
    refused in words (it was an internal error where a per-pixel mean met other images)."""
    stopped = tmp_path / "stopped"
    shutil.copytree(runs["tiny"], stopped)
    cfg = json.loads((stopped / "config.json").read_text())
    (stopped / "config.json").write_text(json.dumps(dict(cfg, iterations=40)))
    r = CliRunner().invoke(resdsl_main(), ["analyze", "responses", str(stopped), "--device", "cpu", "--out",
                                           str(tmp_path / "o1")])
    assert r.exit_code == 0 and "the run stopped at iteration 4 of 40" in r.output, r.output
    other = tmp_path / "other"
    shutil.copytree(runs["tiny"], other)
    (other / "config.json").write_text(json.dumps(dict(cfg, dataset=dict(cfg["dataset"], shape=[1, 28, 28]))))
    _fails([str(other), "--device", "cpu", "--out", str(tmp_path / "o2")],
           "the data found now is not the data the run was trained on (shape [1, 28, 28] then, [3, 32, 32] now)")


def test_statistics_of_other_images_are_refused():
    from resdsl.train.batches import BatchPipeline, InMemoryData
    from resdsl.train.dataerror import DataError

    def data(side):
        x = torch.randint(0, 255, (8, 1, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        return InMemoryData("toy", x, torch.zeros(8, dtype=torch.long), x[:4], torch.zeros(4, dtype=torch.long), 10)

    stats = BatchPipeline(data(28), "per-pixel-mean", []).stats()
    with pytest.raises(DataError, match="the run's normalisation .mean. is for 1x28x28 images and toy's are 1x32x32"):
        BatchPipeline(data(32), "per-pixel-mean", []).load_stats(stats)
    BatchPipeline(data(32), "mean-std", []).load_stats(BatchPipeline(data(28), "mean-std", []).stats())  # (C,1,1)


def resdsl_main():
    from resdsl_cli.main import main

    return main


def test_runs_measured_on_other_data_or_images_say_which():
    """Runs measured on different datasets or numbers of test images were drawn on one figure with nothing telling
    which curve saw what (the title listed the counts, unattached): each label says its own; measured alike, the
    title says it once."""
    from resdsl.analysis import RunResponses, images_words, labelled

    a = RunResponses("runs/a", "resnet20", "bn", 500, [("bn1", 0.5)], data="fashion-mnist")
    b = RunResponses("runs/b", "plain20", "bn", 200, [("bn1", 0.6)], data="/data/pictures/")
    assert list(labelled([a, b])) == ["resnet20 [500 test images of fashion-mnist]",
                                      "plain20 [200 test images of pictures]"]
    assert images_words([a, b]) == ""
    b = RunResponses("runs/b", "plain20", "bn", 500, [("bn1", 0.6)], data="fashion-mnist")
    assert list(labelled([a, b])) == ["resnet20", "plain20"] and images_words([a, b]) == (
        "500 test images of fashion-mnist")


def test_a_run_named_twice_is_refused_before_measuring(runs, tmp_path, monkeypatch):
    """The same run under two spellings was measured twice and drawn as two runs."""
    from resdsl_cli.analyze_cmd import analyze

    monkeypatch.chdir(tmp_path)
    same = os.path.join(str(runs["tiny"]), ".")
    r = CliRunner().invoke(analyze, ["responses", str(runs["tiny"]), same, "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "are the same run: name each run once" in r.output
    os.symlink(runs["tiny"], tmp_path / "q")
    r = CliRunner().invoke(analyze, ["responses", "q", "q", "--out", "out"])  # one word, one object in argv
    assert r.exit_code == 2 and "q and q are the same run" in r.output
    assert not (tmp_path / "out").exists()
