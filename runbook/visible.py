"""Text from a tenant, shown so that what is on screen is what is in the data.

Object names, rule comments and error messages come from the tenant and can
hold characters that change how text looks without being seen: an escape
(``\\x1b``) starts a terminal sequence, and a right-to-left override (U+202E)
shows ``gnp\\u202eexe.png``-style names backwards, so a reviewer reads a
harmless ``.png`` where the data says ``.exe``. `visible` writes each such
character as a Python-style escape (``\\x1b``, ``\\u202e``) and leaves every
other character alone: umlauts, CJK, emoji (with their zero-width joiners),
backslashes in slash-named connectors, tabs and line breaks. `html` does the
same and then escapes for HTML; the report and the notebook tables render
every tenant value through it.
"""

from __future__ import annotations

import html as _html
import re

# C0 and C1 controls and DEL (category Cc); the bidirectional formatting
# characters (Unicode UAX #9: embeddings, overrides, isolates and the implicit
# marks); and the zero-width space and BOM, which split a name invisibly.
# U+200D (zero-width joiner) stays: emoji sequences need it, and it cannot
# reorder text.
_SUSPECT = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f"
                      "\u202a-\u202e\u2066-\u2069\ufeff]")
_KEPT = frozenset("\t\n\r")


def visible(text: str) -> str:
    """`text` with control and bidi formatting characters as visible escapes."""
    return _SUSPECT.sub(_escape, text)


def html(value: object) -> str:
    """`value` as text, made `visible`, then HTML-escaped (quotes included)."""
    return _html.escape(visible(str(value)), quote=True)


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _KEPT:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
