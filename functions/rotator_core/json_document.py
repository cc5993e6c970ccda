"""Bounded, exact JSON for secret values.

``JsonDocument.parse`` reads a secret's text without ever raising anything but ``JsonDocumentError``: the size is
checked first (Secrets Manager's own limit), then the nesting depth by a flat scan, *before* the recursive decoder
runs (``json.loads`` on 30,000 nested arrays raises RecursionError); numbers are kept as the text they were written
in (``JsonNumber``), so a 5,000-digit number is neither converted (``int`` refuses more than 4,300 digits) nor
rewritten; ``NaN``/``Infinity`` (not JSON) and duplicate keys (read differently by different parsers) are refused;
and every string, key or value, must be encodable (a lone surrogate breaks drivers and the SDK).

``JsonDocument.replace`` patches one top-level value *in the text*: every other byte of the document — keys, key
order, nested values, types, the textual form of numbers, whitespace — stays exactly as it was.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_BYTES = 65_536  # Secrets Manager's limit on a SecretString
MAX_DEPTH = 32  # arrays and objects, the document's own object included

_WHITESPACE = re.compile(r"[ \t\n\r]*")
# A complete string literal (or an unterminated one to the end), else one bracket: what the depth scan looks at.
_DEPTH_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_$@-]{1,64}")


class JsonDocumentError(ValueError):
    """The text is not a JSON document the rotator accepts. The message names a place, never a value."""


@dataclass(frozen=True)
class JsonNumber:
    """A JSON number literal exactly as written (``5432``, ``1.50``, ``1e400``, 5,000 digits)."""

    text: str

    def __repr__(self) -> str:
        return f"JsonNumber({self.text[:40]}{'…' if len(self.text) > 40 else ''})"


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _constant(name: str) -> Any:
    raise JsonDocumentError(f"is not JSON ({name} is not a JSON number)")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_int=JsonNumber, parse_float=JsonNumber, parse_constant=_constant
)


def key_path(path: tuple[str | int, ...]) -> str:
    """A location for a message: ``replicas[0].host``. Keys that are not plain names are JSON-quoted and shortened,
    so a key can never add a line, a value or markup to the message."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        name = part if _PLAIN_KEY.fullmatch(part) else json.dumps(part[:32], ensure_ascii=True)
        text += f".{name}" if text else name
    return text or "(root)"


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Refuse nesting deeper than ``limit`` without recursing (brackets inside strings do not count)."""
    depth = 0
    for match in _DEPTH_TOKENS.finditer(text):
        mark = match.group()
        if mark in ("[", "{"):
            depth += 1
            if depth > limit:
                raise JsonDocumentError(f"nests arrays/objects deeper than {limit} levels")
        elif mark in ("]", "}"):
            depth -= 1


def _strings(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every string of the tree with its location (a key is reported at its own location). Depth is bounded."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key), key
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def check_encodable(value: Any, path: tuple[str | int, ...] = ()) -> None:
    """Refuse a lone surrogate anywhere: it cannot be encoded as UTF-8, so no driver or SDK call could send it."""
    for where, text in _strings(value, path):
        if _SURROGATE.search(text):
            raise JsonDocumentError(
                f"is invalid: {key_path(where)}: holds a lone surrogate (U+D800–U+DFFF), not valid Unicode"
            )


@dataclass(frozen=True)
class JsonDocument:
    """A JSON object's text, its top-level members (numbers as ``JsonNumber``), and where each member's value is."""

    text: str = field(repr=False)
    members: Mapping[str, Any] = field(repr=False)
    spans: Mapping[str, tuple[int, int]] = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> JsonDocument:
        if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
            raise JsonDocumentError(f"is larger than {MAX_BYTES:,} bytes (the Secrets Manager limit)")
        check_depth(text)
        try:
            value = _DECODER.decode(text)
        except _DuplicateKey as exc:
            where = key_path((exc.key,))
            raise JsonDocumentError(f"is ambiguous: the key {where} appears twice in one object") from None
        except json.JSONDecodeError as exc:
            raise JsonDocumentError(f"is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        except RecursionError:  # unreachable after check_depth; kept so no input can escape as another error
            raise JsonDocumentError(f"nests arrays/objects deeper than {MAX_DEPTH} levels") from None
        if not isinstance(value, dict):
            raise JsonDocumentError("is not a JSON object")
        check_encodable(value)
        return cls(text, value, _top_level_spans(text))

    def replace(self, key: str, value: str) -> JsonDocument:
        """The document with the top-level ``key`` set to the string ``value`` (added last when missing); nothing
        else in the text changes."""
        literal = json.dumps(value)
        span = self.spans.get(key)
        if span is not None:
            start, end = span
            text = self.text[:start] + literal + self.text[end:]
        else:
            close = self.text.rstrip(" \t\n\r")
            body = close[:-1].rstrip(" \t\n\r")
            separator = "" if body.endswith("{") else ", "
            text = f"{body}{separator}{json.dumps(key)}: {literal}}}" + self.text[len(close) :]
        return JsonDocument.parse(text)


def _skip(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


def _top_level_spans(text: str) -> dict[str, tuple[int, int]]:
    """Where each top-level member's value starts and ends. Only called on text that already decoded as an object."""
    spans: dict[str, tuple[int, int]] = {}
    index = _skip(text, 0) + 1  # past "{"
    index = _skip(text, index)
    if text[index] == "}":
        return spans
    while True:
        key, index = _DECODER.raw_decode(text, index)
        index = _skip(text, _skip(text, index) + 1)  # past ":"
        _, end = _DECODER.raw_decode(text, index)
        spans[key] = (index, end)
        index = _skip(text, end)
        if text[index] == "}":
            return spans
        index = _skip(text, index + 1)  # past ","
