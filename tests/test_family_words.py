"""The family's words beyond grouped convolutions (issue 13): stems as lists of convolutions, ResNet-D's
average-pool shortcut, squeeze-excitation, dropout in F, stochastic depth, the ends of a pre-activation network and
the WRN layer count; in combinations no paper drew (they compile, build, count and draw) and where they mean
nothing (a located error that says why). The reference modules are in test_timm_parity.py and
test_family_parity.py."""
from __future__ import annotations

import pytest
import torch

import resdsl
from resdsl.backends import graphviz as gv
from resdsl.units import se_hidden

CIFAR = """network cifar_family
input 3x32x32
stem {stem}
unit {unit}
order {order}
shortcut {shortcut}
stages 16x2, 32x2 /2, 64x1 /2
head avgpool fc 10
{extra}
"""


def spec(stem="cifar 16", unit="basic", order="post", shortcut="B", extra=""):
    return CIFAR.format(stem=stem, unit=unit, order=order, shortcut=shortcut, extra=extra)


COMBINATIONS = {
    "pre-activation SE units": dict(unit="basic se 4", order="preact"),
    "SE before F, option A": dict(unit="basic se 4 at pre", shortcut="A"),
    "SE after the addition, BN after addition": dict(unit="bottleneck se 8 divisor 4 at post", order="bn-after-add"),
    "a deep stem on a CIFAR net": dict(stem="conv 3x3 8, conv 3x3 8, conv 3x3 16"),
    "ResNet-D shortcuts with pre-activation": dict(order="preact", shortcut="B avg-down"),
    "ResNet-D shortcuts everywhere (option C)": dict(unit="bottleneck", shortcut="C avg-down"),
    "ResNeXt SE units with stochastic depth and option A": dict(
        unit="bottleneck cardinality 4 base-width 16 se 16", shortcut="A", extra="drop-path 0.2"),
    "dropout in a bottleneck, ReLU-only pre-activation": dict(unit="bottleneck dropout 0.2", order="relu-preact"),
    "gated shortcuts with stochastic depth": dict(shortcut="A gate exclusive bias -2", extra="drop-path 0.1 from-zero"),
}


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_unusual_combinations_compile_build_count_and_draw(name):
    net = resdsl.compile_spec(text=spec(**COMBINATIONS[name]))
    model = resdsl.build_model(net)
    assert sum(p.numel() for p in model.parameters()) == net.params
    for train in (False, True):
        assert model.train(train)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    for dot in (gv.overview_dot(net), gv.full_dot(net), gv.unit_dot([(net, net.name)], typical_only=False)):
        assert dot.startswith("digraph") and dot.rstrip().endswith("}")


def test_se_is_its_own_box_and_a_grouped_conv_says_its_groups(at_root):
    net = resdsl.compile_spec("specs/timm/seresnext50_32x4d.res")
    full = gv.full_dot(net)
    assert "SE r=16: 256→16→256" in full and "3x3 conv, 128, C=32" in full
    assert "squeeze-excitation" in full.split("cluster_legend")[1]  # in the legend, with its own colour
    assert "[1x1, 128; 3x3, 128, C=32; 1x1, 256; SE r=16] x 2" in gv.overview_dot(net)  # SENet Table 1's way


def test_resnet_d_draws_its_pool_on_the_shortcut(at_root):
    full = gv.full_dot(resdsl.compile_spec("specs/timm/resnet50d.res"))
    assert "2x2 avg pool, /2" in full and "average pool + 1x1 projection shortcut" in full


@pytest.mark.parametrize("channels, ratio, divisor, hidden", [
    (256, 16, 8, 16), (64, 16, 8, 8), (2048, 16, 8, 128),  # timm's make_divisible(C / 16, 8): at least 8
    (16, 16, 1, 1), (24, 16, 1, 2), (20, 16, 1, 1),  # without a divisor: C / r to the nearest integer, at least 1
])
def test_se_hidden_width(channels, ratio, divisor, hidden):
    assert se_hidden(channels, ratio, divisor) == hidden
    text = spec(unit=f"basic se {ratio}" + (f" divisor {divisor}" if divisor > 1 else "")).replace(
        "16x2, 32x2 /2, 64x1 /2", f"{channels}x1")
    model = resdsl.build_model(text)
    assert model.layer1[0].se.fc1.out_channels == hidden  # the emitted class computes the same width


@pytest.mark.parametrize("at, first, last", [("standard", "conv2", "se"), ("pre", "se", "bn2"), ("post", "se", "se")])
def test_se_placement(at, first, last):
    model = resdsl.build_model(spec(unit=f"basic se 4 at {at}", shortcut="A"))
    names = [n for n, _ in model.layer1[0].named_children()]
    assert names.index("se") == {"standard": len(names) - 1, "pre": 0, "post": len(names) - 1}[at]
    net = resdsl.compile_spec(text=spec(unit=f"basic se 4 at {at}", shortcut="A"))
    order = [n.split(".")[-1] for n in net.graph if n.startswith("layer1.0.")]
    assert order.index("se") > order.index("add") if at == "post" else order.index("se") < order.index("add")


def test_layer_counts():
    """[R] counts the stem once, F's convs and the fc layer; `layer-count wrn` counts F's convs + 4."""
    r = resdsl.compile_spec(text=spec(stem="conv 3x3 8, conv 3x3 8, conv 3x3 16"))
    wrn = resdsl.compile_spec(text=spec(extra="layer-count wrn"))
    assert (r.layers, wrn.layers) == (2 * 5 + 2, 2 * 5 + 4)


