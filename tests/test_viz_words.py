"""`resdsl viz` in the papers' words: one line style per kind of shortcut in every view and its legend, the units'
captions as [R] and [I] name them, and a legend of only what is drawn."""
from __future__ import annotations

import re

import pytest

import resdsl
from resdsl.backends import graphviz as gv
from test_viz import run

EDGE = re.compile(r"^\s*(\w+) -> (\w+) \[(.*)\];$")


def _drawing_and_legend(dot: str) -> tuple[str, str]:
    """The DOT text before the legend cluster and the legend cluster itself ('' when there is none)."""
    head, _, legend = dot.partition("subgraph cluster_legend")
    return head, legend


def _styles(text: str) -> list[tuple[str, str, str]]:
    """(source, target, style) of every edge with a style."""
    found = []
    for line in text.splitlines():
        m = EDGE.match(line)
        style = re.search(r"style=(\w+)", m.group(3)) if m else None
        if style:
            found.append((m.group(1), m.group(2), style.group(1)))
    return found


def _legend_lines(dot: str) -> dict[str, str]:
    """Legend text of each shortcut line sample -> its style."""
    legend = _drawing_and_legend(dot)[1]
    texts = dict(re.findall(r'(legend_line\d+_text) \[label="([^"]*)"', legend))
    return {texts[b]: style for _, b, style in _styles(legend) if b in texts}


@pytest.mark.parametrize("spec,solid,dotted,dashed", [
    ("resnet20", 7, 4, 0),           # option A: 7 identity shortcuts, 2 zero-pads (into the pad, into the +)
    ("resnet110", 52, 4, 0),
    ("resnet34_optionB", 13, 0, 9),  # option B: 3 projections, each x -> 1x1 conv -> BN -> +
])
def test_full_view_draws_identity_solid_and_projection_dashed(at_root, spec, solid, dotted, dashed):
    net = resdsl.compile_spec(f"specs/{spec}.res")
    styles = _styles(_drawing_and_legend(gv.full_dot(net))[0])
    counts = {s: sum(1 for *_, st in styles if st == s) for s in ("solid", "dotted", "dashed")}
    assert counts == {"solid": solid, "dotted": dotted, "dashed": dashed}
    adds = {f"n{k}" for k, (_, d) in enumerate(net.graph.nodes(data=True)) if d["op"] == "add"}
    assert all(v in adds for _, v, st in styles if st == "solid")  # an identity goes straight into the addition


@pytest.mark.parametrize("spec,lines", [
    ("resnet20", {"identity shortcut": "solid", "zero-padding shortcut (option A)": "dotted"}),
    ("resnet34_optionB", {"identity shortcut": "solid", "1x1 projection shortcut (option B/C)": "dashed"}),
    ("resnet110_conv_shortcut", {"1x1 projection shortcut (option B/C)": "dashed"}),
    ("plain34", {}),
])
def test_every_view_and_its_legend_agree_on_line_styles(at_root, spec, lines):
    net = resdsl.compile_spec(f"specs/{spec}.res")
    style_of = {"identity": "solid", "1x1 projection": "dashed", "zero-pad (A)": "dotted"}
    overview = gv.overview_dot(net)
    tags = re.findall(r'style=(\w+), label="(identity|1x1 projection|zero-pad \(A\))', overview)
    assert tags and all(style_of[tag] == style for style, tag in tags) or not lines
    for dot in (overview, gv.unit_dot([(net, spec)], typical_only=False), gv.full_dot(net)):
        assert _legend_lines(dot) == lines
        assert ("shortcut" in _drawing_and_legend(dot)[1]) == bool(lines)  # a plain net's legend names none
        assert {st for *_, st in _styles(_drawing_and_legend(dot)[0])} == set(lines.values())


def _captions(dot: str) -> list[str]:
    return re.findall(r'subgraph cluster_s\d+u\d+ \{\n    label="([^"]*)"', dot)


def test_unit_captions_in_the_papers_words(at_root):
    """[I] Fig. 4's letter and words, [R] Table 1's notation with the units per stage; no generated class name."""
    dot = gv.unit_dot([(resdsl.compile_spec("specs/resnet110_bn_after_add.res"), "b")], typical_only=True)
    assert _captions(dot) == ["b\\nFig. 4(b) BN after addition; identity shortcut\\n"
                              "basic [3x3, 16; 3x3, 16] x 18 (layer1)"
                              "\\n[3x3, 32; 3x3, 32] x 17 (layer2)\\n[3x3, 64; 3x3, 64] x 17 (layer3)"]
    net = resdsl.compile_spec("specs/resnet50.res")
    g = net.graph
    first_stage = [(g.nodes[f"layer1.1.conv{k}"]["kernel"][0], g.nodes[f"layer1.1.conv{k}"]["out_channels"])
                   for k in (1, 2, 3)]
    assert first_stage == [(1, 64), (3, 64), (1, 256)]  # [R] Table 1, conv2_x
    captions = _captions(gv.unit_dot([(net, "resnet50")], typical_only=False))
    assert captions[0].startswith("resnet50\\nFig. 4(a) original; 1x1 projection shortcut (option B)\\nbottleneck "
                                  "[1x1, 64; 3x3, 64; 1x1, 256] x 1 (layer1)\\n[1x1, 128; 3x3, 128; 1x1, 512] x 1 "
                                  "(layer2, stride 2)")
    assert "bottleneck [1x1, 64; 3x3, 64; 1x1, 256] x 2 (layer1)" in captions[1]
    assert not any(re.search(r"[a-z]Unit\b|\(x\d+\)", c) for c in captions)


