"""What a run killed outright (SIGKILL, a node lost) or a damaged file leaves behind must not block or fool the
next command: its temporary files, a checkpoint older than its last metrics row, a checkpoint damaged on disk;
and a file that only looks like one (a pipe, weights that are not finite)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest

from resdsl.train import rundir

torch = pytest.importorskip("torch")


def test_a_killed_writes_leftovers_do_not_block_the_folder(tmp_path):
    """A process killed mid-write leaves `.resdsl-*.tmp` behind (the atomic write's temporary file, or the
    writability probe): `--overwrite` and `--resume` remove them rather than calling the folder someone else's."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "checkpoint.pt", ".resdsl-2ddstx6e.tmp", ".resdsl-write-test.tmp"):
        (run / name).write_text("x")
    lock = rundir.resume(str(run))
    lock.release()
    assert sorted(p.name for p in run.iterdir() if p.name != ".lock") == ["checkpoint.pt", "config.json"]
    (run / ".resdsl-abc.tmp").write_text("x")
    with pytest.raises(rundir.RunDirError, match="already holds a run"):  # without --overwrite: refused as before
        rundir.start(str(run))
    lock = rundir.start(str(run), overwrite=True)
    lock.release()
    assert not (run / ".resdsl-abc.tmp").exists()
    (run / ".resdsl-mine.txt").write_text("a user's")  # not a temporary file of resdsl's: kept, and refused
    with pytest.raises(rundir.RunDirError, match="not a resdsl run's"):
        rundir.start(str(run), overwrite=True)
    with pytest.raises(rundir.RunDirError, match="not a resdsl run's") as info:  # no hint at what will fail too
        rundir.start(str(run))
    assert "--resume" not in str(info.value) and "--overwrite" not in str(info.value)


def test_overwrite_deletes_nothing_a_run_did_not_write_inside_its_folders(tmp_path):
    """--overwrite removes a previous run's files: inside tensorboard/ only TensorBoard's event files, and a
    folder where a run writes a file is not one of them (shutil.rmtree would take what the user put there)."""
    from resdsl.train import rundir

    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"x")
    for mine, named in ((run / "tensorboard" / "my-notes.txt", "tensorboard/my-notes.txt"),
                        (run / "tensorboard" / "other-run" / "events.out.tfevents.2", "tensorboard/other-run"),
                        (run / "curves.png" / "a-figure.png", "curves.png")):
        mine.parent.mkdir(exist_ok=True)
        mine.write_text("a user's")
        with pytest.raises(rundir.RunDirError, match=f"not a resdsl run's \\({named}\\)"):
            rundir.start(str(run), overwrite=True)
        assert mine.read_text() == "a user's"
        mine.unlink() if mine.parent.name == "tensorboard" else shutil.rmtree(mine.parent)
    rundir.start(str(run), overwrite=True).release()  # the run's own files alone: replaced
    rundir.clear_previous(str(run))
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def _checkpoint(path, iteration: int) -> None:
    from resdsl.train import checkpoint

    weights = torch.nn.Linear(64, 64).state_dict()
    checkpoint.save_atomic({"model": weights, "optimizer": {}, "schedule": {}, "state": {"iter": iteration},
                            "rng": {}}, str(path))


def test_a_checkpoint_damaged_on_disk_is_refused(tmp_path):
    """torch.load does not check the CRC-32 each record of the zip carries: 400 flipped bytes inside the weights
    loaded without a word, and a resumed run went on from wrong weights."""
    from resdsl.train import checkpoint

    path = tmp_path / "checkpoint.pt"
    _checkpoint(path, 7)
    assert checkpoint.load(str(path))["state"]["iter"] == 7
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 400] = bytes(b ^ 0x5A for b in data[middle:middle + 400])
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="fails its checksum"):
        checkpoint.load(str(path))


def test_an_experiment_run_killed_before_its_last_checkpoint_is_not_finished(tmp_path):
    """The trainer writes an evaluation's metrics row, then the checkpoint: killed between the two at the end, a
    run's metrics say done while its weights are older. `resdsl reproduce` judges by the checkpoint, so the run is
    resumed (exactly) rather than reported with weights that do not match its figures."""
    from resdsl.experiment.runner import Job, status

    run = tmp_path / "row" / "seed-0"
    run.mkdir(parents=True)
    job = Job(None, 0, str(run))
    assert status(job) == ("new", 0)
    (run / "config.json").write_text('{"iterations": 300}')
    (run / "metrics.jsonl").write_text('{"iter": 200}\n{"iter": 300}\n')
    assert status(job) == ("new", 0)  # no checkpoint yet: the run starts again
    _checkpoint(run / "checkpoint.pt", 200)
    assert status(job) == ("stopped", 200)
    _checkpoint(run / "checkpoint.pt", 300)
    assert status(job) == ("finished", 300)
    (run / "checkpoint.pt").write_bytes(b"damaged")
    assert status(job) == ("stopped", 0)  # resuming it says what is wrong


