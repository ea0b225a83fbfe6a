"""Hand-written plain-PyTorch reference networks for the family tests.

Each class is written from the paper's text, not from resdsl, and its parameter names match resdsl's
generated modules so that state_dicts load with strict=True.

- WideResNet(depth, widen_factor): Zagoruyko & Komodakis 2016, WRN-d-k for CIFAR (layout of the authors'
  code and the xternalz port): pre-activation basic blocks, a bare stem conv, 1x1 projection without BN,
  where the activated input feeds both paths of a projection unit; final BN-ReLU before the pool.
- PreActResNet18(): the CIFAR pre-activation ResNet-18 as commonly written (kuangliu/pytorch-cifar):
  the projection takes the activated input, the identity shortcut the raw input; no final BN-ReLU.
- StochasticDepthResNet(n): Huang et al. 2016, the 6n+2 CIFAR ResNet of He et al. with option-A
  (subsample + zero-channel) shortcuts, post-activation units and drop-path with the linear decay rule
  p_l = drop_rate * l / L: per mini-batch as in the paper (eq. 2 in training, eq. 5 at test time), or per
  sample as timm's drop_path.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class WideBlock(nn.Module):
    def __init__(self, cin, cout, stride, dropout):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), conv3x3(cout, cout)
        self.dropout = dropout
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False))

    def forward(self, x):
        a = F.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(a)
        out = F.relu(self.bn2(self.conv1(a)))
        out = F.dropout(out, self.dropout, self.training)
        return self.conv2(out) + shortcut


class WideResNet(nn.Module):
    def __init__(self, depth, widen_factor, dropout=0.0, num_classes=10):
        super().__init__()
        assert (depth - 4) % 6 == 0, "WRN depth must be 6N + 4"
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = conv3x3(3, 16)
        cin = 16
        for s, (w, stride) in enumerate(zip(widths, [1, 2, 2]), start=1):
            units = []
            for j in range(n):
                units.append(WideBlock(cin, w, stride if j == 0 else 1, dropout))
                cin = w
            setattr(self, f"layer{s}", nn.Sequential(*units))
        self.final_bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.final_bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class PreActBlock(WideBlock):
    """Same arithmetic as a WRN unit without dropout: projection on relu(bn1(x)), identity on raw x."""

    def __init__(self, cin, cout, stride):
        super().__init__(cin, cout, stride, dropout=0.0)


class PreActResNet18(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = conv3x3(3, 64)
        cin = 64
        for s, (w, stride) in enumerate(zip([64, 128, 256, 512], [1, 2, 2, 2]), start=1):
            setattr(self, f"layer{s}", nn.Sequential(PreActBlock(cin, w, stride), PreActBlock(w, w, 1)))
            cin = w
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class StochasticDepthBlock(nn.Module):
    def __init__(self, cin, cout, stride, p, per_batch):
        super().__init__()
        self.per_batch = per_batch
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin
        self.p = float(p)

    def shortcut(self, x):
        if self.stride == 1 and self.extra == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # append zero channels ([R] option A)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        survival = 1.0 - self.p
        if self.per_batch and self.p > 0:
            if self.training:  # eq. (2): b_l ~ Bernoulli(p_l), one draw for the mini-batch; F kept unscaled
                out = out * torch.empty(1, 1, 1, 1, dtype=out.dtype, device=out.device).bernoulli_(survival)
            else:  # eq. (5): at test time F is weighted by its survival probability
                out = out * survival
        elif self.training and self.p > 0:
            keep = 1.0 - self.p
            mask = torch.empty(out.shape[0], 1, 1, 1, dtype=out.dtype, device=out.device).bernoulli_(keep)
            out = out * mask.div_(keep)  # the scaled mask, as timm's drop_path: the same rounding in 600 units
        return F.relu(out + self.shortcut(x))


class StochasticDepthResNet(nn.Module):
    def __init__(self, n, drop_rate=0.5, num_classes=10, per_batch=True):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(3, 16), nn.BatchNorm2d(16)
        total, l, cin = 3 * n, 0, 16
        for s, (w, stride) in enumerate(zip([16, 32, 64], [1, 2, 2]), start=1):
            units = []
            for j in range(n):
                l += 1
                units.append(StochasticDepthBlock(cin, w, stride if j == 0 else 1, drop_rate * l / total, per_batch))
                cin = w
            setattr(self, f"layer{s}", nn.Sequential(*units))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
