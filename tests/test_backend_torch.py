"""Torch backend: torchvision parity, every unit against the hand-written reference, counts against reality."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import resdsl  # noqa: E402
from resdsl.backends.python_source import emit_python  # noqa: E402
from resdsl.backends.torch_module import load_source  # noqa: E402
from regen_golden import spec_paths  # noqa: E402
import reference  # noqa: E402

TV = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
      "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _tv_check(model, name):
    ref = getattr(torchvision.models, name)()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    model.load_state_dict(ref.state_dict(), strict=True)
    model.eval(), ref.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", TV)
def test_torchvision_parity_in_process_and_emitted(name, at_root, tmp_path):
    _tv_check(resdsl.build_model(f"specs/torchvision/{name}.res"), name)
    if name in ("resnet18", "resnet50", "resnext50_32x4d"):  # the emitted file, imported from disk
        path = tmp_path / f"{name}.py"
        path.write_text(emit_python(resdsl.compile_spec(f"specs/torchvision/{name}.res")))
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"emitted_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _tv_check(mod.build(), name)


def test_paper_v1_resnet50_loads_torchvision_weights(at_root):
    model = resdsl.build_model("specs/resnet50.res")
    model.load_state_dict(torchvision.models.resnet50().state_dict(), strict=True)
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)


def test_emitted_source_runs_without_resdsl(at_root, tmp_path):
    path = tmp_path / "resnet1001_preact.py"
    path.write_text(emit_python(resdsl.compile_spec("specs/resnet1001_preact.res")))
    code = ("import sys, runpy\n"
            "sys.modules['resdsl'] = None  # any import of resdsl now fails\n"
            f"ns = runpy.run_path({str(path)!r})\n"
            "m = ns['build']()\n"
            "print(sum(p.numel() for p in m.parameters()), tuple(m.eval()(ns['torch'].zeros(1, 3, 32, 32)).shape))\n")
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split(maxsplit=1) == ["10327706", "(1, 10)\n"]


def test_emitted_source_is_deterministic_and_readable(at_root):
    net = resdsl.compile_spec("specs/resnet1001_preact.res")
    src = emit_python(net)
    assert src == emit_python(resdsl.compile_spec("specs/resnet1001_preact.res"))
    assert src.count("class ") == 3  # two unit classes and the network
    assert "for _ in range(110)" in src and len(src.splitlines()) < 200
    assert "import resdsl" not in src and "10,327,706 parameters" in src
    assert max(map(len, src.splitlines())) <= 120


def test_emitted_source_cites_the_spec_as_a_reader_finds_it(at_root):
    """A packaged spec is named specs/NAME.res, not where this machine installed it; each unit class cites the lines
    that make it (the order of resnet110_preact.res, not only resnet20's stages); a stage comment gives the width
    its units take (ResNeXt's 128 from `stages 64x3`); a unit that activates before splitting says so."""
    import os

    preact = emit_python(resdsl.compile_spec("resnet110_preact"))  # by name: an absolute path in the package
    assert "specs/resnet110_preact.res" in preact and os.fspath(at_root) not in preact
    words = " ".join(preact.split())  # docstrings wrap
    assert "BN-ReLU before splitting into F and the shortcut ([I])" in words
    assert "specs/resnet110_preact.res:4;" in words  # its `order preact` line
    resnext = emit_python(resdsl.compile_spec("torchvision/resnext50_32x4d"))
    assert "# stage 1: 3 x bottleneck units, width 128 (64 in the stages line), stride 1" in resnext


# ---------------------------------------------------------------------------------------------
# every unit kind against the reference

CASES = {
    # name: (spec fragment, reference kwargs for stage-2 unit 0 and unit 1)
    "basic-post-A": ("unit basic\norder post\nshortcut A", dict(kind="basic", order="post", shortcut="zero-pad")),
    "basic-post-B": ("unit basic\norder post\nshortcut B", dict(kind="basic", order="post", shortcut="projection")),
    "basic-post-C": ("unit basic\norder post\nshortcut C", dict(kind="basic", order="post", shortcut="projection")),
    "basic-plain": ("unit basic\norder post\nshortcut none", dict(kind="basic", order="post", shortcut="none")),
    "bottleneck-1x1": ("unit bottleneck stride-at 1x1\nshortcut B",
                       dict(kind="bottleneck", order="post", shortcut="projection", stride_at="1x1")),
    "bottleneck-3x3": ("unit bottleneck stride-at 3x3\nshortcut B",
                       dict(kind="bottleneck", order="post", shortcut="projection", stride_at="3x3")),
    "single": ("unit single\nshortcut A", dict(kind="single", order="post", shortcut="zero-pad")),
    "bn-after-add": ("unit basic\norder bn-after-add\nshortcut A", dict(kind="basic", order="bn-after-add",
                                                                          shortcut="zero-pad")),
    "relu-before-add": ("unit basic\norder relu-before-add\nshortcut A",
                        dict(kind="basic", order="relu-before-add", shortcut="zero-pad")),
    "relu-preact": ("unit basic\norder relu-preact\nshortcut A", dict(kind="basic", order="relu-preact",
                                                                        shortcut="zero-pad")),
    "preact-A": ("unit basic\norder preact\nshortcut A", dict(kind="basic", order="preact", shortcut="zero-pad")),
    "preact-bottleneck-B": ("unit bottleneck\norder preact\nshortcut B",
                            dict(kind="bottleneck", order="preact", shortcut="projection", projection_bn=False)),
    "scale": ("unit basic\nshortcut A scale 0.5 residual 0.5",
              dict(kind="basic", order="post", shortcut="zero-pad", scale=0.5, residual_scale=0.5)),
    "exclusive-gate": ("unit basic\nshortcut A gate exclusive bias -2",
                       dict(kind="basic", order="post", shortcut="zero-pad", gate="exclusive")),
    "shortcut-gate": ("unit basic\nshortcut A gate shortcut-only bias -2",
                      dict(kind="basic", order="post", shortcut="zero-pad", gate="shortcut-only")),
    "dropout-shortcut": ("unit basic\nshortcut A dropout 0.5",
                         dict(kind="basic", order="post", shortcut="zero-pad", dropout=0.5)),
}
TEMPLATE = "network t\ninput 3x16x16\nstem cifar 8\n{frag}\nstages 8x2, 16x2 /2\nhead avgpool fc 5\n"


def _randomise(model):
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name else torch.randn_like(t) * 0.5)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_unit_matches_reference(case, training):
    frag, kw = CASES[case]
    model = resdsl.build_model(TEMPLATE.format(frag=frag))
    _randomise(model)
    model.train(training)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 8 * (4 if kw["kind"] == "bottleneck" else 1), 16, 16)
    width_out = 16 * (4 if kw["kind"] == "bottleneck" else 1)
    u0, u1 = model.layer2[0], model.layer2[1]
    with torch.no_grad():
        torch.manual_seed(0)  # the dropout shortcut's draws: the reference's are taken in the same order
        got0 = u0(x.clone())
        got1 = u1(got0.clone())
    torch.manual_seed(0)
    first_kw = dict(kw)
    if kw["order"] in ("preact", "relu-preact") and kw["shortcut"] == "projection":
        first_kw["preact_shared"] = True
    want0 = reference.unit(x, sd, "layer2.0.", stride=2, out_channels=width_out, training=training, **first_kw)
    later = dict(kw, shortcut="none" if kw["shortcut"] == "none" else (
        "projection" if case == "basic-post-C" else "identity"))
    want1 = reference.unit(want0, sd, "layer2.1.", stride=1, out_channels=width_out, training=training, **later)
    torch.testing.assert_close(got0, want0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got1, want1, rtol=1e-5, atol=1e-5)