def test_tensorboard_forgets_the_points_a_resume_evaluates_again(tmp_path):
    """Rows after the checkpoint are dropped from metrics.jsonl on resume and evaluated again; TensorBoard's
    points for them must go too, or its curves hold two points at one step."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from resdsl.train.metrics import MetricsLog

    def row(it, value):
        return {"iter": it, "epoch": 1, "lr": 0.1, "train_loss": value, "train_error": value, "test_loss": value,
                "test_error": value}

    log = MetricsLog(str(tmp_path))
    for it in (50, 100, 150):  # killed after the row at 150, its checkpoint at 100
        log.write(row(it, it / 10))
    log.close()
    log = MetricsLog(str(tmp_path))
    log.resume(100)
    for it in (150, 200):
        log.write(row(it, it / 10 + 1))
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("test_error")] == [(50, 5.0), (100, 10.0), (150, 16.0),
                                                                        (200, 21.0)]


def test_an_experiment_that_trained_nothing_takes_new_options(tmp_path):
    """`reproduce --data nosuch` records its options and every run fails at once; the restart with the right
    --data used to be refused as another experiment's. Until a run has checkpointed there is nothing to mix, so
    the record is replaced; after that, other options are refused as before."""
    from conftest import ROOT
    from resdsl.experiment.parse import parse_experiment
    from resdsl.experiment.folder import check_record
    from resdsl.experiment.runner import ExperimentRunError

    exp = parse_experiment(ROOT / "tests" / "experiments" / "tiny.exp")
    out = tmp_path / "exp"
    check_record(str(out), exp, {"data": "nosuch"}, 2)
    (out / "plain-8" / "seed-0").mkdir(parents=True)
    (out / "plain-8" / "seed-0" / "config.json").write_text("{}")  # a run that failed before its first checkpoint
    check_record(str(out), exp, {"data": "synthetic"}, 2, write=False)  # a dry run writes nothing
    assert '"nosuch"' in (out / "experiment.json").read_text()
    check_record(str(out), exp, {"data": "synthetic"}, 2)
    assert '"synthetic"' in (out / "experiment.json").read_text()
    (out / "plain-8" / "seed-0" / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ExperimentRunError, match="started with options --data synthetic"):
        check_record(str(out), exp, {"data": "fashion-mnist"}, 2)
    # more seeds, fewer rows: another choice of runs, each checked on its own (check_runs), is recorded
    check_record(str(out), exp, {"data": "synthetic"}, 3)
    assert json.loads((out / "experiment.json").read_text())["seeds"] == 3
    check_record(str(out), dataclasses.replace(exp, rows=exp.rows[:1]), {"data": "synthetic"}, 3)
    assert json.loads((out / "experiment.json").read_text())["rows"] == [exp.rows[0].label]
    with pytest.raises(ExperimentRunError, match="started with options --data synthetic"):  # still refused
        check_record(str(out), exp, {"data": "fashion-mnist"}, 1)


def test_a_forked_child_does_not_keep_the_run_locked(tmp_path):
    """A data loader's workers are forked from the run: killed outright, the run's lock must go with it, not live
    on in workers that take seconds to notice (`--resume` then said the folder was in use by another process)."""
    import os
    import time

    from resdsl.train.fileio import FolderLock, OutputError

    lock = FolderLock(str(tmp_path), "run directory")
    ready, tell = os.pipe()
    child = os.fork()
    if child == 0:  # a worker that outlives its parent's lock by a few seconds
        os.write(tell, b"1")  # past the fork's handlers, which run before os.fork returns here
        time.sleep(3)
        os._exit(0)
    os.read(ready, 1)
    os.close(ready)
    os.close(tell)
    try:
        with pytest.raises(OutputError, match="in use by another process"):
            FolderLock(str(tmp_path), "run directory")  # held by this process, as before
        lock.release()  # what the kernel does when the run is killed
        FolderLock(str(tmp_path), "run directory").release()  # the child, still alive, holds nothing
    finally:
        os.waitpid(child, 0)


def test_a_pipe_or_non_finite_weights_are_refused_as_checkpoints(tmp_path):
    """`resdsl eval --checkpoint FIFO` blocked for good inside torch.load; weights holding a NaN (a plain state dict
    saved from a diverged run elsewhere) were evaluated, and the chance-level error reported with exit 0."""
    import os

    from resdsl.train import checkpoint

    from conftest import within

    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with within(20):
        with pytest.raises(checkpoint.CheckpointError, match="not a regular file"):
            checkpoint.load(str(fifo), plain=True)
        assert checkpoint.iteration(str(fifo)) is None  # `resdsl reproduce` asks it of every run
    model = torch.nn.Linear(4, 2)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint.load_weights(model, weights, "w.pt")
    weights["bias"][1] = float("nan")
    with pytest.raises(checkpoint.CheckpointError, match=r"not finite \(NaN or infinity\) in bias"):
        checkpoint.load_weights(model, weights, "w.pt")


def _with(field: str, value):
    """A change to a checkpoint: the value at a dotted path (``state.iter``) replaced."""
    def change(saved: dict) -> None:
        *parents, last = field.split(".")
        target = saved
        for key in parents:
            target = target[key]
        target[last] = value(target[last]) if callable(value) else value
    return change


def _first_momentum(saved: dict) -> None:
    buffers = saved["optimizer"]["state"]
    key = next(iter(buffers))
    buffers[key]["momentum_buffer"] = torch.zeros(3)


CRAFTED = {  # a checkpoint that loads (weights_only: tensors, numbers, texts) but holds other kinds
    "rng.torch float": (_with("rng.torch", torch.zeros(3)), "random generators' states cannot be restored"),
    "rng.python short": (_with("rng.python", (3, (1, 2), None)), "random generators' states cannot be restored"),
    "state.iter text": (_with("state.iter", "x"), "state.iter is 'x', not a whole number"),
    "state a list": (_with("state", [1]), "state is [1], not a table of fields"),
    "state.recent_errors": (_with("state.recent_errors", ["a"]), "not a list of numbers"),
    "schedule bogus": (_with("schedule", {"bogus": 1}), "schedule.warmup_done is missing"),
    "schedule extra": (_with("schedule", lambda s: {**s, "bogus": 1}), "schedule holds bogus, which resdsl never"),
    "model a list": (_with("model", [1, 2]), "its model is not a table of tensors"),
    "momentum shape": (_first_momentum, "momentum_buffer of shape (3,) for a parameter of shape"),
}


def test_a_crafted_checkpoint_is_refused_naming_what_is_wrong(tmp_path):
    """Each kind the loop would have failed on deep inside ('internal error', or at the first step) is refused
    when the run resumes, naming the field; the run's files are left as they were."""
    from test_train_trust import _in_process_run, _unfinished_run

    base = _unfinished_run(tmp_path / "base")
    resume = dict(iters=None, eval_every=None, checkpoint_every=None, data=None, train_subset=None, test_subset=None,
                  batch_size=None)
    for k, (change, words) in enumerate(CRAFTED.values()):
        run = tmp_path / f"case{k}" / "run"
        shutil.copytree(base, run)
        saved = torch.load(run / "checkpoint.pt", weights_only=True)
        change(saved)
        torch.save(saved, run / "checkpoint.pt")
        before = (run / "checkpoint.pt").read_bytes()
        result, failure = _in_process_run(tmp_path / f"case{k}", resume=str(run), **resume)
        assert result is None and failure[1] == 1 and words in failure[0], (words, failure)
        assert (run / "checkpoint.pt").read_bytes() == before
    result, failure = _in_process_run(tmp_path / "base", resume=str(base), **resume)  # the run itself resumes
    assert failure is None and result["iterations"] == 12


