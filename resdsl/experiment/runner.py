"""Running an experiment: one `resdsl train` run per (row, seed), each in its own run directory under one
experiment directory, so that the whole experiment survives a kill and a restart (finished runs are skipped,
stopped ones resumed exactly by the trainer's --resume).

``EXPDIR/<row key>/seed-<N>/`` is a complete run directory (config.json, metrics.jsonl, checkpoint.pt, ...);
``EXPDIR/experiment.json`` records what the experiment was started with (folder.py). Launchers: ``local``
(subprocesses, one per GPU at a time, or --parallel), ``slurm`` (a submitit job array; a preempted job is requeued
and resumes exactly) and
``submitit-local`` (the same submitit path on this machine: how the cluster route is tested without a cluster).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from ..errors import printable
from ..train.rundir import CHECKPOINT, metrics_rows, record_of
from ..train.seeds import LAUNCHER_ENV, gpu_of, signal_name
from .model import Experiment, Row

RECORD = "experiment.json"
# `resdsl train` options an experiment passes through to every run (the same for every run of the experiment)
PASSED = ("data", "data_dir", "iters", "epochs", "train_subset", "test_subset", "device", "workers", "amp")
FLAGS = ("no_download", "deterministic")
# passed options that change how fast a run goes, not what it computes: a restart may give others; and
# channels_last, which records before it was dropped hold as null (reproduce has no such option)
UNRECORDED = ("workers", "channels_last")
# passed to a resumed run too (`resdsl train --resume` takes the others from the run's record)
RESUME_PASSED = ("device", "workers")


class ExperimentRunError(Exception):
    """An experiment that cannot start or continue as asked (a message for the user)."""


@dataclass(frozen=True)
class Job:
    """One run of an experiment: a row, a seed, its run directory."""

    row: Row
    seed: int
    run_dir: str

    @property
    def name(self) -> str:
        return f"{self.row.key}/seed-{self.seed}"


def jobs(exp: Experiment, out: str, seeds: int | None = None) -> list[Job]:
    """Every (row, seed) of the experiment, in file order, seeds 0..n-1."""
    n = seeds or exp.seeds
    return [Job(row, seed, os.path.join(out, row.key, f"seed-{seed}")) for row in exp.rows for seed in range(n)]


def status(job: Job) -> tuple[str, int]:
    """The job's run's :func:`run_state`."""
    return run_state(job.run_dir)


def run_state(run_dir: str) -> tuple[str, int]:
    """("finished" | "stopped" | "to test" | "new", iterations done) from the run directory's own records ("to
    test": trained, its final test in the recipe's view still to do; resdsl/train/final.py). Done is what its
    checkpoint holds: a run killed after its last metrics row but before its last checkpoint is not finished (its
    weights are older than its last figures), and resuming it redoes the rest exactly."""
    from resdsl.train import final  # torch: only once there are runs to look at
    from resdsl.train.checkpoint import iteration

    checkpoint = os.path.join(run_dir, CHECKPOINT)
    config = record_of(run_dir)
    total = config.get("iterations") if config else None
    if not os.path.lexists(checkpoint):
        return "new", 0
    if not isinstance(total, int):  # trained, its record damaged or gone: resuming it says so, the weights kept
        return "stopped", 0
    done = iteration(checkpoint)
    if done is None:  # there but unreadable: resuming it says what is wrong with it
        return "stopped", 0
    if done >= total and final.missing(run_dir, config):  # resumed, it runs its final test alone
        return "to test", done
    return ("finished" if done >= total else "stopped"), done


def last_row(run_dir: str) -> dict | None:
    """The last metrics.jsonl row of a run (None when it has none, or it is damaged: an earlier row is not the
    run's last figure; a damaged line before it is not this row's concern)."""
    rows = metrics_rows(run_dir)
    return rows[-1] if rows else None


def final_row(run_dir: str) -> dict | None:
    """A finished run's final figures: its last metrics row, its test figures replaced by those of its final test
    in the recipe's view where it has one (``view`` says which; resdsl/train/final.py). None for a run that is not
    finished: a stopped run's last row is a figure from along the way, and one still "to test" has not yet been
    tested in the paper's view."""
    from resdsl.train import final

    if run_state(run_dir)[0] != "finished":
        return None
    row, tested = last_row(run_dir), final.read(run_dir)
    if row is None or tested is None:
        return row
    return dict(row, **{k: tested.get(k) for k in ("test_loss", "test_error", "test_top5_error", "view")})


