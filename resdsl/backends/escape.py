"""Every value that enters generated Python source passes through this module: the one escaping function
(py_text) and the literals, docstrings and identifiers built on it."""
from __future__ import annotations

import keyword
import math
import re

# Every value that enters generated source passes through py_text -- inside literals (py_str, py_literal),
# comments (py_text) and docstrings (py_doc); identifiers made from spec words pass through py_ident. Spec-derived
# strings (file names, extends/include paths, the network name) are untrusted: a quote, a line break of any kind
# Python or an editor knows (\n, \r, \x0b, \x0c, \x1c-\x1e, \x85, \u2028, \u2029), a backslash or an undecodable
# byte must never end a literal, a comment or a docstring, nor make the file invalid or non-ASCII.


def py_text(value) -> str:
    """``str(value)`` as the body of a Python string literal: printable ASCII only, with backslashes, both quote
    characters and every other character escaped. The result can stand inside '...', "...", a docstring or a
    comment without ending it, and ``eval("'" + py_text(v) + "'") == str(v)``."""
    out = []
    for ch in str(value):
        if ch in "\\'\"":
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])  # \n, \x85, \u2028, \udcff (an undecodable file-name byte), ...
    return "".join(out)


def py_str(value) -> str:
    """A Python string literal for ``str(value)``: pure ASCII, on one line; evaluates to ``str(value)``."""
    return "'" + py_text(value) + "'"


def py_doc(value) -> str:
    """Docstring text showing ``value`` as ``py_text`` writes it: the docstring's value is then printable ASCII too
    (a docstring holding an undecodable byte, as a surrogate, breaks ``nn.Module`` subclassing)."""
    return py_text(py_text(value))


def py_ident(value, default: str = "model") -> str:
    """A Python identifier made from ``value``: ASCII letters, digits and underscores only, never a keyword."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(value)) or default
    if name[0].isdigit() or keyword.iskeyword(name):
        name = "_" + name
    return name


def py_literal(v) -> str:
    """A value from the IR as a Python literal (numbers and flags by type, strings escaped by py_str)."""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"no Python literal for the number {v!r}")
        return repr(float(v))
    if isinstance(v, str):
        return py_str(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(map(py_literal, v)) + ("," if len(v) == 1 else "") + ")"
    raise TypeError(f"no Python literal for {type(v).__name__}")
