"""The model-alone figures beside which benchmarks/gpu_train.py sets the trainer's: ResNet-50's training images/s on
synthetic tensors, and the whole-step CUDA-graph floor of a small ResNet."""
from __future__ import annotations

import inspect
import statistics
import time

import torch
import torch.nn.functional as F


def model_only(classes: int, batch: int, steps: int, device: str, size: int, compiled: bool = False) -> float:
    """Training images/s of ResNet-50 alone on synthetic tensors: bf16 autocast, channels_last, SGD; the model
    eager or torch.compile'd (compiled in the warm-up steps, which are not timed)."""
    import resdsl

    torch.manual_seed(0)
    cl = torch.channels_last
    model = resdsl.build_model("resnet50", num_classes=classes).to(device).train().to(memory_format=cl)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    net = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=cl)
    y = torch.randint(0, classes, (batch,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for i in range(steps + 3):  # 3 warm-up steps (cuDNN autotuning), then ``steps`` timed ones
        if i == 3:
            sync()
            start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    seconds = time.perf_counter() - start
    del model, net, opt, x, loss
    torch.cuda.empty_cache() if device == "cuda" else None
    return batch * steps / seconds


def graph_step_time(spec: str, batch: int, bf16: bool, replays: int, warm: int = 5) -> float:
    """Seconds per replay of one CUDA graph holding forward, backward and the SGD step (PyTorch's recipe)."""
    import resdsl

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True  # as the trainer sets it
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = resdsl.build_model(spec, num_classes=10, in_channels=1, input_size=(28, 28)).cuda().train()
    model = model.to(memory_format=fmt)
    kind = "capturable" if "capturable" in inspect.signature(torch.optim.SGD).parameters else "foreach"
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, **{kind: True})
    x = torch.randn(batch, 1, 28, 28, device="cuda").contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warm):
            opt.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph, stream=side):  # the warm-up's stream: its library handles exist already
        step()
    times = []
    for rep in range(4):  # the first round warms up
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        times += [start.elapsed_time(end) / 1000 / replays] if rep else []
    del graph  # the model and optimizer go with this frame
    torch.cuda.empty_cache()
    return statistics.median(times)