def spec_path(exp: Experiment, row: Row) -> str:
    """The row's spec as `resdsl train` takes it: a file beside the experiment file, else a packaged name."""
    if exp.path:
        beside = os.path.join(os.path.dirname(os.path.abspath(exp.path)), row.spec)
        if os.path.isfile(beside):
            return beside
    return row.spec


def train_command(exp: Experiment, job: Job, options: dict) -> list[str]:
    """The `resdsl train` command that advances ``job``: resume a stopped run, start a new one (replacing the
    records of a run that died before its first checkpoint), nothing for a finished one."""
    state, _ = status(job)
    base = [sys.executable, "-m", "resdsl_cli", "train"]
    if state == "finished":
        return []
    if state in ("stopped", "to test"):  # with the options a resumed run may take anew
        return base + ["--resume", job.run_dir, "--quiet"] + _flags(options, RESUME_PASSED)
    cmd = base + [spec_path(exp, job.row), "--seed", str(job.seed), "--out", job.run_dir, "--quiet"]
    if os.path.isdir(job.run_dir) and os.listdir(job.run_dir):
        cmd.append("--overwrite")  # only a previous attempt's records: --overwrite never deletes foreign files
    for item in job.row.overrides:
        cmd += ["--set", item]
    if job.row.overrides and (options.get("iters") or options.get("epochs")):
        cmd.append("--scale-set")  # a row's `set` is of the paper's recipe: a shorter run scales it with the rest
    options = dict(options, data=options.get("data") or exp.dataset)  # the experiment's dataset unless replaced
    cmd += _flags(options, PASSED)
    return cmd + ["--" + key.replace("_", "-") for key in FLAGS if options.get(key)]


def _flags(options: dict, keys: tuple) -> list[str]:
    return [word for key in keys if options.get(key) is not None
            for word in ("--" + key.replace("_", "-"), str(options[key]))]


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the local runs (each checkpointed first); ``status`` is the shell's convention for
    a process ended by that signal, 128 + its number."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.status = 128 + signum


def run_local(exp: Experiment, todo: list[Job], options: dict, parallel: int, gpus: int, say=print) -> list[str]:
    """Run the jobs as subprocesses, ``parallel`` at a time (each on GPU slot % gpus when there are GPUs); returns
    the names of failed jobs. SIGINT/SIGTERM stop every running trainer (each checkpoints) and then this."""
    pending, running, failed = list(todo), [], []
    stop = {"signal": None}

    def handle(signum, frame):
        stop["signal"] = signum
        for _, proc in running:
            proc.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        slots = list(range(max(1, parallel)))
        while (pending and stop["signal"] is None) or running:
            while pending and slots and stop["signal"] is None:
                job, slot = pending.pop(0), slots.pop(0)
                env = dict(os.environ, **{LAUNCHER_ENV: str(os.getpid())})  # a run stops if this is killed
                if gpus:
                    env["CUDA_VISIBLE_DEVICES"] = gpu_of(slot, gpus)
                say(f"start {job.name}")
                proc = subprocess.Popen(train_command(exp, job, options), env=env, stdout=subprocess.DEVNULL)
                running.append(((job, slot), proc))
            (job, slot), proc = running[0]  # still in ``running`` while it is waited for: a signal must reach it
            code = proc.wait()
            running.pop(0)
            slots.append(slot)
            say(f"{_ended(job, code, stop['signal'] is not None)} {job.name}")
            if code != 0 and stop["signal"] is None:
                failed.append(job.name)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if stop["signal"] is not None:
        raise Stopped(stop["signal"])
    return failed


def _ended(job: Job, code: int, stopping: bool) -> str:
    """What became of a local run whose trainer ended with ``code``: done, failed, or stopped with the checkpoint
    it resumes from (a trainer stopped in its first seconds has none yet, and starts afresh)."""
    if code == 0:
        return "done"
    if not stopping:
        return f"failed (exit {code})"
    state, done = run_state(job.run_dir)
    return f"stopped at iteration {done:,} (checkpointed)" if state != "new" else "stopped before its first checkpoint"


# a job whose run stopped on a signal (a preemption: Slurm's SIGTERM) waits this long for submitit's SIGUSR2,
# whose handler checkpoints and requeues it, before it reports the run stopped
REQUEUE_WAIT_S = 60
# submitit's handler waits this long for the trainer's checkpoint: Slurm sends SIGUSR2 90 s before the time limit
STOP_WAIT_S = 80
# times a run's job may be requeued at its time limit (submitit's default, 3, ends a run of four time limits)
MAX_TIMEOUTS = 1000
FAILURE = "resdsl run:"  # marks the job's own failure among the lines of submitit's error


