"""`init zero-last-bn` and `init zero-last`: each unit starts as its shortcut alone, and its F still trains.
`zero-last-bn` under a pre-activation order once zeroed the BN before F's last ReLU, which then saw 0, where its
gradient is 0: F never trained, without a word."""
from __future__ import annotations

import pytest

import resdsl
from conftest import CIFAR20

# (order, word, the unit's zeroed layer): each order whose F ends in a BN or a convolution
ZERO_STARTS = [("post", "zero-last-bn", "bn2"), ("relu-preact", "zero-last-bn", "bn2"), ("post", "zero-last", "bn2"),
               ("relu-preact", "zero-last", "bn2"), ("preact", "zero-last", "conv2"),
               ("bn-after-add", "zero-last", "conv2")]


def _zeroed(text: str) -> list[str]:
    return sorted(n for n, d in resdsl.compile_spec(text=text).graph.nodes(data=True) if d.get("zero_init"))


@pytest.mark.parametrize("order, word, zeroed", ZERO_STARTS)
def test_the_layer_that_ends_f_is_zeroed_once_in_every_unit(order, word, zeroed):
    marked = _zeroed(CIFAR20 + f"order {order}\ninit he fan-out {word}\n")
    assert len(marked) == 9 and all(n.endswith("." + zeroed) for n in marked), marked


def test_zero_last_follows_each_stages_order():
    """timm's zero_init_last: the last layer of each F, whichever it is, also where stages differ in order."""
    marked = _zeroed(CIFAR20 + "order post\nstage 2: order preact\ninit zero-last\n")
    assert [n.rsplit(".", 1)[1] for n in marked] == ["bn2"] * 3 + ["conv2"] * 3 + ["bn2"] * 3, marked


@pytest.mark.parametrize("lines, says, hint", [
    ("order preact\ninit zero-last-bn", "'zero-last-bn' does not fit this F: under order preact, layer1.0's F ends "
     "in a convolution, and the ReLU after its last BN would see 0, where its gradient is 0",
     "'zero-last' zeroes F's last layer, whichever it is: that convolution here"),
    ("order bn-after-add\nstage 1: unit single\ninit zero-last-bn",
     "layer1.0's F ends in a convolution, and holds no BN", "'zero-last' zeroes"),
    ("order relu-before-add\ninit zero-last", "'zero-last' would stop F from ever training: under order "
     "relu-before-add, layer1.0's F ends in a ReLU, which would see 0", "leave it out"),
    ("stage 2: order relu-before-add\ninit zero-last-bn", "under order relu-before-add (stage 2's), layer2.0's F ends "
     "in a ReLU", "leave it out, or give stage 2 another order"),
    ("init zero-last-bn zero-last", "'zero-last-bn' and 'zero-last' both start F at zero", "its last BN alone"),
])
def test_a_zero_start_that_f_could_not_train_from_is_refused_at_the_init_line(lines, says, hint):
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.compile_spec(text=CIFAR20 + lines + "\n")
    err = info.value
    assert says in err.message and hint in err.hint, (err.message, err.hint)
    assert err.span.line == CIFAR20.count("\n") + lines.count("\n") + 1


@pytest.mark.parametrize("order, word, zeroed", ZERO_STARTS)
def test_a_zeroed_last_layer_of_f_learns(order, word, zeroed):
    """F(x) = 0 at the start, and the zeroed layer gets a gradient (a zero BN before a ReLU got none)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = resdsl.build_model("network z\ninput 3x8x8\nstem cifar 8\nunit basic\nshortcut A\nstages 8x2, 16x1 /2\n"
                               f"order {order}\ninit he {word}\nhead avgpool fc 3\n")
    layers = [getattr(u, zeroed) for stage in (model.layer1, model.layer2) for u in stage]
    assert all(torch.all(m.weight == 0) for m in layers)
    out = {}
    hook = model.layer1[1].register_forward_hook(lambda m, args, y: out.update(x=args[0], y=y))
    model.train()(torch.randn(4, 3, 8, 8)).square().sum().backward()
    hook.remove()
    if order in ("post", "preact"):  # there the unit adds nothing else to its identity shortcut: F(x) = 0 shows
        torch.testing.assert_close(out["y"], out["x"] if order == "preact" else out["x"].relu(), rtol=0, atol=0)
    assert all(m.weight.grad.abs().sum() > 0 for m in layers)
