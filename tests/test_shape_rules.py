"""Feature-map sizes follow PyTorch's convolution arithmetic (docs/language.md, "Feature-map sizes").

out = floor((H + 2*pad - k) / stride) + 1 for every conv and pool, with pad = k // 2 for odd windows and
(k - stride) // 2 (at least 0) for even ones; option A subsamples to ceil(H / stride). A stride that does not
divide the map is no error; only a map that vanishes is, located at the statement responsible. Each case is
checked against the model resdsl.build_model builds (forward hooks on the stages) and, where one exists, against
torchvision's own network.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import resdsl
from resdsl.lower import window_padding

SMALL = """\
network t
input {input}
stem {stem}
unit basic
shortcut {shortcut}
stages {stages}
head avgpool fc 10
"""


def spec(stem="cifar 16", input="3x32x32", shortcut="B", stages="16x1, 32x1 /2"):
    return SMALL.format(stem=stem, input=input, shortcut=shortcut, stages=stages)


def compiled_shapes(net) -> list[tuple]:
    """The compiler's (C, H, W) after the stem and after each stage, then the output shape."""
    rows = [net.parts["stem"]["output"]] + [r["output"] for r in net.stages()] + [net.output_shape]
    return [tuple(r) for r in rows]


def model_shapes(model: nn.Module, input_shape, stages: int) -> list[tuple]:
    """The same shapes measured on a torch model with torchvision's module names (layer1, layer2, ...)."""
    seen = []

    def before(module, args):
        seen.append(tuple(args[0].shape[1:]))

    def after(module, args, out):
        seen.append(tuple(out.shape[1:]))

    hooks = [model.layer1.register_forward_pre_hook(before)]  # layer1's input is the stem's output
    hooks += [getattr(model, f"layer{i}").register_forward_hook(after) for i in range(1, stages + 1)]
    with torch.no_grad():
        y = model.eval()(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    return seen + [tuple(y.shape[1:])]


def hooked_macs(model: nn.Module, input_shape) -> int:
    """Multiply-accumulates of every Conv2d and Linear for one image, from the output sizes torch produces."""
    total = 0

    def count(m, args, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += m.in_features * m.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    return total


def check_against_model(net) -> nn.Module:
    """The compiler's stage shapes and MACs equal what the built model produces; returns the model."""
    model = resdsl.build_model(net)
    assert model_shapes(model, net.input_shape, len(net.stages())) == compiled_shapes(net)
    assert hooked_macs(model, net.input_shape) == net.macs
    return model


def compile_text(text):
    return resdsl.compile_spec(text=text, name="t.res")


# ---- the padding rule ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k,stride,pad", [
    (7, 2, 3), (3, 2, 1), (3, 1, 1), (1, 2, 0), (5, 4, 2),  # odd: centred, k // 2 (torchvision)
    (4, 4, 0), (16, 16, 0), (2, 2, 0),                     # even, non-overlapping: patchify stems, 2x2 pools
    (4, 2, 1), (2, 1, 0), (2, 4, 0),                       # even, overlapping or sparse
])
def test_window_padding(k, stride, pad):
    assert window_padding(k, stride) == pad


# ---- the stem --------------------------------------------------------------------------------------------------

def test_avg_pool_stem_builds_and_runs():
    net = compile_text(spec(stem="conv 3x3 16 pool avg 2x2 /2"))
    g = net.graph
    assert g.nodes["pool1"]["op"] == "avgpool" and g.nodes["avgpool"]["op"] == "global_avgpool"
    assert compiled_shapes(net) == [(16, 16, 16), (16, 16, 16), (32, 8, 8), (10,)]
    model = check_against_model(net)
    assert isinstance(model.pool1, nn.AvgPool2d) and model.pool1.padding == 0
    assert tuple(model(torch.zeros(2, 3, 32, 32)).shape) == (2, 10)


def test_avg_pool_stem_keeps_torchvision_weight_names(at_root):
    """Pools hold no weights: a ResNet-18 with an average-pool stem loads torchvision's state_dict strictly."""
    text = open("specs/torchvision/resnet18.res").read().replace("stem imagenet", "stem conv 7x7 /2 64 pool avg 3x3 /2")
    model = resdsl.build_model(resdsl.compile_spec(text=text, name="specs/torchvision/avg.res"))
    model.load_state_dict(torchvision.models.resnet18().state_dict(), strict=True)