class TrainJob:
    """A submitit job: advances one run (whatever its state when the job starts). At a time limit or a preemption
    (submitit's SIGUSR2) the trainer checkpoints and stops, and the job is requeued as itself, so that it resumes
    from that checkpoint exactly."""

    def __init__(self, exp: Experiment, job: Job, options: dict):
        self.exp, self.job, self.options = exp, job, options
        self._proc = None

    def __getstate__(self):  # pickled by submitit: the running trainer stays here
        return dict(self.__dict__, _proc=None)

    def __call__(self) -> int:
        cmd = train_command(self.exp, self.job, self.options)
        if not cmd:
            return 0
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        code = _wait(self._proc, None)
        if code == 0:
            return 0
        if code > 128:  # stopped with a checkpoint: a preemption's SIGTERM, which submitit's SIGUSR2 follows
            time.sleep(REQUEUE_WAIT_S)  # its handler (checkpoint below) requeues the job and exits
            raise RuntimeError(f"{FAILURE} stopped by {signal_name(code - 128)} with a checkpoint; the same resdsl "
                               "reproduce command resumes it")
        raise RuntimeError(f"{FAILURE} resdsl train exited with status {code}; its train.log ("
                           f"{os.path.join(self.job.run_dir, 'train.log')}) and this job's .err log say why")

    def checkpoint(self, *args, **kwargs):
        """submitit's hook at a time limit or a preemption: the trainer (which may have had the signal itself) is
        asked to checkpoint and stop, and waited for; then the same job is requeued, and resumes it."""
        import submitit

        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            _wait(self._proc, STOP_WAIT_S)
        return submitit.helpers.DelayedSubmission(TrainJob(self.exp, self.job, self.options))


def _wait(proc: subprocess.Popen, seconds: float | None) -> int | None:
    """The process's exit status once it ends (None after ``seconds``), by polling: submitit's signal handler may
    wait for it too, and Popen.wait holds a lock the handler would wait on for good."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while proc.poll() is None and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.2)
    return proc.returncode


def run_submitit(exp: Experiment, todo: list[Job], options: dict, folder: str, cluster: str | None,
                 slurm: dict, say=print) -> list[str]:
    """Submit the jobs as one submitit job array (``cluster``: "slurm", or "local" for submitit's local
    executor) and wait for them; returns the names of failed jobs."""
    try:
        import submitit
    except ImportError:
        raise ExperimentRunError("--launcher slurm needs submitit: pip install submitit (in the repository's folder: "
                                 "pip install '.[cluster]')") from None
    params = {k: v for k, v in slurm.items() if v is not None}
    try:  # no Slurm here (submitit looks for srun), or sbatch refused the array: the user's setup, not a bug
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=MAX_TIMEOUTS,
                                           local_max_num_timeout=MAX_TIMEOUTS)
        if cluster == "slurm":  # every run at once unless --parallel says otherwise
            executor.update_parameters(slurm_array_parallelism=params.pop("parallel", len(todo)), **params)
        else:
            executor.update_parameters(timeout_min=params.get("timeout_min", 60 * 24))
        say(f"submitting {len(todo)} runs through submitit ({cluster or 'auto'}), logs in {folder}")
        submitted = executor.submit_array([TrainJob(exp, job, options) for job in todo])
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
        hint = "; on a machine without Slurm use --launcher local" if cluster == "slurm" else ""
        raise ExperimentRunError(f"submitit could not submit the runs: {str(exc).strip() or type(exc).__name__}"
                                 f"{hint}") from None
    if submitted and cluster == "slurm":
        array = str(submitted[0].job_id).split("_")[0]
        say(f"job array {array}: this command waits for its jobs, then writes the report (stopped, it leaves them "
            f"running: scancel {array} stops them; the same command, once they are done, writes the report)")
    return _results(todo, submitted, say)


def _results(todo: list[Job], submitted: list, say) -> list[str]:
    """Wait for each job; say how it ended; the names of the failed ones."""
    failed = []
    for job, sub in zip(todo, submitted):
        try:
            sub.result()
            say(f"done {job.name}")
        except Exception as exc:  # noqa: BLE001 - submitit wraps the job's failure; the user sees its name
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            why = next((ln[ln.index(FAILURE) + len(FAILURE):].strip() for ln in lines if FAILURE in ln),
                       lines[0] if lines else type(exc).__name__)
            err = getattr(getattr(sub, "paths", None), "stderr", None)
            say(printable(f"failed {job.name}: {why[:300]}" + (f" (log: {err})" if err else "")))  # a job's text
            failed.append(job.name)
    return failed
