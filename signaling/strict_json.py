"""Strict JSON decoding: what Janus's parser (jansson) refuses, we refuse.

Owns: turning one WebSocket text frame (``str`` or ``bytes``) into a ``dict`` or ``list``,
or one :class:`JsonError` saying where and what. Python's ``json`` accepts things jansson
refuses; each is refused here:

- ``NaN``, ``Infinity``, ``-Infinity``;
- integers outside signed 64 bits (``json_int_t``) and reals that overflow (``1e400``);
- lone surrogates (``"\\ud800"``), bytes that are not UTF-8, and ``\\u0000`` in strings
  (Janus's transports load without ``JSON_ALLOW_NUL``);
- a top level that is neither an object nor an array (loaded without ``JSON_DECODE_ANY``).

Duplicate keys are kept as jansson keeps them: the last one wins.

Nesting is bounded, and the bound is checked by a linear scan BEFORE ``json.loads`` runs,
so a frame of 100,000 ``[`` never reaches Python's recursive decoder.

Two decoders, one set of rules: most frames go through ``orjson`` (C; about 3x less CPU
than ``json.loads`` with its per-number hooks), but only those on which it cannot differ from
jansson: at most ``max_depth`` brackets, no escape that may be a lone surrogate or U+0000, an
object or array at the top, and in what it read no float and no integer beyond 64 bits (it
keeps integers up to 2**64 - 1 and makes larger ones floats). Anything else, and anything
orjson refuses, goes the careful way below, which also words every error.

Must not touch: what the JSON means (``janus_api.py``), sockets, clocks.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

#: ``json_int_t`` is a signed 64-bit integer.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# A whole string token (escapes skipped), a bracket, or a quote that starts a string
# that never ends. The string alternative is an unrolled loop: linear, no backtracking.
_TOKENS = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*"|[\[\]{}]|"')
# Escapes that may decode to something jansson refuses (a lone surrogate or U+0000). An
# escaped backslash followed by "u" also matches: that only costs a walk of the result.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SUSPECT_ESCAPE_BYTES = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")
_JSON_SPACE = " \t\n\r"


class JsonError(ValueError):
    """Why a frame is not JSON Janus would accept: ``where`` (``<string>(line,col)``) and ``what``."""

    def __init__(self, what: str, where: str = "<string>") -> None:
        super().__init__(f"{where}: {what}")
        self.what = what
        self.where = where


def loads(frame: str | bytes, *, max_depth: int = 32) -> dict[str, Any] | list[Any]:
    """Decode one frame as jansson would, or raise :class:`JsonError`."""
    value = _fast(frame, max_depth)
    if value is not None:
        return value
    text = _text(frame)
    first = text.lstrip(_JSON_SPACE)[:1]
    if first not in ("[", "{"):
        near = _near(text.lstrip(_JSON_SPACE)) if first else "end of file"
        raise JsonError(f"'[' or '{{' expected near {near}", _where(text, len(text) - len(text.lstrip(_JSON_SPACE))))
    _check_depth(text, max_depth)
    try:
        value = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_refuse_constant,
        )
    except json.JSONDecodeError as error:
        raise JsonError(error.msg, f"<string>({error.lineno},{error.colno})") from None
    except RecursionError:  # unreachable after _check_depth; kept so no input can escape as one
        raise JsonError(f"maximum nesting depth {max_depth} exceeded") from None
    if _SUSPECT_ESCAPE.search(text):
        _check_strings(value)
    return value  # type: ignore[no-any-return]  # the first character made it an object or array


def _fast(frame: str | bytes, max_depth: int) -> dict[str, Any] | list[Any] | None:
    """``orjson``'s reading of a frame on which it agrees with jansson, else None (then the
    careful path decides, and words the error)."""
    if isinstance(frame, str):
        if frame.count("[") + frame.count("{") > max_depth or ("\\u" in frame and _SUSPECT_ESCAPE.search(frame)):
            return None
    elif frame.count(b"[") + frame.count(b"{") > max_depth or (b"\\u" in frame and _SUSPECT_ESCAPE_BYTES.search(frame)):
        return None
    try:
        value = orjson.loads(frame)
    except orjson.JSONDecodeError:  # also a str with a lone surrogate: the careful path says where
        return None
    if type(value) is dict:
        if _numbers_fit(value.values()):
            return value
    elif type(value) is list and _numbers_fit(value):
        return value
    return None


def _numbers_fit(items: Any) -> bool:
    """No float and no integer beyond int64 among ``items`` and what they hold: orjson
    keeps an integer up to 2**64 - 1 and makes a larger one a float, so a result with either
    is read the careful way. Recursive: the brackets counted before bound the depth."""
    for item in items:
        kind = type(item)
        if kind is str:
            continue
        if kind is int:
            if not INT64_MIN <= item <= INT64_MAX:
                return False
        elif kind is dict:
            if not _numbers_fit(item.values()):
                return False
        elif kind is list:
            if not _numbers_fit(item):
                return False
        elif kind is float:
            return False
    return True


def _text(frame: str | bytes) -> str:
    if isinstance(frame, str):
        found = _SURROGATE.search(frame)
        if found:
            raise JsonError(f"invalid Unicode U+{ord(found.group()):04X}", _where(frame, found.start()))
        return frame
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError as error:
        # Position in characters of what did decode, so the column matches the text.
        head = frame[: error.start].decode("utf-8")
        raise JsonError(f"unable to decode byte 0x{frame[error.start]:02x}", _where(head, len(head))) from None


def _check_depth(text: str, max_depth: int) -> None:
    """Refuse nesting deeper than ``max_depth``, in one pass, without recursion."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot be deeper than the number of openers
    depth = 0
    for token in _TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise JsonError(f"maximum nesting depth {max_depth} exceeded", _where(text, token.start()))
        elif char in "]}":
            depth -= 1
        elif char == '"':
            return  # an unterminated string: json.loads stops there, nothing after it nests
        # a whole string token: brackets inside it do not count


def _check_strings(value: Any) -> None:
    """Refuse lone surrogates and U+0000 anywhere in keys or strings (iterative walk)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise JsonError("\\u0000 is not allowed")
            found = _SURROGATE.search(item)
            if found:
                raise JsonError(f"invalid Unicode '\\u{ord(found.group()):04X}'")


def _parse_int(token: str) -> int:
    # 20 characters hold -9223372036854775808: anything longer is out of range, and is
    # refused before int() spends time on (or Python's digit limit refuses) a huge number.
    value = int(token) if len(token) <= 20 else None
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        raise JsonError(f"too big {'negative ' if token.startswith('-') else ''}integer near {_near(token)}")
    return value


def _parse_float(token: str) -> float:
    value = float(token)
    if value in (float("inf"), float("-inf")):
        raise JsonError(f"real number overflow near {_near(token)}")
    return value


def _refuse_constant(token: str) -> float:
    raise JsonError(f"invalid token near {_near(token)}")


def _near(token: str, limit: int = 24) -> str:
    return "'" + (token[:limit] + "..." if len(token) > limit else token) + "'"


def _where(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"<string>({line},{column})"