@pytest.mark.parametrize("stem,input,stem_out", [
    ("conv 4x4 /4 16", "3x64x64", (16, 16, 16)),                # patchify: 4x4/4, padding 0
    ("conv 3x3 16 pool max 2x2 /2", "3x32x32", (16, 16, 16)),  # 2x2/2 pool, padding 0
    ("conv 3x3 16 pool avg 2x2 /2", "3x32x32", (16, 16, 16)),
    ("conv 4x4 /2 16", "3x64x64", (16, 32, 32)),                # overlapping even window: padding 1
    ("conv 4x4 /4 16", "3x66x66", (16, 16, 16)),                # floor(66 / 4): the last two rows are dropped
])
def test_even_windows_give_the_expected_map(stem, input, stem_out):
    net = compile_text(spec(stem=stem, input=input))
    assert compiled_shapes(net)[0] == stem_out
    check_against_model(net)


def test_patchify_conv_is_unpadded():
    model = resdsl.build_model(compile_text(spec(stem="conv 4x4 /4 16", input="3x64x64")))
    assert model.conv1.padding == (0, 0) and model.conv1.stride == (4, 4)


# ---- maps that a stride does not divide --------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_at_225_matches_torchvision(arch, at_root):
    net = resdsl.compile_spec(f"specs/torchvision/{arch}.res", input_size=(225, 225))
    ours = check_against_model(net)
    theirs = getattr(torchvision.models, arch)()
    assert model_shapes(theirs, (3, 225, 225), 4) == compiled_shapes(net)
    assert compiled_shapes(net)[1:5] == [(c, n, n) for c, n in zip(
        [64, 128, 256, 512] if arch == "resnet18" else [256, 512, 1024, 2048], [57, 29, 15, 8])]
    assert hooked_macs(theirs, (3, 225, 225)) == net.macs
    assert ours.fc.out_features == 1000


@pytest.mark.parametrize("rel", ["specs/resnet50.res", "specs/resnet18_optionA.res"])
def test_paper_networks_at_odd_sizes_match_the_built_model(rel, at_root):
    """The stride on the first 1x1 ([R]) and option A's subsampling, on odd maps."""
    check_against_model(resdsl.compile_spec(rel, input_size=(225, 199)))


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_four_stages_on_28x28(shortcut):
    net = compile_text(spec(input="1x28x28", shortcut=shortcut, stages="16x1, 32x1 /2, 64x1 /2, 128x1 /2"))
    assert [s[1:] for s in compiled_shapes(net)[1:5]] == [(28, 28), (14, 14), (7, 7), (4, 4)]
    check_against_model(net)


def test_macs_use_the_floored_sizes():
    net = compile_text(spec(input="3x33x33", stages="16x1, 32x1 /2"))
    conv = net.graph.nodes["layer2.0.conv1"]
    assert conv["shape"] == (32, 17, 17) and conv["macs"] == 3 * 3 * 16 * 32 * 17 * 17


# ---- maps that vanish ------------------------------------------------------------------------------------------

def _err(text) -> resdsl.SpecError:
    with pytest.raises(resdsl.SpecError) as info:
        compile_text(text)
    return info.value


def test_a_vanishing_stem_conv_is_located_at_the_stem():
    err = _err(spec(stem="conv 4x4 /4 16", input="3x3x3"))
    assert err.message == ("the feature map shrinks to nothing in the stem: the 3x3 map padded by 0 is smaller "
                           "than the 4x4/4 window")
    assert (err.span.line, err.span.column) == (3, 6) and "stem" in err.hint  # at its `conv`


def test_a_vanishing_conv_of_a_stem_list_is_located_at_that_conv():
    err = _err(spec(stem="conv 3x3 /2 16, conv 4x4 /4 16", input="3x5x5"))  # 5x5 -> 3x3, then 4x4/4 fails
    assert "the 3x3 map padded by 0 is smaller than the 4x4/4 window" in err.message
    assert (err.span.line, err.span.column) == (3, 22)


def test_a_vanishing_stem_pool_is_located_at_the_pool():
    err = _err(spec(stem="conv 4x4 /4 16 pool max 2x2 /2", input="3x4x4"))  # conv -> 1x1, pool needs 2x2
    assert "shrinks to nothing in the stem: the 1x1 map padded by 0 is smaller than the 2x2/2 window" in err.message
    assert (err.span.line, err.span.column) == (3, 21)


def test_one_pixel_maps_survive_every_stage():
    """A 3x3 (or 1x1) window with centred padding never empties a map, so stride after stride is no error."""
    net = compile_text(spec(input="3x4x4", stages="16x1, 32x1 /2, 64x1 /2, 128x1 /2, 256x1 /2"))
    assert [s[1:] for s in compiled_shapes(net)[1:6]] == [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    check_against_model(net)
