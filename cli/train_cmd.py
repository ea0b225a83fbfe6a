"""`resdsl train` and `resdsl eval`: click front ends of resdsl.train. The training options come from the table in
resdsl/train/options.py, which an emitted trainer's argparse front end reads too."""
from __future__ import annotations

import os
import sys

import click

from resdsl.errors import printable
from resdsl.train.options import DEVICES, OPTIONS, misuse
from resdsl.train.rundir import RunDirError

from .common import EXIT_SPEC, compile_arg, gpus, guard, say_warnings, shown

TRAIN_EXAMPLES = """\b
Examples:
  resdsl train specs/resnet110.res                       # the spec's recipe: CIFAR-10, 64k iterations
  resdsl train resnet20 --data fashion-mnist --epochs 1  # quick run; milestones scale with the length
  resdsl train resnet20 --set momentum=0.95 --set 'schedule=step 100, 150' --iters 200
  resdsl train resnet50 --data /data/imagenet --nproc 8  # an ImageNet folder, 8 processes
  resdsl train resnet20 --data fashion-mnist --seeds 0-4 # five seeds side by side, in OUT/seed-N
  resdsl train --resume runs/resnet20-20261122-101500    # continue exactly where it stopped
"""

EVAL_EXAMPLES = """\b
Examples:
  resdsl eval runs/resnet20-20261122-101500              # a run directory: its spec, checkpoint and data
  resdsl eval specs/resnet20.res --checkpoint runs/resnet20-20261122-101500 --data fashion-mnist
  resdsl eval resnet50 --checkpoint model.pt --data /data/imagenet --test 10-crop
"""


class _Parsed(click.ParamType):
    """A click type from one of the option table's parse functions (text -> value, ValueError with a message)."""

    def __init__(self, parse):
        self.parse = parse
        self.name = parse.__name__.replace("_", " ")

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _table_options(fn):
    """Apply every option of the trainer's table as a click option, in the table's order."""
    for opt in reversed(OPTIONS):
        if opt.is_flag:
            fn = click.option(opt.flag, is_flag=True, help=opt.help)(fn)
            continue
        kind = click.Choice(opt.choices) if opt.choices else (_Parsed(opt.parse) if opt.parse else str)
        fn = click.option(opt.flag, type=kind, default=opt.default, metavar=opt.metavar, help=opt.help,
                          show_default=opt.default is not None)(fn)
    return fn


@click.command("train", epilog=TRAIN_EXAMPLES)
@click.argument("spec", required=False)
@_table_options
@click.option("--seed-runs", type=click.Choice(["auto", "processes", "threads"]), default="auto", show_default=True,
              help="with --seeds: one process per run, or one thread per run in one process, each on its own CUDA "
                   "stream (processes on one GPU take turns on it; streams of one process share it); auto: threads "
                   "on one GPU unless the network has dropout or stochastic depth, --parallel is given or there are "
                   "more than 10 seeds, processes elsewhere")
@click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE",
              help="override any recipe field, written as in a spec's recipe block (weight_decay is also taken for "
                   "weight-decay) and checked like one, e.g. --set momentum=0.95 or --set 'schedule=step 100, 150' "
                   "(repeat for several). With --iters or --epochs a --set schedule or warm-up counts in the run's "
                   "length, as written, unless --scale-set.")
@click.option("--scale-set", is_flag=True,
              help="with --iters or --epochs: the --set schedule and warm-up count in the recipe's own length and "
                   "scale with the run's, as the recipe's do (resdsl reproduce takes a row's `set` so)")
