"""Counts against independent references: resnet-papers.md section 7, the papers' tables, torchvision."""
from __future__ import annotations

import re

import pytest

import resdsl

# resnet-papers.md section 7 (torchvision metadata; [R] Table 1 v1 MACs; CIFAR ResNet-20)
EXACT = {
    "specs/torchvision/resnet18.res": (11_689_512, 1_814_073_344),
    "specs/torchvision/resnet34.res": (21_797_672, 3_663_761_408),
    "specs/torchvision/resnet50.res": (25_557_032, 4_089_184_256),
    "specs/torchvision/resnet101.res": (44_549_160, 7_801_405_440),
    "specs/torchvision/resnet152.res": (60_192_808, 11_513_626_624),
}
GMACS = {  # rounded figures in the reference, to the digits it prints
    "specs/torchvision/resnet18.res": "1.814", "specs/torchvision/resnet34.res": "3.664",
    "specs/torchvision/resnet50.res": "4.089", "specs/torchvision/resnet101.res": "7.801",
    "specs/torchvision/resnet152.res": "11.514", "specs/resnet50.res": "3.858", "specs/resnet101.res": "7.570",
    "specs/resnet152.res": "11.282",
}
PARAMS = {
    "specs/resnet50.res": 25_557_032, "specs/resnet101.res": 44_549_160, "specs/resnet152.res": 60_192_808,
    "specs/resnet20.res": 269_722, "specs/resnet1001_preact.res": 10_327_706,
}


@pytest.mark.parametrize("rel,expected", EXACT.items())
def test_torchvision_exact(rel, expected, at_root):
    net = resdsl.compile_spec(rel)
    assert (net.params, net.macs) == expected
    assert net.flops == 2 * net.macs


@pytest.mark.parametrize("rel,gmacs", GMACS.items())
def test_gmacs_match_reference(rel, gmacs, at_root):
    assert f"{resdsl.compile_spec(rel).macs / 1e9:.3f}" == gmacs


@pytest.mark.parametrize("rel,params", PARAMS.items())
def test_params_match_reference(rel, params, at_root):
    assert resdsl.compile_spec(rel).params == params


def test_resnet20_option_b_and_macs(at_root):
    net = resdsl.compile_spec("specs/resnet20.res")
    assert f"{net.macs / 1e6:.2f}" == "40.55"
    text = open("specs/resnet20.res").read().replace("shortcut A", "shortcut B")
    assert resdsl.compile_spec(text=text, name="specs/x.res").params == 272_474


TABLE6_PARAMS_M = {20: "0.27", 32: "0.46", 44: "0.66", 56: "0.85", 110: "1.7", 1202: "19.4"}


@pytest.mark.parametrize("depth,millions", TABLE6_PARAMS_M.items())
def test_cifar_params_round_to_table6(depth, millions, at_root):
    p = resdsl.compile_spec(f"specs/resnet{depth}.res").params / 1e6
    decimals = len(millions.split(".")[1])
    assert f"{p:.{decimals}f}" == millions


@pytest.mark.parametrize("rel", [
    "specs/resnet18_optionA.res", "specs/resnet34_optionA.res", "specs/resnet50.res", "specs/resnet101.res",
    "specs/resnet152.res"])
def test_r_table1_flops_within_paper_precision(rel, at_root):
    paper = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}
    key = re.sub(r"_option.*", "", rel.split("/")[-1][:-4])
    assert abs(resdsl.compile_spec(rel).macs / 1e9 - paper[key]) < 0.1


def test_option_c_adds_13_projections(at_root):
    b = resdsl.compile_spec("specs/resnet34_optionB.res").graph
    c = resdsl.compile_spec("specs/resnet34_optionC.res").graph
    proj = lambda g: sum(u["shortcut"] == "projection" for u in g.graph["units"])  # noqa: E731
    assert proj(b) == 3 and proj(c) - proj(b) == 13


def test_plain_and_resnet_same_layers_and_cost(at_root):
    for depth in (20, 32, 44, 56, 110):
        plain, res = (resdsl.compile_spec(f"specs/{k}{depth}.res") for k in ("plain", "resnet"))
        assert (plain.params, plain.macs, plain.layers) == (res.params, res.macs, res.layers)
        assert not any(d["op"] == "add" for _, d in plain.graph.nodes(data=True))


@pytest.mark.parametrize("rel", sorted(__import__("regen_golden").spec_paths()))
def test_layers_equal_depth_in_name(rel, at_root):
    """The depth in every spec's name is its `layers`: [R]'s count, a WRN's 6N+4 under `layer-count wrn`, one
    layer for a deep stem (resnet50d)."""
    m = re.search(r"(?:resnet|resnext|plain|wrn)(\d+)", rel.split("/")[-1])
    assert resdsl.compile_spec(rel).layers == int(m.group(1))
