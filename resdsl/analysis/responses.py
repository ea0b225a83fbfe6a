"""[R] Fig. 7, "Standard deviations (std) of layer responses on CIFAR-10. The responses are the outputs of each
3x3 layer, after BN and before nonlinearity. Top: the layers are shown in their original order. Bottom: the
responses are ranked in descending order."

[R] 4.2: "The responses are the outputs of each 3x3 layer, after BN and before other nonlinearity
(ReLU/addition). For ResNets, this analysis reveals the response strength of the residual functions."

Which layers. Every 3x3 convolution, in the order the network runs them: the stem's too when it is 3x3 (the
CIFAR nets' first layer is a 3x3 layer, so plain-20 and ResNet-20 have 19 of them), the middle conv of a bottleneck
unit, never a 1x1 projection, gate or a 7x7 ImageNet stem ("each 3x3 layer", literally).

Which tensor. The output of the BN that takes the 3x3 conv's output as its input, i.e. before the ReLU and
before the addition. The pairing is found by watching one forward pass (:func:`find_layers`): a BN is a conv's
when the very tensor the conv returned, unmodified, is what the BN receives. This follows what runs, so it works
for any ``nn.Module`` (resdsl's, torchvision's, an emitted trainer's), whereas module registration order pairs a
pre-activation unit's conv with the next unit's BN, and the compiled IR is not at hand for a bare model.

Pre-activation basic units ([I] Fig. 4e; also 4b, BN after addition): the last 3x3 conv of each residual
function feeds the addition with no BN of its own; the next BN belongs to the next unit (or to the sum). There is
no "after BN" response to take, so with ``at="auto"`` the responses are then the 3x3 convs' own outputs, for every
layer of that network alike (mixing BN outputs, whose scale BN sets, with raw conv outputs would make the curve
meaningless): the residual functions' response strength, which is what [R] says the figure reveals. ``at="bn"``
refuses such a network; ``at="conv"`` takes conv outputs for any network. A pre-activation bottleneck unit's 3x3
conv does feed a BN directly (the unit's next pre-activation, before the ReLU and the 1x1 conv), and so does a
pre-activation net's stem (the first unit's shared BN): there, the responses are those BNs' outputs, as the
paper's words read.

The std is over all elements of a layer's response over the whole test set (population std, correction 0),
from running float64 sums and sums of squares, so no activation is kept.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

from ..train.rundir import CHECKPOINT, RunDirError, data_differences, read_config

TAKEN_AT = ("auto", "bn", "conv")


class ResponsesError(Exception):
    """The responses cannot be measured as asked; the message says why and what to do instead."""


# ---------------------------------------------------------------------------------------------------
# which layers


def find_layers(model, x, at: str = "auto") -> tuple[list[tuple[str, str]], str]:
    """``([(3x3 conv name, name of the module whose output is its response), ...], "bn" or "conv")`` for one
    forward pass of the images ``x``, in the order the convs run ("the layers ... in their original order")."""
    import torch
    from torch import nn

    if at not in TAKEN_AT:
        raise ResponsesError(f"responses are taken at {' or '.join(TAKEN_AT)}, not {at!r}")
    convs = {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (3, 3)}
    bns = {m: n for n, m in model.named_modules() if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm))}
    order, bn_of, last = [], {}, {}

    def conv_ran(mod, inputs, out):
        order.append(convs[mod])
        # the output tensor and its version counter: an in-place op between the conv and a BN (a ReLU with
        # inplace=True returns the same tensor object) bumps the version, so that BN is not the conv's
        last.update(name=convs[mod], out=out, version=out._version)

    def bn_runs(mod, inputs):
        if last and inputs[0] is last["out"] and inputs[0]._version == last["version"]:
            bn_of.setdefault(last["name"], bns[mod])
        last.clear()

    hooks = [m.register_forward_hook(conv_ran) for m in convs] + [m.register_forward_pre_hook(bn_runs) for m in bns]
    was_training = model.training
    model.eval()  # a training-mode pass would move the BNs' running statistics
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        last.clear()
        model.train(was_training)
    order = list(dict.fromkeys(order))  # a conv run twice (shared weights) is one layer
    if not order:
        raise ResponsesError("the network has no 3x3 convolutions, so it has no 3x3 layer responses to measure")
    return _taken(order, bn_of, at)


def _taken(order: list[str], bn_of: dict, at: str) -> tuple[list[tuple[str, str]], str]:
    """All responses after BN where every 3x3 conv has a BN of its own, else (or when asked) all conv outputs."""
    lacking = [c for c in order if c not in bn_of]
    if at == "bn" and lacking:
        raise ResponsesError(f"{lacking[0]} has no BN of its own after it ({len(lacking)} of the {len(order)} 3x3 "
                             "layers are so): its output goes to the addition (a pre-activation unit, [I] Fig. 4e, "
                             "or BN after the addition, Fig. 4b), so it has no response 'after BN'. Measure the "
                             "3x3 layers' own outputs instead (--at conv; at=\"conv\")")
    if at == "conv" or lacking:
        return [(c, c) for c in order], "conv"
    return [(c, bn_of[c]) for c in order], "bn"


# ---------------------------------------------------------------------------------------------------
# measuring


def _images(batch, device):
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return x.to(device, non_blocking=True)


def _accumulator(sums: list, acc_device):
    """A forward hook adding a response's element count, float64 sum and sum of squares to ``sums``.

    The statistics are taken inside the hook, before the next op runs: the ReLU after a BN is in place in the
    generated models, and would otherwise overwrite the response."""
    import torch

    def hook(mod, inputs, out):
        t = out.detach().to(acc_device, torch.float64)  # MPS has no float64: its sums live on the CPU
        sums[0] += t.numel()
        sums[1] += t.sum()
        sums[2] += t.square().sum()

    return hook


def measure(model, batches, device, at: str = "auto") -> tuple[list[tuple[str, float]], str, int, list[str]]:
    """``(responses, "bn" or "conv", number of images, the 3x3 convs' names)``: :func:`layer_responses` with what
    it measured (a response's module is a BN that may sit in the next unit: the conv says whose it is)."""
    import torch

    device = torch.device(device)
    acc_device = torch.device("cpu") if device.type == "mps" else device
    it = iter(batches)
    first = next(it, None)
    if first is None:
        raise ResponsesError("the test set is empty: there are no responses to measure")
    was_training = model.training
    model.eval()
    try:
        layers, taken = find_layers(model, _images(first, device), at)
        modules = dict(model.named_modules())
        sums = {name: [0, torch.zeros((), dtype=torch.float64, device=acc_device),
                       torch.zeros((), dtype=torch.float64, device=acc_device)] for _, name in layers}
        hooks = [modules[name].register_forward_hook(_accumulator(sums[name], acc_device)) for name in sums]
        images = 0
        try:
            with torch.no_grad():
                for batch in itertools.chain([first], it):
                    x = _images(batch, device)
                    model(x)
                    images += x.shape[0]
        finally:
            for h in hooks:
                h.remove()
    finally:
        model.train(was_training)
    return [(name, _std(*sums[name])) for _, name in layers], taken, images, [conv for conv, _ in layers]


def _std(n: int, total, squares) -> float:
    mean = total.item() / n
    return max(squares.item() / n - mean * mean, 0.0) ** 0.5


def layer_responses(model, batches, device, at: str = "auto") -> list[tuple[str, float]]:
    """The std of each 3x3 layer's response over ``batches`` of (images, labels), in network order:
    ``[(module name, std), ...]``, the module being the BN after the 3x3 conv (or the conv itself, see the module
    docstring). The model runs in eval mode, as at test time."""
    return measure(model, batches, device, at)[0]


# ---------------------------------------------------------------------------------------------------
# a trained run


@dataclass
class Run:
    """A run directory made by ``resdsl train``: its record, spec, compiled network and checkpoint."""

    path: str
    config: dict
    spec: str  # the spec it was trained from: a file, or a packaged spec's name
    net: object  # the CheckedNetwork of that spec as it reads now
    state: dict  # the checkpoint (weights, recipe, normalisation statistics)

    @property
    def network(self) -> str:
        return self.config.get("network") or self.net.name  # text, as the record's check says


@dataclass
class RunResponses:
    """The measured responses of one run."""

    run: str  # the run directory
    network: str
    taken_at: str  # "bn": after each 3x3 conv's BN; "conv": the 3x3 convs' own outputs (pre-activation units)
    images: int  # test images seen
    responses: list  # [(module name, std), ...] in network order
    convs: list = field(default_factory=list)  # the 3x3 conv of each response (a stem's may be taken in layer1)
    data: str = ""  # the dataset measured on: its name, or an image folder's path


def open_run(run_dir: str) -> Run:
    """Read a run directory; anything that makes it unusable is a :class:`ResponsesError` (a spec that no longer
    compiles raises the spec's own located ``SpecError``)."""
    from ..pipeline import compile_run

    cfg = _read_config(run_dir)
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.isfile(path):
        raise ResponsesError(f"{run_dir}: no {CHECKPOINT} (the run stopped before its first checkpoint), so there "
                             "are no trained weights to measure")
    spec, net = compile_run(cfg, run_dir)
    with _as_responses_error():
        from ..train import checkpoint as ckpt

        state = ckpt.load(path)
        ckpt.check_same_run(state, cfg, path, "it holds that run's weights, not this one's; measure the run it came "
                            "from")
    return Run(run_dir, cfg, spec, net, state)


def _read_config(run_dir: str) -> dict:
    """The run's config.json, checked as `resdsl eval` checks it (rundir.read_config: a regular file only, every
    field read of its kind, the network's name, which labels the figure, included)."""
    try:
        return read_config(run_dir, "resdsl analyze responses")
    except RunDirError as exc:
        raise ResponsesError(str(exc)) from None


class _as_responses_error:
    """The trainer's own errors (checkpoint, data, device, output) as :class:`ResponsesError`, message kept."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        from ..train.checkpoint import CheckpointError
        from ..train.data import DataError
        from ..train.fileio import OutputError
        from ..train.session import TrainingError

        if exc is not None and isinstance(exc, (CheckpointError, DataError, OutputError, TrainingError)):
            raise ResponsesError(str(exc)) from None
        return False


def responses_of_run(run, **options) -> list[tuple[str, float]]:
    """``[(module name, std), ...]`` of a run (a directory or an :func:`open_run` result), in network order; the
    options are :func:`measure_run`'s."""
    return measure_run(run, **options).responses


def measure_run(run, *, test_subset: int | None = None, device: str = "auto", batch_size: int = 256,
                data_dir: str | None = None, download: bool = True, at: str = "auto") -> RunResponses:
    """The 3x3 layer responses of a run (a directory or an :func:`open_run` result) on the test set its recipe
    trained beside, normalised with the checkpoint's statistics, as ``resdsl eval`` sees it (single view), with
    where they were taken and how many images were seen.

    ``test_subset`` keeps the first N test images (default: the run's own ``--test-subset``, else all)."""
    run = run if isinstance(run, Run) else open_run(run)
    with _as_responses_error():
        model, batches, dev, data = _prepare(run, test_subset, device, batch_size, data_dir, download)
        responses, taken, images, convs = measure(model, batches, dev, at)
    return RunResponses(run.path, run.network, taken, images, responses, convs, data)


def _prepare(run: Run, test_subset, device, batch_size, data_dir, download):
    """The run's model with its trained weights on ``device``, its test batches (as session.py builds them), the
    device and the dataset's name."""
    from ..backends.torch_module import build_model
    from ..train import checkpoint as ckpt
    from ..train.data import BatchPipeline, InMemoryData
    from ..train.session import RunOptions, load_data, pick_device, test_batches

    options = run.config.get("options", {})
    recipe = run.state.get("recipe") or run.net.recipe or {}
    name = options.get("data") or recipe.get("dataset")
    if not name:
        raise ResponsesError(f"{run.path}: neither the run nor its recipe names a dataset")
    opts = RunOptions(data=name, data_dir=data_dir or options.get("data_dir"), device=device, download=download,
                      test_subset=test_subset or options.get("test_subset"))
    dev = pick_device(device)
    recipe = dict(recipe, dataset=name)
    data = load_data(recipe, opts)
    differ = data_differences(run.config, {"shape": list(data.shape), "classes": data.num_classes})
    if differ:  # (its test subset may differ: measured on fewer images, say)
        raise ResponsesError(f"{run.path}: the data found now is not the data the run was trained on ({differ}); "
                             "give --data-dir for the folder that holds it")
    model = build_model(run.net, num_classes=data.num_classes, in_channels=data.shape[0],
                        input_size=tuple(data.shape[1:]))
    ckpt.load_weights(model, run.state["model"], os.path.join(run.path, CHECKPOINT))
    model.to(dev)
    pipeline = None
    if isinstance(data, InMemoryData):
        data = data.to(dev)
        pipeline = BatchPipeline(data, recipe.get("normalize", "none"), [])
        if run.state.get("normalization"):
            pipeline.load_stats(run.state["normalization"])
    return model, test_batches(data, pipeline, opts, batch_size), dev, name