@pytest.mark.parametrize("spec,words", [
    ("resnet110", "\\nFig. 4(a) original; identity shortcut\\nbasic"),  # Fig. 4's letter, not Fig. 2's
    ("resnet110_relu_before_add", "Fig. 4(c) ReLU before addition"),
    ("resnet110_relu_preact", "Fig. 4(d) ReLU-only pre-activation"),
    ("resnet110_exclusive_gate", "\\nFig. 4(a) original; identity shortcut\\nexclusive gating"),
    ("resnet110_shortcut_scale05", "identity shortcut\\nconstant scaling 0.5\\n"),
    ("resnet110_frozen_gate", "constant scaling 0.5, F scaled by 0.5, frozen gating"),
    ("resnet110_exclusive_gate", "exclusive gating, init b_g = -6"),
    ("resnet110_shortcut_gate", "shortcut-only gating, init b_g = -6"),
    ("resnet110_conv_shortcut", "1x1 conv shortcut (option C)\\nbasic [3x3, 16; 3x3, 16] x 18 (layer1)\\n"
                                "[3x3, 32; 3x3, 32] x 18 (layer2, the first with stride 2)"),
    ("resnet110_dropout_shortcut", "dropout shortcut 0.5"),
    ("resnet110_1layer", "1-layer skip [3x3, 16] x 36 (layer1)"),
])
def test_fig2_and_fig4_words(at_root, spec, words):
    net = resdsl.compile_spec(f"specs/{spec}.res")
    assert words in _captions(gv.unit_dot([(net, spec)], typical_only=True))[0]


def test_caption_details(at_root, tmp_path):
    """The first pre-activation unit activates before the split ([I]); a plain net's unit has no order letter;
    more than four stages are summed up."""
    net = resdsl.compile_spec("specs/resnet110_preact.res")
    first = _captions(gv.unit_dot([(net, "p")], typical_only=False))[0]
    assert first == "p\\nFig. 4(e) full pre-activation; identity shortcut\\n" \
                    "BN-ReLU before splitting into two paths\\nbasic [3x3, 16; 3x3, 16] x 1 (layer1)"
    plain = gv.unit_dot([(resdsl.compile_spec("specs/plain34.res"), "plain34")], typical_only=True)
    assert _captions(plain)[0].startswith("plain34\\nplain net: no shortcut\\nbasic [3x3, 64; 3x3, 64] x 3 (layer1)")
    spec = tmp_path / "six.res"
    spec.write_text("network six\ninput 3x32x32\nstem cifar 16\nunit basic\nshortcut A\n"
                    "stages 16x2, 16x1, 16x1, 16x1, 16x1, 16x1\nhead avgpool fc 10\n")
    caption = _captions(gv.unit_dot([(resdsl.compile_spec(spec), "six")], typical_only=False))[0]
    assert caption.endswith("x 2 (layer1)\\n[3x3, 16; 3x3, 16] x 1 (layer2)\\n[3x3, 16; 3x3, 16] x 1 (layer3)"
                            "\\nand 3 more in 3 more stages")


def test_legend_lists_only_what_is_drawn(at_root):
    plain = gv.overview_dot(resdsl.compile_spec("specs/plain34.res"))
    assert "cluster_legend" not in plain  # no shortcut: nothing to explain
    net = resdsl.compile_spec("specs/resnet20.res")
    overview, unit = gv.overview_dot(net), gv.unit_dot([(net, "r")], typical_only=True)
    assert "projection" not in overview and "Fig. 2" not in overview
    legend = _drawing_and_legend(unit)[1]
    boxes = re.findall(r'legend_op\d+ \[label="([^"]*)"', legend)
    assert boxes == ["conv", "BN", "ReLU", "addition"]  # the typical unit has no pad, pool, fc, gate
    assert _legend_lines(unit) == {"identity shortcut": "solid"}
    full_boxes = re.findall(r'legend_op\d+ \[label="([^"]*)"', _drawing_and_legend(gv.full_dot(net))[1])
    assert full_boxes == ["conv", "BN", "ReLU", "addition", "global avg pool", "fc", "zero-pad"]
    gated = gv.overview_dot(resdsl.compile_spec("specs/resnet110_exclusive_gate.res"))
    assert "gating ([I] Fig. 2): named on the shortcut line" in _drawing_and_legend(gated)[1]
    assert "identity x 17\\nexclusive gating\\ninit b_g = -6" in gated


