"""Training and evaluating a spec: what `resdsl train SPEC` and `resdsl eval` do, as the Python functions
``resdsl.train_spec`` and ``resdsl.evaluate``, which the command line calls too.

The trainer (resdsl.train) takes any model; here a spec is compiled once, its model is built for the data's
shape (the compiler's shape checks re-run, so a misfit is a located error), and the run's config.json names
the spec and keeps its hash and files, so that `resdsl eval RUN` and resuming rebuild the network as it was
trained. Errors are exceptions: SpecError for the spec, TrainingError, DataError, RunDirError, CheckpointError
and OutputError for the run (resdsl.train), Interrupted (a KeyboardInterrupt) for a Ctrl-C that checkpointed.
"""
from __future__ import annotations

import os
import subprocess

from .errors import Span, SpecError
from .pipeline import CheckedNetwork, compile_run, compile_spec, is_spec_text


def model_fn(net: CheckedNetwork):
    """``build(shape, num_classes)``: the network for a dataset's (C, H, W) images and class count, as the
    trainer asks for it; the shape checks re-run on the already resolved spec."""
    from .backends.torch_module import build_model

    def build(shape, num_classes):
        return build_model(net, num_classes=num_classes, in_channels=shape[0], input_size=tuple(shape[1:]))

    return build


