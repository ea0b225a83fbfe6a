"""Run directories: one run per folder, locked while a process owns it, never overwritten by accident.

A run directory holds ``config.json`` (what ran), ``checkpoint.pt``, ``metrics.jsonl``, ``curves.png``,
``tensorboard/``, ``final-test.json`` (a final test in the recipe's view). A new run refuses a folder that holds
files (unless it may ``--overwrite`` a previous run's); a resumed run must find its record intact and writable.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import time

from . import record
from .report import LOG
from .dataerror import Message, one_line
from .fileio import LOCK_FILE, TEMPORARY, FolderLock, OutputError, atomic_write, is_temporary, read_regular

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
FINAL_TEST = "final-test.json"  # final.py: the last test in the recipe's view, where that is not the evaluations'
RUN_FILES = (CONFIG, CHECKPOINT, METRICS, FINAL_TEST, "curves.png", "tensorboard", LOG)


class RunDirError(Message):
    """A run directory cannot be used as asked; the message says why and what to do instead."""


def _lock(path: str) -> FolderLock:
    try:
        return FolderLock(path, "run directory")
    except OutputError as exc:
        raise RunDirError(str(exc)) from None


def _check_writable(path: str, why: str) -> None:
    """A file can be made in the folder (a new one: mkstemp never opens an existing name, nor follows a link)."""
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=TEMPORARY[0], suffix=TEMPORARY[1])
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise RunDirError(f"cannot use run directory {path}: {exc.strerror or exc}; {why}") from None


def _remove_leftovers(path: str) -> None:
    """Remove the temporary files that a process killed mid-write left in a run directory: the caller holds its
    lock, so no other process is writing them."""
    for name in os.listdir(path):
        if is_temporary(name):
            try:
                os.remove(os.path.join(path, name))
            except FileNotFoundError:
                pass


def _check_name(path: str, instead: str = "choose another --out") -> None:
    """A run directory's name must be text: config.json, train.log and TensorBoard record it."""
    path = os.fspath(path)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "backslashreplace").decode("utf-8")
        raise RunDirError(f"cannot use run directory {shown}: its name is not valid UTF-8 (the run records it in "
                          f"config.json, train.log and TensorBoard's files); {instead}") from None


def _check_appendable(path: str, why: str) -> None:
    """What a resumed run adds to rather than replaces can be written: TensorBoard's folder (a new event file) and
    the files it appends to (checked before the first iteration, not after the first evaluation)."""
    if os.path.isdir(os.path.join(path, "tensorboard")):
        _check_writable(os.path.join(path, "tensorboard"), why)
    for name in (METRICS, LOG):
        file = os.path.join(path, name)
        if os.path.isfile(file) and not os.access(file, os.W_OK):
            raise RunDirError(f"cannot use run directory {path}: {name} is read-only; {why}")


def make_folder(path: str, what: str = "run directory") -> None:
    """Make the folder ``path`` (a run's, or the folder of a --seeds run's runs) where it is not one yet; a file
    there, or a folder that cannot be made, is a RunDirError."""
    _check_name(path)
    if os.path.islink(path) and not os.path.exists(path):
        raise RunDirError(f"cannot use {what} {path}: it is a link to {os.readlink(path)}, which does not exist; "
                          "choose another --out")
    if os.path.lexists(path) and not os.path.isdir(path):  # makedirs would say only "File exists"
        raise RunDirError(f"cannot use {what} {path}: it is a file, not a folder; choose another --out")
    _check_parents(path, what)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot use {what} {path}: {exc.strerror or exc}") from None


def _check_parents(path: str, what: str) -> None:
    """A '..' after a folder that does not exist names no folder (the system refuses such a path), but makedirs
    would make that folder to go up from it: refused before anything is made."""
    prefix = ""
    for part in path.split(os.sep):
        if part == ".." and prefix and not os.path.isdir(prefix):
            state = "is a file" if os.path.lexists(prefix) else "does not exist"
            raise RunDirError(f"cannot use {what} {path}: {prefix} {state}, so {prefix}{os.sep}.. is no folder; "
                              "choose another --out")
        prefix = os.path.join(prefix, part) if prefix or part else os.sep


