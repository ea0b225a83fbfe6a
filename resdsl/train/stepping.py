"""How the loop takes one training iteration: eagerly, or (the fast path) as one replay of a CUDA graph.

Eager PyTorch spends more host time launching a small ResNet's few hundred kernels than the GPU spends running
them (ResNet-20 at batch 128 on an H100: about 13 ms of launches for 3-4 ms of work). For in-memory data on a CUDA
GPU the whole iteration (the batch picked from the epoch's plan and augmented, forward, backward, the SGD step,
the window's running loss and error) is therefore captured once in a CUDA graph, PyTorch's whole-network recipe,
and replayed: one launch per iteration, and the host runs ahead of the GPU.

What the graph keeps from the eager loop: the same batches (the same indices and augmentation draws, assembled by
the same BatchPipeline code), the same schedule (the learning rate is a device tensor the host refills whenever the
schedule changes it), the same checks (a non-finite loss is found at the next read and never checkpointed) and the
same checkpoints (the optimizer's state is saved as the eager loop saves it, so either loop resumes the other's
runs). What differs: SGD runs as PyTorch's fused kernel, the one that reads a learning rate from the device, which
rounds the update differently in the last bit from the eager loop's foreach kernel; the two loops agree to rounding,
not bitwise. A fast run stopped and resumed is the uninterrupted run bit for bit under --deterministic.
"""
from __future__ import annotations

import threading

import torch

from .data import epoch_permutation
from .streams import thread_stream
from .steps import InMemoryBatches, Window, seed_for, set_lr, train_step

WARMUP = 3  # eager iterations before the capture: cuDNN picks its algorithms, SGD makes its momentum buffers
# runs in threads of one process (--seed-runs threads) capture one at a time; "thread_local" lets the other threads
# go on launching work on their own streams meanwhile. An eager pass before a capture is held by the same lock: cuDNN
# timing its algorithms for new shapes synchronises the whole device, which is invalid while a capture is under way.
_CAPTURING = threading.RLock()


def on_side_stream(side, fn):
    """``fn()`` run on the CUDA stream ``side`` after the current stream's queued work, which then waits for it
    (PyTorch's recipe for the eager passes before a capture); ``fn()`` as it is when ``side`` is None."""
    if side is None:
        return fn()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = fn()
    torch.cuda.current_stream().wait_stream(side)
    return out


def warming(side, fn):
    """``on_side_stream(side, fn)`` for an eager pass that precedes a capture (new shapes: cuDNN may time its
    algorithms), while no other thread of the process is capturing."""
    with _CAPTURING:
        return on_side_stream(side, fn)


def captured(side, fn):
    """``(graph, outputs)``: ``fn()`` captured in a new CUDA graph on the stream ``side`` (the capture runs nothing;
    the caller replays it). A failed capture raises its RuntimeError once the device is idle and the thread is back
    on its own stream (a failing ``capture_end`` leaves ``torch.cuda.graph`` without restoring it)."""
    graph, before = torch.cuda.CUDAGraph(), torch.cuda.current_stream()
    side.wait_stream(before)
    with _CAPTURING:  # the device-wide synchronisation after a failure waits for no other thread's capture
        try:
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                out = fn()
        except RuntimeError:
            torch.cuda.set_stream(before)
            torch.cuda.synchronize()
            raise
    before.wait_stream(side)
    return graph, out


def why_eager(s) -> str | None:
    """None when the session takes the fast path, else the reason it steps eagerly (for the banner)."""
    opts = s.opts
    for reason, applies in (("not on a CUDA GPU", s.device.type != "cuda"),
                            ("image folders are read by DataLoader workers", s.pipeline is None),
                            ("distributed runs step eagerly", s.world > 1),
                            ("--sync-every-step", opts.sync_every_step), ("--compile", opts.compile),
                            ("--no-graph", opts.no_graph)):
        if applies:
            return reason
    return None


def step_words(s) -> str | None:
    """How a CUDA run steps, for the banner and config.json (None off CUDA, where only eager steps exist)."""
    if s.device.type != "cuda":
        return None
    why = why_eager(s)
    return "one CUDA graph per iteration" if why is None else f"eager steps ({why})"


def stepper(s, net, window: Window, check_for=None, say=print):
    """The stepper of a session: GraphSteps on the fast path, EagerSteps otherwise."""
    if why_eager(s) is None:
        return GraphSteps(s, net, window, say=say)
    return EagerSteps(s, net, window, check_for)


class EagerSteps:
    """One iteration as PyTorch runs it op by op: the batch, forward, backward, SGD at the schedule's rate."""

    words = "eager steps"

    def __init__(self, s, net, window: Window, check_for=None):
        from .session import FolderBatches  # session imports this module's neighbours

        self.s, self.net, self.window, self.check_for = s, net, window, check_for
        self.batches = InMemoryBatches(s) if s.pipeline is not None else FolderBatches(s)

    def step(self, it: int, lr: float):
        """Train iteration ``it`` at rate ``lr``; (loss, wrong predictions, images), the first two on the device."""
        s = self.s
        x, y = self.batches.batch(it)
        x, y = x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True)
        set_lr(s.optimizer, lr)
        loss, logits = train_step(s, self.net, x, y, self.check_for(it, lr) if self.check_for else None)
        return loss, self.window.add(it, loss, logits, y), y.numel()

    def optimizer_state(self) -> dict:
        return self.s.optimizer.state_dict()

    def close(self) -> None:
        """The loop is over (finished, stopped or failed): stop making image-folder batches ahead."""
        if hasattr(self.batches, "close"):
            self.batches.close()


