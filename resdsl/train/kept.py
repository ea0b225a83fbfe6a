"""What a run changes of torch's process-wide settings, put back when the last run of the process returns: a
notebook that calls ``train(...)`` gets its own settings back (deterministic algorithms left on fill every later
``torch.empty`` with NaN on the CPU; a thread count, cuDNN's benchmark mode, the global random generator reseeded).
Runs side by side in threads (``--seed-runs threads``) share the settings, so the first to start saves them and
the last to end restores them. Imports nothing from resdsl: it is shipped beside emitted trainers."""
from __future__ import annotations

import contextlib
import os
import threading

import torch

_LOCK = threading.Lock()
_SAVED: list[dict] = []  # the settings before the first of the running runs started
_RUNNING = [0]


@contextlib.contextmanager
def torch_settings_kept():
    """The block's changes to torch's threads, deterministic mode, cuDNN benchmark mode, CUBLAS_WORKSPACE_CONFIG and
    global random state are undone once no run of this process is left in such a block. Inside, gradients are on
    and the default dtype is float32, whatever the caller's settings (its own is put back after)."""
    with _LOCK:
        if _RUNNING[0] == 0:
            _SAVED[:] = [_settings()]
            torch.set_default_dtype(torch.float32)  # the networks and data are float32 whatever the caller set
        _RUNNING[0] += 1
    try:
        with torch.inference_mode(False), torch.enable_grad():  # a caller's no_grad() or inference_mode() block
            yield  # (each thread has its own grad mode)
    finally:
        with _LOCK:
            _RUNNING[0] -= 1
            if _RUNNING[0] == 0:
                _restore(_SAVED.pop())


def _settings() -> dict:
    return {"threads": torch.get_num_threads(), "deterministic": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "benchmark": torch.backends.cudnn.benchmark, "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
            "rng": torch.get_rng_state(), "dtype": torch.get_default_dtype(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}


def _restore(saved: dict) -> None:
    if torch.get_num_threads() != saved["threads"]:
        torch.set_num_threads(saved["threads"])
    torch.use_deterministic_algorithms(saved["deterministic"], warn_only=saved["warn_only"])
    torch.backends.cudnn.benchmark = saved["benchmark"]
    if saved["cublas"] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved["cublas"]
    torch.set_rng_state(saved["rng"])
    torch.set_default_dtype(saved["dtype"])
    if saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