@guard
def train_cmd(spec, settings, seed_runs, **values) -> None:
    """Train SPEC (a file or a packaged spec's name) with its recipe, or continue a run with --resume."""
    if spec is None and not values["resume"]:
        raise click.UsageError("give a SPEC to train (or --resume RUNDIR)")
    if why := misuse(values):  # as reproduce and an emitted trainer say it: exit 2
        raise click.UsageError(why)
    if values["resume"] and settings:
        raise click.UsageError("--set changes the recipe, and a resumed run keeps its own; start a new run instead")
    if values["scale_set"] and not (settings and (values["iters"] or values["epochs"])):
        raise click.UsageError("--scale-set goes with --set and --iters or --epochs")
    if values["seeds"]:
        try:  # the folder of the seeds' runs is made once the flags are checked
            sys.exit(_launch_seeds(spec, values, settings, seed_runs))
        except RunDirError as exc:
            raise click.ClickException(str(exc)) from None
    if seed_runs != "auto":
        raise click.UsageError("--seed-runs goes with --seeds")
    if values["nproc"] and "RANK" not in os.environ:
        sys.exit(_launch_processes(spec, values, settings))
    from resdsl.train.cli import end_worker  # torch loads with it, once the flags are checked

    code = _train_once(spec, values, list(settings))
    end_worker(code)  # a torchrun worker ends here, without the interpreter's teardown
    if code:
        sys.exit(code)


def _run_record(run_dir: str, flag: str = "--resume") -> dict:
    """A run's config.json, checked."""
    from resdsl.train.rundir import RunDirError, read_config

    try:
        return read_config(run_dir, flag)
    except RunDirError as exc:
        raise click.ClickException(str(exc)) from None


def _compile(spec: str | None, values: dict):
    """The network to train and what config.json says of its spec: SPEC, or with --resume RUN alone the spec the
    run was trained from, compiled from the copy of its files the run keeps (see pipeline.compile_run)."""
    from resdsl.training import run_network, spec_named

    if spec is not None:
        net = compile_arg(spec)
        return net, spec_named(spec, net)
    try:
        return run_network(values["resume"])
    except RunDirError as exc:
        raise click.ClickException(str(exc)) from None


def _as_args(spec, values: dict, settings) -> list[str]:
    """The command line that gives ``values`` again (for the processes torchrun starts)."""
    args = [spec] if spec else []
    for opt in OPTIONS:
        value = values[opt.dest]
        if opt.dest in ("nproc", "seeds", "parallel") or value is None or value is False or (
                value == opt.default and not opt.is_flag):
            continue
        args += [opt.flag] if opt.is_flag else [opt.flag, str(value)]
    for item in settings:
        args += ["--set", item]
    return args + ["--scale-set"] * bool(values.get("scale_set"))


def _launch_processes(spec: str | None, values: dict, settings) -> int:
    """--nproc N: check what can be checked once, fix the run directory for all ranks, then start torchrun."""
    from resdsl.train.cli import relaunch_with_torchrun
    from resdsl.train.rundir import RunDirError, check_world, default_path

    net = _compile(spec, values)[0]
    nproc = values["nproc"]
    if values["resume"]:  # in as many processes as it was started in (whose number divided its batch)
        try:
            check_world(values["resume"], _run_record(values["resume"]), nproc)
        except RunDirError as exc:
            raise click.ClickException(str(exc)) from None
    batch = None if values["resume"] else values["batch_size"] or (net.recipe or {}).get("batch")
    if batch and batch % nproc:
        raise click.ClickException(f"the batch size {batch} does not split evenly over --nproc {nproc} "
                                   "processes; choose a batch size that is a multiple of it")
    if not values["out"] and not values["resume"]:  # every rank must write to the same run directory
        values = dict(values, out=default_path(net.name))
    return relaunch_with_torchrun(nproc, ["-m", "resdsl_cli", "train", *_as_args(spec, values, settings)],
                                  values["resume"] or values["out"])