def test_drop_path_from_zero_on_one_unit_is_zero():
    net = resdsl.compile_spec(text=spec(extra="drop-path 0.3 from-zero").replace("16x2, 32x2 /2, 64x1 /2", "16x1"))
    assert net.graph.nodes["layer1.0.drop_path"]["drop_prob"] == 0


@pytest.mark.parametrize("kw, message, line, column", [
    (dict(unit="single dropout 0.3"), "a single unit has one convolution", 4, 21),
    (dict(unit="basic dropout 1"), "dropout probability must be in [0, 1), got 1", 4, 20),
    (dict(unit="basic se 0"), "squeeze-excitation ratio must be between 1", 4, 15),
    (dict(unit="basic se 4 divisor 8 divisor 4"), "'divisor' given twice in one 'se'", 4, 35),
    (dict(unit="basic se 4 se 8"), "'se' given twice in one unit statement", 4, 17),
    (dict(shortcut="A avg-down"), "shortcut A has no projection, so 'avg-down' means nothing here", 6, 12),
    (dict(order="post final-activation no"), "'final-activation' sets an end of a pre-activation network", 5, 29),
    (dict(stem="imagenet", order="preact first-shortcut raw"), "the stem's BN-ReLU already activated", 5, 29),
    (dict(stem="cifar 8", order="preact first-shortcut raw"), "the first unit projects", 5, 29),
    (dict(order="preact", extra="stage 2: order preact final-activation no"),
     "set by the network's order statement, not a stage's", 9, 40),
    (dict(extra="drop-path 1"), "the drop-path rate must be in [0, 1), got 1", 9, 11),
    (dict(shortcut="none", extra="drop-path 0.2"), "stage 1 has no shortcut", 9, 1),
    (dict(stem="deep width 63"), "a deep stem's width must be even", 3, 17),
])
def test_meaningless_family_words_are_located_errors(kw, message, line, column):
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.compile_spec(text=spec(**kw))
    err = info.value
    assert message in err.message and (err.span.line, err.span.column) == (line, column), (err.message, err.span)


def test_the_family_exports_to_onnx_and_runs_in_onnxruntime(tmp_path):
    """SE, ResNet-D's ceil-mode pool, a deep stem, dropout in F and drop path (the identity in eval mode) in one
    network: the ONNX file onnxruntime runs gives the module's eval outputs."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from resdsl.backends.onnx_export import export_onnx

    net = resdsl.compile_spec(text=spec(stem="conv 3x3 /2 8, conv 3x3 16", unit="bottleneck se 4 dropout 0.2",
                                        shortcut="B avg-down", extra="drop-path 0.3").replace("32x32", "33x33"))
    model = resdsl.build_model(net)
    out = tmp_path / "family.onnx"
    export_onnx(net, str(out), model=model)
    x = torch.randn(2, 3, 33, 33)
    (y,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), model.eval()(x), rtol=1e-4, atol=1e-4)


ORDERS = ["post", "bn-after-add", "relu-before-add", "relu-preact", "preact"]
SHORTCUTS = ["A", "B", "C avg-down", "none", "A gate exclusive bias -1", "B scale 0.5 residual 0.5", "A dropout 0.1"]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_backward_through_every_order_and_shortcut_with_the_family_ops(order, shortcut):
    """The emitted forward overwrites tensors in place (`out += identity`, ReLU) only where autograd keeps none of
    them: a backward pass runs in training and in eval mode, where dropout and a drop path at p = 0 hand their
    input on unchanged (the first unit's under `from-zero`), for every order and shortcut."""
    extra = "" if shortcut == "none" else "drop-path 0.2 from-zero"
    text = spec(unit="basic dropout 0.1", order=order, shortcut=shortcut, extra=extra) \
        .replace("16x2, 32x2 /2, 64x1 /2", "16x2, 32x1 /2")
    model = resdsl.build_model(text)
    for train in (True, False):
        model.zero_grad()
        model.train(train)(torch.randn(2, 3, 32, 32)).sum().backward()
        assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("rule", ["linear", "from-zero"])
def test_the_emitted_drop_path_rule_gives_every_unit_the_irs_probability(rule):
    """units.DROP_RULES holds each rule twice, as the function lowering uses and as the expression the emitted
    Network evaluates: every unit's module gets the probability its IR node says."""
    net = resdsl.compile_spec(text=spec(extra=f"drop-path 0.35 {rule}"))
    model = resdsl.build_model(net)
    ir = [net.graph.nodes[r["prefix"] + "drop_path"]["drop_prob"] for r in net.graph.graph["units"]]
    emitted = [u.drop_path.p for layer in (model.layer1, model.layer2, model.layer3) for u in layer]
    assert emitted == ir and len(set(ir)) == 5 and max(ir) == pytest.approx(0.35)


def test_head_dropout_is_checked_and_drawn(at_root):
    text = 'extends "resnet20"\nnetwork r\nhead avgpool dropout {} fc 10\n'
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.compile_spec(text=text.format(1.5))
    assert "dropout probability must be in [0, 1), got 1.5" in info.value.message and info.value.span.column == 22
    net = resdsl.compile_spec(text=text.format(0.2))
    assert net.params == resdsl.compile_spec("resnet20").params  # no weights of its own
    assert "head: global avg pool, dropout 0.2, fc 10" in gv.overview_dot(net)
