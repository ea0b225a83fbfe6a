"""One training iteration, and the running figures of an evaluation window kept on the device.

The loop never waits for the device inside a window: the loss sum, the error count and the first iteration whose
loss was not finite are accumulated as device tensors, and read (one synchronisation) only where the loop logs,
evaluates or checkpoints. A checkpoint is written only after that read found every loss finite, so a NaN never
reaches one. `--sync-every-step` reads them after each iteration instead, as the plain loop did; both give the same
weights and figures bit for bit.
"""
from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from .data import epoch_permutation


class Window:
    """Training loss, errors and images seen since the last evaluation, and the first non-finite loss, on the
    device. ``read`` brings them to the host; ``state`` is what a checkpoint stores."""

    def __init__(self, device, state: dict):
        self.device = device
        # float64 on the device: the same arithmetic as a Python float summing loss.item() * n (float32 on Apple's
        # MPS, which has no float64)
        wide = torch.float32 if torch.device(device).type == "mps" else torch.float64
        self.loss_sum = torch.tensor(float(state["loss_sum"]), dtype=wide, device=device)
        self.wrong = torch.tensor(int(state["wrong"]), dtype=torch.int64, device=device)
        self.seen = int(state["seen"])  # known on the host without a sync
        self.first_bad = torch.tensor(-1, dtype=torch.int64, device=device)

    def add(self, it, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Count one batch; returns its wrong predictions (a device tensor)."""
        self.seen += y.numel()
        return self.count(it, loss, logits, y)

    def count(self, it, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The device half of :meth:`add`, in place and without a read, so that a CUDA graph can hold it; ``it``
        is the iteration, a number or a device tensor. Returns the batch's wrong predictions."""
        wrong = (logits.argmax(1) != y).sum()
        self.loss_sum += loss.detach().to(self.loss_sum.dtype) * y.numel()
        self.wrong += wrong
        bad = (self.first_bad < 0) & ~torch.isfinite(loss.detach())
        self.first_bad.copy_(torch.where(bad, it, self.first_bad))
        return wrong

    def first_nonfinite(self) -> int | None:
        """The 0-based iteration of the first non-finite loss of this window, or None (one synchronisation)."""
        value = int(self.first_bad.item())
        return None if value < 0 else value

    def read(self) -> dict:
        return {"loss_sum": float(self.loss_sum.item()), "wrong": int(self.wrong.item()), "seen": self.seen}

    def set(self, loss_sum: float, wrong: int, seen: int) -> None:
        self.loss_sum.fill_(loss_sum)
        self.wrong.fill_(wrong)
        self.seen = seen

    def reset(self) -> None:
        self.set(0.0, 0, 0)
        self.first_bad.fill_(-1)


def seed_for(*parts) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class InMemoryBatches:
    """Batch ``it`` of an in-memory dataset: the epoch's permutation, augmentation seeded by (seed, iteration),
    this rank's shard; everything made on the device by the data's BatchPipeline."""

    def __init__(self, session):
        self.s = session
        self.epoch, self.perm = -1, None

    def batch(self, it: int):
        s = self.s
        epoch, pos = divmod(it, s.iters_per_epoch)
        if epoch != self.epoch:
            self.perm, self.epoch = epoch_permutation(s.n_train, s.opts.seed, epoch), epoch
        b = s.recipe["batch"]
        gen = torch.Generator().manual_seed(seed_for(s.opts.seed, it))
        x, y = s.pipeline.train_batch(self.perm[pos * b:(pos + 1) * b], gen)
        return x[s.rank::s.world], y[s.rank::s.world]


def set_lr(optimizer, lr) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_step(session, net, x, y, check=None, cache: bool = True):
    """Forward, backward and SGD step at the optimizer's current rate; returns the (device) loss and logits.
    ``check``, if given, sees the loss before the step (and may stop the run there); ``cache=False`` turns off
    autocast's weight cache (a CUDA graph cannot hold it)."""
    s = session
    if s.opts.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(s.device.type, dtype=s.amp_dtype, enabled=s.amp_dtype is not None, cache_enabled=cache):
        logits = net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=s.recipe.get("label_smoothing", 0.0))
    if check is not None:
        check(loss)
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    s.optimizer.step()
    return loss, logits


def reduce_on(device):
    return device if torch.distributed.get_backend() == "nccl" else "cpu"  # gloo reduces host tensors


def reduce_window(state, device, rank, world) -> None:
    """Sum the running training loss and error of every rank's shard into rank 0's (the others restart at zero),
    so that the logged training figures are the whole batch's, and a checkpoint (written by rank 0) holds them."""
    if world == 1:
        return
    totals = torch.tensor([state["loss_sum"], float(state["wrong"]), float(state["seen"])], dtype=torch.float64,
                          device=reduce_on(device))
    torch.distributed.all_reduce(totals)
    if rank != 0:
        totals.zero_()
    state["loss_sum"], state["wrong"], state["seen"] = totals[0].item(), int(totals[1].item()), int(totals[2].item())
