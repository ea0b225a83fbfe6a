"""Atomic checkpoints: write to a temporary file, fsync, rename; a failed write never harms the previous one."""
from __future__ import annotations

import os
import random
import tempfile

import torch


class CheckpointError(Exception):
    """A checkpoint could not be written or read; the message says why and what was kept."""


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover
        pass
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


def save_atomic(obj: dict, path: str) -> None:
    """torch.save to ``path`` atomically (temp file in the same folder, fsync, rename, fsync the folder)."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ckpt-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        kept = "the previous checkpoint is intact" if os.path.exists(path) else "no earlier checkpoint exists"
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc} ({kept})") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def load(path: str, map_location="cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file must not become a traceback
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
