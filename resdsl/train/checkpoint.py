"""Checkpoints that are data, not code: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors, numbers, strings, lists, tuples and dicts (the RNG states too), so loading one never
unpickles an arbitrary object: a planted ``checkpoint.pt`` cannot run code. A failed write never harms the previous
checkpoint (temporary file, fsync, rename).
"""
from __future__ import annotations

import io
import os
import pickle
import random
import stat
import warnings
import zipfile

import torch

from .dataerror import Message
from .fileio import OutputError, atomic_write, file_kind
from .record import BOUND, FLAG, NUMBER, WHOLE, optional, problem

FORMAT = "resdsl-checkpoint"
VERSION = 2
KEYS = ("model", "optimizer", "schedule", "state", "rng")
# what a resumed run reads back (loop._restore) beside the weights, of the kinds the loop writes: a checkpoint
# crafted or edited so that it loads (tensors, numbers, texts) but holds other kinds is refused, naming the field
RESUMED = {"state": {"iter": WHOLE, "elapsed": NUMBER, "loss_sum": NUMBER, "wrong": WHOLE, "seen": WHOLE,
                     "recent_errors": [NUMBER], "eval_missed": optional(FLAG)},
           "schedule": {"warmup_done": FLAG, "plateau_scale": NUMBER, "plateau_best": BOUND, "plateau_bad": WHOLE}}


class CheckpointError(Message):
    """A checkpoint could not be written or read; the message says why and what was kept."""


