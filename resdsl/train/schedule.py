"""Learning-rate schedules of the papers: step decay at milestones, decay on plateau, warm-up."""
from __future__ import annotations

import math


class LRSchedule:
    """The learning rate at each iteration; all state needed for an exact resume is in ``state_dict()``.

    ``recipe`` is the compiled recipe dict; lengths are in iterations here (the caller converts epochs).
    """

    def __init__(self, lr: float, total_iters: int, kind: str = "constant", milestones: list[int] | None = None,
                 gamma: float = 0.1, patience: int = 5, warmup_iters: int = 0, warmup_lr: float | None = None,
                 warmup_until_error: float | None = None):
        self.base_lr = lr
        self.total_iters = total_iters
        self.kind = kind
        self.milestones = sorted(milestones or [])
        self.gamma = gamma
        self.patience = patience
        self.warmup_iters = warmup_iters
        self.warmup_lr = warmup_lr
        self.warmup_until_error = warmup_until_error
        self.warmup_done = warmup_iters == 0
        self.plateau_scale = 1.0
        self.plateau_best = math.inf
        self.plateau_bad = 0

    def lr_at(self, it: int) -> float:
        """Learning rate for iteration ``it`` (0-based)."""
        if not self.warmup_done and it < self.warmup_iters:
            return self.warmup_lr
        if self.kind == "step":
            return self.base_lr * self.gamma ** sum(1 for m in self.milestones if it >= m)
        if self.kind == "cosine":
            return 0.5 * self.base_lr * (1 + math.cos(math.pi * min(it, self.total_iters) / self.total_iters))
        if self.kind == "plateau":
            return self.base_lr * self.plateau_scale
        return self.base_lr

    def observe_train_error(self, it: int, error_percent: float | None) -> None:
        """[R]: warm up "until training error is below 80%" (and for at most ``warmup_iters`` iterations); the
        error is None where no rule reads it."""
        if not self.warmup_done and self.warmup_until_error is not None and error_percent < self.warmup_until_error:
            self.warmup_done = True
        if not self.warmup_done and it + 1 >= self.warmup_iters:
            self.warmup_done = True

    def observe_val_error(self, error_percent: float) -> None:
        """Plateau schedule ([R] ImageNet): divide by 1/gamma when the error stops improving."""
        if self.kind != "plateau":
            return
        if error_percent < self.plateau_best - 1e-9:
            self.plateau_best, self.plateau_bad = error_percent, 0
        else:
            self.plateau_bad += 1
            if self.plateau_bad >= self.patience:
                self.plateau_scale *= self.gamma
                self.plateau_bad = 0

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("warmup_done", "plateau_scale", "plateau_best", "plateau_bad")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def from_recipe(recipe: dict, iters_per_epoch: int,
                length_override: tuple[int, str] | None = None) -> tuple[LRSchedule, int]:
    """(schedule, total iterations) for a recipe; an overridden length scales the milestones and warm-up with it."""
    def to_iters(value: int, unit: str) -> int:
        return value * iters_per_epoch if unit == "epochs" else value

    length = recipe["length"]
    base_total = to_iters(length["value"], length["unit"])
    total = to_iters(*length_override) if length_override else base_total
    factor = total / base_total
    sched = recipe["schedule"]
    # a milestone or warm-up scaled to a shorter run stays at 1 or later; one written as 0 is 0 (from the start)
    milestones = [max(int(m > 0), round(to_iters(m, length["unit"]) * factor)) for m in sched.get("milestones", [])]
    w = recipe.get("warmup")
    warmup_iters, warmup_lr, until = 0, None, None
    if w:  # a warm-up without a length lasts until its error rule ends it, at most until the schedule's first drop
        scale = 1 if w.get("as_written") else factor  # one the user gave with the run's length is not scaled
        if w["length"] is None:  # [R] 4.2: after it, "the rest of the learning schedule is as done previously"
            warmup_iters = milestones[0] if sched["kind"] == "step" and milestones else total
        else:
            warmup_iters = max(int(w["length"] > 0), round(to_iters(w["length"], w["unit"] or length["unit"]) * scale))
        warmup_lr, until = w["lr"], w.get("until_error")
    s = LRSchedule(recipe["lr"], total, sched["kind"], milestones, sched.get("gamma", 0.1), sched.get("patience", 5),
                   warmup_iters, warmup_lr, until)
    return s, total