def test_files_that_cannot_be_read_are_said_so_in_resdsls_words(tmp_path, monkeypatch):
    """A zero-filled checkpoint is damaged (torch's advice to load it unsafely is not passed on); a checkpoint or
    an IDX file this user may not read is said to be that, not 'damaged' or 'corrupt: download it again'."""
    from resdsl.train import checkpoint, idx
    from resdsl.train.data import DataError

    (tmp_path / "zero.pt").write_bytes(bytes(4096))
    with pytest.raises(checkpoint.CheckpointError, match="damaged or cut short") as info:
        checkpoint.load(str(tmp_path / "zero.pt"))
    assert "weights_only" not in str(info.value)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    (tmp_path / "c.pt").write_bytes(b"x")
    monkeypatch.setattr(checkpoint.torch, "load", denied)
    with pytest.raises(checkpoint.CheckpointError, match=r"cannot read checkpoint .*c.pt: Permission denied$"):
        checkpoint.load(str(tmp_path / "c.pt"))
    monkeypatch.setattr(idx, "open", denied, raising=False)  # the module's own open, as a locked file fails
    with pytest.raises(DataError, match=r"cannot read .*i-ubyte \(Permission denied\): let this user read it"):
        idx.read_idx(str(tmp_path / "i-ubyte"))


