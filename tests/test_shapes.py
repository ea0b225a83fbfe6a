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


def test_option_a_keeps_the_channels_where_a_stage_only_strides():
    """A stage of the same width that halves the map (16 -> 16 /2): option A's shortcut subsamples and pads no
    channel; only fewer channels are an error."""
    g = resdsl.compile_spec(text=CIFAR20.replace("16x3, 32x3 /2, 64x3 /2", "16x1, 16x1 /2"), name="t.res").graph
    assert g.nodes["layer2.0.add"]["shape"] == (16, 16, 16)


def test_a_strided_3x3_keeps_a_one_pixel_map():
    # floor((1 + 2*1 - 3) / 2) + 1 = 1: PyTorch keeps a 1x1 map through a 3x3/2 conv, so this is no error
    g = resdsl.compile_spec(text=CIFAR20.replace("input 3x32x32", "input 3x2x2"), name="t.res").graph
    assert [g.nodes[f"layer{i}.0.add"]["shape"] for i in (1, 2, 3)] == [(16, 2, 2), (32, 1, 1), (64, 1, 1)]


def test_shrinks_to_nothing_in_stem():
    # conv 7x7/2 pad 3: floor((6 + 6 - 7) / 2) + 1 = 3; pool 4x4/4 pad 0: floor((3 - 4) / 4) + 1 = 0
    err = _err(CIFAR20.replace("stem cifar 16", "stem conv 7x7 /2 16 pool avg 4x4 /4")
               .replace("input 3x32x32", "input 3x6x6"))
    assert "shrinks to nothing in the stem: the 3x3 map padded by 0 is smaller than the 4x4/4 window" in err.message
    assert (err.span.line, err.span.column) == (3, 21)  # the pool, on the stem line


def test_a_stride_that_does_not_divide_floors():
    g = resdsl.compile_spec(text=CIFAR20.replace("input 3x32x32", "input 3x30x30"), name="t.res").graph
    assert g.nodes["layer3.0.add"]["shape"] == (64, 8, 8)  # 30 -> 15 -> ceil(15 / 2) = 8, on both paths


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