def start(path: str, overwrite: bool = False) -> FolderLock:
    """Create and lock the run directory of a new run; a folder holding anything is refused unless
    ``overwrite`` and all of it is a previous run's files, which :func:`clear_previous` removes once the new run
    has been prepared (so a run that cannot start leaves the previous one as it was)."""
    make_folder(path)
    _check_writable(path, "a run needs to write there")
    made = not os.path.lexists(os.path.join(path, LOCK_FILE))
    lock = _lock(path)
    try:
        _remove_leftovers(path)
        present = sorted(n for n in os.listdir(path) if n != LOCK_FILE)
        foreign = _not_a_runs(path, present)
        listed = f"{', '.join(present[:5])}{', ...' if len(present) > 5 else ''}"
        if present and not overwrite and not foreign:
            resumable = CHECKPOINT in present and CONFIG in present
            resume = f"continue it with --resume {shlex.quote(path)}, " if resumable else ""
            raise RunDirError(f"run directory {path} already holds a run ({listed}); {resume}choose another --out, "
                              "or pass --overwrite to replace the previous run")
        if foreign and not overwrite:
            raise RunDirError(f"run directory {path} already holds files that are not a resdsl run's ({listed}); "
                              "choose another --out, or an empty folder")
        if foreign:
            raise RunDirError(f"--overwrite {path}: the folder holds files that are not a resdsl run's "
                              f"({', '.join(foreign[:5])}); resdsl does not delete them. Choose another --out")
    except (OSError, RunDirError) as exc:
        lock.release(remove=made)  # a refused folder is left as it was: the .lock it did not have goes
        if isinstance(exc, RunDirError):
            raise
        raise RunDirError(f"cannot use run directory {path}: {exc.strerror or exc}") from None
    return lock


def _not_a_runs(path: str, present: list[str]) -> list[str]:
    """What of ``present`` (the folder's entries) a run did not write, which --overwrite would delete: other names,
    a folder where a run writes a file, and in tensorboard/ anything but TensorBoard's event files."""
    foreign = []
    for name in present:
        target = os.path.join(path, name)
        folder = os.path.isdir(target) and not os.path.islink(target)
        if name not in RUN_FILES or (folder and name != "tensorboard"):
            foreign.append(name)
        elif folder:
            foreign += [f"tensorboard/{n}" for n in sorted(os.listdir(target))
                        if not (n.startswith("events.out.tfevents.") and os.path.isfile(os.path.join(target, n)))]
    return foreign


def clear_previous(path: str) -> None:
    """Remove a previous run's files from the locked run directory of a new run started with ``--overwrite``
    (:func:`start` refused anything else)."""
    try:
        for name in sorted(n for n in os.listdir(path) if n in RUN_FILES):
            target = os.path.join(path, name)
            shutil.rmtree(target) if os.path.isdir(target) and not os.path.islink(target) else os.remove(target)
    except OSError as exc:
        raise RunDirError(f"--overwrite {path}: cannot remove the previous run: {exc.strerror or exc}") from None


def newness(path: str) -> str | None:
    """Of a new run's folder: "made" where the run makes it, "empty" where it is an empty folder, else None."""
    try:
        return "empty" if os.path.isdir(path) and not os.listdir(path) else None if os.path.lexists(path) else "made"
    except OSError:  # a folder it cannot read: start() says so
        return None


def remove_if_unused(path: str, made: bool = True) -> None:
    """Undo a new run's folder (:func:`newness`: one it ``made`` goes, an empty one stays empty) if nothing was
    kept: no checkpoint, no metrics; only its lock, log (what was printed), config.json and TensorBoard folder
    (points come with metrics). A run that failed at its first step so starts again as it was."""
    try:
        names = set(os.listdir(path))
        if names <= {LOCK_FILE, LOG, CONFIG, "tensorboard"}:
            for inside in [path] if made else [os.path.join(path, name) for name in names]:
                shutil.rmtree(inside) if os.path.isdir(inside) and not os.path.islink(inside) else os.unlink(inside)
    except OSError:
        pass