class _BadNameInTheWorker(torch.utils.data.Dataset):
    """A picture, named with a line break, that a worker process cannot decode."""

    def __len__(self):
        return 2

    def __getitem__(self, k):
        from resdsl.train.data import DataError

        raise DataError("cannot decode the image /d/a\nRED.jpg (not an image file); remove or replace the file")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_workers_data_error_keeps_its_whole_message_on_one_line(workers):
    """DataLoader folds a worker's traceback into the message; the DataError's own message comes out whole, and a
    line break in a file name it names is written as its escape (it split the message over two lines, and, from a
    worker, only its last line was kept: the file's folder was lost)."""
    from resdsl.train.data import DataError
    from resdsl.train.folders import worker_errors_unwrapped

    loader = torch.utils.data.DataLoader(_BadNameInTheWorker(), num_workers=workers)
    with pytest.raises(DataError) as caught:
        list(worker_errors_unwrapped(loader))
    assert str(caught.value) == ("cannot decode the image /d/a\\nRED.jpg (not an image file); remove or replace "
                                 "the file")


def test_every_error_for_the_user_names_a_file_on_one_line():
    """A file name with a line break or a terminal's escape sequence cannot split an error's message or reach the
    terminal raw, whichever of the trainer's errors names it."""
    from resdsl.train.checkpoint import CheckpointError
    from resdsl.train.data import DataError
    from resdsl.train.fileio import OutputError
    from resdsl.train.rundir import RunDirError
    from resdsl.train.session import TrainingError

    for kind in (CheckpointError, DataError, OutputError, RunDirError, TrainingError):
        err = kind("cannot read /runs/a\n\x1b[2Jb/checkpoint.pt")
        assert str(err) == "cannot read /runs/a\\n\\x1b[2Jb/checkpoint.pt", kind
        assert str(kind(str(err))) == str(err)  # wrapped again, it is shown the same


class _DiesInTheWorker(torch.utils.data.Dataset):
    """A picture whose reading ends the worker process outright, as a decoder's crash or the OOM killer does."""

    def __len__(self):
        return 4

    def __getitem__(self, k):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_that_dies_is_a_data_error():
    """DataLoader says a dead worker with a RuntimeError ('internal error' before): it is a DataError, so the run
    writes a checkpoint of the iterations done and says how to resume."""
    from resdsl.train.data import DataError
    from resdsl.train.folders import worker_errors_unwrapped

    loader = torch.utils.data.DataLoader(_DiesInTheWorker(), num_workers=1)
    with pytest.raises(DataError, match=r"a process reading the pictures ended: DataLoader worker \(pid"):
        list(worker_errors_unwrapped(loader))


def test_a_run_moved_to_a_machine_with_fewer_gpus_restores_the_generators_it_has(monkeypatch):
    """A checkpoint holds the random state of every GPU of the machine it was written on; resumed where there are
    fewer, those of the GPUs there are restored (torch's set_rng_state_all would fail on an index otherwise)."""
    from resdsl.train import checkpoint

    state, restored = checkpoint.rng_state(), []
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]
    monkeypatch.setattr(checkpoint.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(checkpoint.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(checkpoint.torch.cuda, "set_rng_state_all", restored.extend)
    checkpoint.set_rng_state(state, "run/checkpoint.pt")
    assert len(restored) == 1 and torch.equal(restored[0], state["cuda"][0])


def test_a_run_that_lost_its_record_is_said_to_keep_its_checkpoint(tmp_path):
    """A run's folder with a checkpoint but no config.json is not 'not a run directory': its weights are kept, and
    the message says the two ways on (reproduce resumes such a run rather than train it anew over them)."""
    from resdsl.train.rundir import RunDirError, read_config

    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(RunDirError, match=r"config.json is missing, so the run's settings are unknown; its checkpoint "
                                          r"is left as it is \(put a good config.json back to go on, or remove the "
                                          r"folder to train the run anew\)"):
        read_config(str(tmp_path))