def rng_state(device=None) -> dict:
    """Every random generator the trainer draws from, as tensors and plain numbers; with the run's CUDA ``device``,
    that GPU's own as "run_cuda" (in a process per GPU, the others' are generators this process never drew from)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
        if device is not None and torch.device(device).type == "cuda":
            state["run_cuda"] = torch.cuda.get_rng_state(device)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)}
    return state


def set_rng_state(state: dict, path: str, device=None) -> None:
    """Every random generator as ``state`` (from :func:`rng_state`) says, the run's GPU's as that of the GPU the
    checkpoint's run drew from (every rank of a run draws alike on its own GPU, and rank 0 writes the checkpoint;
    a run resumed on another GPU goes on drawing as it did); ``path``: the checkpoint it came from, whose states of
    other kinds (crafted, say) are a CheckpointError."""
    try:
        _set_rng_state(state)
        if "run_cuda" in state and device is not None and torch.device(device).type == "cuda":
            torch.cuda.set_rng_state(state["run_cuda"], device)
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError, AttributeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is not a checkpoint a resdsl run wrote: its random generators' states "
                              f"cannot be restored ({detail})") from None


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():  # those of the GPUs this machine has (a run may move)
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])
    if "numpy" in state:
        import numpy as np

        s = state["numpy"]
        np.random.set_state((s["kind"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))


def save_atomic(obj: dict, path: str) -> None:
    """Write a checkpoint dict to ``path`` atomically, marked with this format so that :func:`load` knows it."""
    obj = {"format": FORMAT, "version": VERSION, **obj}
    buf = io.BytesIO()  # serialised first: torch.save writing to the file would report a full disk as a
    try:  # RuntimeError about stream positions; a plain write says "No space left on device"
        torch.save(obj, buf)
        atomic_write(path, lambda fh: fh.write(buf.getbuffer()))
    except OutputError as exc:
        message = str(exc).replace("cannot write", "cannot write checkpoint", 1)
        raise CheckpointError(message.replace("previous file", "previous checkpoint")) from None
    except RuntimeError as exc:  # torch.save could not serialise (nothing was written)
        kept = "the previous checkpoint is intact" if os.path.exists(path) else "nothing was written"
        raise CheckpointError(f"cannot write checkpoint {path}: {str(exc).splitlines()[0]} ({kept})") from None


# torch warns of a pickle's protocol while it refuses a foreign pickle, with a line of its own source; the refusal
# is said in words (a filter, not catch_warnings, which is not safe in the threads of --seed-runs threads)
warnings.filterwarnings("ignore", message=r"Detected pickle protocol", category=UserWarning)


def load(path: str, map_location="cpu", plain: bool = False) -> dict:
    """Read a resdsl checkpoint; anything else (a foreign pickle, a corrupt or truncated file) is refused. With
    ``plain``, a file holding only a state dict (``torch.save(model.state_dict())``, torchvision's weight files)
    is taken too, as ``{"model": it}``: weights to evaluate, with nothing to resume."""
    _check_regular(path)
    _check_sums(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, not a checkpoint") from None
    except PermissionError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    except pickle.UnpicklingError:
        if not _looks_saved(path):
            raise CheckpointError(f"{path} is not a checkpoint: it is not a file torch.save writes (neither its "
                                  "zip archive nor a pickle)") from None
        raise CheckpointError(f"{path} is not a resdsl checkpoint: it holds Python objects other than tensors, "
                              "numbers and strings, and resdsl never unpickles those (loading them can run code)") \
            from None
    except EOFError:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty or cut short") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file must not become a traceback
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in detail:  # torch's advice to load it unsafely: never taken, so never passed on
            detail = "it is neither of the formats torch.save writes"
        raise CheckpointError(f"cannot read checkpoint {path}: the file is damaged or cut short ({detail})") \
            from None
    if plain and isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"model": obj}
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a resdsl checkpoint (no '{FORMAT}' marker); was it written by another "
                              "program or by an older resdsl?")
    missing = [k for k in KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is an incomplete resdsl checkpoint (missing {', '.join(missing)})")
    return obj


def _check_regular(path: str) -> None:
    """Only a regular file (or a link to one) is read: a named pipe or a device would block ``torch.load`` for
    good, or feed it without end."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # torch.load names the problem (no such file, no permission)
    if not stat.S_ISDIR(mode) and file_kind(mode) is not None:  # a folder: torch.load says so
        raise CheckpointError(f"{path} is {file_kind(mode)}, not a regular file, so it cannot be a checkpoint")


def _check_sums(path: str) -> None:
    """A checkpoint is a zip file whose every record carries a CRC-32, which ``torch.load`` does not check: a file
    damaged on disk would load, and a resumed run would go on from wrong weights. Python's zipfile checks them
    (reading the file once more); a file that is not a zip is left to ``torch.load`` to judge."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile):
        return
    except Exception as exc:  # noqa: BLE001 - a damaged record header, say: the file cannot be trusted
        raise CheckpointError(f"cannot read checkpoint {path}: the file is damaged ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if bad is not None:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is damaged (its record {bad} fails its "
                              "checksum); it cannot be trusted to resume or evaluate from")


def _looks_saved(path: str) -> bool:
    """Whether a file begins as torch.save's output does: its zip archive, or (older torch) a pickle."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return True  # say nothing new; the load's own error stands
    return head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")


def iteration(path: str) -> int | None:
    """The iteration a checkpoint was written at, read cheaply (its tensors memory-mapped, not loaded); None where
    the file is missing or not a resdsl checkpoint."""
    try:
        _check_regular(path)
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(obj["state"]["iter"]) if obj.get("format") == FORMAT else None
    except Exception:  # noqa: BLE001 - any unreadable file is "no checkpoint" here; resuming it says why
        return None


def check_same_run(saved: dict, config: dict | None, path: str, then: str) -> None:
    """A run's checkpoint is its own: one whose run id is not its config.json's was copied from another run, and
    its weights are not this run's. ``then``: what the user should do instead (runs recorded before run ids have
    neither, and pass)."""
    mine = config.get("run_id") if isinstance(config, dict) else None
    its = saved.get("run_id")
    if isinstance(mine, str) and isinstance(its, str) and mine != its:
        raise CheckpointError(f"{path} is another run's checkpoint (run id {its}; config.json says {mine}): copied "
                              f"from there, {then}")


def check_resumable(saved: dict, path: str) -> None:
    """A checkpoint's state and schedule are of the kinds the loop writes, and nothing more (see RESUMED)."""
    for part, kind in RESUMED.items():
        found = problem(saved[part], kind, part)
        extra = sorted(set(saved[part]) - set(kind)) if isinstance(saved[part], dict) else []
        if found or extra:
            why = found or f"{part} holds {', '.join(map(str, extra[:3]))}, which resdsl never writes"
            raise CheckpointError(f"{path} is not a checkpoint a resdsl run wrote: {why}")


def load_optimizer(optimizer, saved, path: str) -> None:
    """``optimizer.load_state_dict(saved)``; an optimizer state of another network (or crafted: a momentum buffer
    of another shape would fail only at the first step) is a CheckpointError."""
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, RuntimeError, TypeError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{path}: the optimizer state does not fit this network ({exc})") from None
    for param, per_param in optimizer.state.items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                raise CheckpointError(f"{path}: the optimizer state does not fit this network ({name} of shape "
                                      f"{tuple(value.shape)} for a parameter of shape {tuple(param.shape)})")


def load_weights(model, weights: dict, path: str) -> None:
    """``model.load_state_dict(weights)``; a checkpoint of another network is named by its first differences."""
    own = model.state_dict()
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path} holds no weights: its model is not a table of tensors")
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in own
                if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    problems = [f"{what}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''} ({len(keys)} in all)"
                for what, keys in (("missing from the checkpoint", missing), ("not in the network", unexpected),
                                   ("of another shape (checkpoint vs network)", reshaped)) if keys]
    if problems:
        raise CheckpointError(f"{path} holds the weights of another network; " + "; ".join(problems))
    broken = [k for k, v in weights.items()
              if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:  # a resdsl checkpoint never holds them (a NaN loss stops the run before it is written)
        raise CheckpointError(f"{path} holds weights that are not finite (NaN or infinity) in {', '.join(broken[:3])}"
                              f"{', ...' if len(broken) > 3 else ''}: a network evaluated with them gives no figure")
    model.load_state_dict(weights)