def default_path(name: str, root: str = "runs") -> str:
    """Where a run (or a set of runs) that names no --out goes: ``runs/NAME-YYYYmmdd-HHMMSS``, with -2, -3, ...
    when runs start within the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = os.path.join(root, f"{name}-{stamp}"), 2
    while os.path.exists(path):
        path, k = os.path.join(root, f"{name}-{stamp}-{k}"), k + 1
    return path


def _check_run_folder(path: str, flag: str) -> None:
    if not os.path.isdir(path):
        what = "it is a file, not a folder" if os.path.exists(path) else "no such folder"
        raise RunDirError(f"{flag} {path}: not a run directory ({what})")


def record_of(path: str) -> dict | None:
    """A run's config.json as a table, for looking at runs (not resuming them): None where there is none or it
    cannot be read as one."""
    try:
        cfg = json.loads(read_regular(os.path.join(path, CONFIG)))
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def metrics_rows(path: str) -> list[dict | None]:
    """A run's metrics.jsonl rows, for looking at runs: None for a damaged line, in its place (the last row of a
    run is its final figure only where it is intact); none where the file cannot be read."""
    try:
        lines = [line for line in read_regular(os.path.join(path, METRICS)).decode("utf-8").splitlines()
                 if line.strip()]
    except (OSError, ValueError):
        return []
    return [_row(line) for line in lines]


def _row(line: str) -> dict | None:
    try:
        return record.metrics_row(json.loads(line))
    except ValueError:
        return None


def _seed_runs_in(path: str) -> list[str]:
    """The runs of a --seeds run in ``path`` (its seed-N folders that hold a record)."""
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return []
    return [os.path.join(path, n) for n in names
            if n.startswith("seed-") and os.path.isfile(os.path.join(path, n, CONFIG))]


KEPT = f" (put a good {CONFIG} back to go on, or remove the folder to train the run anew)"  # a run's record lost


def read_config(path: str, flag: str = "--resume") -> dict:
    """The record of a run to resume (or, ``flag`` naming the command, to evaluate); every way it can be missing
    or damaged is a clear error."""
    _check_run_folder(path, flag)
    cfg_path = os.path.join(path, CONFIG)
    try:
        cfg = json.loads(read_regular(cfg_path))
    except FileNotFoundError:
        if os.path.lexists(os.path.join(path, CHECKPOINT)):  # a run's folder that lost its record
            raise RunDirError(f"{flag} {path}: {CONFIG} is missing, so the run's settings are unknown; its "
                              f"checkpoint is left as it is{KEPT}") from None
        seeds = _seed_runs_in(path)
        hint = f"; it holds a --seeds run's runs: give one, e.g. {flag} {seeds[0]}" if seeds else ""
        raise RunDirError(f"{flag} {path}: not a run directory (no {CONFIG}, the record of how the run was "
                          f"started){hint}") from None
    except OSError as exc:  # a named pipe or a folder in its place, unreadable
        raise RunDirError(f"{flag} {path}: {CONFIG} cannot be read ({exc.strerror or one_line(exc)}), so the run's "
                          f"settings are unknown; its checkpoint is left as it is{KEPT}") from None
    except ValueError as exc:
        raise RunDirError(f"{flag} {path}: {CONFIG} is damaged ({one_line(exc)}), so the run's settings are unknown; "
                          f"its checkpoint is left as it is{KEPT}") from None
    need = ("recipe", "options", "iterations")
    if not isinstance(cfg, dict) or any(k not in cfg for k in need) or not isinstance(cfg["options"], dict):
        raise RunDirError(f"{flag} {path}: {CONFIG} is not a resdsl run record (it lacks "
                          f"{', '.join(k for k in need if not isinstance(cfg, dict) or k not in cfg) or 'options'})")
    wrong = record.problem(cfg)
    if wrong:
        raise RunDirError(f"{flag} {path}: {CONFIG} is damaged ({wrong}), so the run's settings are unknown; its "
                          f"checkpoint is left as it is{KEPT}")
    return cfg


def check_resume_target(path: str, out: str | None, overwrite: bool) -> None:
    """--resume continues a run where it is: --out (elsewhere) and --overwrite (start afresh) say otherwise."""
    if out is not None and os.path.abspath(out) != os.path.abspath(path):
        raise RunDirError(f"--resume {path} continues the run in its own folder; it cannot go to --out {out}. Copy "
                          "the run there first and resume the copy, or drop --out")
    if overwrite:
        raise RunDirError(f"--resume {path} continues the run; --overwrite would start it afresh. Drop one of the "
                          "two")


def check_checkpoint(path: str) -> None:
    """A run to resume must have reached its first checkpoint."""
    if not os.path.exists(os.path.join(path, CHECKPOINT)):
        raise RunDirError(f"--resume {path}: no {CHECKPOINT} there to resume from (the run stopped before its first "
                          f"checkpoint); start it again (--out {shlex.quote(path)} --overwrite)")


def resume(path: str) -> FolderLock:
    """Lock a run directory to continue it (before reading its record: a run another process is training is
    named as such); it must be writable (a read-only copy cannot take new checkpoints)."""
    _check_name(path, "rename the folder (or copy it) to a UTF-8 name and resume that")
    _check_run_folder(path, "--resume")
    _check_writable(path, "resuming writes new checkpoints there (copy the run to a writable place first)")
    _check_appendable(path, "resuming adds to the run's records (make them writable, or copy the run to a writable "
                            "place first)")
    lock = _lock(path)
    try:
        _remove_leftovers(path)
    except OSError as exc:
        lock.release()
        raise RunDirError(f"cannot use run directory {path}: {exc.strerror or exc}") from None
    return lock


def write_config(path: str, config: dict) -> None:
    text = json.dumps(config, indent=2, default=str) + "\n"
    try:
        atomic_write(os.path.join(path, CONFIG), lambda fh: fh.write(text.encode()))
    except OutputError as exc:
        raise RunDirError(str(exc)) from None


def update_config(path: str, **fields) -> None:
    """config.json with ``fields`` changed (what a run learns about itself as it trains, e.g. how it steps)."""
    write_config(path, {**read_config(path), **fields})


def check_same_spec(resume: str, extra: dict, saved: dict) -> None:
    """A run resumes only with the network and recipe it was trained from (config.json's spec hash); ``extra``:
    what the resuming command records of its spec (RunOptions.extra_config)."""
    spec_hash, old_hash = extra.get("spec_hash"), saved.get("spec_hash")
    if not (spec_hash and old_hash and spec_hash != old_hash):
        return
    if saved.get("spec_files") and extra.get("spec_files") == saved.get("spec_files"):
        version = extra.get("resdsl")
        raise RunDirError(f"--resume {resume}: " + (
            "the run's own copy of its spec in config.json no longer gives the network and recipe its spec hash "
            "records: config.json was edited or damaged; start a new run" if saved.get("resdsl") == version else
            f"this resdsl ({version}) compiles the run's own spec (its copy in config.json) to another network or "
            f"recipe than resdsl {saved.get('resdsl')} did, which started the run; resume it with that version"))
    if saved.get("emitted") and not saved.get("spec_files"):  # its hash is of the files an edited trainer had
        raise RunDirError(f"--resume {resume}: the run was started by an emitted trainer whose model.py or "
                          "recipe.json had been edited (config.json records their hash, not a spec's): resume it "
                          "with that trainer's train.py, as it was then, or start a new run")
    kept = f"`resdsl train --resume {resume}` resumes it with the copy of its spec the run keeps"
    if extra.get("emitted"):
        raise RunDirError(f"--resume {resume}: this trainer's network or recipe (its model.py and recipe.json, "
                          f"emitted from {extra.get('spec')}) is not the one this run was trained from "
                          f"({saved.get('spec')}, recorded by its hash in config.json); "
                          + (kept if saved.get("spec_files") else "resume it with the trainer or spec it started "
                             "with") + ", or start a new run")
    own = ("; to resume with the copy of its spec the run keeps, drop the SPEC argument" if saved.get("spec_files")
           else ". Resume with the run's own spec")
    raise RunDirError(f"--resume {resume}: the spec {extra.get('spec')} is not the one this run was trained from "
                      f"({saved.get('spec')}, recorded by its hash in config.json): the network or its recipe "
                      f"differs{own}, or start a new run")


def check_same_data(resume: str, saved: dict, found: dict) -> None:
    """A run resumes only on the data it was trained on, as far as config.json's ``dataset`` tells it (image shape,
    classes, training and test sizes): a relative --data-dir recorded by an older resdsl, read from another folder,
    finds other files. ``found``: the same figures of the data loaded now."""
    words = data_differences(saved, found)
    if words:
        raise RunDirError(f"--resume {resume}: the data found now is not the data the run was trained on ({words}); "
                          "resume it where its data is, or give --data-dir for the folder that holds it")


def data_differences(saved: dict, found: dict) -> str | None:
    """How the data ``found`` (config.json's ``dataset`` figures, or some of them) differs from what a run's
    config.json (``saved``) records it trained on, in words; None where they agree or it records none."""
    was = saved.get("dataset")
    if not isinstance(was, dict):
        return None
    differ = [key for key in ("shape", "classes", "train_size", "test_size")
              if key in was and key in found and was[key] != found[key]]
    return "; ".join(f"{key} {was[key]} then, {found[key]} now" for key in differ) or None


def trained_on(saved: dict) -> str | None:
    """The kind of device (cuda, cpu, mps) a run's config.json says it started on; None where it does not say."""
    words = saved.get("device")
    return words.split(":")[0].split(" ")[0] if isinstance(words, str) and words else None


def check_world(resume: str, saved: dict, world: int) -> None:
    """A run resumes in as many processes as it was started in (config.json's ``world_size``): each process's share
    of the batch, its batch-norm statistics and its part of the data depend on their number."""
    was = saved.get("world_size", 1)
    if isinstance(was, int) and was != world:
        how = f"with --nproc {was}" if was > 1 else "without --nproc"
        raise RunDirError(f"--resume {resume}: the run was started in {was} process{'es' if was > 1 else ''} and "
                          f"continues exactly only in as many, not {world}: resume it {how}")


def what_is_kept(checkpoint: str) -> str:
    """What of a run that stops on an error is kept: its last good checkpoint, or none (or its folder is gone)."""
    if os.path.exists(checkpoint):
        return f"the last good checkpoint is {checkpoint}"
    if not os.path.isdir(os.path.dirname(checkpoint) or "."):  # moved or deleted while the run trained
        return (f"the run directory {os.path.dirname(checkpoint)} is gone (moved or deleted while the run trained): "
                "its last checkpoint, if it had one, went with it; resume it where it is now")
    return "no checkpoint was written"
