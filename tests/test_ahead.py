"""Image-folder batches made one step ahead in a thread (``--decode device``): the source's batches in its order,
made off the consuming thread and ahead of it, errors raised at the batch where they happened, and a thread that
ends when the loop is done with it, however it ends."""
from __future__ import annotations

import gc
import itertools
import threading
import time

import pytest

torch = pytest.importorskip("torch")

from resdsl.train.ahead import Ahead  # noqa: E402


def _wait_for(condition, timeout=5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _made_by(threads: list):
    def make(item):
        threads.append((item, threading.get_ident()))
        return (torch.full((2,), item),), None
    return make


def test_the_batches_are_the_sources_in_its_order_made_in_another_thread():
    threads = []
    out = [int(x[0]) for (x,) in Ahead(range(7), _made_by(threads), "cpu")]
    assert out == list(range(7))
    assert [item for item, _ in threads] == list(range(7))
    assert {ident for _, ident in threads} != {threading.get_ident()} and len({i for _, i in threads}) == 1


def test_the_next_batch_is_made_while_the_consumer_works():
    threads = []
    ahead = Ahead(range(5), _made_by(threads), "cpu")
    next(ahead)
    assert _wait_for(lambda: len(threads) >= 2)  # batch 1 made before the consumer asked for it
    time.sleep(0.2)
    assert len(threads) <= 3  # and no further than one queued batch and one in hand
    ahead.close()


def test_an_error_comes_out_at_its_batch():
    def make(item):
        if item == 2:
            raise ValueError("cannot decode picture 2")
        return (torch.zeros(1),), None

    ahead = Ahead(range(5), make, "cpu")
    next(ahead), next(ahead)
    with pytest.raises(ValueError, match="picture 2"):
        next(ahead)
    with pytest.raises(StopIteration):
        next(ahead)


def test_an_error_of_the_source_comes_out_too():
    def source():
        yield 0
        raise OSError("the disk went away")

    ahead = Ahead(source(), _made_by([]), "cpu")
    next(ahead)
    with pytest.raises(OSError, match="disk went away"):
        next(ahead)


def test_a_stop_iteration_of_make_is_an_error_not_the_end():
    def make(item):
        raise StopIteration

    with pytest.raises(RuntimeError, match="StopIteration"):
        next(Ahead(range(3), make, "cpu"))


def test_closing_reads_nothing_more_from_the_source():
    """A producer waiting for room in the queue stops at once when closed, without reading a further (slow) item
    from its source."""
    read = []

    def slow():
        for k in itertools.count():
            time.sleep(0.5)
            read.append(k)
            yield k

    ahead = Ahead(slow(), _made_by([]), "cpu")
    next(ahead)
    assert _wait_for(lambda: len(read) >= 3)  # item 1 queued, item 2 made and waiting for room
    ahead.close()
    time.sleep(0.7)  # longer than the source takes for an item
    assert read == [0, 1, 2]


def _producer_threads():
    return [t for t in threading.enumerate() if t.name == "resdsl-batches-ahead"]


def test_closing_ends_the_thread_of_an_endless_source():
    before = len(_producer_threads())
    ahead = Ahead(itertools.count(), _made_by([]), "cpu")
    next(ahead)
    ahead.close()
    assert len(_producer_threads()) == before
    with pytest.raises(StopIteration):
        next(ahead)


def test_dropping_the_batches_ends_the_thread():
    before = len(_producer_threads())
    ahead = Ahead(itertools.count(), _made_by([]), "cpu")
    next(ahead)
    del ahead
    gc.collect()
    assert _wait_for(lambda: len(_producer_threads()) == before)


@pytest.mark.parametrize("fail", [False, True])
def test_a_folder_run_leaves_no_thread_behind(tmp_path, monkeypatch, fail):
    """The loop closes its batches: a run decoding on the device (here the CPU) ends with no producer thread, also
    when it stops half-way (on a non-finite loss, say) with batches still to come."""
    import resdsl as rd
    from conftest import ROOT
    from resdsl.train import loop
    from test_train_data import make_folder

    if fail:
        def stop(*args):
            raise loop.TrainingError("the loss became non-finite (simulated)")
        monkeypatch.setattr(loop, "_check_finite", stop)
    make_folder(tmp_path / "imgs", per_class=4, size=(48, 40))
    net = rd.compile_spec(str(ROOT / "tests/specs/tiny_folder.res"))
    opts = loop.RunOptions(data=str(tmp_path / "imgs"), workers=0, device="cpu", quiet=True, iters=6, eval_every=2,
                           decode="device", out=str(tmp_path / "run"))
    before = len(_producer_threads())
    try:
        loop.train(lambda shape, k: rd.build_model(net, num_classes=k, input_size=tuple(shape[1:])), net.recipe,
                   opts)
    except loop.TrainingError:
        assert fail
        assert len(_producer_threads()) == before  # while the traceback still holds the loop's frames
    assert len(_producer_threads()) == before


CUDA = [pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))]


@pytest.mark.parametrize("device", CUDA)
def test_on_a_gpu_batches_made_ahead_are_the_threads_own(device):
    """Made in the producer on the consumer's data stream for the role (the same stream each time, another for
    another role), handed over by an event: the consumer's stream sees the finished batch."""
    from resdsl.train.streams import prepared, thread_stream

    assert thread_stream(device, "train") is thread_stream(device, "train")
    assert thread_stream(device, "train") != thread_stream(device, "test")
    stream = thread_stream(device, "train")
    seen = []

    def make(k):
        seen.append((torch.cuda.current_device(), torch.cuda.current_stream()))
        return prepared(lambda: (torch.full((1 << 20,), float(k), device=device).cumsum(0),), stream)

    for k, (x,) in enumerate(Ahead(range(4), make, torch.device(device, torch.cuda.current_device()))):
        assert float(x[-1]) == k * (1 << 20)
    assert all(dev == torch.cuda.current_device() for dev, _ in seen)