def _launch_seeds(spec: str, values: dict, settings, seed_runs: str) -> int:
    """--seeds: one run per seed, each the run `--seed N --out OUT/seed-N` alone makes, side by side."""
    from resdsl.train.rundir import default_path
    from resdsl.train.seeds import run_seeds, seed_runs_way

    for flag in ("seed", "resume", "nproc"):
        if values[flag] is not None:
            raise click.UsageError(f"--seeds makes one run per seed; it does not go with --{flag}"
                                   + (" (resume one seed's run with --resume OUT/seed-N)" if flag == "resume" else ""))
    net = compile_arg(spec)  # a bad spec is one message here, not one per seed
    say_warnings(net)
    out = values["out"] or default_path(net.name)
    click.echo(printable(f"{len(values['seeds'])} runs of {net.name}, seeds {', '.join(map(str, values['seeds']))}, "
                         f"in {out}"))
    cards = gpus(values["device"])
    way = seed_runs_way(seed_runs, cards, _is_random(net), values["parallel"], len(values["seeds"]))
    if way == "threads":
        click.echo("the runs are threads of this process" + (", each on its own CUDA stream of the GPU"
                                                              if cards else ""))
        return _seeds_in_threads(net, spec, out, values, settings)

    def command_for(seed: int, folder: str) -> list[str]:
        args = _as_args(spec, dict(values, seed=seed, out=folder, quiet=True), settings)
        return [sys.executable, "-m", "resdsl_cli", "train", *args]

    return run_seeds(values["seeds"], out, command_for, gpus=cards, parallel=values["parallel"])


def _seeds_in_threads(net, spec: str, out: str, values: dict, settings) -> int:
    """--seed-runs threads: every seed's run in a thread of this process, on its own CUDA stream."""
    from resdsl.train.stopping import stop_all
    from resdsl.train.seeds import MAX_THREAD_RUNS, run_in_threads

    cuda = gpus(values["device"]) > 0
    if cuda and len(values["seeds"]) > MAX_THREAD_RUNS:
        raise click.UsageError(f"at most {MAX_THREAD_RUNS} runs go in threads on a GPU (each takes CUDA streams from "
                               "a pool of 32 that PyTorch shares out); use --seed-runs processes")
    if values["parallel"]:
        raise click.UsageError("--parallel goes with --seed-runs processes (threads run every seed at once)")
    if _is_random(net):
        raise click.UsageError("this network has dropout or stochastic depth, which draws from torch's generator "
                               "while it trains; runs in threads of one process would share it, so use --seed-runs "
                               "processes")

    def train_one(seed: int, folder: str) -> int:
        return _train_once(spec, dict(values, seed=seed, out=folder, quiet=True), list(settings))

    return run_in_threads(values["seeds"], out, train_one, stop_all, cuda=cuda)


def _is_random(net) -> bool:
    """Whether the network draws from torch's generator while it trains (dropout, stochastic depth): the IR says,
    without building it."""
    from resdsl.ops import OPS

    return any(OPS[d["op"]].random for _, d in net.graph.nodes(data=True))


def _train_once(spec: str | None, values: dict, settings: list[str]) -> int:
    """One run of SPEC (None: the --resume run's own); its exit status (0, 1 for an error, 128 + the signal's
    number for a stop), the error said on stderr."""
    from resdsl.train.cli import options_from
    from resdsl.train.loop import run_with_errors
    from resdsl.training import train_network

    net, named = _compile(spec, values)
    if not values.get("quiet") and os.environ.get("RANK", "0") == "0":  # --seeds and --nproc say it once
        say_warnings(net)
    opts = options_from(values, net.name)
    _, failure = run_with_errors(train_network, net, opts, settings=settings, scale_set=bool(values.get("scale_set")),
                                 named=named)
    if not failure:
        return 0
    message, code = failure
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank fails alike; one message is enough
        click.echo(shown(f"resdsl: {'stopped' if code > 128 else 'error'}: {message}"), err=True)
    return code


@click.command("eval", epilog=EVAL_EXAMPLES)
@click.argument("target", metavar="RUNDIR|SPEC")
@click.option("--checkpoint", type=click.Path(path_type=str),
              help="checkpoint.pt, a run directory, or a file of bare weights (torch.save(model.state_dict()), "
                   "torchvision's weight files) (default: RUNDIR's checkpoint; required with a SPEC)")