class GraphSteps:
    """The fast path: iteration ``it`` is one replay of a CUDA graph (after WARMUP eager iterations).

    The graph reads its inputs from device tensors it owns: the epoch's plan (for each position, the image indices
    and the augmentation draws, made on the host once an epoch from the same seeds as the eager loop), the position
    and iteration counters (advanced inside the graph), and the learning rate. ``capture=False`` runs the same
    iteration eagerly (what it does off CUDA, which is how the CPU tests check it)."""

    def __init__(self, s, net, window: Window, capture: bool | None = None, say=print):
        capture = s.device.type == "cuda" if capture is None else capture
        self.s, self.net, self.window, self.capture, self.say = s, net, window, capture, say
        dev, b = s.device, s.recipe["batch"]
        self.plan = torch.zeros(s.iters_per_epoch, 4, b, dtype=torch.int64, device=dev)
        self.pos = torch.zeros(1, dtype=torch.int64, device=dev)
        self.it = torch.zeros((), dtype=torch.int64, device=dev)
        self.lr = torch.zeros((), dtype=torch.float32, device=dev)  # the fused SGD kernel reads a float32 rate
        self.epoch, self.lr_now, self.next_it = None, None, None
        self.graph, self.eager_left, self.out = None, WARMUP, None
        self.side = thread_stream(dev, "graph")  # None off CUDA
        self.saved_flags = [(g["fused"], g["foreach"]) for g in s.optimizer.param_groups]
        for group in s.optimizer.param_groups:
            group.update(lr=self.lr, fused=True, foreach=False)
        self.words = "one CUDA graph per iteration" if capture else "graph steps run eagerly"
        self.on_fallback = None  # told the new words when a failed capture turns the run to eager steps

    def step(self, it: int, lr: float):
        s, b = self.s, self.s.recipe["batch"]
        epoch, pos = divmod(it, s.iters_per_epoch)
        if epoch != self.epoch or it != self.next_it:
            self._load_plan(epoch, pos, it)
        if lr != self.lr_now:
            self.lr.fill_(lr)
            self.lr_now = lr
        if self.graph is not None:
            self.graph.replay()
        elif self.eager_left > 0 or not self.capture or it + 1 == s.total:
            self.eager_left -= 1  # the warm-up (or a last iteration not worth a capture): new shapes for cuDNN
            self.out = (warming if self.capture else on_side_stream)(self.side, self._iteration)
        else:
            self._capture(it)
        self.next_it = it + 1
        self.window.seen += b
        return self.out[0], self.out[1], b

    def _load_plan(self, epoch: int, pos: int, it: int) -> None:
        """The epoch's indices and draws from position ``pos`` on, the same the eager loop would make."""
        s, b = self.s, self.s.recipe["batch"]
        perm = epoch_permutation(s.n_train, s.opts.seed, epoch)
        plan = torch.zeros(s.iters_per_epoch, 4, b, dtype=torch.int64)
        for p in range(pos, s.iters_per_epoch):
            plan[p, 0] = perm[p * b:(p + 1) * b]
            plan[p, 1:] = s.pipeline.draw(b, torch.Generator().manual_seed(seed_for(s.opts.seed, it - pos + p)))
        if s.device.type == "cuda":  # pinned: the copy does not make the host wait for the queued iterations
            plan = plan.pin_memory()
        self.plan.copy_(plan, non_blocking=True)
        self.pos.fill_(pos)
        self.it.fill_(it)
        self.epoch = epoch

    def _iteration(self):
        """One training iteration reading only device tensors (what the graph holds)."""
        s = self.s
        row = self.plan.index_select(0, self.pos)[0]
        x, y = s.pipeline.assemble(row[0], row[1:])
        loss, logits = train_step(s, self.net, x, y, cache=False)  # autocast's cache cannot live in a graph
        wrong = self.window.count(self.it, loss, logits, y)
        self.pos += 1
        self.it += 1
        return loss.detach(), wrong

    def _on_side_stream(self):
        return on_side_stream(self.side, self._iteration)

    def _capture(self, it: int) -> None:
        self.s.optimizer.zero_grad(set_to_none=True)
        try:
            graph, out = captured(self.side, self._iteration)
        except RuntimeError as exc:  # nothing ran: the capture records kernels without executing them
            self.capture, self.words = False, f"eager steps (the CUDA graph capture failed at iteration {it + 1:,})"
            self.say(f"note: the CUDA graph capture failed ({str(exc).splitlines()[0][:200]}); stepping eagerly")
            if self.on_fallback is not None:
                try:
                    self.on_fallback(self.words)
                except Exception as record:  # noqa: BLE001 - a record that cannot say so must not stop the run
                    self.say(f"note: config.json could not say so ({str(record).splitlines()[0][:200]})")
            self.out = self._on_side_stream()
            return
        self.graph, self.out = graph, out
        graph.replay()

    def optimizer_state(self) -> dict:
        """The optimizer's state as the eager loop keeps it: a number for the rate, its own kernel choice."""
        state = self.s.optimizer.state_dict()
        self._as_eager(state["param_groups"])
        return state

    def close(self) -> None:
        """The loop is over: the optimizer steps as it did before it (the graph is not replayed again)."""
        self._as_eager(self.s.optimizer.param_groups)

    def _as_eager(self, groups) -> None:
        """Param groups with a number for the rate (not the graph's tensor) and their own kernel choice."""
        for group, (fused, foreach) in zip(groups, self.saved_flags):
            group.update(lr=float(group["lr"]), fused=fused, foreach=foreach)
