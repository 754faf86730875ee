"""Quoting a client's string inside an error text, safely.

Janus cuts long texts at a byte count, inside a UTF-8 character, and then drops the
whole ``reason`` field (see ../shared/janus/README.md). We cut on character boundaries,
so the text stays valid UTF-8, and bound it, so a client cannot make us echo megabytes.
"""

from __future__ import annotations

#: Characters of a client's string quoted in an error text.
QUOTE_LIMIT = 64


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis), control characters escaped."""
    cut = text if len(text) <= limit else text[:limit] + "…"
    # Lone surrogates cannot be encoded as UTF-8: replace them rather than fail later.
    cut = cut.encode("utf-8", "replace").decode("utf-8")
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}" for ch in cut)
