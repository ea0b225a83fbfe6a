"""Checked IR -> ``torch.nn.Module``, by executing the very source that ``emit_python`` writes.

Executing the emitted source (instead of a second, hand-written interpreter of the IR) means the in-process
module and the standalone file cannot drift apart.
"""
from __future__ import annotations

import hashlib
import linecache
import math
import threading
import weakref

from ..errors import SpecError, env_limit
from ..ops import shape_text
from .escape import py_ident
from .python_source import emit_python

MAX_PARAMS = 2_000_000_000  # default limits, lifted with the environment variables below
MAX_ACTIVATION_BYTES = 16 * 2**30
BYTES_PER_VALUE = 4  # float32


# One set of classes per distinct source (sha-256): a network built again reuses its classes, and a pickled module
# finds them. The most recent sources stay loaded (a sweep may build thousands); an older one is found again while
# any of its classes lives (pickling and isinstance need the very class), and is loaded anew only once none does.
_LOCK = threading.Lock()  # --seed-runs threads build their networks side by side
_LOADED: dict[str, dict] = {}
_KEPT = 256
_ALIVE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # (sha-256, class name) -> class
_NAMES: dict[str, tuple] = {}  # sha-256 -> its classes' names


def load_source(source: str, name: str = "resdsl_model") -> dict:
    """Execute generated model source as a module namespace (registered with linecache for tracebacks), once per
    distinct source; its modules can be pickled whole (``torch.save(model)``, a process pool's arguments)."""
    key = hashlib.sha256(source.encode()).hexdigest()
    with _LOCK:
        namespace = _LOADED.get(key) or _living(key) or _executed(source, py_ident(name), key)
        _LOADED.pop(key, None)
        _LOADED[key] = namespace  # the most recent last
        while len(_LOADED) > _KEPT:
            old = _LOADED.pop(next(iter(_LOADED)))
            if not _living(old["_resdsl_key"]):
                linecache.cache.pop(old["_resdsl_filename"], None)
        return namespace


def _living(key: str) -> dict | None:
    """The namespace of a source none of the recent ones holds, where one of its classes still lives."""
    cls = next((c for c in (_ALIVE.get((key, n)) for n in _NAMES.get(key, ())) if c is not None), None)
    return cls._resdsl_namespace if cls is not None else None


def _executed(source: str, name: str, key: str) -> dict:
    filename = f"<resdsl-generated {name} {key[:12]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict = {"__name__": f"resdsl_generated_{name}", "_resdsl_key": key, "_resdsl_filename": filename}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - our own generated code
    classes = [c for c in namespace.values() if isinstance(c, type) and c.__module__ == namespace["__name__"]]
    for cls in classes:
        cls._resdsl_source, cls._resdsl_name, cls._resdsl_namespace = source, name, namespace
        cls.__reduce_ex__ = _reduce_generated
        _ALIVE[key, cls.__qualname__] = cls
    _NAMES[key] = tuple(c.__qualname__ for c in classes)
    return namespace


def _reduce_generated(module, protocol):
    """Pickle a generated module by its class's source (its module name imports nothing): unpickled, the source
    is loaded again (once per process) and the instance's state restored into its class. A user's subclass of a
    generated class pickles as any class does, by its own name."""
    cls = type(module)
    if "_resdsl_source" not in cls.__dict__:
        return object.__reduce_ex__(module, protocol)
    return _new_generated, (cls._resdsl_source, cls._resdsl_name, cls.__qualname__), module.__getstate__()


def _new_generated(source: str, name: str, qualname: str):
    cls = load_source(source, name)[qualname]
    return cls.__new__(cls)


def build_model(spec, *, num_classes: int | None = None, in_channels: int | None = None,
                input_size: tuple[int, int] | None = None):
    """A freshly initialised ``nn.Module`` for a spec path, spec text (a ``str`` containing a newline that names
    no file; pass a ``pathlib.Path`` to mean a path) or ``CheckedNetwork``. ``num_classes``, ``in_channels`` and
    ``input_size`` override the spec's head and input (the shape checks run again, so an impossible combination
    fails with a located ``SpecError``)."""
    net = checked(spec, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    check_limits(net)
    model = load_source(emit_python(net), net.name)["build"]()
    model.resdsl_network = net.name
    model.resdsl_input_shape = tuple(net.input_shape)  # C, H, W: the input it was built for (export_onnx's)
    return model


def checked(spec, *, num_classes=None, in_channels=None, input_size=None):
    """Resolve ``spec`` to a CheckedNetwork, applying overrides."""
    from ..pipeline import CheckedNetwork, compile_spec

    overrides = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}
    if isinstance(spec, CheckedNetwork):
        if all(v is None for v in overrides.values()):
            return spec
        return recheck(spec, **overrides)
    return compile_spec(spec, **overrides)  # a path, a name or spec text (a str with a line break)


def recheck(net, **overrides):
    """``net`` lowered and checked again with another input or class count, from its resolved spec: the spec files
    are not read or parsed again (a training run compiles its spec once)."""
    from dataclasses import replace

    from ..pipeline import check_overridden

    resolved = replace(net.spec, settings=dict(net.spec.settings), expects=list(net.spec.expects))
    return check_overridden(resolved, **overrides)


def activation_bytes(net) -> int:
    """Estimated float32 memory of every operation's output for one image (what training keeps for the
    backward pass), from the checked IR's shapes."""
    return BYTES_PER_VALUE * sum(math.prod(d["shape"]) for _, d in net.graph.nodes(data=True) if d["op"] != "output")


def check_limits(net) -> None:
    """Refuse, before any tensor is allocated, a network whose weights or activations would exhaust memory:
    parameters against RESDSL_MAX_PARAMS, one image's activations against RESDSL_MAX_ACTIVATION_BYTES."""
    settings = net.spec.settings
    limit = env_limit("RESDSL_MAX_PARAMS", MAX_PARAMS)
    if net.params > limit:
        span = settings["network"].span
        raise net.spec.locate(SpecError(
            f"{net.name} has {net.params:,} parameters ({_gib(net.params * BYTES_PER_VALUE)} of float32 weights), "
            f"more than the {limit:,.0f} resdsl builds", span,
            hint="set the environment variable RESDSL_MAX_PARAMS to a larger number (or inf) to build it anyway"))
    limit = env_limit("RESDSL_MAX_ACTIVATION_BYTES", MAX_ACTIVATION_BYTES)
    need = activation_bytes(net)
    if need > limit:
        span = settings["input"].span
        shape = shape_text(net.input_shape)
        raise net.spec.locate(SpecError(
            f"one {shape} image needs about {_gib(need)} ({need:,} bytes) of float32 activations, more than the "
            f"limit of {_gib(limit)} ({limit:,.0f} bytes)", span,
            hint="use a smaller input, or set the environment variable RESDSL_MAX_ACTIVATION_BYTES to a larger "
                 "number of bytes (or inf)"))


def _gib(n: float) -> str:
    """Bytes for people: 2.5 GiB, 312 MiB, 40 KiB."""
    if math.isinf(n):
        return "unlimited"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} bytes"
