"""specs/timm/ against timm's own modules (random init, nothing downloaded): the same parameter count, timm's
state_dict loads strictly, and the same outputs in eval mode."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

import resdsl  # noqa: E402
from resdsl.backends.python_source import emit_python  # noqa: E402
from resdsl.backends.torch_module import load_source  # noqa: E402

TIMM = ["resnet18d", "resnet26", "resnet26d", "resnet50d", "resnet101d", "seresnet50", "seresnext50_32x4d"]


def _check(model, name: str, size: int = 224) -> None:
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    for m in ref.modules():  # non-trivial BNs (timm zero-initialises each unit's last), so that every path counts
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    model.load_state_dict(ref.state_dict(), strict=True)
    model.eval(), ref.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-5)


def _same_in_training(model, ref):
    """``ref``'s weights in ``model``, both in training mode from one seed: the same outputs (the same units
    dropped); (the input, our output)."""
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(4, 3, 64, 64)
    outs = []
    for m in (model.train(), ref.train()):
        torch.manual_seed(7)
        outs.append(m(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-5)
    return x, outs[0]


@pytest.mark.parametrize("name", TIMM)
def test_timm_parity(name, at_root):
    _check(resdsl.build_model(f"specs/timm/{name}.res"), name)


def test_odd_sizes_go_through_the_average_pool_shortcut_as_in_timm(at_root):
    """ResNet-D's 2x2/2 pool keeps a last, partial window (ceil mode): a 225x225 input gives odd maps in every
    stage, and the shapes the compiler predicts are the ones timm computes."""
    net = resdsl.compile_spec("specs/timm/resnet18d.res", input_size=(225, 225))
    _check(load_source(emit_python(net), net.name)["build"](), "resnet18d", size=225)
    assert [s["output"] for s in net.parts.values()][1:5] == [[64, 57, 57], [128, 29, 29], [256, 15, 15], [512, 8, 8]]


def test_drop_path_from_zero_is_timms_drop_path_rate(at_root, tmp_path):
    """`drop-path P from-zero` is timm's drop_path_rate: the same probability in every unit, and in training the
    same units of the same samples dropped (both draw one Bernoulli mask per unit from torch's generator)."""
    spec = tmp_path / "resnet26d_dp.res"
    spec.write_text(f'extends "{(at_root / "specs/timm/resnet26d.res").as_posix()}"\nnetwork resnet26d_dp\n'
                    "drop-path 0.2 from-zero\n")
    model = resdsl.build_model(spec)
    ref = timm.create_model("resnet26d", pretrained=False, drop_path_rate=0.2)
    ours = [u.drop_path.p for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for u in layer]
    theirs = [b.drop_path.drop_prob if b.drop_path is not None else 0.0
              for layer in (ref.layer1, ref.layer2, ref.layer3, ref.layer4) for b in layer]
    assert ours == pytest.approx(theirs, abs=1e-12) and ours[-1] == pytest.approx(0.2) and ours[0] == 0
    for m in ref.modules():  # timm zero-initialises each unit's last BN, which would make F, dropped or not, zero
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    x, ours = _same_in_training(model, ref)
    torch.manual_seed(8)
    assert not torch.allclose(model(x), ours)  # another draw drops other units: the masks are random


def test_head_dropout_is_timms_drop_rate(at_root, tmp_path):
    """`head avgpool dropout P fc N` is timm's drop_rate: dropout on the pooled features before the fc, no weights of
    its own (timm's state_dict loads strictly), the identity in eval mode and in training the same units dropped."""
    spec = tmp_path / "resnet26d_drop.res"
    spec.write_text(f'extends "{(at_root / "specs/timm/resnet26d.res").as_posix()}"\nnetwork resnet26d_drop\n'
                    "head avgpool dropout 0.25 fc 1000\n")
    model = resdsl.build_model(spec)
    assert isinstance(model.dropout, torch.nn.Dropout) and model.dropout.p == 0.25
    _check(model, "resnet26d", size=64)  # eval mode
    ref = timm.create_model("resnet26d", pretrained=False, drop_rate=0.25)
    x, ours = _same_in_training(model, ref)
    no_dropout = resdsl.build_model(f"{at_root}/specs/timm/resnet26d.res")
    no_dropout.load_state_dict(ref.state_dict(), strict=True)
    torch.manual_seed(7)
    assert not torch.allclose(no_dropout.train()(x), ours)  # the dropout is there in training
