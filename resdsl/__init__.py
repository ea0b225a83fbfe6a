"""resdsl: a declarative language and compiler for residual networks.

    >>> import resdsl
    >>> net = resdsl.compile_spec("resnet20")  # a packaged spec's name (resdsl list), a file, or spec text
    >>> net.params, net.macs, net.layers
    (269722, 40551040, 20)
"""
from __future__ import annotations

from .errors import Span, SpecError, SpecWarning

# name -> the module that defines it, loaded when the name is first asked for: see __getattr__
LAZY = {"CheckedNetwork": "pipeline", "compile_spec": "pipeline", "train_spec": "training", "evaluate": "training"}


def __getattr__(name: str):
    """``resdsl.compile_spec`` and the rest of :data:`LAZY`, loaded (with lark and networkx) when first asked for:
    `import resdsl.train...` stays light, so the front ends take Ctrl-C before anything heavy loads
    (resdsl.train.ctrl_c). ``train_spec`` and ``evaluate`` (resdsl.training) load torch when called."""
    if name in LAZY:
        from importlib import import_module

        return getattr(import_module(f".{LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'resdsl' has no attribute {name!r}")


def build_model(spec, *, num_classes: int | None = None, in_channels: int | None = None,
                input_size: tuple[int, int] | None = None):
    """A freshly initialised ``torch.nn.Module`` for a spec (path, name, text or CheckedNetwork); imports torch.
    ``num_classes``, ``in_channels`` and ``input_size`` (H, W) replace the spec's head and input, as in
    ``compile_spec``. Save it by its ``state_dict()`` (whose keys are stable, and torchvision's for
    specs/torchvision/), or whole with ``torch.save``."""
    from .backends.torch_module import build_model as _build

    return _build(spec, num_classes=num_classes, in_channels=in_channels, input_size=input_size)


def emit_python(spec) -> str:
    """Standalone PyTorch source (imports only torch) for a spec (path, name, text or CheckedNetwork)."""
    from .backends.python_source import emit_python as _emit
    from .pipeline import CheckedNetwork, compile_spec

    return _emit(spec if isinstance(spec, CheckedNetwork) else compile_spec(spec))


def export_onnx(spec, path: str, *, model=None, opset: int = 17) -> dict:
    """Write a spec's network (path, name, text or CheckedNetwork) as an ONNX file at ``path``, as `resdsl compile
    --onnx`: a dynamic batch axis, eval mode, checked by onnx.checker (the `onnx` extra). ``model``: a module built
    from the spec (e.g. trained) whose weights to export; by default a freshly initialised one. Returns the file's
    path, opset and node and initializer counts."""
    from .backends.onnx_export import export_onnx as _export
    from .pipeline import CheckedNetwork, compile_spec

    return _export(spec if isinstance(spec, CheckedNetwork) else compile_spec(spec), path, model=model, opset=opset)


def draw(spec, view: str = "overview"):
    """A block diagram of a spec (path, name, text or CheckedNetwork) as a ``graphviz.Source`` (the `viz` extra),
    which a notebook shows inline and ``.render()`` writes; drawing it needs graphviz's `dot` program. ``view``:
    overview ([R] Fig. 3), unit ([I] Fig. 2/4) or full (every operation), as `resdsl viz --view`. Rendering is
    graphviz's own, without the size and time limits `resdsl viz` sets."""
    from graphviz import Source

    from .backends import graphviz as gv
    from .pipeline import CheckedNetwork, compile_spec

    net = spec if isinstance(spec, CheckedNetwork) else compile_spec(spec)
    views = {"overview": gv.overview_dot, "full": gv.full_dot,
             "unit": lambda n: gv.unit_dot([(n, n.name)], typical_only=False)}
    if view not in views:
        raise ValueError(f"view {view!r} is not one of {', '.join(views)}")
    try:
        return Source(views[view](net))
    except ValueError as exc:
        if view != "full":
            raise
        raise ValueError(f"{exc}: view='overview' or view='unit' draws it") from None  # too large for it


__all__ = ["compile_spec", "build_model", "emit_python", "export_onnx", "draw", "train_spec", "evaluate",
           "CheckedNetwork", "SpecError", "SpecWarning", "Span"]
__version__ = "0.1.0"