def test_preact_network_first_and_last_unit():
    text = TEMPLATE.format(frag="unit basic\norder preact\nshortcut A")
    model = resdsl.build_model(text)
    _randomise(model)
    model.eval()
    sd = model.state_dict()
    x = torch.randn(2, 3, 16, 16)
    h = reference.conv(x, sd, "conv1")
    h = reference.unit(h, sd, "layer1.0.", kind="basic", order="preact", stride=1, shortcut="identity",
                       out_channels=8, training=False, preact_shared=True)
    h = reference.unit(h, sd, "layer1.1.", kind="basic", order="preact", stride=1, shortcut="identity",
                       out_channels=8, training=False)
    h = reference.unit(h, sd, "layer2.0.", kind="basic", order="preact", stride=2, shortcut="zero-pad",
                       out_channels=16, training=False)
    h = reference.unit(h, sd, "layer2.1.", kind="basic", order="preact", stride=1, shortcut="identity",
                       out_channels=16, training=False)
    h = torch.relu(reference.bn(h, sd, "final_bn", False)).mean((2, 3))
    want = h @ sd["fc.weight"].T + sd["fc.bias"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)


def test_dropout_shortcut_has_the_expectation_of_i():
    """[I] 3.1: dropout "statistically imposes a scale of λ with an expectation of 0.5 on the shortcut": in training
    each unit of the shortcut is kept as it is or dropped, at test the whole shortcut is scaled by 1 - p (PyTorch's
    own dropout scales the kept units by 1 / (1 - p) and leaves the test-time shortcut whole: an expectation of 1).
    F is silenced (its last BN's weight and bias 0), so a unit's output is its shortcut's, through the final ReLU."""
    model = resdsl.build_model(TEMPLATE.format(frag="unit basic\nshortcut A dropout 0.25"))
    unit = model.layer1[1]
    torch.nn.init.zeros_(unit.bn2.weight)
    torch.nn.init.zeros_(unit.bn2.bias)
    x = torch.rand(64, 8, 16, 16) + 1
    with torch.no_grad():
        ratio = unit.train()(x.clone()) / x
        assert set(torch.unique(ratio.round(decimals=5)).tolist()) == {0.0, 1.0}  # kept as it is, or dropped
        assert abs(ratio.mean().item() - 0.75) < 0.01
        torch.testing.assert_close(unit.eval()(x.clone()), x * 0.75)
    wrn = resdsl.build_model(TEMPLATE.format(frag="unit basic dropout 0.25\nshortcut A"))
    assert type(wrn.layer1[0].dropout2) is torch.nn.Dropout  # [WRN]'s dropout in F is PyTorch's, unchanged
    wrn.layer1[0].eval()
    assert all(m.p == 0.25 for m in wrn.modules() if isinstance(m, torch.nn.Dropout))


