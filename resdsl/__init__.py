"""resdsl: a declarative language and compiler for residual networks.

    >>> import resdsl
    >>> net = resdsl.compile_spec("specs/resnet20.res")
    >>> net.params, net.macs, net.layers
    (269722, 40551040, 20)
"""
from .errors import Span, SpecError
from .pipeline import CheckedNetwork, compile_spec


def build_model(spec, **overrides):
    """A freshly initialised ``torch.nn.Module`` for a spec (path, text or CheckedNetwork); imports torch."""
    from .backends.torch_module import build_model as _build

    return _build(spec, **overrides)


def emit_python(spec) -> str:
    """Standalone PyTorch source (imports only torch) for a spec path or CheckedNetwork."""
    from .backends.python_source import emit_python as _emit

    return _emit(spec if isinstance(spec, CheckedNetwork) else compile_spec(spec))


def draw(spec, view: str = "overview"):
    """A block diagram of a spec (path, name or CheckedNetwork) as a ``graphviz.Source`` (the `viz` extra), which a
    notebook shows inline and ``.render()`` writes; drawing it needs graphviz's `dot` program. ``view``: overview
    ([R] Fig. 3), unit ([I] Fig. 2/4) or full (every operation), as `resdsl viz --view`. Rendering is graphviz's
    own, without the size and time limits `resdsl viz` sets."""
    from graphviz import Source

    from .backends import graphviz as gv

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


__all__ = ["compile_spec", "build_model", "emit_python", "draw", "CheckedNetwork", "SpecError", "Span"]
__version__ = "0.1.0"
