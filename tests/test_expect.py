"""`expect` compares at the precision written: 21.8M holds for anything that rounds to 21.8M."""
from __future__ import annotations

import pytest

import resdsl
from resdsl.errors import SpecError
from conftest import CIFAR20  # params 269,722; macs 40,551,040; layers 20


@pytest.mark.parametrize("line,ok", [
    ("params 269722", True), ("params 269_722", True), ("params 269723", False),
    ("params 0.27M", True), ("params 0.270M", True), ("params 0.2697M", True), ("params 0.2698M", False),
    ("params 270K", True), ("params 269.7K", True), ("params 269.8K", False), ("params 0.3M", True),
    ("params 0.26M", False), ("params ~0.26M", True), ("params ~0.25M", False),
    ("params ~269723", True), ("params ~269721", True), ("params ~269720", False), ("params ~0.28M", False),
    ("macs 40.55M", True), ("macs 40.5M", False), ("macs ~40.5M", True), ("flops 81.1M", True),
    ("macs 0.04G", True), ("layers 20", True), ("layers 21", False), ("output 10", True), ("output 100", False),
])
def test_precision(line, ok):
    net = resdsl.compile_spec(text=CIFAR20 + f"expect {line}\n", name="t.res")
    assert net.ok is ok, net.expects


def test_output_shape_without_fc():
    net = resdsl.compile_spec(text=CIFAR20.replace("head avgpool fc 10", "head avgpool") + "expect output 64\n")
    assert net.ok and net.output_shape == (64,)


@pytest.mark.parametrize("line,fragment", [("output 21.8M", "not a shape"), ("params 64x8x8", "a count, not a shape")])
def test_wrong_kind_of_figure(line, fragment):
    with pytest.raises(SpecError) as info:
        resdsl.compile_spec(text=CIFAR20 + f"expect {line}\n", name="t.res")
    assert fragment in info.value.message and info.value.span.line == 8


def test_the_example_in_docs_language_holds_for_resnet50():
    """docs/language.md's one `expect` example (it once mixed ResNet-34's parameters with ResNet-50's MACs)."""
    from conftest import ROOT

    line = next(line for line in (ROOT / "docs" / "language.md").read_text().splitlines()
                if line.startswith("`expect params"))
    text = f'extends "{ROOT / "specs" / "resnet50.res"}"\n' + line.split("`")[1] + "\n"
    net = resdsl.compile_spec(text=text, name="example.res")
    assert net.ok and len(net.expects) == 5, [r.to_json() for r in net.expects]
