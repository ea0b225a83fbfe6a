"""Checked IR -> ``torch.nn.Module``, by executing the very source that ``emit_python`` writes.

Executing the emitted source (instead of a second, hand-written interpreter of the IR) means the in-process
module and the standalone file cannot drift apart.
"""
from __future__ import annotations

import itertools
import linecache
import os

from .python_source import emit_python

_counter = itertools.count()


def load_source(source: str, name: str = "resdsl_model") -> dict:
    """Execute generated model source as a fresh module namespace (registered with linecache for tracebacks)."""
    filename = f"<resdsl-generated {name} #{next(_counter)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict = {"__name__": f"resdsl_generated_{name}"}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - our own generated code
    return namespace


def build_model(spec, *, num_classes: int | None = None, in_channels: int | None = None,
                input_size: tuple[int, int] | None = None):
    """A freshly initialised ``nn.Module`` for a spec path, spec text (``str`` containing a newline) or
    ``CheckedNetwork``. ``num_classes``, ``in_channels`` and ``input_size`` override the spec's head and input
    (the shape checks run again, so an impossible combination fails with a located ``SpecError``)."""
    net = checked(spec, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    model = load_source(emit_python(net), net.name)["build"]()
    model.resdsl_network = net.name
    return model


def checked(spec, *, num_classes=None, in_channels=None, input_size=None):
    """Resolve ``spec`` to a CheckedNetwork, applying overrides."""
    from ..pipeline import CheckedNetwork, compile_spec

    overrides = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}
    if isinstance(spec, CheckedNetwork):
        if all(v is None for v in overrides.values()):
            return spec
        return compile_spec(spec.spec.path, **overrides) if not spec.spec.path.startswith("<") else \
            compile_spec(text=spec.spec.source, name=spec.spec.path, **overrides)
    if isinstance(spec, str) and "\n" in spec:
        return compile_spec(text=spec, **overrides)
    return compile_spec(os.fspath(spec), **overrides)
