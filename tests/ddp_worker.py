"""Run by tests/test_train.py, alone or under torchrun: trains a BatchNorm-free net with the resdsl trainer, so
that one process and N processes with the same global batch must reach the same weights. The one process may be
the test's own (``run``)."""
import sys

import torch
from torch import nn

RECIPE = {"name": "t", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
          "batch": 32, "length": {"value": 6, "unit": "iterations"}, "schedule": {"kind": "step",
          "milestones": [4], "gamma": 0.1}, "warmup": None, "augment": [{"kind": "pad-crop", "padding": 4},
          {"kind": "flip"}], "normalize": "per-pixel-mean", "dataset": "synthetic", "split": None,
          "label_smoothing": 0.0, "test": "single-view"}


def model_fn(shape, classes):
    return nn.Sequential(nn.Conv2d(shape[0], 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))


def run(out: str) -> None:
    """Train into run directory ``out``: the whole batch in this process, or this rank's shard under torchrun."""
    from resdsl.train.loop import RunOptions, train

    opts = RunOptions(data="synthetic", train_subset=128, test_subset=32, device="cpu", quiet=True, seed=5,
                      out=out, eval_every=6)
    train(model_fn, RECIPE, opts)


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[2])  # the repository's resdsl
    torch.set_num_threads(1)
    run(sys.argv[1])
    from resdsl.train.cli import end_worker

    end_worker(0)  # as resdsl's own workers end: gloo's threads aborted about one exit in ten on a loaded machine
