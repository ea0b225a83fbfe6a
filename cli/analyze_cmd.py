"""`resdsl analyze`: analyses of trained run directories. `resdsl analyze responses` draws [R] Fig. 7, the std of
each 3x3 layer's response on the test set, with resdsl.analysis.responses. Nothing heavy is imported until a
command runs, so `resdsl --help` stays fast."""
from __future__ import annotations

import os
import sys

import click

from resdsl.errors import printable
from resdsl.train.options import DEVICES

from .common import EXIT_SPEC, guard

RESPONSES_EXAMPLES = """\b
Examples:
  resdsl analyze responses runs/plain20-A runs/resnet20-B runs/resnet56-C   # [R] Fig. 7 into ./responses/
  resdsl analyze responses runs/resnet110-A --test-subset 1000 --out fig7
  resdsl analyze responses runs/resnet110_preact-A --at conv                # pre-activation: conv outputs
"""


@click.group("analyze", epilog=RESPONSES_EXAMPLES)
def analyze() -> None:
    """Analyse trained runs (folders made by `resdsl train`)."""


@analyze.command("responses", epilog=RESPONSES_EXAMPLES,
                 short_help="std of each 3x3 layer's response on the test set, per run ([R] Fig. 7)")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--out", default="responses", show_default=True, type=click.Path(file_okay=False, path_type=str),
              metavar="DIR",
              help="folder for responses.png and responses.csv, created if missing (default: ./responses; never a "
                   "run directory, whose --overwrite refuses files it did not write)")
@click.option("--test-subset", type=click.IntRange(min=1), metavar="N",
              help="measure on the first N test images (default: each run's own --test-subset, else all)")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="where to run the networks: auto picks CUDA, then Apple MPS, then the CPU")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, metavar="N",
              help="test images per forward pass")
@click.option("--at", type=click.Choice(["auto", "bn", "conv"]), default="auto", show_default=True,
              help="where a 3x3 layer's response is taken. bn: the output of the BN after it ([R]: 'after BN and "
                   "before other nonlinearity (ReLU/addition)'); conv: the conv's own output; auto: bn, or conv for "
                   "a network whose last 3x3 conv in each unit has no BN of its own (pre-activation units)")
@click.option("--data-dir", metavar="DIR", help="where named datasets are (default: the run's --data-dir)")
@click.option("--no-download", is_flag=True, help="never download; fail if the data is not local")
@guard
def responses_cmd(runs, out, test_subset, device, batch_size, at, data_dir, no_download) -> None:
    """[R] Fig. 7: the std of every 3x3 layer's response (after BN, before ReLU and the addition) on the test set,
    over all its values (every image, channel and position), for each RUN; writes OUT/responses.png (top: layers
    in network order, bottom: sorted descending) and OUT/responses.csv (run, layer, module, std, rank)."""
    from resdsl.analysis import ResponsesError, csv_text, figure_png, images_words, labelled, measure_run, open_run
    from resdsl.train.fileio import OutputError, write_owned

    png, csv = _check_out(out)  # before any run is measured (minutes, for a deep network on a CPU)
    _refuse_a_run_twice(runs)
    try:
        opened = [open_run(path) for path in runs]  # every run is checked before the first is measured
        for run in opened:
            _warn_if_spec_changed(run)
            _warn_if_unfinished(run)
        measured = []
        for run in opened:
            measured.append(measure_run(run, test_subset=test_subset, device=device, batch_size=batch_size,
                                        data_dir=data_dir, download=not no_download, at=at))
            click.echo(_table(measured[-1]))
        results = labelled(measured)
        _make_folder(out)
        write_owned(png, figure_png(results, images_words(measured)))  # resdsl names them: a link is replaced
        write_owned(csv, csv_text(results))
    except (ResponsesError, OutputError) as exc:
        click.echo(printable(f"resdsl: error: {exc}"), err=True)
        sys.exit(EXIT_SPEC)
    click.echo(printable(f"wrote {png} and {csv}"))


def _refuse_a_run_twice(runs) -> None:
    """The same run named twice (under two spellings, say) would be measured twice and drawn as two runs."""
    seen = {}
    for run in runs:
        first = seen.get(os.path.realpath(run))
        if first is not None:
            raise click.UsageError(printable(f"{run} and {first} are the same run: name each run once"))
        seen[os.path.realpath(run)] = run


def _check_out(out: str) -> tuple[str, str]:
    """OUT/responses.png and OUT/responses.csv, where OUT is a folder (or none yet) that is not in a run."""
    from resdsl.train.rundir import CONFIG, record_of

    folder = top = os.path.abspath(out)
    while True:  # a run's --overwrite removes what it did not write, in its subfolders too
        record = record_of(folder)
        holds_a_config = folder == top and os.path.exists(os.path.join(folder, CONFIG))  # even an unreadable one
        if holds_a_config or (record is not None and ("run_id" in record or "spec_hash" in record)):
            raise click.UsageError(printable(f"--out {out} is in the run directory {folder} (it holds {CONFIG}); "
                                             "the figures go in a folder of their own: a run's folder holds its run's "
                                             "files alone (--overwrite refuses one that holds others)"))
        if os.path.dirname(folder) == folder:
            break
        folder = os.path.dirname(folder)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise click.UsageError(printable(f"--out {out} is not a folder: it names the folder for responses.png "
                                         "and responses.csv"))
    paths = os.path.join(out, "responses.png"), os.path.join(out, "responses.csv")
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            raise click.UsageError(printable(f"--out {out}: {path} is a folder; resdsl writes a file of that name "
                                             "there"))
    return paths


def _make_folder(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(printable(f"cannot make the folder {path}: {exc.strerror or exc}")) from None


def _warn_if_spec_changed(run) -> None:
    """A spec edited since training rebuilds another network around the same weights: say so (a changed recipe
    alone also changes the hash, and does not matter here, so this is a warning)."""
    if run.net.is_trained_from(run.config) is False:
        click.echo(printable(f"resdsl: warning: {run.path}: the spec {run.spec} has changed since the run was trained "
                             "(its hash differs from config.json's); measuring the network it describes now"), err=True)


def _warn_if_unfinished(run) -> None:
    """A run stopped before its last iteration has weights from along the way: measured, and said."""
    done, planned = (run.state.get("state") or {}).get("iter"), run.config.get("iterations")
    if isinstance(done, int) and isinstance(planned, int) and done < planned:
        click.echo(printable(f"resdsl: warning: {run.path}: the run stopped at iteration {done:,} of {planned:,}; "
                             "measuring the weights of its last checkpoint, not a trained network's"), err=True)


def _table(m) -> str:
    """One line per stage (the stem, layer1, ...): how many 3x3 layers, their mean and largest std."""
    where = "after BN" if m.taken_at == "bn" else "the 3x3 convs' own outputs (before any BN)"
    stages: dict[str, list[float]] = {}
    for (name, std), conv in zip(m.responses, m.convs or [name for name, _ in m.responses]):
        stages.setdefault(conv.split(".")[0] if conv.startswith("layer") else "stem", []).append(std)
    stages["all"] = [s for _, s in m.responses]
    lines = [printable(f"{m.network} ({m.run})")  # a record's and a folder's names: control characters escaped
             + f": {len(m.responses)} 3x3 layers, responses {where}, {m.images:,} test images",
             f"  {'stage':<8} {'layers':>6} {'mean std':>10} {'max std':>10}"]
    for stage, stds in stages.items():
        lines.append(f"  {stage:<8} {len(stds):>6} {sum(stds) / len(stds):>10.4f} {max(stds):>10.4f}")
    return "\n".join(lines)
