"""A network's test figures: :func:`evaluate` runs the test batches eagerly; on the fast path (in-memory data on a
CUDA GPU) :class:`GraphEvaluation` captures the same passes over the whole test set once in a CUDA graph and replays
it at every evaluation point of the run.

Why a graph: an evaluation of ResNet-20 is 40 forward passes (10,000 test images, batch 256), and launching their
kernels one by one costs the host far more than the GPU's work. On an H100 an evaluation point took ~0.35 s, and a
default 64k-iteration run has 137 of them: a third of the run (benchmarks/RESULTS.md). Runs of ``--seeds`` as
threads of one process take turns on the host, so each run's evaluations held up the others. Replayed, an
evaluation is one launch and one read of its sums. Imports nothing from the rest of resdsl (it ships beside emitted
trainers).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import stepping
from .streams import thread_stream
from .views import Views


@torch.no_grad()
def evaluate(model, batches, device, amp_dtype=None, channels_last=False) -> dict:
    """Mean loss, top-1 and top-5 error (%) over ``batches`` of (x, y); a (B, K, C, H, W) x averages the softmax
    scores of K crops, a :class:`views.Views` those of each picture's scales.
    The per-batch sums stay on the device and are read once at the end (a read per batch would make the host wait
    for every batch's forward pass); they are added on the host in batch order, in double. ``device``: a
    ``torch.device`` or its name ("cpu", "cuda:0")."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        sums = _evaluated(model, batches, device, amp_dtype, channels_last)
    finally:
        model.train(was_training)
        if hasattr(batches, "close"):  # batches made ahead in a thread: stop it however the evaluation ends
            batches.close()
    return _figures(*sums)


def _figures(total: int, loss_sums, wrongs) -> dict:
    """The figures from :func:`_evaluated`'s sums (their one read), and the number of test images."""
    loss_sum = sum(loss_sums.tolist()) if total else 0.0
    wrong1, wrong5 = wrongs.sum(0).tolist() if total else (0, 0)
    n = max(total, 1)
    return {"loss": loss_sum / n, "error": 100.0 * wrong1 / n, "top5_error": 100.0 * wrong5 / n, "images": total}


def _evaluated(model, batches, device, amp_dtype, channels_last, cache: bool = True) -> tuple:
    """The number of images, and on the device the per-batch loss sums (B,) and (top-1, top-5) wrong counts
    (B, 2); None for both when there was no batch. ``cache=False`` turns off autocast's weight cache (for a CUDA
    graph)."""
    total, loss_sums, wrongs = 0, [], []

    def forward(x):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None, cache_enabled=cache):
            return model(x).float()

    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if isinstance(x, Views):  # several scales: each picture's mean softmax scores
            logits = x.scores(forward)
        elif x.dim() == 5:  # crops: the same
            b, k = x.shape[:2]
            # log of the mean softmax, in log space: a score that underflows to 0 would make the loss infinite
            logits = forward(x.flatten(0, 1)).view(b, k, -1).log_softmax(-1).logsumexp(1) - math.log(k)
        else:
            logits = forward(x)
        loss_sums.append(F.cross_entropy(logits, y, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        wrongs.append(torch.stack([(top[:, 0] != y).sum(), (~(top == y[:, None]).any(1)).sum()]))
        total += y.numel()
    if not total:
        return 0, None, None
    return total, torch.stack(loss_sums), torch.stack(wrongs)


def eval_batch(s) -> int:
    """The batch of a run's evaluations: the training batch, and at least 256 (fewer passes)."""
    return max(s.recipe["batch"], 256)


def evaluator(s, say=print):
    """The run's evaluation as a call (``last=True`` at the run's last one) returning :func:`evaluate`'s figures for
    the model's current weights: a :class:`GraphEvaluation` on the fast path, else the eager passes."""
    if stepping.why_eager(s) is None:
        return GraphEvaluation(s, say=say)
    from .session import test_batches  # the session imports this module

    def eager(last: bool = False) -> dict:  # noqa: ARG001 - the same call as GraphEvaluation's
        batches = test_batches(s.data, s.pipeline, s.opts, eval_batch(s), device=s.device)
        return evaluate(s.model, batches, s.device, s.amp_dtype, s.opts.channels_last)
    return eager


class GraphEvaluation:
    """The passes of :func:`evaluate` over an in-memory test set, replayed from a CUDA graph.

    The first evaluation runs them eagerly on a side stream (cuDNN picks its algorithms for the test batch's shapes,
    as GraphSteps' warm-up does for training); the second captures them and replays; the later ones only replay.
    The graph reads the weights, BatchNorm's running statistics, the test images and their normalisation where
    they live (updated in place, never replaced, while the run lasts), so a replay sees the weights of that
    moment. The figures are those of the eager passes: the same kernels on the same batches, added up on the host
    in the same order. ``capture=False`` runs the passes eagerly every time (what it does off CUDA, which is how
    the CPU tests check it)."""

    def __init__(self, s, capture: bool | None = None, say=print):
        self.s, self.say = s, say
        self.capture = s.device.type == "cuda" if capture is None else capture
        self.side = thread_stream(s.device, "graph")  # GraphSteps' too: the same thread uses it in turn
        self.graph, self.out, self.warm = None, None, False

    def __call__(self, last: bool = False) -> dict:
        """The figures of the current weights; ``last``: the run's last evaluation (not worth a capture)."""
        model = self.s.model
        was_training = model.training
        model.eval()
        try:
            if self.graph is not None:
                self.graph.replay()
            elif self.capture and self.warm and not last:
                self._capture()
            else:  # the first passes before a capture time cuDNN's algorithms for the test batch's shapes
                run = stepping.warming if self.capture and not self.warm else stepping.on_side_stream
                self.out = run(self.side, self._passes)
                self.warm = True
        finally:
            model.train(was_training)
        return _figures(*self.out)

    @torch.no_grad()
    def _passes(self) -> tuple:
        s = self.s
        return _evaluated(s.model, s.pipeline.test_batches(eval_batch(s)), s.device, s.amp_dtype,
                          s.opts.channels_last, cache=False)

    def _capture(self) -> None:
        try:
            graph, out = stepping.captured(self.side, self._passes)
        except RuntimeError as exc:  # nothing ran: the capture records kernels without executing them
            self.capture = False
            self.say(f"note: the CUDA graph capture of the evaluation failed ({str(exc).splitlines()[0][:200]}); "
                     "evaluating eagerly")
            self.out = stepping.on_side_stream(self.side, self._passes)
            return
        self.graph, self.out = graph, out
        graph.replay()
