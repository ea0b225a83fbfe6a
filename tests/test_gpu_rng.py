"""What a CPU can check of runs on GPUs: their random generators around a checkpoint (torch.cuda's calls stood in
for), and which GPUs runs are dealt over."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from resdsl.train import checkpoint  # noqa: E402


def test_a_resumed_rank_takes_the_generator_state_of_the_gpu_the_run_drew_from(monkeypatch):
    """Rank 0 of an --nproc run wrote every GPU's generator state of its own process, where GPU r's (r > 0) was
    never drawn from: rank r, resumed, went back to the seed's state, and its dropout and drop path masks parted
    from rank 0's. The run's GPU's own state is kept, and every rank takes it for its own GPU."""
    drawn, fresh = torch.tensor([7], dtype=torch.uint8), torch.tensor([1], dtype=torch.uint8)
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [drawn, fresh])
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: drawn if str(device) == "cuda:0" else fresh)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(("all", list(states))))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append((str(device), state)))
    state = checkpoint.rng_state(torch.device("cuda:0"))  # rank 0 writes the checkpoint
    assert torch.equal(state["run_cuda"], drawn)
    checkpoint.set_rng_state(state, "ck.pt", torch.device("cuda:1"))  # rank 1 resumes on its GPU
    assert calls[-1][0] == "cuda:1" and torch.equal(calls[-1][1], drawn)
    assert "run_cuda" not in checkpoint.rng_state(torch.device("cpu"))


def test_runs_dealt_over_gpus_stay_on_the_gpus_the_user_gave(monkeypatch):
    """CUDA_VISIBLE_DEVICES=2,3 and --seeds 3: the runs went to physical GPUs 0 and 1, which the user had left out."""
    from resdsl.train.seeds import gpu_of

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert [gpu_of(k, 2) for k in range(3)] == ["2", "3", "2"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert [gpu_of(k, 2) for k in range(3)] == ["0", "1", "0"]
