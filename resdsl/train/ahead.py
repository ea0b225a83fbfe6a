"""Batches made one step ahead in a background thread (issue 10's image-folder path on the GPU).

Where pictures are decoded and cut where the model is (``--decode device``), making a ResNet-50 batch of 256 JPEGs
takes the host about 66 ms (nvJPEG's batched decode, 256 resizes, the colour noise), as long as the GPU takes for
the step; made by the thread that also launches the step, the two add up. :class:`Ahead` makes batch i+1 in a
thread of its own while the loop launches step i: the kernels and nvJPEG's decode run without the GIL, so the two
threads overlap, and each batch is handed over to the consuming thread's CUDA stream by an event
(:func:`streams.hand_over`), never by making the host wait.

The batches and their order are exactly the source's: only when they are made changes. An error in the thread
(a file that cannot be decoded) is raised in the consumer at the batch where it happened. Imports nothing from the
rest of resdsl but :mod:`streams`: it ships beside emitted trainers.
"""
from __future__ import annotations

import queue
import threading

from .streams import hand_over, use_device_in_this_thread

_DONE = object()
_POLL_S = 0.1  # how often a producer blocked on a full queue looks whether the consumer has gone


class Ahead:
    """Iterate ``make(item)`` for the items of ``source``, made ``depth`` batches ahead in a daemon thread that
    works on ``device``. ``make`` returns ``(tensors, ready)`` as :func:`streams.prepared` does; the tensors come
    out of the iterator handed over to the consuming thread's stream. :meth:`close` (or dropping the iterator)
    stops the thread."""

    def __init__(self, source, make, device, depth: int = 1):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        # the thread holds the queue, the flag and the source, never self: dropping the iterator stops it
        self._thread = threading.Thread(target=_produce, args=(source, make, device, self._queue, self._stop),
                                        name="resdsl-batches-ahead", daemon=True)
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind is _DONE:
            self._finished = True
            raise StopIteration
        if kind == "error":
            self._finished = True
            raise value
        tensors, ready = value
        hand_over(tensors, ready)
        return tensors

    def close(self, wait_s: float = 30.0) -> None:
        """Stop making batches and wait (up to ``wait_s``) for the thread to end: within _POLL_S when it waits for
        room in the queue, else once the batch it is reading or making is done (a thread left running at the
        interpreter's exit could die inside CUDA)."""
        self._finished = True
        self._stop.set()
        while True:  # free a producer blocked on a full queue at once
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(wait_s)

    def __del__(self):
        self._stop.set()


def _produce(source, make, device, out: queue.Queue, stop: threading.Event) -> None:
    try:
        use_device_in_this_thread(device)
        for item in source:
            if stop.is_set() or not _put(out, ("batch", make(item)), stop) or stop.is_set():
                return  # the consumer has gone: read nothing more
    except StopIteration as exc:  # raised by make: re-raised in the consumer it would end its loop silently
        _put(out, ("error", RuntimeError(f"making a batch raised StopIteration {exc!r}")), stop)
        return
    except BaseException as exc:  # noqa: BLE001 - every error belongs to the consumer, which re-raises it
        _put(out, ("error", exc), stop)
        return
    _put(out, (_DONE, None), stop)


def _put(out: queue.Queue, entry, stop: threading.Event) -> bool:
    """Put ``entry`` once there is room; False when the consumer has gone first."""
    while not stop.is_set():
        try:
            out.put(entry, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False