def test_a_kinds_panel_says_where_its_other_units_stride(at_root):
    """A kind's panel draws its first unit; an op that strides in another of its units says so: [R]'s ResNet-50
    strides in the first 1x1 conv, torchvision's (v1.5) in the 3x3. Side by side, the two are named apart."""
    r = run("viz", "resnet50", "torchvision/resnet50", "--view", "unit", "--all-units", "--format", "dot", "-o", "-")
    assert r.exit_code == 0, r.output
    paper, tv = r.stdout.split("label=\"torchvision/resnet50\\n", 1)
    assert 'label="resnet50\\n' in paper
    for text, strided in ((paper, "1x1 conv, 64"), (tv, "3x3 conv, 64")):
        assert f'"{strided} (/2 where the unit strides)"' in text
        assert '"1x1 conv, 256 (/2 where the unit strides)"' in text
    assert "3x3 conv, 64 (/2" not in paper and "1x1 conv, 64 (/2" not in tv
    assert '[label="x, 64-d"' in paper and '[label="x_next, 256-d"' in paper  # [R] Fig. 5's "256-d"


def test_scales_beside_a_learned_gate_are_not_called_frozen_gating(at_root):
    text = resdsl.compile_spec("specs/resnet20.res").spec.source  # [I]'s frozen gating is scaling without a gate
    text = text.replace("shortcut A", "shortcut A scale 0.5 residual 0.5 gate exclusive bias 0").replace(
        'include "recipes.res"', 'include "recipes"')
    caption = _captions(gv.unit_dot([(resdsl.compile_spec(text=text), "g")], typical_only=True))[0]
    assert "constant scaling 0.5, F scaled by 0.5, exclusive gating, init b_g = 0\\n" in caption
    assert "frozen" not in caption


def test_a_drop_paths_panel_gives_the_range_of_its_rates(at_root):
    net = resdsl.compile_spec("family/resnet110_stochastic_depth")
    dot = gv.unit_dot([(net, "sd")], typical_only=True)  # 52 units, [SD]'s rates from 0.5/54 to 0.5
    assert '"drop path 0.00926 to 0.5 per batch"' in dot


def _run_labels(dot: str) -> list[str]:
    """The overview's run labels, in order."""
    return re.findall(r'layer\d+_\d+ \[label="([^"]*)"', dot)


def test_the_overview_draws_what_f_holds_besides_its_convolutions(at_root):
    """Stochastic depth, a Wide ResNet's dropout and [I]'s activation before the first split were drawn by the unit
    view alone: the overviews of ResNet-110 with and without stochastic depth were the same but for the title."""
    sd = _run_labels(gv.overview_dot(resdsl.compile_spec("family/resnet110_stochastic_depth")))
    assert sd[0] == "[3x3, 16; 3x3, 16] x 18\\ndrop path 0.00926 to 0.167 per batch", sd
    wrn = _run_labels(gv.overview_dot(resdsl.compile_spec("family/wrn28_10")))
    assert wrn[:2] == ["[3x3, 160; dropout 0.3; 3x3, 160]\\nBN-ReLU before splitting into two paths",
                       "[3x3, 160; dropout 0.3; 3x3, 160] x 3"], wrn
    preact = _run_labels(gv.overview_dot(resdsl.compile_spec("resnet110_preact")))
    assert preact[:2] == ["[3x3, 16; 3x3, 16]\\nBN-ReLU before splitting into two paths", "[3x3, 16; 3x3, 16] x 17"]
    frozen = gv.overview_dot(resdsl.compile_spec("resnet110_frozen_gate"))  # F's scale was on the shortcut line
    assert _run_labels(frozen)[0] == "[3x3, 16; 3x3, 16] x 18\\nF scaled by 0.5\\nfrozen gating"
    assert 'stem -> layer1_0_add [style=solid, label="identity x 18\\nconstant scaling 0.5"];' in frozen


@pytest.mark.parametrize("at, notation", [("pre", "[SE r=16; 1x1, 64; 3x3, 64; 1x1, 256]"),
                                          ("post", "[1x1, 64; 3x3, 64; 1x1, 256; after +: SE r=16]"),
                                          ("standard", "[1x1, 64; 3x3, 64; 1x1, 256; SE r=16]")])
def test_the_notation_puts_a_squeeze_excitation_where_it_sits(at_root, at, notation):
    net = resdsl.compile_spec(text=f'extends "timm/seresnet50"\nnetwork s\nunit bottleneck se 16 divisor 8 at {at}\n')
    assert _run_labels(gv.overview_dot(net))[0] == notation
    assert f"bottleneck {notation} x 2 (layer1)" in gv.unit_dot([(net, "s")], typical_only=False)


def test_a_plain_nets_units_are_not_called_residual(at_root):
    assert 'label="plain34: distinct units (plain: no shortcuts)"' in \
        gv.unit_dot([(resdsl.compile_spec("plain34"), "p")], typical_only=False)


# ---- shortcut lines, captions, legend, graphviz warnings ------------------------------------------------
