"""The ResNet family beyond the two papers (issue 13): grouped convolutions (ResNeXt) and wider bottlenecks (Wide
ResNet-50-2). torchvision's own modules are the references: tests/test_backend_torch.py loads their state_dicts
strictly and compares outputs; here the language's new words and the combinations the papers never drew."""
import pytest
import torch

import resdsl

CIFAR_RESNEXT = """network cifar_resnext
input 3x32x32
stem cifar 64
unit bottleneck cardinality 8 base-width 16
order {order}
shortcut {shortcut}
stages 64x1, 128x1 /2
head avgpool fc 10
"""


@pytest.mark.parametrize("order", ["post", "preact"])
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnext_units_with_any_order_and_shortcut_build_and_count(order, shortcut):
    """ResNeXt units with option A's zero-padding or pre-activation: never in a paper, but well defined."""
    net = resdsl.compile_spec(text=CIFAR_RESNEXT.format(order=order, shortcut=shortcut))
    model = resdsl.build_model(net).eval()
    assert sum(p.numel() for p in model.parameters()) == net.params
    grouped = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    # inner width int(64 * 16 / 64) * 8 = 128 in the first stage, 256 in the second; 8 groups each
    assert [(m.in_channels, m.groups) for m in grouped] == [(128, 8), (256, 8)]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_a_grouped_convolution_costs_a_groups_share():
    plain, grouped = (resdsl.compile_spec(text=CIFAR_RESNEXT.replace("cardinality 8 base-width 16", words)
                                          .format(order="post", shortcut="B"))
                      for words in ("base-width 128", "cardinality 8 base-width 16"))
    # the same inner width (128, 256); only the 3x3 convs' weights and MACs shrink, by the 8 groups
    saved = sum(9 * w * w - 9 * w * w // 8 for w in (128, 256))
    assert plain.params - grouped.params == saved


def test_width_factor_is_base_width_64_times_it():
    one, two = (resdsl.compile_spec(text=CIFAR_RESNEXT.replace("cardinality 8 base-width 16", words)
                                    .format(order="post", shortcut="B")).params
                for words in ("width-factor 2", "base-width 128"))
    assert one == two


@pytest.mark.parametrize("words, message, column", [
    ("unit bottleneck base-width 4 width-factor 2", "give 'base-width' or 'width-factor', not both", 43),
    ("unit bottleneck width-factor 2 base-width 4", "give 'base-width' or 'width-factor', not both", 43),  # 2nd
    ("unit bottleneck cardinality 0", "cardinality must be between 1 and 1024, got 0", 29),
    ("unit bottleneck cardinality 32 cardinality 64", "'cardinality' given twice in one unit statement", 44),
    ("unit basic cardinality 32", "", 12),  # only a bottleneck has a grouped conv: the grammar says what may follow
])
def test_bad_family_words_are_located(words, message, column):
    text = CIFAR_RESNEXT.replace("unit bottleneck cardinality 8 base-width 16", words).format(order="post",
                                                                                              shortcut="B")
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.compile_spec(text=text)
    assert info.value.span.line == 4 and info.value.span.column == column and message in info.value.message