@click.option("--data", metavar="NAME|DIR",
              help="dataset name or ImageNet-layout folder (default: the run's, else the recipe's)")
@click.option("--data-dir", metavar="DIR", help="where named datasets are (default: the run's --data-dir)")
@click.option("--test-subset", callback=lambda ctx, param, value: _subset(value), metavar="N|all",
              help="evaluate on the first N test images (of an image folder, N drawn over its classes, as in "
                   "training), or all of them (default: a run's own --test-subset, else all)")
@click.option("--test", default="auto", show_default=True, metavar="auto|single-view|10-crop|multi-scale|VIEW",
              help="how to test, in the recipe's words: a kind (with the recipe's sizes where its `test` is of that "
                   "kind), or a whole view with its sizes ('single-view scale 256 crop 224', '10-crop scale 480 crop "
                   "448', 'multi-scale 224, 320'); auto follows the recipe's `test` for image folders and tests small "
                   "in-memory images whole (single-view)")
@click.option("--view", "old_view", hidden=True, help="renamed --test")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="where to evaluate: auto picks CUDA, then Apple MPS, then the CPU")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="images per evaluation batch, in crops' worth of pixels (10-crop takes 10 a picture, [R]'s "
                   "multi-scale about 24)")
@click.option("--no-download", is_flag=True, help="never download; fail if the data is not local")
@guard
def eval_cmd(target, checkpoint, data, data_dir, test_subset, test, old_view, device, batch_size,
             no_download) -> None:
    """Report top-1 and top-5 test error of a run directory, or of a SPEC's weights in --checkpoint."""
    if old_view is not None:
        raise click.UsageError("--view is now --test, in the recipe's words: --test "
                               "auto|single-view|10-crop|multi-scale")
    if test != "auto":  # a view in the recipe's words, checked (and located) before anything is loaded
        from resdsl.recipes import test_view_words

        test = test_view_words(test)
    from resdsl.train import checkpoint as ckpt
    from resdsl.train.data import DataError
    from resdsl.train.loop import TrainingError
    from resdsl.training import eval_target, evaluate_weights, trained_elsewhere

    if not os.path.isdir(target) and checkpoint is None:
        raise click.UsageError(printable(f"{target} is not a run directory: give a run directory, or a SPEC with "
                                         "--checkpoint"))
    try:
        what = eval_target(target if os.path.isdir(target) else compile_arg(target), checkpoint, data, data_dir,
                           test_subset)
    except RunDirError as exc:
        raise click.ClickException(str(exc)) from None
    net, said = what["net"], trained_elsewhere(what["net"], what["spec"] if os.path.isdir(target) else target,
                                               what["checkpoint"])
    if said:
        click.echo(shown(f"resdsl: warning: {said}"), err=True)
    try:
        res = evaluate_weights(net, what["checkpoint"], data=what["data"], data_dir=what["data_dir"],
                               test_subset=what["test_subset"], test=test, device=device, batch_size=batch_size,
                               download=not no_download)
    except (ckpt.CheckpointError, DataError, TrainingError) as exc:
        click.echo(shown(f"resdsl: error: {exc}"), err=True)
        sys.exit(EXIT_SPEC)
    which = (" (the run's --test-subset; --test-subset all for every one)" if what["runs_subset"] and
             what["test_subset"] else "")
    click.echo(printable(f"{net.name} on {res['data']} ({res['views']}): top-1 error {res['error']:.2f}%, top-5 error "
                         f"{res['top5_error']:.2f}%, loss {res['loss']:.4f}, on {res['images']:,} test images{which}"))


def _subset(value: str | None) -> int | str | None:
    """eval's --test-subset: a number of images, or all."""
    if value is None or value == "all":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise click.BadParameter(f"{value!r} is neither a number of images (1 or more) nor 'all'")
    return number
