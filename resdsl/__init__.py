"""resdsl: a declarative language and compiler for residual networks.

    >>> import resdsl
    >>> net = resdsl.compile_spec("specs/resnet20.res")
    >>> net.params, net.macs, net.layers
    (269722, 40551040, 20)
"""
from .errors import ExpectFailed, Span, SpecError
from .pipeline import CheckedNetwork, compile_spec

__all__ = ["compile_spec", "CheckedNetwork", "SpecError", "ExpectFailed", "Span"]
__version__ = "0.1.0"