def test_initialisation():
    model = resdsl.build_model(TEMPLATE.format(frag="unit basic\nshortcut A gate exclusive bias -6")
                               .replace("head", "init he fan-out zero-last-bn\nhead"))
    u = model.layer1[0]
    assert torch.all(u.gate.bias == -6) and torch.all(u.bn2.weight == 0) and torch.all(u.bn1.weight == 1)
    big = resdsl.build_model("network b\ninput 3x8x8\nstem cifar 256\nunit basic\nshortcut A\nstages 256x1\n"
                             "head avgpool fc 2\n")
    w = big.layer1[0].conv1.weight
    expected = (2 / (3 * 3 * 256)) ** 0.5  # He normal, fan-out = k*k*out_channels ([R], [13])
    assert abs(w.std().item() / expected - 1) < 0.02 and abs(w.mean().item()) < 1e-3


def test_overrides_rerun_shape_checks(at_root):
    model = resdsl.build_model("specs/resnet20.res", num_classes=3, in_channels=1, input_size=(28, 28))
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    assert resdsl.build_model("specs/resnet20.res", input_size=(30, 30))(torch.zeros(1, 3, 30, 30)).shape == (1, 10)
    patchify = ("network p\ninput 3x64x64\nstem conv 4x4 /4 16\nunit basic\nshortcut A\nstages 16x1\n"
                "head avgpool fc 10\n")
    assert resdsl.build_model(patchify)(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(resdsl.SpecError) as info:  # the override's shapes are checked again, located at the stem
        resdsl.build_model(patchify, input_size=(3, 3))
    assert info.value.span.line == 3 and "shrinks to nothing in the stem" in info.value.message


# ---------------------------------------------------------------------------------------------
# counts against reality, for every spec

@pytest.mark.parametrize("rel", spec_paths())
def test_module_matches_ir_counts(rel, at_root):
    from torch.utils.flop_counter import FlopCounterMode

    net = resdsl.compile_spec(rel)
    model = resdsl.build_model(net).eval()
    assert sum(p.numel() for p in model.parameters()) == net.params
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        y = model(torch.zeros(1, *net.input_shape))
    assert tuple(y.shape[1:]) == net.output_shape
    assert counter.get_total_flops() == 2 * net.macs


# ---------------------------------------------------------------------------------------------
# GPU-readiness features, checked on CPU

def test_channels_last_and_bf16_autocast(at_root):
    model = resdsl.build_model("specs/resnet20.res").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.bfloat16 and (low.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.1


@pytest.mark.parametrize("text_or_path", [
    "specs/resnet50.res", "specs/resnet110_exclusive_gate.res", "preact50"])
def test_no_graph_breaks(text_or_path, at_root):
    import torch._dynamo as dynamo

    if text_or_path == "preact50":
        spec = open("specs/resnet50.res").read().replace("order post", "order preact")
        model, shape = resdsl.build_model(spec.replace('include "recipes.res"', 'include "specs/recipes.res"')), 224
    else:
        model, shape = resdsl.build_model(text_or_path), resdsl.compile_spec(text_or_path).input_shape[1]
    dynamo.reset()
    explanation = dynamo.explain(model.eval())(torch.zeros(1, 3, shape, shape))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_torch_export(at_root):
    model = resdsl.build_model("specs/resnet110_preact.res").eval()
    x = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))


