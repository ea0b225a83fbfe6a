"""Reading spec files safely: only regular files, and nothing of a file that is not a spec shown in an error."""
from __future__ import annotations

import os
import stat

from .errors import Span, SpecError
from .train.fileio import file_kind

MAX_SPEC_BYTES = 1_000_000


def read_spec_text(path: str, span: Span | None = None) -> str:
    """Read a spec file as UTF-8 text, turning every OS or decoding problem into a SpecError. ``span`` is the
    extends/include statement that names the file (None for the spec the user named)."""
    where = span or Span(path, 1, 1)
    data = _read_regular_file(path, where)
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"spec '{path}' is larger than {MAX_SPEC_BYTES} bytes; is it really a spec?", where)
    try:
        return data.decode("utf-8-sig")  # a byte order mark, as some editors write, is not part of the spec
    except UnicodeDecodeError as exc:
        bad = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)  # utf-8-sig counts after its BOM
        before = data[:bad]
        line = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1:].decode("utf-8-sig")) + 1  # in characters, as every column
        byte = f" (byte 0x{data[bad]:02x})" if span is None else ""  # nothing of a file reached by a path
        raise SpecError(f"spec is not UTF-8 text{byte}", Span(path, line, col),
                        hint="spec files are plain text; check the path") from None


def recorded_text(recorded: dict[str, str], path: str, span: Span | None) -> str:
    """The text of ``path`` in a run's record of its spec files (see pipeline.compile_run)."""
    text = recorded.get(path)
    shown = path if len(path) <= 200 else path[:200] + "..."  # a hand-edited record's path can be any size
    if not isinstance(text, str):
        raise SpecError(f"the run's record of its spec has no file '{shown}'", span or Span(shown, 1, 1),
                        hint="config.json's spec_files does not hold it: edited by hand, cut short, or written by "
                             "another program")
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"the run's record of '{shown}' is larger than {MAX_SPEC_BYTES} bytes; is it really a "
                        "spec?", span or Span(shown, 1, 1))
    return text


# Specs are read only from regular files. Anything else is refused before it is opened (a named pipe or a terminal
# would block, /dev/zero never ends, opening some devices has side effects) and again after opening, from the open
# file itself, in case the path changed in between; O_NONBLOCK keeps even that open from waiting on a pipe.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def _read_regular_file(path: str, where: Span) -> bytes:
    """At most MAX_SPEC_BYTES + 1 bytes of the regular file ``path``."""
    try:
        _require_regular(path, os.stat(path).st_mode, where)
        fd = os.open(path, _OPEN_FLAGS)
        with open(fd, "rb") as fh:
            _require_regular(path, os.fstat(fd).st_mode, where)
            return fh.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"cannot read spec '{path}': no such file", where) from None
    except PermissionError:
        raise SpecError(f"cannot read spec '{path}': permission denied", where) from None
    except OSError as exc:
        raise SpecError(f"cannot read spec '{path}': {exc.strerror or exc}", where) from None
    except ValueError:  # a NUL character in the path
        raise SpecError(f"cannot read spec {path!r}: the path contains a NUL character", where) from None


def _require_regular(path: str, mode: int, where: Span) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise SpecError(f"'{path}' is a directory, not a spec file", where)
    raise SpecError(f"cannot read spec '{path}': it is {file_kind(mode)}, not a file", where,
                    hint="specs are read only from regular files; save the spec to a file and name that")


# What of a file is shown in a syntax error. The spec the user named is shown like any source (line, caret). A
# file reached through `extends`/`include` can be any file on disk (`include "/etc/shadow"`), so it is shown only
# when it is recognisably a spec: its first word is a statement keyword AND the error lies after its first line
# of code. Otherwise none of its text is shown, neither the line nor the offending word -- unless that word is a
# near miss of a keyword ('netwrok'), which makes it a typo rather than content. The location is always given.
STATEMENT_WORDS = frozenset({"network", "extends", "include", "input", "stem", "unit", "order", "shortcut",
                              "stages", "stage", "head", "init", "expect", "recipe", "drop-path", "layer-count"})


def starts_like_spec(text: str, err: SpecError) -> bool:
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        code = line.split("#", 1)[0].strip()
        if code:
            return code.split(None, 1)[0] in STATEMENT_WORDS and err.span is not None and err.span.line > number
    return False


def foreign_file_error(err: SpecError, via: Span) -> SpecError:
    near_miss = bool(err.hint and err.hint.startswith("did you mean"))
    message = (f"{err.message} in a file that is not recognisably a spec" if near_miss else
               "this is not a resdsl spec (its text is not shown)")
    hint = f"it is read by the statement at {via}; " + (err.hint if near_miss else
                                                          "check the path: extends names a spec, include a recipe file")
    return SpecError(message, err.span, hint=hint, show_source=False)
