"""specs/family/ (Wide ResNets, the CIFAR pre-activation ResNet-18, stochastic depth) against independent
hand-written references (tests/reference_family.py): the same parameter count, the reference's state_dict loads
strictly, the same outputs in eval mode and, with the same seed, in training mode (dropout and drop path included)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import resdsl  # noqa: E402
import reference_family as ref  # noqa: E402

CASES = {
    "wrn28_10": lambda: ref.WideResNet(28, 10, dropout=0.3),
    "wrn16_8": lambda: ref.WideResNet(16, 8),
    "wrn40_4": lambda: ref.WideResNet(40, 4),
    "preact_resnet18_cifar": ref.PreActResNet18,
    "resnet110_stochastic_depth": lambda: ref.StochasticDepthResNet(18, drop_rate=0.5),
    "resnet1202_stochastic_depth": lambda: ref.StochasticDepthResNet(200, drop_rate=0.5),
}


def _loaded(name: str, reference, path=None):
    """The spec's model (specs/family/NAME.res, or ``path``) with the reference's weights, after randomising the
    reference's BN parameters and statistics (so that a BN in the wrong place, or a missing one, changes the
    output)."""
    torch.manual_seed(0)
    model = resdsl.build_model(path or f"specs/family/{name}.res")
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5), torch.nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    model.load_state_dict(reference.state_dict(), strict=True)
    return model


def _same_outputs(model, reference, train: bool, seed: int = 3) -> None:
    x = torch.randn(4, 3, 32, 32)
    outs = []
    for m in (model, reference):
        m.train(train)
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(m(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_family_spec_matches_its_hand_written_reference(name, at_root):
    reference = CASES[name]()
    model = _loaded(name, reference)
    _same_outputs(model, reference, train=False)
    _same_outputs(model, reference, train=True)


def test_stochastic_depth_probabilities_follow_the_linear_decay_rule(at_root):
    """[SD] eq. (4): unit l of L = 54 drops F with probability 0.5 l / 54; the reference computes its own."""
    model = resdsl.build_model("specs/family/resnet110_stochastic_depth.res")
    reference = ref.StochasticDepthResNet(18, drop_rate=0.5)
    ours = [u.drop_path.p for layer in (model.layer1, model.layer2, model.layer3) for u in layer]
    theirs = [u.p for layer in (reference.layer1, reference.layer2, reference.layer3) for u in layer]
    assert ours == theirs and len(ours) == 54 and ours[-1] == 0.5


def test_per_sample_drop_path_matches_the_reference(at_root, tmp_path):
    """`per-sample` (timm's way) against the reference's per-sample mode: in training each sample's F dropped or
    scaled by 1/(1-p), in eval mode the identity; `per-batch` ([SD]'s way) is the parity case above."""
    spec = tmp_path / "sd_per_sample.res"
    spec.write_text(f'extends "{(at_root / "specs/family/resnet110_stochastic_depth.res").as_posix()}"\n'
                    "network resnet110_sd_per_sample\ndrop-path 0.5 linear per-sample\n")
    reference = ref.StochasticDepthResNet(18, drop_rate=0.5, per_batch=False)
    model = _loaded("", reference, path=spec)
    assert not any(getattr(m, "per_batch", False) for m in model.modules())
    _same_outputs(model, reference, train=True)
    _same_outputs(model, reference, train=False)


def test_stochastic_depth_is_random_in_training_only(at_root):
    model = _loaded("resnet110_stochastic_depth", ref.StochasticDepthResNet(18))
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval: no randomness
        model.train()
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        assert not torch.allclose(a, model(x))  # training: other units dropped


def test_wide_resnet_dropout_sits_between_the_convolutions(at_root, tmp_path):
    """Dropout right after the second BN-ReLU, before the second conv ([WRN] section 2.4): with the same seed the
    training outputs equal the reference's, whose dropout sits there; moved anywhere else, they would not."""
    spec = tmp_path / "wrn16_8_dropout.res"
    spec.write_text(f'extends "{(at_root / "specs/family/wrn16_8.res").as_posix()}"\nnetwork wrn16_8_dropout\n'
                    "unit basic dropout 0.3\n")
    reference = ref.WideResNet(16, 8, dropout=0.3)
    torch.manual_seed(0)
    model = resdsl.build_model(spec)
    model.load_state_dict(reference.state_dict(), strict=True)
    _same_outputs(model, reference, train=True)
    assert [type(m).__name__ for m in model.layer1[1].children()] == \
        ["BatchNorm2d", "Conv2d", "BatchNorm2d", "Dropout", "Conv2d"]
