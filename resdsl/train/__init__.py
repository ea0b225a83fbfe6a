"""The resdsl trainer: trains any ``torch.nn.Module`` with a recipe (a plain dict), the way the papers did.

    >>> from resdsl.train import RunOptions, train
    >>> result = train(model_fn, recipe, RunOptions(data="fashion-mnist", iters=200))  # doctest: +SKIP

``resdsl.train_spec`` trains a spec with its own recipe through this. This package imports nothing from the rest
of resdsl, so that ``resdsl compile --emit-trainer`` can ship these very files beside a generated model, to run
where resdsl is not installed. Its names load (with torch) when first asked for: see ``__getattr__``.
"""
from __future__ import annotations

# name -> the module that defines it
EXPORTS = {"train": "loop", "evaluate": "evaluation", "run_with_errors": "loop", "RunOptions": "options",
           "TrainingError": "session", "Interrupted": "session", "DataError": "dataerror",
           "RunDirError": "rundir", "CheckpointError": "checkpoint", "OutputError": "fileio"}


def __getattr__(name: str):
    """``resdsl.train.train`` and the rest of :data:`EXPORTS`, imported when first asked for: importing one of
    this package's light modules (options, ctrl_c) must not load torch."""
    if name in EXPORTS:
        from importlib import import_module

        return getattr(import_module(f".{EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(EXPORTS)
