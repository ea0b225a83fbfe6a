"""Every spec compiles to exactly the IR dump and counts checked in under tests/golden/.

Regenerate after an intended change with `python tests/regen_golden.py` and review the diff.
"""
from __future__ import annotations

import json

import pytest

import resdsl
from regen_golden import GOLDEN, golden_name, spec_paths, summary

SPECS = spec_paths()
COUNTS = json.loads((GOLDEN / "counts.json").read_text())

PAPER_SPECS = {
    "plain18", "plain34", "resnet18_optionA", "resnet34_optionA", "resnet34_optionB", "resnet34_optionC",
    "resnet50", "resnet101", "resnet152", "plain20", "plain32", "plain44", "plain56", "plain110", "resnet20",
    "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202", "resnet110_shortcut_scale0",
    "resnet110_shortcut_scale05", "resnet110_frozen_gate", "resnet110_exclusive_gate", "resnet110_shortcut_gate",
    "resnet110_conv_shortcut", "resnet110_dropout_shortcut", "resnet110_bn_after_add", "resnet110_relu_before_add",
    "resnet110_relu_preact", "resnet110_preact", "resnet164", "resnet164_bn_after_add", "resnet164_relu_before_add",
    "resnet164_relu_preact", "resnet164_preact", "resnet110_1layer", "resnet110_1layer_preact", "resnet1001",
    "resnet1001_preact", "resnet164_cifar100", "resnet164_preact_cifar100", "resnet1001_cifar100",
    "resnet1001_preact_cifar100", "resnet152_preact", "resnet200", "resnet200_preact",
    "torchvision/resnet18", "torchvision/resnet34", "torchvision/resnet50", "torchvision/resnet101",
    "torchvision/resnet152",
}


def test_every_paper_variant_has_a_spec():
    names = {s.removeprefix("specs/").removesuffix(".res") for s in SPECS}
    assert PAPER_SPECS <= names, sorted(PAPER_SPECS - names)
    assert set(COUNTS) == set(SPECS), "golden counts out of date: run python tests/regen_golden.py"


@pytest.mark.parametrize("rel", SPECS)
def test_spec_matches_golden(rel, at_root):
    net = resdsl.compile_spec(rel)
    assert net.ok, [e for e in net.expects if not e.ok]
    assert summary(net) == COUNTS[rel]
    assert net.dump_ir() == (GOLDEN / golden_name(rel)).read_text()


@pytest.mark.parametrize("rel", __import__("regen_golden").PYTHON_GOLDEN)
def test_emitted_python_matches_golden(rel, at_root):
    from regen_golden import python_golden_name

    assert resdsl.emit_python(rel) == (GOLDEN / python_golden_name(rel)).read_text()


def test_emitted_python_keeps_to_the_files_width(at_root):
    """Every packaged spec's emitted source reads at 100 columns: docstrings and comments are wrapped there, an
    nn.Sequential that would pass it is split, and only code (a module's one-line constructor) may be longer, by
    at most 12 characters."""
    from resdsl.backends.python_units import WIDTH

    for rel in SPECS:
        in_docstring = False
        for number, line in enumerate(resdsl.emit_python(rel).splitlines(), start=1):
            prose = in_docstring or line.lstrip().startswith(("#", '"""'))
            if line.count('"""') % 2:
                in_docstring = not in_docstring
            assert len(line) <= (WIDTH if prose else WIDTH + 12), f"{rel}, emitted line {number}: {line}"
