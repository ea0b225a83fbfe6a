"""Lowering: the op sequence of every unit kind, order and shortcut, as the papers draw them."""
from __future__ import annotations

import pytest

import resdsl
from resdsl.ir import inputs_of
from conftest import CIFAR20


def unit_ops(net, prefix):
    """(short name, op) of the nodes of one unit, in execution order."""
    return [(n[len(prefix):], d["op"]) for n, d in net.graph.nodes(data=True) if n.startswith(prefix)]


def compile_text(text):
    return resdsl.compile_spec(text=text, name="t.res")


ORDERS = {
    "post": ["conv1", "bn1", "relu1", "conv2", "bn2", "add", "relu_out"],
    "bn-after-add": ["conv1", "bn1", "relu1", "conv2", "add", "bn_out", "relu_out"],
    "relu-before-add": ["conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "add"],
    "relu-preact": ["relu1", "conv1", "bn1", "relu2", "conv2", "bn2", "add"],
    "preact": ["bn1", "relu1", "conv1", "bn2", "relu2", "conv2", "add"],
}


@pytest.mark.parametrize("order,seq", ORDERS.items())
def test_fig4_orders(order, seq):
    net = compile_text(CIFAR20 + f"order {order}\n")
    assert [n for n, _ in unit_ops(net, "layer1.1.")] == seq  # a middle unit: identity shortcut
    add = "layer1.1.add"
    assert inputs_of(net.graph, add)[1] == ("layer1.0.relu_out" if order in ("post", "bn-after-add")
                                            else "layer1.0.add")


def test_preact_first_unit_activates_before_split_and_last_unit_gets_final_bn_relu():
    net = compile_text(CIFAR20 + "order preact\n")
    g = net.graph
    assert [n for n in g if n in ("conv1", "bn1", "relu")] == ["conv1"]  # the stem is a bare conv
    assert inputs_of(g, "layer1.0.add")[1] == "layer1.0.relu1"  # shortcut takes the activated input
    assert g.nodes["layer1.0.bn1"]["path"] == "shared"
    assert inputs_of(g, "layer2.0.add")[1] == "layer2.0.shortcut_zero_pad"
    assert inputs_of(g, "layer2.0.shortcut_zero_pad")[0] == "layer1.2.add"  # option A: not a projection, not shared
    assert list(g)[-6:] == ["layer3.2.add", "final_bn", "final_relu", "avgpool", "fc", "output"]


def test_preact_projection_takes_preactivated_input_without_bn(at_root):
    g = resdsl.compile_spec("specs/resnet164_preact.res").graph
    assert inputs_of(g, "layer2.0.downsample.0")[0] == "layer2.0.relu1"
    assert "layer2.0.downsample.1" not in g  # official code: plain 1x1 conv on the pre-activated shortcut
    assert "layer2.1.downsample.0" not in g
    g = resdsl.compile_spec("specs/resnet164.res").graph
    assert g.nodes["layer2.0.downsample.1"]["op"] == "bn"


def test_imagenet_stem_preact_first_unit_has_no_preactivation(at_root):
    g = resdsl.compile_spec("specs/resnet200_preact.res").graph
    seq = [n for n in g if n.startswith("layer1.0.")]
    assert seq[0] == "layer1.0.conv1" and "layer1.0.bn1" not in g
    assert inputs_of(g, "layer1.0.conv1")[0] == "maxpool"
    assert inputs_of(g, "layer2.0.downsample.0")[0] == "layer2.0.relu1"


@pytest.mark.parametrize("at,strided", [("1x1", "conv1"), ("3x3", "conv2")])
def test_bottleneck_stride_placement(at, strided):
    net = compile_text(CIFAR20.replace("unit basic", f"unit bottleneck stride-at {at}"))
    g = net.graph
    assert g.nodes[f"layer2.0.{strided}"]["stride"] == 2
    assert [g.nodes[f"layer2.0.conv{k}"]["kernel"] for k in (1, 2, 3)] == [(1, 1), (3, 3), (1, 1)]
    assert g.nodes["layer2.0.conv3"]["out_channels"] == 128


def test_single_unit_and_expansion():
    g = compile_text(CIFAR20.replace("unit basic", "unit single")).graph
    assert [n[len("layer1.1."):] for n in g if n.startswith("layer1.1.")] == ["conv1", "bn1", "add", "relu_out"]
    g = compile_text(CIFAR20.replace("unit basic", "unit bottleneck expansion 2")).graph
    assert g.nodes["layer3.0.conv3"]["out_channels"] == 128


def test_shortcut_variants():
    g = compile_text(CIFAR20.replace("shortcut A", "shortcut A scale 0.5 residual 0.25 dropout 0.3")).graph
    assert inputs_of(g, "layer1.0.add") == ["layer1.0.residual_scale", "layer1.0.shortcut_scale"]
    assert g.nodes["layer1.0.residual_scale"]["factor"] == 0.25
    assert inputs_of(g, "layer1.0.shortcut_scale") == ["layer1.0.shortcut_dropout"]
    assert g.nodes["layer1.0.shortcut_dropout"]["p"] == 0.3
    g = compile_text(CIFAR20.replace("shortcut A", "shortcut A gate shortcut-only bias -6")).graph
    gate = g.nodes["layer2.0.gate"]
    assert gate["bias"] and gate["bias_init"] == -6 and gate["stride"] == 2 and gate["out_channels"] == 32
    assert g.nodes["layer2.0.add"]["gate"] == "shortcut-only"
    assert len(inputs_of(g, "layer2.0.add")) == 3


def test_option_a_pads_any_channel_increase():
    net = compile_text(CIFAR20.replace("16x3, 32x3 /2, 64x3 /2", "16x1, 24x1 /2, 80x1"))
    g = net.graph
    assert g.nodes["layer2.0.shortcut_zero_pad"]["shape"] == (24, 16, 16)
    assert g.nodes["layer3.0.shortcut_zero_pad"]["shape"] == (80, 16, 16)


def test_option_b_c_and_none():
    b = compile_text(CIFAR20.replace("shortcut A", "shortcut B")).graph
    projections = [u for u in b.graph["units"] if u["shortcut"] == "projection"]
    assert [(u["stage"], u["index"]) for u in projections] == [(2, 0), (3, 0)]
    assert projections[0]["modules"] == {"downsample": ["layer2.0.downsample.0", "layer2.0.downsample.1"]}
    c = compile_text(CIFAR20.replace("shortcut A", "shortcut C")).graph
    assert [u["shortcut"] for u in c.graph["units"]] == ["projection"] * 9
    none = compile_text(CIFAR20.replace("shortcut A", "shortcut none")).graph
    assert not any(d["op"] == "add" for _, d in none.nodes(data=True))
    assert {u["shortcut"] for u in none.graph["units"]} == {None}


def test_unit_records():
    """Lowering writes one record per unit; units built alike have one signature, whatever their numbers."""
    g = resdsl.compile_spec("specs/resnet110_preact.res").graph
    units = g.graph["units"]
    assert len(units) == 54 and [u["index"] for u in units[:3]] == [0, 1, 2]
    first, second, pad = units[0], units[1], units[18]
    assert (first["stage"], first["kind"], first["order"], first["option"], first["shortcut"]) == \
        (1, "basic", "preact", "A", "identity")
    assert first["nodes"][0] == "layer1.0.bn1" and g.nodes[first["nodes"][0]]["path"] == "shared"
    assert pad["shortcut"] == "zero-pad" and pad["args"] == {"in_channels": 16, "width": 32, "out_channels": 32,
                                                              "stride": 2}
    assert second["signature"] == units[19]["signature"] != pad["signature"]  # 16 or 32 wide: one kind
    assert len({u["signature"] for u in units}) == 3
    assert sum(len(u["nodes"]) for u in units) == sum(1 for _, d in g.nodes(data=True) if "stage" in d)


def test_per_stage_override():
    g = compile_text(CIFAR20 + "stage 3: unit bottleneck\nstage 2: shortcut B\n").graph
    assert "layer2.0.downsample.0" in g and "layer3.0.conv3" in g and "layer1.0.conv3" not in g


def test_zero_init_last_bn_and_he_init():
    g = compile_text(CIFAR20 + "init he fan-out zero-last-bn\n").graph
    assert g.nodes["layer1.0.bn2"].get("zero_init") and not g.nodes["layer1.0.bn1"].get("zero_init")
    assert g.nodes["layer1.0.conv1"]["init"] == "he-fan-out"
    assert g.graph["init"] == {"scheme": "he", "fan": "fan-out", "zero_last_bn": True, "zero_last": False}
