"""`resdsl reproduce`: a paper's table or figure in one command, set beside the paper's numbers."""
from __future__ import annotations

import os
import shlex
import sys
import time

import click

from resdsl.errors import printable
from resdsl.train.options import AMPS, DEVICES, misuse, positive_int, recorded_paths

from .common import EXIT_SPEC, gpus, guard, shown

REPRODUCE_EXAMPLES = """\b
Examples:
  resdsl list experiments                                  # the packaged experiments
  resdsl reproduce r-table6 --dry-run                      # the plan: runs, state, estimated time
  resdsl reproduce r-table6 --data fashion-mnist --seeds 2 # [R] Table 6 and Fig. 6 on Fashion-MNIST
  resdsl reproduce i-table2 --launcher slurm --slurm-partition gpu   # the runs as a Slurm job array
  resdsl reproduce my_orders.exp --out runs/orders         # your own experiment file (docs/experiments.md)
"""


def _positive(ctx, param, value):
    """A click callback with the trainer's rule for a count (options.positive_int)."""
    try:
        return None if value is None else positive_int(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _seed_count(ctx, param, value):
    """--seeds COUNT: runs per row (train's --seeds takes a list of seeds: said so where one is given here)."""
    from resdsl.experiment.parse import MAX_SEEDS

    if value is not None and not value.strip().lstrip("+-").isdigit():
        raise click.BadParameter(f"{value!r}: reproduce takes a count of runs per row, seeds 0 to COUNT-1 "
                                 "(e.g. --seeds 5), not a list of seeds as train's --seeds does")
    count = _positive(ctx, param, value)
    if count is not None and count > MAX_SEEDS:  # as an experiment file's `seeds`
        raise click.BadParameter(f"at most {MAX_SEEDS} runs per row, got {count}")
    return count


def _slurm_options(ctx, param, values) -> dict:
    """--slurm-option KEY=VALUE ...: submitit's additional sbatch parameters (#SBATCH --KEY=VALUE)."""
    options = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key or not value.strip() or not all(c.isalnum() or c in "-_" for c in key) or \
                any(c in value for c in "\n\r"):
            raise click.BadParameter(f"{item!r}: write one #SBATCH option as KEY=VALUE, e.g. account=abc")
        options[key.replace("-", "_")] = value.strip()
    return options


@click.command("reproduce", epilog=REPRODUCE_EXAMPLES)
@click.argument("experiment", metavar="NAME|FILE")
@click.option("--data", metavar="NAME|DIR", help="train on this dataset instead of the paper's (cifar10, "
              "fashion-mnist, ..., or an ImageNet-layout folder); the report says so and keeps the paper's column")
@click.option("--data-dir", metavar="DIR", help="where named datasets are (passed to every run)")
@click.option("--no-download", is_flag=True, help="never download data")
@click.option("--seeds", callback=_seed_count, metavar="COUNT",
              help="how many runs per row, with seeds 0 to COUNT-1 (default: the paper's count)")
@click.option("--out", metavar="DIR", help="experiment directory (default runs/<experiment>[-<data>]); "
              "restarting into it skips finished runs and resumes stopped ones exactly")
@click.option("--rows", metavar="LABELS", help="only these rows: comma-separated labels or shell-style patterns, "
              "in any case ('plain-20,plain-56,ResNet-20,ResNet-56', 'resnet-*')")
@click.option("--dry-run", is_flag=True, help="print the plan (runs, state, estimated time) and stop")
@click.option("--no-estimate", is_flag=True, help="plan without timing a training step (on a CPU, timing every row "
              "of a table takes minutes: a step of ResNet-1202 is seconds)")
@click.option("--launcher", type=click.Choice(["local", "slurm", "submitit-local"]), default="local",
              show_default=True, help="local: subprocesses here; slurm: a submitit job array (requeued on "
              "preemption, resuming exactly); submitit-local: the submitit path on this machine")
@click.option("--parallel", type=int, callback=_positive, metavar="N", help="local: runs at once (default: one "
              "per GPU, else 1); slurm: the array's parallelism")
@click.option("--iters", type=int, callback=_positive, metavar="N", help="every run: N iterations (milestones scale)")
@click.option("--epochs", type=int, callback=_positive, metavar="N", help="every run: N epochs (milestones scale)")
@click.option("--train-subset", type=int, callback=_positive, metavar="N",
              help="every run: the first N training images")
@click.option("--test-subset", type=int, callback=_positive, metavar="N", help="every run: the first N test images")
@click.option("--device", type=click.Choice(DEVICES), help="every run's device")
@click.option("--workers", type=click.IntRange(min=0), metavar="N", help="image folders: every run's DataLoader "
              "workers (default: 4, or the cores where fewer; a restart may give another number)")
@click.option("--amp", type=click.Choice(AMPS), help="every run's precision")
@click.option("--deterministic", is_flag=True, help="every run: deterministic algorithms")
@click.option("--slurm-partition", help="slurm: the partition")
@click.option("--slurm-time", type=int, callback=_positive, default=24 * 60, show_default=True, metavar="MINUTES",
              help="slurm: minutes per job (a job that runs out checkpoints, is requeued and resumes exactly)")
@click.option("--slurm-gpus", type=click.IntRange(min=0), default=1, show_default=True, help="slurm: GPUs per job")
@click.option("--slurm-cpus", type=int, callback=_positive, metavar="N", help="slurm: CPUs per job (Slurm's default "
              "is often 1, too few for an image folder's data-loading workers)")
@click.option("--slurm-option", "slurm_options", multiple=True, callback=_slurm_options, metavar="KEY=VALUE",
              help="slurm: any other #SBATCH option, as --KEY=VALUE (--slurm-option account=abc --slurm-option "
              "qos=high --slurm-option mem=64G); repeatable")
@guard
def reproduce_cmd(experiment, data, data_dir, no_download, seeds, out, rows, dry_run, no_estimate, launcher, parallel,
                  iters, epochs, train_subset, test_subset, device, workers, amp, deterministic, slurm_partition,
                  slurm_time, slurm_gpus, slurm_cpus, slurm_options):
    """Reproduce a paper's table or figure: every row's runs, then a report beside the paper's numbers.

    NAME is a packaged experiment (`resdsl list experiments`), FILE an experiment file. The plan comes first
    (each run's state and an estimate of its time from a training step measured here); then every unfinished
    run goes through `resdsl train` (the GPU fast path where it applies) into OUT/<row>/seed-<N>, and
    OUT/report.md, results.csv, results.json and the figures are written. Killed and restarted with the same
    command, finished runs are skipped and stopped ones resume exactly.
    """
    from resdsl.experiment.datasets import training_images
    from resdsl.experiment.reproduce import departures, plan, plan_text, setup_words, take
    from resdsl.training import git_commit

    if why := misuse({"iters": iters, "epochs": epochs, "out": out, "data": data, "data_dir": data_dir}):
        raise click.UsageError(why)  # as `resdsl train` says it ('' is no folder: each run exited 2)
    exp = _experiment(experiment, rows, data, dry_run)
    out = out or os.path.join("runs", exp.name + (f"-{os.path.basename(os.path.normpath(data))}" if data else ""))
    data, data_dir = recorded_paths(data, data_dir)  # the runs and experiment.json name folders from the root
    options = {"data": data, "data_dir": data_dir, "iters": iters, "epochs": epochs, "train_subset": train_subset,
               "test_subset": test_subset, "device": device, "workers": workers, "amp": amp,
               "no_download": no_download, "deterministic": deterministic}
    cards = gpus(device)
    asked, parallel = parallel, parallel or max(1, cards)
    started = time.perf_counter()
    _checked(exp, out, options, seeds, launcher, dry_run)
    lines = plan(exp, out, options, seeds, estimate=not no_estimate)
    away = departures(exp, options)
    click.echo(printable(f"{exp.heading} -> {out}") + "\n"  # the file's title: its control characters escaped
               + (printable(setup_words(away)) + "\n" if away else "") + plan_text(lines, parallel))
    if dry_run:
        from resdsl.train.fileio import is_locked

        if is_locked(out):  # the command itself would be refused
            click.echo(printable(f"(another command is running this experiment: it holds {out}/.lock)"))
        if exp.dataset == "imagenet" and not data:
            click.echo(f"(planned for ImageNet's {training_images(exp, options):,} training images; to run it, --data "
                       "with an ImageNet-layout folder)")
        return
    slurm = {"slurm_partition": slurm_partition, "timeout_min": slurm_time, "gpus_per_node": slurm_gpus,
             "cpus_per_task": slurm_cpus, "slurm_additional_parameters": slurm_options or None,
             "parallel": asked}  # a job array runs every job at once unless --parallel says otherwise
    lock = _refused(take, exp, out, options, seeds)
    try:
        failed = _run_all(exp, out, options, seeds, launcher, parallel, cards, slurm)
        command = "resdsl reproduce " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        _report(exp, out, options, seeds, command, time.perf_counter() - started, git_commit() or "unknown")
    finally:
        lock.release()
    click.echo(printable(f"report: {os.path.join(out, 'report.md')}"))
    if failed:
        click.echo(shown(f"resdsl: error: {len(failed)} run{'' if len(failed) == 1 else 's'} failed "
                         f"({', '.join(failed)}); their errors are above (and in their train.log where they got that "
                         "far, or their job's log); the report holds the others"), err=True)
        sys.exit(EXIT_SPEC)


def _checked(exp, out: str, options: dict, seeds, launcher: str, dry_run: bool) -> None:
    """What the command would refuse, refused before anything runs, by a dry run too: another experiment's folder,
    other options, runs of other specs; and the data, once, not by every run in turn, where a run is still to do
    (finished runs need none: their data may have moved since); read here only for runs on this machine."""
    from resdsl.experiment.datasets import check_augmentations, check_data, check_folder_normalize
    from resdsl.experiment.folder import check_record, check_runs
    from resdsl.experiment.runner import jobs, status
    from resdsl.train.vocabulary import written_as_path

    _refused(check_record, out, exp, options, seeds or exp.seeds, write=False)
    _refused(check_runs, exp, out, seeds, options)
    _refused(check_folder_normalize, exp, options)
    if any(status(job)[0] != "finished" for job in jobs(exp, out, seeds)):
        if launcher == "local":
            _refused(check_data, exp, options, load=not dry_run)
        else:  # a cluster's nodes read the data, not the machine that submits the jobs: a name is checked here,
            _refused(check_augmentations, exp, options)  # a folder is not (it may be the nodes' alone)
            if not written_as_path(options.get("data") or ""):
                _refused(check_data, exp, options, load=False)


def _refused(fn, *args, **kwargs):
    """``fn``'s value; an experiment it refuses (ExperimentRunError) is this command's error."""
    from resdsl.experiment.runner import ExperimentRunError

    try:
        return fn(*args, **kwargs)
    except ExperimentRunError as exc:
        _error(str(exc))


def _error(message: str) -> None:
    """``resdsl: error: MESSAGE`` and this command's exit status for it; the message may quote a file's text
    (an experiment.json, a title), so its control characters are escaped."""
    click.echo(printable(f"resdsl: error: {message}"), err=True)
    sys.exit(EXIT_SPEC)


def _report(exp, out: str, options: dict, seeds, command: str, wall: float, commit: str) -> None:
    """write_report; a report that cannot be written (its place taken by a folder, a full disk) is this command's
    error, which says the runs are kept: they are finished, and the same command writes the report again."""
    from resdsl.experiment.reproduce import write_report
    from resdsl.train.fileio import OutputError

    try:
        write_report(exp, out, options, seeds, command, wall, commit)
    except OutputError as exc:
        _error(f"the report was not written: {exc}. The runs are kept in {out}; once the cause is put right, "
               "the same command writes the report (finished runs are not trained again)")


def _run_all(exp, out: str, options: dict, seeds, launcher: str, parallel: int, cards: int, slurm: dict) -> list:
    """Every unfinished run, through ``launcher``; the labels of the runs that failed. Ctrl-C (or a signal)
    ends the command with what became of the runs."""
    from resdsl.experiment.reproduce import launch
    from resdsl.experiment.runner import ExperimentRunError

    try:
        return launch(exp, out, options, seeds, launcher, parallel, cards, slurm, say=click.echo)
    except ExperimentRunError as exc:
        _error(str(exc))
    except KeyboardInterrupt as exc:
        if launcher != "local":  # the jobs are the cluster's: waiting for them stops, they do not
            click.echo("resdsl: stopped waiting; the jobs run on (see their logs in "
                       f"{os.path.join(out, 'submitit')}); the same command, once they are done, writes the report",
                       err=True)
        else:
            click.echo(shown(f"resdsl: {str(exc) or 'stopped'}: the same command goes on, each stopped run from "
                             "its checkpoint (one stopped before its first starts afresh)"), err=True)
        sys.exit(getattr(exc, "status", 130))  # 128 + the signal's number; a bare Ctrl-C is SIGINT's 130


def _experiment(experiment: str, rows: str | None, data: str | None, dry_run: bool):
    """The experiment a NAME or FILE names, with only the --rows asked for; an ImageNet one needs --data (but
    for a dry run, planned for ImageNet's size)."""
    from resdsl.experiment import catalog
    from resdsl.experiment.parse import parse_experiment
    from resdsl.experiment.reproduce import only_rows
    from resdsl.experiment.runner import ExperimentRunError

    exp = parse_experiment(catalog.locate(experiment))
    if rows is not None and not rows.strip():  # not every row, quietly
        raise click.UsageError("--rows needs row labels, not an empty text")
    if rows:
        try:
            exp = only_rows(exp, rows)
        except ExperimentRunError as exc:
            raise click.UsageError(str(exc)) from None
    if exp.dataset == "imagenet" and not data and not dry_run:
        raise click.UsageError(f"{exp.name} trains on ImageNet: pass --data with an ImageNet-layout folder "
                               "(train/ and val/ of class folders)")
    return exp