def git_commit() -> str | None:
    """The commit of the resdsl source that runs, when it is a git checkout ("-dirty" with local changes)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def spec_named(spec, net: CheckedNetwork) -> dict:
    """What config.json says of the spec a run trains: as it was given (a packaged spec's name, a path) and
    where it lies; spec text, or a network compiled already, is named by the path the compiler gave it."""
    given = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) and not is_spec_text(spec) else net.spec.path
    return {"spec": given, "spec_path": os.path.abspath(given) if os.path.isfile(given) else given}


def run_network(resume: str) -> tuple[CheckedNetwork, dict]:
    """The network a run was trained from, compiled from the copy of its files config.json keeps, and what the
    record says of its spec (resuming a run that names no spec)."""
    from .train.rundir import read_config

    cfg = read_config(resume)
    spec, net = compile_run(cfg, resume)
    return net, {"spec": spec, "spec_path": cfg.get("spec_path", spec)}


def train_network(net: CheckedNetwork, opts, *, settings=(), scale_set: bool = False,
                  named: dict | None = None) -> dict:
    """Train a compiled spec with its recipe under ``opts`` (a resdsl.train RunOptions), the recipe changed by
    ``settings`` (`--set` items, ``"momentum=0.95"``), which are scaled with ``opts.iters``/``epochs`` when
    ``scale_set``; ``named``: what config.json says of the spec (:func:`spec_named`). Returns train()'s result."""
    from . import __version__
    from .recipes import NO_RECIPE_HINT, recipe_with_settings
    from .train.loop import train

    if net.recipe is None:
        raise SpecError("the spec names no training recipe", Span(net.spec.path, 1, 1), source=net.spec.source,
                        hint=NO_RECIPE_HINT)
    settings = list(settings)
    length = (opts.iters, "iterations") if opts.iters else (opts.epochs, "epochs") if opts.epochs else None
    recipe = recipe_with_settings(net.spec, settings, None if scale_set else length) if settings else net.recipe
    opts.name = net.name if opts.name == "run" else opts.name
    opts.extra_config = {**opts.extra_config, **(named or spec_named(net, net)), "spec_hash": net.spec_hash(),
                         "spec_files": net.files(), "set": settings, "set_scaled": bool(scale_set and settings and
                                                                                       length),
                         "network": net.name, "resdsl": __version__, "git_commit": git_commit(),
                         "params": net.params, "macs": net.macs}
    return train(model_fn(net), recipe, opts)


def train_spec(spec=None, *, settings=(), scale_set: bool = False, **options) -> dict:
    """Train ``spec`` (a packaged spec's name, a file, spec text or a CheckedNetwork) with its recipe, as
    `resdsl train SPEC` does, or continue a run with ``resume=RUN_DIR`` (the spec then is the run's own).

    ``options`` are resdsl.train.RunOptions' fields, the flags' names with underscores: ``data``, ``out``,
    ``iters`` or ``epochs``, ``device``, ``seed``, ``batch_size``, ``lr``, ``overwrite``, ``quiet``, ...;
    ``settings``: recipe changes as `--set` writes them (``["momentum=0.95", "schedule=step 100, 150"]``),
    checked by the spec grammar. Returns ``{"run_dir", "iterations", "last" (the last metrics row), "model"
    (trained, on its device), "normalization" (the input statistics the model expects, see resdsl.train),
    "final" (where the recipe names a final test)}``.

    >>> result = resdsl.train_spec("resnet20", data="fashion-mnist", iters=200, out="runs/r20")  # doctest: +SKIP
    """
    from .train.session import RunOptions

    opts = RunOptions(**options)  # an unknown option is a TypeError naming it
    items = None if settings is None or isinstance(settings, (str, bytes, dict)) else list(settings)
    if items is None or not all(isinstance(item, str) for item in items):
        raise TypeError(f"settings is a list of 'FIELD=VALUE' texts, as --set gives them (['momentum=0.95']), not "
                        f"{settings!r}")
    settings = items
    if opts.resume and settings:
        raise ValueError("settings change the recipe, and a resumed run keeps its own: start a new run instead")
    if scale_set and not (settings and (opts.iters or opts.epochs)):
        raise ValueError("scale_set scales the settings with the run's length: it goes with settings and iters or "
                         "epochs")
    if spec is None:
        if not opts.resume:
            raise TypeError("train_spec takes a spec to train, or resume=RUN_DIR")
        net, named = run_network(os.fspath(opts.resume))
    else:
        net = spec if isinstance(spec, CheckedNetwork) else compile_spec(spec)
        named = spec_named(spec, net)
    return train_network(net, opts, settings=settings, scale_set=scale_set, named=named)


def eval_target(target, checkpoint=None, data=None, data_dir=None, test_subset=None) -> dict:
    """What `resdsl eval TARGET` evaluates: a run's folder (its spec as it recorded it, its checkpoint, data and
    --test-subset, each unless given), or a spec (name, path, text or CheckedNetwork) with the weights in
    ``checkpoint``. Returns net, spec, checkpoint (a file), data, data_dir, test_subset (None: all) and
    ``runs_subset`` (whether the subset is the run's own, not given)."""
    from .train.rundir import CHECKPOINT, read_config

    runs_subset = False
    if isinstance(target, (str, os.PathLike)) and os.path.isdir(target):  # the run's own spec, as it recorded it
        target = os.fspath(target)
        cfg = read_config(target, "resdsl eval")
        spec, net = compile_run(cfg, target)
        run = cfg["options"]
        checkpoint = checkpoint or target
        data, data_dir = data or run.get("data"), data_dir or run.get("data_dir")
        given = test_subset is not None
        test_subset, runs_subset = (test_subset, False) if given else (run.get("test_subset"), True)
    elif checkpoint is None:
        raise ValueError(f"{target} is not a run directory: give a run directory, or a spec with the checkpoint of "
                         "its weights")
    else:
        net = target if isinstance(target, CheckedNetwork) else compile_spec(target)
        spec = spec_named(target, net)["spec"]
    checkpoint = os.fspath(checkpoint)
    if os.path.isdir(checkpoint):
        checkpoint = os.path.join(checkpoint, CHECKPOINT)
    return {"net": net, "spec": spec, "checkpoint": checkpoint, "data": data, "data_dir": data_dir,
            "test_subset": None if _all(test_subset) else test_subset, "runs_subset": runs_subset}


def _all(test_subset) -> bool:
    return isinstance(test_subset, str) and test_subset.lower() == "all"


def trained_elsewhere(net: CheckedNetwork, spec: str, checkpoint: str) -> str | None:
    """Weights whose names and shapes fit load into any network with those names (a plain net takes its residual
    twin's): where the checkpoint's run recorded the hash of the spec it was trained from and it is not this
    network's, what to warn (a changed recipe alone changes it too, so this is a warning); else None."""
    from . import __version__
    from .train.rundir import record_of

    cfg = record_of(os.path.dirname(checkpoint))
    if cfg is None or net.is_trained_from(cfg) is not False:
        return None
    if cfg.get("spec_files") == net.files():
        why = ("config.json's copy of the spec no longer gives the network its spec hash records (edited or "
               "damaged)" if cfg.get("resdsl") == __version__ else f"this resdsl ({__version__}) compiles the spec "
               f"{checkpoint} was trained from (its copy in config.json) to another network or recipe than resdsl "
               f"{cfg.get('resdsl', '?')} did, which trained it")
        return f"{why}: evaluating the network as this version builds it"
    return (f"{checkpoint} was trained from {cfg.get('spec', 'another spec')}; {spec} describes another network or "
            f"recipe (config.json's spec hash differs): evaluating the network {spec} describes with those weights")


def evaluate_weights(net: CheckedNetwork, checkpoint: str, *, data=None, data_dir=None, test_subset=None,
                     test="auto", device="auto", batch_size: int = 256, download: bool = True) -> dict:
    """The checkpoint's weights in ``net`` on its recipe's test set, through the trainer's front door: ``{"data",
    "views" (in words), "error", "top5_error", "loss", "images"}``."""
    from .train import checkpoint as ckpt
    from .train.options import RunOptions
    from .train.rundir import record_of
    from .train.session import TrainingError, evaluate_checkpoint

    state = ckpt.load(checkpoint, plain=True)
    ckpt.check_same_run(state, record_of(os.path.dirname(checkpoint)), checkpoint,
                        "it holds that run's weights, not this one's; evaluate the run it came from")
    recipe = state.get("recipe") or net.recipe or {}
    name = data or recipe.get("dataset")
    if not name:
        raise TrainingError("give the data (--data): neither the spec's recipe nor the checkpoint names a dataset")
    opts = RunOptions(data=name, data_dir=data_dir, test_subset=test_subset, device=device, download=download)
    views, result = evaluate_checkpoint(model_fn(net), state, checkpoint, dict(recipe, dataset=name), opts, test,
                                        batch_size)
    return {"data": name, "views": views, **result}


def evaluate(target, *, checkpoint=None, data=None, data_dir=None, test_subset=None, test="auto", device="auto",
             batch_size: int = 256, download: bool = True) -> dict:
    """Top-1 and top-5 test error, as `resdsl eval` reports them, of a run (its folder: its spec, checkpoint and
    data) or of a spec's (a name, path, text or CheckedNetwork) weights in ``checkpoint`` (a checkpoint.pt, a run's
    folder, or a file of bare weights: ``torch.save(model.state_dict())``, torchvision's weight files).

    ``test``: "auto" (the recipe's view for image folders; small in-memory images whole), "single-view",
    "10-crop", "multi-scale", or a view in the recipe's words ("10-crop scale 480 crop 448"); ``test_subset``: the
    first N test images, or "all" (by default a run's own). Returns ``{"network", "data", "views", "error",
    "top5_error", "loss", "images"}``. Weights trained from another spec are a ``RuntimeWarning``.

    >>> resdsl.evaluate("runs/r20")["error"]  # doctest: +SKIP
    """
    import warnings

    from .train.options import RunOptions, bad_value
    from .train.session import TrainingError

    given = RunOptions(device=device, batch_size=batch_size, test_subset=None if _all(test_subset) else test_subset)
    if why := bad_value(vars(given)):  # as train() checks its options; a torch.device is taken by its name
        raise TrainingError(why)
    device = given.device
    if not isinstance(test, (str, dict)):
        raise TypeError(f"test is a view's name or words ('10-crop', '10-crop scale 480 crop 448') or a view's "
                        f"table, not {test!r}")
    if isinstance(test, str) and test != "auto":  # a view in the recipe's words, checked before anything is loaded
        from .recipes import test_view_words

        test = test_view_words(test)
    what = eval_target(target, checkpoint, data, data_dir, test_subset)
    said = trained_elsewhere(what["net"], what["spec"], what["checkpoint"])
    if said:
        warnings.warn(said, RuntimeWarning, stacklevel=2)
    result = evaluate_weights(what["net"], what["checkpoint"], data=what["data"], data_dir=what["data_dir"],
                              test_subset=what["test_subset"], test=test, device=device, batch_size=batch_size,
                              download=download)
    return {"network": what["net"].name, **result}
