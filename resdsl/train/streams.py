"""Tensors between the host, threads and CUDA streams without making the host wait (issue 10).

A batch of image-folder pictures is made on a *data stream* (:func:`thread_stream`) while the training steps queue
on the loop's stream: :func:`prepared` runs the making there and marks its end with an event, :func:`hand_over`
makes the consuming thread's stream wait for that event on the device, and :func:`to_device` copies the small host
tensors (labels, augmentation numbers) from pinned memory, which does not wait for the queued steps either.

The side streams of a thread belong to it, one per (device, role), for the thread's life: the data streams
("train", "test", "batches") of the thread that consumes the batches (a thread that makes batches for it,
:class:`ahead.Ahead`, uses the consumer's stream, never one of its own), and the "graph" stream on which the fast
path warms up and captures its CUDA graphs (the training step's and the evaluation's, one after the other).
PyTorch hands streams out round-robin from a pool of 32 a device: a stream taken anew for each evaluation would
sooner or later be the training's, where nvJPEG must find nothing queued (:func:`decoding.decode`), and a stream
shared by two threads would put one's kernels into the other's capture (so `--seeds` caps the runs it makes
threads, seeds.MAX_THREAD_RUNS). Imports nothing from resdsl: it ships beside emitted trainers.
"""
from __future__ import annotations

import threading

import torch

_STREAMS = threading.local()


def thread_stream(device, role: str = "batches"):
    """The calling thread's side stream for ``role`` on a CUDA ``device`` (made once; None off CUDA)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    streams = _STREAMS.__dict__.setdefault("streams", {})
    if (device, role) not in streams:
        streams[device, role] = torch.cuda.Stream(device)
    return streams[device, role]


def prepared(make, stream) -> tuple:
    """``make()`` run on the CUDA ``stream``; returns its result and the event that ends its work there (None and
    no stream: ``make()`` as it is), for :func:`hand_over` in the thread that uses the result."""
    if stream is None:
        return make(), None
    with torch.cuda.stream(stream):
        out = make()
    ready = torch.cuda.Event()
    ready.record(stream)
    return out, ready


def hand_over(tensors, ready) -> None:
    """The calling thread's current stream waits for ``ready`` (nothing waits on the host) and owns ``tensors``:
    their memory is not reused for a later batch before the work queued on that stream is done with them."""
    if ready is None:
        return
    stream = torch.cuda.current_stream(tensors[0].device)
    stream.wait_event(ready)
    for t in tensors:
        t.record_stream(stream)


def use_device_in_this_thread(device) -> None:
    """A new thread starts on CUDA device 0: this makes ``device`` its current one, so that nothing it does
    (leaving a stream context restores the thread's device) opens a context on another GPU."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A small CPU tensor on ``device`` without making the host wait: a copy from pageable memory waits for the
    work queued on the stream, which would keep the host from preparing the next batch while the GPU trains."""
    if torch.device(device).type == "cuda":
        t = t.pin_memory()  # from PyTorch's caching host allocator: cheap after the first batches
    return t.to(device, non_blocking=True)
