"""What the training loop does at its evaluation points: the metrics row of the test and the running training
figures (every rank taking the plateau decision rank 0's evaluation made), the evaluation a resumed run missed,
and [R]'s warm-up, which watches each batch's training error while it lasts."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from .metrics import MetricsLog
from .report import Progress
from .steps import Window, reduce_on, reduce_window

if TYPE_CHECKING:
    from .session import Session


def missed(s, state: dict, metrics: MetricsLog) -> bool:
    """Whether the run stands at an evaluation point whose evaluation has not been logged (it failed)."""
    it = state["iter"]
    return it > 0 and (it % s.eval_every == 0 or it == s.total) and not any(r["iter"] == it for r in metrics.rows)


def pending(state: dict) -> bool:
    """Whether a resumed run's checkpoint was written in place of the evaluation it stands at (which failed on a
    test file that could not be read: the loop kept the work first and marked it). That evaluation comes first;
    the checkpoint holds the window's sums and the schedule as they were just before it."""
    return bool(state.get("eval_missed"))


def evaluate_and_log(s: Session, state: dict, window: Window, it: int, lr: float, start: float,
                     metrics: MetricsLog, progress: Progress, evaluation) -> dict | None:
    """The evaluation after iteration ``it``: the test and the running training figures as one metrics row (rank
    0's), the window's sums reset."""
    row = None
    state.update(window.read())
    reduce_window(state, s.device, s.rank, s.world)
    if s.rank == 0:
        res = evaluation(last=it + 1 == s.total)
        seen = max(state["seen"], 1)
        row = {"iter": it + 1, "epoch": round((it + 1) / s.iters_per_epoch, 4), "lr": lr,
               "train_loss": state["loss_sum"] / seen, "train_error": 100.0 * state["wrong"] / seen,
               "test_loss": res["loss"], "test_error": res["error"], "test_top5_error": res["top5_error"],
               "seconds": round(time.perf_counter() - start, 3)}
        metrics.write(row)
        progress.note(row)
        s.schedule.observe_val_error(res["error"])
    if s.world > 1:
        share_plateau(s)
    state["loss_sum"], state["wrong"], state["seen"] = 0.0, 0, 0
    window.reset()
    return row


def share_plateau(s: Session) -> None:
    """Every rank must take the same plateau decision; rank 0's evaluation decides."""
    sch = s.schedule
    flag = torch.tensor([sch.plateau_scale, sch.plateau_best, sch.plateau_bad], dtype=torch.float64,
                        device=s.device if torch.distributed.get_backend() == "nccl" else "cpu")
    torch.distributed.broadcast(flag, 0)
    sch.plateau_scale, sch.plateau_best, sch.plateau_bad = flag[0].item(), flag[1].item(), int(flag[2].item())


def observe_warmup(s: Session, state: dict, it: int, wrong, n: int) -> None:
    """[R]'s warm-up "until training error is below 80%" needs each batch's error on the host (one read per
    iteration while the warm-up lasts; none after). A warm-up of a fixed length ([I]'s 400 iterations) reads
    nothing: each read waits for the device."""
    if s.schedule.warmup_done:
        return
    if s.schedule.warmup_until_error is None:
        s.schedule.observe_train_error(it, None)
        return
    if s.world > 1:  # every rank ends the warm-up at the same iteration: the whole batch's error, not its shard's
        counts = torch.tensor([float(wrong), float(n)], dtype=torch.float64, device=reduce_on(s.device))
        torch.distributed.all_reduce(counts)
        wrong, n = counts[0], int(counts[1].item())
    recent = (state["recent_errors"] + [100.0 * int(wrong.item()) / n])[-20:]
    state["recent_errors"] = recent
    s.schedule.observe_train_error(it, sum(recent) / len(recent))
