"""Shape pass: every node gets its shape; impossible networks fail at the responsible spec text."""
from __future__ import annotations

import pytest

import resdsl
from resdsl.errors import SpecError
from conftest import CIFAR20


def test_shapes_of_resnet50(at_root):
    g = resdsl.compile_spec("specs/torchvision/resnet50.res").graph
    assert g.nodes["maxpool"]["shape"] == (64, 56, 56)
    assert [g.nodes[f"layer{i}.0.add"]["shape"] for i in (1, 2, 3, 4)] == [
        (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
    assert g.nodes["fc"]["shape"] == (1000,)


def _err(text) -> SpecError:
    with pytest.raises(SpecError) as info:
        resdsl.compile_spec(text=text, name="t.res")
    return info.value


def test_option_a_cannot_shrink_channels():
    err = _err(CIFAR20.replace("16x3, 32x3 /2, 64x3 /2", "64x1, 32x1 /2"))
    assert "cannot shrink channels (64 -> 32)" in err.message
    assert (err.span.line, err.span.column) == (6, 14)  # the '32x1 /2' stage entry


def test_spatial_size_shrinks_to_zero():
    err = _err(CIFAR20.replace("input 3x32x32", "input 3x2x2"))
    assert "shrinks to nothing in stage 3, unit 1: a 1x1 map cannot be downsampled by 2" in err.message
    assert (err.span.line, err.span.column) == (6, 23)


def test_shrinks_to_nothing_in_stem():
    err = _err(CIFAR20.replace("stem cifar 16", "stem conv 7x7 /2 16 pool max 3x3 /4")
               .replace("input 3x32x32", "input 3x6x6"))
    assert "shrinks to nothing" in err.message and err.span.line == 3


def test_stride_must_divide():
    err = _err(CIFAR20.replace("input 3x32x32", "input 3x30x30"))
    assert "downsamples a 15x15 map by 2" in err.message and err.span.line == 6


def test_identity_shortcut_mismatch():
    err = _err(CIFAR20.replace("shortcut A", "shortcut identity"))
    assert "shape mismatch at the addition in stage 2, unit 1" in err.message
    assert "shortcut A" in err.hint


def test_dataset_shape_change_rechecks():
    net = resdsl.compile_spec(text=CIFAR20.replace("input 3x32x32", "input 1x28x28"), name="t.res")
    assert net.graph.nodes["layer3.2.add"]["shape"] == (64, 7, 7)


def test_huge_numbers_are_range_errors():
    assert "units per stage" in _err(CIFAR20.replace("16x3,", "16x99999999999999999999,")).message
    assert "input height" in _err(CIFAR20.replace("3x32x32", "3x999999999x32")).message
    assert "at most" in _err(CIFAR20.replace("16x3, 32x3 /2, 64x3 /2", "16x3000, 32x3000 /2")).message
