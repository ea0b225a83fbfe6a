"""What an experiment folder holds (issue 8's restarts): its record, EXPDIR/experiment.json, of what the
experiment was started with (a restart with other options is refused rather than mixing two experiments' runs),
and a check that each run folder holds the run its row and seed name (not one of another network, recipe, seed or
options: a spec edited since, or a run copied in from elsewhere)."""
from __future__ import annotations

import glob
import json
import os

from ..train.fileio import LOCK_FILE, read_regular
from ..train.rundir import CHECKPOINT, record_of
from .model import Experiment
from .runner import FLAGS, PASSED, RECORD, UNRECORDED, ExperimentRunError, Job, jobs, spec_path, status


def check_record(out: str, exp: Experiment, options: dict, seeds: int, write: bool = True) -> None:
    """Write EXPDIR/experiment.json on the first start; on a restart, refuse other options than the first's once
    a run has checkpointed (before, nothing would be mixed: the new options replace a start that failed on a
    typo); other rows or seeds are recorded. ``write=False`` (a dry run) refuses what the run would refuse and
    writes nothing."""
    path = os.path.join(out, RECORD)
    mine = {"experiment": exp.name, "file": exp.path, "seeds": seeds, "rows": [r.label for r in exp.rows],
            "options": {k: options.get(k) for k in PASSED + FLAGS if k not in UNRECORDED}}
    if os.path.exists(path):
        try:  # a regular file only: a named pipe in its place would block the read for good
            old = json.loads(read_regular(path))
        except (OSError, ValueError) as exc:
            raise ExperimentRunError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}); use another "
                                     "--out") from None
        if isinstance(old, dict) and isinstance(old.get("options"), dict):  # older records hold them (as null)
            old["options"] = _from_root({k: v for k, v in old["options"].items() if k not in UNRECORDED})
        # rows and seeds choose the runs a command trains and reports, each run checked on its own (check_runs):
        # another choice mixes nothing (more seeds, or the rest of a table, reuse the finished runs)
        differ = [key for key in ("experiment", "options") if old.get(key) != mine[key]]
        if not differ or differ == ["options"] and not _any_checkpoint(out):  # no run trained to mix with: a
            return _write_record(out, path, mine) if write and old != mine else None  # start that failed on a
        for key in differ:  # typo (--data) is put right
            was, now = old.get(key), mine[key]
            if key == "options" and isinstance(was, dict):  # name the flags that differ, not two dicts
                names = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
                was, now = (", ".join(_flag(k, given.get(k)) for k in names) for given in (was, now))
            started = "" if key == "experiment" else f" started with {key} {was}"
            raise ExperimentRunError(
                f"{out} holds experiment {was if key == 'experiment' else old.get('experiment')}{started}; this "
                f"command asks for {'experiment ' if key == 'experiment' else ''}{now}. "
                + ("Use another --out" if key == "experiment" else "Restart it with the same options, or use another "
                   "--out"))
        return
    if os.path.exists(out) and not os.path.isdir(out):
        raise ExperimentRunError(f"--out {out} is a file, not a folder; use another --out")
    if os.path.isdir(out) and set(os.listdir(out)) - {LOCK_FILE}:  # the report would replace files not its own
        raise ExperimentRunError(f"--out {out} already holds files but no {RECORD} (an experiment folder holds its "
                                 "record, its runs and its report, written by resdsl); use another --out")
    if write:
        _write_record(out, path, mine)


def _flag(key: str, value) -> str:
    """A recorded option as the command line gives it: '--iters 5', '--amp', or 'no --iters' where not given."""
    flag = "--" + key.replace("_", "-")
    return f"no {flag}" if value is None or value is False else flag if value is True else f"{flag} {value}"


def _from_root(options: dict) -> dict:
    """Recorded options with their folders from the root, as this resdsl records them (an older one kept a relative
    --data or --data-dir as typed: read from the folder the command runs in, as it was then)."""
    from resdsl.train.options import recorded_paths

    data, data_dir = recorded_paths(options.get("data"), options.get("data_dir"))
    return dict(options, **({"data": data} if "data" in options else {}),
                **({"data_dir": data_dir} if "data_dir" in options else {}))


def check_runs(exp: Experiment, out: str, seeds: int | None, options: dict) -> None:
    """Refuse a restart whose run folders hold runs other than the ones the experiment now names: a spec edited, a
    row's spec or its `set` overrides changed in the experiment file since, or a run copied in that was trained
    with another seed or other options (the report would average runs of two networks, or count a run twice)."""
    from resdsl.pipeline import compile_spec

    nets, stale = {}, []
    for job in jobs(exp, out, seeds):
        config = record_of(job.run_dir)
        if config is None or status(job)[0] == "new":  # never checkpointed: started anew (train_command)
            continue
        if job.row.label not in nets:
            nets[job.row.label] = compile_spec(spec_path(exp, job.row))
        why = _stale(job, config, nets[job.row.label], dict(options, data=options.get("data") or exp.dataset))
        if why:
            stale.append(f"{job.name} ({why})")
    if stale:
        raise ExperimentRunError(
            f"{out}: {'; '.join(stale)}: not the run the experiment names there (a spec, or a row's spec or `set`, "
            "changed since, another resdsl version builds the network otherwise, or the run was copied in from "
            "elsewhere); use another --out, or remove those run folders to train them anew")


# what a run of an experiment folder must have been trained with: the command's options (experiment.json's)
_RUN_OPTIONS = ("data", "iters", "epochs", "train_subset", "test_subset")


def _stale(job: Job, config: dict, net, options: dict) -> str | None:
    """Why the run in ``job``'s folder is not the one its row and seed name (None: it is)."""
    if net.is_trained_from(config) is False:
        return "trained from another network or recipe"
    if list(config.get("set") or []) != list(job.row.overrides):
        return "trained with other `set` overrides"
    if _scales(job.row.overrides, options) and config.get("set_scaled") is not True:
        return "trained with its `set` schedule or warm-up counted in the run's length, as an older resdsl did"
    if config.get("seed") != job.seed:
        return f"trained with seed {config.get('seed')}"
    recorded = _from_root(config.get("options") if isinstance(config.get("options"), dict) else {})
    differ = [key for key in _RUN_OPTIONS if key in recorded and recorded[key] != options.get(key)]
    if differ:
        return "trained with " + ", ".join(f"--{k.replace('_', '-')} {recorded[k]}" for k in differ)
    return None


def _scales(overrides, options: dict) -> bool:
    """Whether a shorter run scales the row's `set` (train_command's --scale-set): a schedule or warm-up it gives
    without a length, which `train --set` alone would count in the run's length."""
    keys = {item.split("=", 1)[0].strip().replace("_", "-") for item in overrides}
    return bool((options.get("iters") or options.get("epochs")) and keys & {"schedule", "warmup"}
                and "length" not in keys)


def _any_checkpoint(out: str) -> bool:
    """Whether any run of the experiment folder has trained far enough to checkpoint."""
    return bool(glob.glob(os.path.join(glob.escape(out), "*", "seed-*", CHECKPOINT)))


def _write_record(out: str, path: str, record: dict) -> None:
    """experiment.json, written as resdsl writes the files of a folder it owns: never through a link."""
    from resdsl.train.fileio import OutputError, write_owned

    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise ExperimentRunError(f"cannot make the experiment folder {out}: {exc.strerror or exc}") from None
    try:
        write_owned(path, json.dumps(record, indent=2) + "\n")
    except OutputError as exc:
        raise ExperimentRunError(str(exc)) from None


# ---------------------------------------------------------------------------------------------------
# launchers
