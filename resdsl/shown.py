"""How a user's text (a name from an experiment file, a run record, a folder) is shown in each kind of file resdsl
writes: as written, never read as the file's own markup. The terminal's and a diagnostic's rule is
:func:`resdsl.errors.printable` (one line, control characters escaped), which the others start from."""
from __future__ import annotations

from .errors import printable


def md_text(text) -> str:
    """``text`` as Markdown shows it literally, in a table cell or a line: control characters escaped, every
    character Markdown would read as syntax (a table's ``|``, code, emphasis, links, and ``$``, which GitHub reads
    as maths) backslash-escaped, and HTML (``<``, entities) written as entities. Labels, titles and notes come from
    the user's experiment file."""
    text = printable(str(text))
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return "".join("\\" + ch if ch in _MARKDOWN else ch for ch in text)


_MARKDOWN = set("\\`*_[]|~$")


# a text cell starting with one of these is a formula (or may start one) to a spreadsheet (OWASP's CSV injection)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A CSV cell as a spreadsheet shows it, not runs it: a text (a run label, an experiment's row label) that a
    spreadsheet would read as a formula gets a leading ``'``; numbers (a difference of -1.5) stay numbers."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def literal(*texts) -> None:
    """Draw matplotlib texts as written: a label, title or folder name is the user's text, never mathtext (its
    ``$...$`` would be drawn as maths, and an unknown ``\\foo`` in it stops the drawing); a control character in
    it is drawn as its escape (a font has no glyph for it), line breaks kept. Call it on the Text objects a title,
    suptitle or legend makes."""
    for text in texts:
        text.set_parse_math(False)
        text.set_text("\n".join(map(printable, text.get_text().split("\n"))))