def test_onnx_export_matches_onnxruntime(at_root, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from click.testing import CliRunner

    from resdsl_cli.main import main

    out = tmp_path / "resnet20.onnx"
    r = CliRunner().invoke(main, ["compile", "specs/resnet20.res", "--onnx", str(out)])
    assert r.exit_code == 0, r.output
    assert "checked" in r.stdout
    import onnx

    onnx.checker.check_model(onnx.load(out))
    from resdsl.backends.onnx_export import export_onnx
    net = resdsl.compile_spec("specs/resnet20.res")
    model = resdsl.build_model(net)
    _randomise(model)
    out = tmp_path / "random.onnx"
    export_onnx(net, str(out), model=model)  # exported in eval mode; the model is left in the mode it was in
    assert model.training and not model.eval().training
    x = torch.randn(3, 3, 32, 32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), model(x), rtol=1e-4, atol=1e-4)


def test_emit_python_cli(at_root, tmp_path):
    from click.testing import CliRunner

    from resdsl_cli.main import main

    out = tmp_path / "m.py"
    r = CliRunner().invoke(main, ["compile", "specs/resnet56.res", "--emit-python", str(out)])
    assert r.exit_code == 0 and out.read_text() == emit_python(resdsl.compile_spec("specs/resnet56.res"))
    model = load_source(out.read_text())["build"]()
    assert sum(p.numel() for p in model.parameters()) == 853_018
    r = CliRunner().invoke(main, ["compile", "specs/resnet56.res", "--emit-python", str(tmp_path / "no" / "m.py")])
    assert r.exit_code == 1 and "does not exist" in r.stderr
    r = CliRunner().invoke(main, ["compile", "specs/resnet56.res", "--emit-python", "-"])  # - is standard output
    assert r.exit_code == 0 and r.stdout == out.read_text() and "853,018" in r.stderr
    assert not (Path.cwd() / "-").exists()
    r = CliRunner().invoke(main, ["compile", "specs/resnet56.res", "--emit-python", "-", "--json"])
    assert r.exit_code == 2 and "--json and --dump-ir write too" in r.output


