"""The value types of the secret's and the events' fields: strict types, per-field limits, allowed characters.

Every rule raises a message that says what is wrong and never repeats the value (``redaction.parse_model`` also
strips pydantic's own echo of the input). Limits are per field: an engine whose names are shorter (MySQL user names)
adds its own check on top when its adapter comes.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, Strict

from rotator_core.json_document import JsonNumber

HOST_MAX_LENGTH = 253  # a DNS name (RFC 1123)
USERNAME_MAX_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1: a longer name is silently truncated by the server
DBNAME_MAX_BYTES = 63
ENGINE_MAX_LENGTH = 32
ARN_MAX_LENGTH = 2048
SECRET_ID_MAX_LENGTH = 2048  # Secrets Manager's SecretId
TOKEN_MIN_LENGTH, TOKEN_MAX_LENGTH = 32, 64  # Secrets Manager's ClientRequestToken
ROTATION_TOKEN_MIN_LENGTH, ROTATION_TOKEN_MAX_LENGTH = 36, 256  # PutSecretValue's RotationToken
STATE_NAME_MAX_LENGTH = 80  # Step Functions state names
REPLICAS_MAX = 32

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DIGITS = re.compile(r"[0-9]{1,5}")
_VISIBLE_ASCII = re.compile(r"[!-~]+")  # printable ASCII, no space
_ROTATION_TOKEN = re.compile(r"[A-Za-z0-9-]+")
# Control (NUL included), format (bidi overrides, zero-width), surrogate, line and paragraph separator characters.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


# --- checks -----------------------------------------------------------------------------------------------------
def check_host(value: str) -> str:
    """A hostname of RFC 1123 labels (letters, digits, inner hyphens; a trailing dot allowed), or an IPv4 or IPv6
    address. Refuses everything a driver would read as something else: commas (libpq's host lists), a leading ``/``
    (a Unix socket directory), spaces, ``;``, ``@``, URLs, non-ASCII, IPv6 zone ids, and dotted numbers that are not
    an IPv4 address (``010.0.0.1`` is octal to some resolvers)."""
    if len(value) > HOST_MAX_LENGTH:
        raise ValueError(f"must be at most {HOST_MAX_LENGTH} characters")
    if ":" in value:
        if "%" not in value and _is_ip(value, ipaddress.IPv6Address):
            return value
        raise ValueError("must be a hostname or an IPv4/IPv6 address (an IPv6 address without brackets or zone)")
    labels = (value[:-1] if value.endswith(".") else value).split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            "must be a hostname (labels of letters, digits and inner hyphens, 1-63 characters each) or an IP address"
        )
    if labels[-1].isdigit() and not _is_ip(value, ipaddress.IPv4Address):
        raise ValueError("must be a hostname or an IP address: all-numeric names must be a valid IPv4 address")
    return value


def _is_ip(value: str, kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    try:
        kind(value)
    except ValueError:
        return False
    return True


def to_port(value: Any) -> Any:
    """A JSON number written as a whole number, or a string of digits (AWS's official rotation functions read
    ``int(port)``, so a string port works there and keeps working here). Refuses booleans (``true`` is not port 1),
    fractions, exponents, signs, spaces and digit strings longer than 5 (which ``int`` would parse for seconds)."""
    if isinstance(value, bool):
        raise ValueError("must be a port number, not true/false")
    if isinstance(value, int):
        return value
    text = value.text if isinstance(value, JsonNumber) else value if isinstance(value, str) else None
    if text is None:
        raise ValueError("must be a port number (1-65535) or a string of its digits")
    if not _DIGITS.fullmatch(text):
        raise ValueError("must be a whole number from 1 to 65535 (at most 5 digits: no sign, fraction or exponent)")
    return int(text)


def check_name(max_bytes: int) -> Any:
    def check(value: str) -> str:
        if any(unicodedata.category(char) in _UNSAFE_CATEGORIES for char in value):
            raise ValueError("must not contain control characters (NUL included), format characters or line breaks")
        if len(value.encode("utf-8")) > max_bytes:
            raise ValueError(f"must be at most {max_bytes} bytes in UTF-8")
        return value

    return check


def check_printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must not contain control, format or separator characters other than spaces")
    return value


def check_visible_ascii(value: str) -> str:
    if not _VISIBLE_ASCII.fullmatch(value):
        raise ValueError("must be printable ASCII without spaces")
    return value


def check_password(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not text:
        raise ValueError("must not be empty")
    if "\x00" in text:
        raise ValueError("must not contain NUL (no database driver can send it)")
    if re.search("[\ud800-\udfff]", text):
        raise ValueError("holds a lone surrogate (U+D800–U+DFFF), not valid Unicode")
    return value


def check_rotation_token(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not ROTATION_TOKEN_MIN_LENGTH <= len(text) <= ROTATION_TOKEN_MAX_LENGTH or not _ROTATION_TOKEN.fullmatch(text):
        raise ValueError(
            f"must be {ROTATION_TOKEN_MIN_LENGTH}-{ROTATION_TOKEN_MAX_LENGTH} letters, digits or hyphens "
            "(PutSecretValue's format)"
        )
    return value


def to_ssl(value: Any) -> Any:
    """AWS's template semantics: a bool or a string means something; any other type is as if the key were absent."""
    return value if isinstance(value, bool | str) else None


# --- types ------------------------------------------------------------------------------------------------------
StrictStr = Annotated[str, Strict()]
Host = Annotated[StrictStr, Field(min_length=1), AfterValidator(check_host)]
WirePort = Annotated[int, Strict(), Field(ge=1, le=65535)]
SecretPort = Annotated[int, BeforeValidator(to_port), Field(ge=1, le=65535)]
Engine = Annotated[
    StrictStr, Field(min_length=1, max_length=ENGINE_MAX_LENGTH, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
Username = Annotated[StrictStr, Field(min_length=1), AfterValidator(check_name(USERNAME_MAX_BYTES))]
Dbname = Annotated[StrictStr, Field(min_length=1), AfterValidator(check_name(DBNAME_MAX_BYTES))]
Password = Annotated[SecretStr, Strict(), AfterValidator(check_password)]
Arn = Annotated[StrictStr, Field(min_length=1, max_length=ARN_MAX_LENGTH), AfterValidator(check_printable)]
SslSetting = Annotated[bool | str | None, BeforeValidator(to_ssl)]
SecretId = Annotated[
    StrictStr, Field(min_length=1, max_length=SECRET_ID_MAX_LENGTH), AfterValidator(check_visible_ascii)
]
Token = Annotated[
    StrictStr,
    Field(min_length=TOKEN_MIN_LENGTH, max_length=TOKEN_MAX_LENGTH),
    AfterValidator(check_visible_ascii),
]
RotationToken = Annotated[SecretStr, Strict(), AfterValidator(check_rotation_token)]
StateName = Annotated[StrictStr, Field(min_length=1, max_length=STATE_NAME_MAX_LENGTH), AfterValidator(check_printable)]
