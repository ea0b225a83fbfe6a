"""What a run writes besides checkpoints: metrics.jsonl, TensorBoard events, curves.png like the papers' plots."""
from __future__ import annotations

import functools
import json
import math
import os
import sys
import threading
import time

from .fileio import OutputError, atomic_write, open_append, read_regular
from .record import metrics_row
from .rundir import METRICS

# curves.png is redrawn at most this often (seconds), and always when the run ends: drawing it takes matplotlib
# about 0.1 s, a third of what a small CIFAR net's evaluation point costs on a GPU (issue 10)
PLOT_EVERY_S = 30.0


@functools.lru_cache(maxsize=1)
def _figure():
    """matplotlib's Figure class, or None without matplotlib (looked for once). A Figure drawn without pyplot
    keeps no global state, so runs in threads of one process (--seed-runs threads) can draw at the same time."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


class MetricsLog:
    """One JSON object per evaluation in ``metrics.jsonl``; TensorBoard and curves.png when those libraries exist
    (curves.png at the first evaluation, then at most every PLOT_EVERY_S seconds, and at :meth:`close`)."""

    def __init__(self, run_dir: str, enabled: bool = True):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, METRICS)
        self.enabled = enabled
        self.rows: list[dict] = []
        self.plotted_at, self.unplotted = -math.inf, False
        self.tb = self._writer() if enabled else None

    def _writer(self, purge_step: int | None = None):
        """TensorBoard's writer for the run (None without tensorboard, which is optional, e.g. in an emitted
        trainer folder); ``purge_step``: the points from that step on, written before a kill, are hidden."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        _quiet_writer_threads()
        try:
            return SummaryWriter(self._tb_folder(), purge_step=purge_step)
        except OSError as exc:
            raise self._tb_error(exc) from None

    def _tb_folder(self) -> str:
        return os.path.join(self.run_dir, "tensorboard")

    def _tb_error(self, exc: OSError) -> OutputError:
        return OutputError(f"cannot write TensorBoard's files in {self._tb_folder()}: {exc.strerror or exc}")

    def resume(self, up_to_iter: int, row_at_checkpoint: bool = False, rows_before: bool = False) -> None:
        """Keep the rows written up to the checkpoint's iteration (``rows_before``: it had some, so a missing file
        is said); later ones will be written again. A line that
        does not parse (a run killed mid-write, a full disk) is dropped with a warning that says whether its row
        comes again (after the checkpoint) or is lost (before it; ``row_at_checkpoint``: the checkpoint's own
        iteration has a row, written before it, so an unreadable line where that row belongs is lost too)."""
        try:
            lines = read_regular(self.path).decode("utf-8", errors="replace").split("\n")
        except FileNotFoundError:
            if rows_before and self.enabled:  # a run shared without it, say
                print(f"warning: {self.path} is missing: the rows up to the checkpoint's iteration {up_to_iter} are "
                      "lost (the training is not); the run's curves begin where it resumes", file=sys.stderr)
            return
        except OSError as exc:
            raise OutputError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        rows, dropped, last_kept = [], [], 0  # last_kept: the line of the last row up to the checkpoint
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = metrics_row(json.loads(line))
            except ValueError:
                row = None
            if row is None:
                dropped.append(number)
                continue
            rows.append(row)
            last_kept = number if row["iter"] <= up_to_iter else last_kept
        lost = [n for n in dropped if n < last_kept]  # rows from before the checkpoint cannot come again
        if row_at_checkpoint and not any(r["iter"] == up_to_iter for r in rows):
            lost += [n for n in dropped if n > last_kept][:1]  # the line where the checkpoint's own row was
        if dropped:
            _warn_dropped(self.path, dropped, lost, up_to_iter)
        self.rows = [r for r in rows if r["iter"] <= up_to_iter]
        self.unplotted = True  # curves.png may show rows dropped here
        if self.tb is not None:  # TensorBoard too forgets the points after the checkpoint: they come again
            self.tb.close()
            self.tb = self._writer(purge_step=up_to_iter + 1)
        if self.enabled:
            text = "".join(json.dumps(r) + "\n" for r in self.rows)
            atomic_write(self.path, lambda fh: fh.write(text.encode()))

    def write(self, row: dict) -> None:
        # JSON has no NaN or infinity: a diverged figure is written as null
        row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
        self.rows.append(row)
        if not self.enabled:
            return
        try:
            with open_append(self.path) as fh:
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        if self.tb is not None:
            self._to_tensorboard(row)
        self.unplotted = True
        if time.monotonic() - self.plotted_at >= PLOT_EVERY_S:
            self.plot()

    def _to_tensorboard(self, row: dict) -> None:
        """TensorBoard's points of a row; a full disk there (its writer thread fails, then every call re-raises)
        is an OutputError as in metrics.jsonl, and the writer is dropped: its close would raise it again."""
        try:
            for key in ("lr", "train_loss", "train_error", "test_loss", "test_error", "test_top5_error"):
                if row.get(key) is not None:
                    self.tb.add_scalar(key, row[key], row["iter"])
            self.tb.flush()
        except OSError as exc:
            self.tb = None
            raise self._tb_error(exc) from None

    def plot(self) -> None:
        """curves.png: training error dashed, test error solid, against iterations (as in [R] Fig. 1, 4, 6)."""
        figure = _figure()
        if figure is None:
            self.unplotted = False  # nothing to draw with: close() has nothing left to do either
            return
        its = [r["iter"] for r in self.rows]
        fig = figure(figsize=(6, 4), dpi=100)
        ax = fig.subplots()
        nan = float("nan")  # a null figure is a gap in the curve
        ax.plot(its, [nan if r["train_error"] is None else r["train_error"] for r in self.rows], "--", color="C0",
                label="training error")
        ax.plot(its, [nan if r["test_error"] is None else r["test_error"] for r in self.rows], "-", color="C0",
                label="test error")
        ax.set_xlabel("iterations")
        ax.set_ylabel("error (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        atomic_write(os.path.join(self.run_dir, "curves.png"), lambda fh: fig.savefig(fh, format="png"))
        self.plotted_at, self.unplotted = time.monotonic(), False

    def close(self, quietly: bool = False) -> None:
        """Draw the rows curves.png lacks and close TensorBoard; ``quietly`` (the run is stopping on an error):
        a failure to draw is not reported, the error that stopped the run is what the user needs."""
        try:
            if self.unplotted:
                self.plot()
        except Exception:  # noqa: BLE001 - quietly: nothing may hide the error that stopped the run
            if not quietly:
                raise
        finally:
            tb, self.tb = self.tb, None
            if tb is not None:
                try:
                    tb.close()
                except OSError as exc:  # its last points: a full disk, say
                    if not quietly:
                        raise self._tb_error(exc) from None


def _quiet_writer_threads() -> None:
    """TensorBoard's writer thread re-raises its failure (a full disk) as it ends, and Python prints that as a
    thread's traceback; the writer's next call raises it again, which the run says in one line (OutputError). So
    a failing writer thread ends without a traceback; any other thread's exception is printed as before."""
    if getattr(threading.excepthook, "resdsl_quiet", False):
        return
    previous = threading.excepthook

    def hook(args):
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError):
            return
        previous(args)

    hook.resdsl_quiet = True
    threading.excepthook = hook


def _warn_dropped(path: str, dropped: list[int], lost: list[int], up_to_iter: int) -> None:
    """Say what becomes of unreadable lines of metrics.jsonl: those after the checkpoint's rows are written again
    as the run resumes; the ``lost`` rows, up to the checkpoint, cannot be (the weights are unaffected)."""
    fate = "they are written again as the run resumes"
    if lost:
        fate = (f"{'line' if len(lost) == 1 else 'lines'} {_listed(lost)} came before the checkpoint's iteration "
                f"{up_to_iter}: {'its row is' if len(lost) == 1 else 'their rows are'} lost, the training is not")
        if len(lost) < len(dropped):
            fate += "; the later ones are written again as the run resumes"
    print(f"warning: {path}: dropped unreadable line(s) {_listed(dropped)}; {fate}", file=sys.stderr)


def _listed(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:5])) + (", ..." if len(numbers) > 5 else "")
