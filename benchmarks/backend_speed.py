"""Backend speed: forward+backward time of resdsl modules against torchvision, timm and a hand-written CIFAR ResNet
(the family of issue 13 included: ResNeXt-50 32x4d against torchvision's, SE-ResNet-50 against timm's), and the
time to build the deepest models.

Interleaved runs (A, B, A, B, ...), medians and the ratio resdsl / reference; target ratio <= 1.02.
Usage: python benchmarks/backend_speed.py [--rounds N] [--device cpu|cuda] [--record]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import resdsl  # noqa: E402


class HandBasic(nn.Module):
    """A hand-written [R] CIFAR basic unit, option A, for comparison."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        sc = x if self.stride == 1 else x[:, :, ::self.stride, ::self.stride]
        if self.extra:
            sc = F.pad(sc, (0, 0, 0, 0, 0, self.extra))
        return F.relu(out + sc, inplace=True)


class HandCifarResNet(nn.Module):
    def __init__(self, n, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(HandBasic(cin, width, stride if i == 0 else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x)), inplace=True))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def step_time(model, x, y, sync):
    model.zero_grad(set_to_none=True)
    t = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    sync()
    return time.perf_counter() - t


def compare(name, ours, ref, shape, batch, rounds, device):
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ours, ref = ours.to(device).train(), ref.to(device).train()
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    for m in (ours, ref):  # warm-up
        for _ in range(2):
            step_time(m, x, y, sync)
    a, b = [], []
    for _ in range(rounds):
        a.append(step_time(ours, x, y, sync))
        b.append(step_time(ref, x, y, sync))
    ma, mb = statistics.median(a), statistics.median(b)
    row = f"| {name} | {batch}x{'x'.join(map(str, shape))} | {ma * 1000:.1f} | {mb * 1000:.1f} | {ma / mb:.3f} |"
    return row, ma / mb


def training_throughput(model, batch, steps, device, fast):
    """Training images/s on synthetic data: SGD steps, fp32 eager or bf16 autocast + channels_last + compile."""
    model = model.to(device).train()
    if fast:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    step_model = torch.compile(model) if fast else model
    x = torch.randn(batch, 3, 224, 224, device=device)
    if fast:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=fast):
            loss = F.cross_entropy(step_model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5 if fast else 3):  # warm-up (and compilation)
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - t)


def build_time(spec, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        resdsl.build_model(spec)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def family_references(big: bool) -> list[tuple]:
    """timm's SE-ResNet-50 (SE as timm's SEModule), if timm is installed (`pip install timm`)."""
    try:
        import timm
    except ImportError:
        print("timm is not installed: SE-ResNet-50 not measured", flush=True)
        return []
    return [("seresnet50 vs timm", "specs/timm/seresnet50.res", timm.create_model("seresnet50"), (3, 224, 224),
             64 if big else 4)]


def build_time_rows(torchvision) -> list[str]:
    """The build-time table: resdsl's deepest specs against a hand-written CIFAR ResNet-1202 and torchvision."""
    build_rows = ["| model | build time, median of 3 (s) |", "|---|---|"]
    for spec in ("specs/resnet1202.res", "specs/resnet1001_preact.res", "specs/torchvision/resnet152.res"):
        build_rows.append(f"| resdsl {spec} | {build_time(str(ROOT / spec)):.3f} |")
    hand = []
    for _ in range(3):
        t = time.perf_counter()
        HandCifarResNet(200)
        hand.append(time.perf_counter() - t)
    build_rows.append(f"| hand-written CIFAR ResNet-1202 (constructor only, PyTorch default init) | "
                      f"{statistics.median(hand):.3f} |")
    t = time.perf_counter()
    torchvision.models.resnet152()
    build_rows.append(f"| torchvision resnet152() | {time.perf_counter() - t:.3f} |")
    return build_rows


def main() -> int:
    import torchvision

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--throughput", action="store_true", help="ResNet-50 training images/s, batch 256 (GPU)")
    ap.add_argument("--throughput-batch", type=int, default=256)
    ap.add_argument("--throughput-steps", type=int, default=30)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = ["| model | input | resdsl fwd+bwd (ms) | reference fwd+bwd (ms) | ratio |", "|---|---|---|---|---|"]
    ratios = []
    big = args.device == "cuda"
    for name, spec, ref, shape, batch in (
        ("resnet18 vs torchvision", "specs/torchvision/resnet18.res", torchvision.models.resnet18(), (3, 224, 224),
         64 if big else 8),
        ("resnet50 vs torchvision", "specs/torchvision/resnet50.res", torchvision.models.resnet50(), (3, 224, 224),
         64 if big else 4),
        ("CIFAR resnet56 vs hand-written", "specs/resnet56.res", HandCifarResNet(9), (3, 32, 32), 128 if big else 32),
        ("resnext50_32x4d vs torchvision", "specs/torchvision/resnext50_32x4d.res",
         torchvision.models.resnext50_32x4d(), (3, 224, 224), 64 if big else 4),
        *family_references(big),
    ):
        row, ratio = compare(name, resdsl.build_model(str(ROOT / spec)), ref, shape, batch, args.rounds, args.device)
        print(row, flush=True)
        rows.append(row)
        ratios.append(ratio)
    build_rows = build_time_rows(torchvision)
    print("\n".join(build_rows))
    if args.throughput:
        rows_t = ["| ResNet-50 v1.5 training, synthetic | resdsl img/s | torchvision img/s | ratio |",
                  "|---|---|---|---|"]
        for fast in (False, True):
            ours = training_throughput(resdsl.build_model(str(ROOT / "specs/torchvision/resnet50.res")),
                                       args.throughput_batch, args.throughput_steps, args.device, fast)
            ref = training_throughput(torchvision.models.resnet50(), args.throughput_batch, args.throughput_steps,
                                      args.device, fast)
            label = "bf16 + channels_last + torch.compile" if fast else "fp32 eager"
            rows_t.append(f"| {label}, batch {args.throughput_batch} | {ours:.0f} | {ref:.0f} | {ours / ref:.3f} |")
            print(rows_t[-1], flush=True)
        build_rows += [""] + rows_t
    verdict = f"worst ratio {max(ratios):.3f} ({'meets' if max(ratios) <= 1.02 else 'misses'} the 1.02 target)"
    body = "\n".join(rows) + f"\n\n{verdict}; medians of {args.rounds} interleaved rounds, train mode, fp32.\n\n" + \
        "\n".join(build_rows)
    print(verdict)
    if args.record:
        from _record import record

        record(f"Backend speed, {args.device} (issue 3)",
               f"python benchmarks/backend_speed.py --device {args.device} --record", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