# ---- bounded resources: refused from the compiled counts, before any tensor is allocated ------------------------


def _no_allocation(monkeypatch):
    from resdsl.backends import torch_module

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(torch_module, "load_source", refuse)


def test_parameter_limit(at_root, monkeypatch):
    _no_allocation(monkeypatch)
    monkeypatch.setenv("RESDSL_MAX_PARAMS", "200000")
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.build_model("specs/resnet20.res")
    err = info.value
    assert err.span.line == 2 and "269,722 parameters" in err.message and "200,000" in err.message
    assert "RESDSL_MAX_PARAMS" in err.hint and "    network resnet20" in err.render()


def test_activation_limit(at_root, monkeypatch):
    from resdsl.backends.torch_module import activation_bytes

    _no_allocation(monkeypatch)
    net = resdsl.compile_spec("specs/resnet20.res")
    need = activation_bytes(net)
    assert need == 4 * sum(math.prod(d["shape"]) for _, d in net.graph.nodes(data=True) if d["op"] != "output")
    monkeypatch.setenv("RESDSL_MAX_ACTIVATION_BYTES", str(need - 1))
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.build_model(net)
    err = info.value
    assert err.span.line == 4 and f"{need:,} bytes" in err.message and "RESDSL_MAX_ACTIVATION_BYTES" in err.hint
    monkeypatch.setenv("RESDSL_MAX_ACTIVATION_BYTES", "inf")
    with pytest.raises(AssertionError, match="was built"):  # within the limit: it goes on to build
        resdsl.build_model(net)


def test_default_limits_refuse_absurd_networks(monkeypatch, tmp_path):
    """A 3x16384x16384 input and a ~29-billion-parameter network fail at once with located errors (exit 1)."""
    from click.testing import CliRunner

    from resdsl_cli.main import main

    _no_allocation(monkeypatch)
    for name, frag, line, words in [("wide", "input 3x16384x16384\nstages 16x1", 2, "GiB"),
                                    ("deep", "input 3x32x32\nstages 40000x1", 1, "parameters")]:
        spec = tmp_path / f"{name}.res"
        spec.write_text(f"network {name}\n{frag}\nstem cifar 16\nunit basic\nshortcut B\nhead avgpool fc 10\n")
        r = CliRunner().invoke(main, ["compile", str(spec), "--onnx", str(tmp_path / "x.onnx")])
        assert r.exit_code == 1 and f"{spec}:{line}:1: error:" in r.stderr and words in r.stderr, r.output
        assert not (tmp_path / "x.onnx").exists()


def test_onnx_export_of_a_given_model_is_checked(at_root, monkeypatch, tmp_path):
    pytest.importorskip("onnx")
    from resdsl.backends.onnx_export import export_onnx

    net = resdsl.compile_spec("specs/resnet20.res")
    model = resdsl.build_model(net)
    monkeypatch.setenv("RESDSL_MAX_ACTIVATION_BYTES", "1000")
    with pytest.raises(resdsl.SpecError, match="activations"):
        export_onnx(net, str(tmp_path / "m.onnx"), model=model)


@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
def test_a_ceil_mode_pool_is_a_module_torch_builds(op):
    """A pool with ceil mode (ResNet-D's shortcut pool) is written as a module torch builds, a max pool too
    (it was given count_include_pad, which nn.MaxPool2d does not take)."""
    from resdsl.ops import OPS

    d = {"op": op, "kernel": (2, 2), "stride": 2, "padding": (0, 0), "ceil_mode": True}
    pool = eval(OPS[op].module(d, lambda key: repr(d[key])), {"nn": torch.nn})  # noqa: S307 - our own source
    assert pool.ceil_mode and pool(torch.ones(1, 1, 5, 5)).shape == (1, 1, 3, 3)
