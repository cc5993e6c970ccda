"""Properties of parsing: a valid secret is kept exactly, an invalid one is refused clearly, and no input at all makes
parsing raise anything but SecretInvalid (secrets) or InvalidEvent (events)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from rotator_core.errors import InvalidEvent, SecretInvalid
from rotator_core.fields import DBNAME_MAX_BYTES, USERNAME_MAX_BYTES
from rotator_core.json_document import MAX_DEPTH, JsonDocument
from rotator_core.models import DatabaseSecret, RollbackInput, RotationEvent, TaskInput
from rotator_core.redaction import parse_model
from rotator_core.strategies import SingleUserStrategy

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PASSWORD = "Pw-7f3c9a1e5b2d4c6a8e0f"  # distinctive: must never appear in a message

# --- building blocks -------------------------------------------------------------------------------------------
any_char = st.characters(exclude_categories=())  # surrogates and controls included
text_with_anything = st.text(any_char, max_size=20)
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
hostnames = st.lists(label, min_size=1, max_size=4).map(".".join).filter(lambda h: not h.rsplit(".", 1)[-1].isdigit())
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
hosts = hostnames | ipv4 | ipv6
ports = st.integers(1, 65535)
port_values = ports | ports.map(str)
name_chars = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp"))
usernames = st.text(name_chars, min_size=1, max_size=20).filter(lambda u: len(u.encode()) <= USERNAME_MAX_BYTES)
passwords = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=40)
extra_keys = st.text(max_size=10).filter(
    lambda k: k not in {"engine", "host", "port", "username", "password", "dbname", "ssl", "replicas", "masterarn"}
)
replica_entries = st.fixed_dictionaries(
    {"host": hosts, "port": port_values}, optional={"az": json_values, "weight": json_values}
)
dump_styles = st.sampled_from(
    [
        {},
        {"indent": 2},
        {"separators": (",", ":")},
        {"ensure_ascii": False},
        {"indent": "\t", "ensure_ascii": False},
    ]
)


@st.composite
def valid_secrets(draw: st.DrawFn) -> dict[str, Any]:
    secret: dict[str, Any] = {
        "engine": draw(st.sampled_from(["postgres", "postgresql", "aurora-postgresql"])),
        "host": draw(hosts),
        "username": draw(usernames),
        "password": draw(passwords),
    }
    optional: dict[str, Any] = {
        "port": draw(port_values),
        "dbname": draw(usernames.filter(lambda d: len(d.encode()) <= DBNAME_MAX_BYTES)),
        "ssl": draw(json_values),  # any type: AWS's semantics make every value mean something
        "replicas": draw(st.lists(replica_entries, max_size=3, unique_by=lambda r: (r["host"], str(r["port"])))),
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        secret[key] = optional[key]
    for key, value in draw(st.dictionaries(extra_keys, json_values, max_size=4)).items():
        secret[key] = value
    # Key order is part of what must be kept: shuffle it
    keys = draw(st.permutations(list(secret)))
    return {key: secret[key] for key in keys}


def parse(text: str) -> DatabaseSecret:
    return DatabaseSecret.from_secret_string(SecretStr(text))


def pairs(text: str) -> Any:
    """The document as ordered pairs, numbers as their text: a comparison that sees order, types and number forms."""
    return json.loads(
        text,
        object_pairs_hook=list,
        parse_int=lambda t: ("number", t),
        parse_float=lambda t: ("number", t),
        parse_constant=lambda t: ("number", t),
    )


# --- 1. a valid secret round-trips exactly ---------------------------------------------------------------------
@FAST
@given(valid_secrets(), dump_styles, passwords)
def test_any_valid_secret_keeps_every_byte_but_the_password(
    secret: dict[str, Any], style: dict[str, Any], new_password: str
) -> None:
    # Given a valid secret, written in any JSON style
    text = json.dumps(secret, **style)
    current = parse(text)
    # When the password is replaced
    pending_text = current.with_password(SecretStr(new_password)).to_secret_string().get_secret_value()
    # Then the text differs only inside the password's value
    start, end = JsonDocument.parse(text).spans["password"]
    assert json.loads(text[start:end]) == secret["password"]
    tail = len(text) - end
    assert pending_text[:start] == text[:start]
    assert pending_text[len(pending_text) - tail :] == text[end:]
    assert json.loads(pending_text[start : len(pending_text) - tail]) == new_password
    # And as a document: same keys in the same order, same types, same number forms, new password only
    expected = [(k, ("new",) if k == "password" else v) for k, v in pairs(text)]
    assert [(k, ("new",) if k == "password" else v) for k, v in pairs(pending_text)] == expected


@FAST
@given(valid_secrets(), passwords)
def test_the_pending_value_read_back_is_recognised_as_made_from_the_current_one(
    secret: dict[str, Any], new_password: str
) -> None:
    current = parse(json.dumps(secret))
    pending = parse(current.with_password(SecretStr(new_password)).to_secret_string().get_secret_value())
    strategy = SingleUserStrategy()
    assert strategy.is_pending_of(current, pending)
    # … and any other change to AWSCURRENT is seen
    rewritten = parse(json.dumps({**secret, "rewritten-by": "someone"}))
    assert not strategy.is_pending_of(rewritten, pending)


@FAST
@given(valid_secrets(), st.dictionaries(extra_keys, json_values, min_size=1, max_size=4))
def test_extra_keys_of_any_json_type_are_kept_at_the_top_and_in_replicas(
    secret: dict[str, Any], extras: dict[str, Any]
) -> None:
    secret = {**secret, **extras, "replicas": [{"host": "10.0.0.9", "port": "5433", **extras}]}
    text = json.dumps(secret)
    rotated = parse(text).with_password(SecretStr("N3w-password-value")).to_secret_string().get_secret_value()
    assert pairs(rotated) == pairs(json.dumps({**secret, "password": "N3w-password-value"}))
    assert json.loads(rotated)["replicas"][0]["port"] == "5433"


@pytest.mark.parametrize(
    "number", ["5432", "1.50", "1e400", "-0", "1E-7", "123456789012345678901234567890", "9" * 5000]
)
def test_numbers_keep_their_textual_form(number: str) -> None:
    text = f'{{"engine": "postgres", "host": "h", "username": "u", "password": "{PASSWORD}", "n": [{number}]}}'
    rotated = parse(text).with_password(SecretStr("other-password")).to_secret_string().get_secret_value()
    assert rotated == text.replace(PASSWORD, "other-password")


# --- 2. invalid values are refused, naming the field, never echoing the value -----------------------------------
MARK = "QZX9marker"  # a substring every invalid value below carries, so its absence from a message is meaningful

bad_hosts = st.one_of(
    st.text(min_size=1, max_size=30).map(lambda t: f"{MARK}{t};DROP"),
    st.text(min_size=0, max_size=30).map(lambda t: f"{MARK} {t}"),
    st.sampled_from(["/", "@", ",", "_", "#", "?", "%", ":", "\\"]).map(lambda c: f"{MARK}{c}x"),
    st.text(any_char, min_size=1, max_size=5).map(lambda t: f"{MARK}é{t}"),
    st.integers(254, 400).map(lambda n: MARK + "a" * (n - len(MARK))),
    st.just(f"{MARK}.-bad"),
    st.just(f"{MARK}..double"),
    st.just("010.0.0.1"),
    st.just("1.2.3"),
    st.just("[::1]"),
    st.just("fe80::1%eth0"),
    st.just(""),
)
bad_ports = st.one_of(
    st.booleans(),
    st.integers(max_value=0),
    st.integers(min_value=65536),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(6, 5000).map(lambda n: "9" * n),
    st.text(max_size=8).filter(lambda t: not (t.isascii() and t.isdigit() and 1 <= int(t) <= 65535)),
    st.lists(ports, max_size=2),
    st.none().map(lambda _: {"port": 5432}),
)
bad_usernames = st.one_of(
    st.text(name_chars, max_size=10).map(lambda t: f"{MARK}{t}\x00"),
    st.sampled_from(["\n", "\r", "\x1b", "\x7f", "\u202e", "\u2028", "\u200b", "\ud800", "\x85"]).map(
        lambda c: f"{MARK}{c}x"
    ),
    st.integers(64, 200).map(lambda n: MARK + "u" * (n - len(MARK))),
    st.integers(27, 40).map(lambda n: MARK + "é" * n),  # short in characters, too long in UTF-8 bytes
    st.just(""),
    st.integers() | st.booleans() | st.lists(st.text(max_size=3), max_size=2),
)


def assert_refused(secret: dict[str, Any], field: str) -> str:
    with pytest.raises(SecretInvalid) as caught:
        parse(json.dumps(secret))
    message = str(caught.value)
    assert field in message, message
    assert MARK not in message and PASSWORD not in message
    assert "\n" not in message and "\r" not in message
    return message


BASE = {"engine": "postgres", "host": "db.example.com", "username": "app", "password": PASSWORD}


@FAST
@given(bad_hosts)
def test_invalid_hosts_are_refused_naming_the_field(host: str) -> None:
    assert_refused({**BASE, "host": host}, "host")
    assert_refused({**BASE, "replicas": [{"host": host, "port": 5432}]}, "replicas.0.host")


@FAST
@given(bad_ports)
@example(True)
@example("9" * 5000)
@example(5432.0)
@example(-5432)
def test_invalid_ports_are_refused_naming_the_field(port: Any) -> None:
    message = assert_refused({**BASE, "port": port}, "port")
    if isinstance(port, str) and len(port) >= 6:
        assert port not in message


@FAST
@given(bad_usernames)
def test_invalid_usernames_and_dbnames_are_refused_naming_the_field(name: Any) -> None:
    assert_refused({**BASE, "username": name}, "username")
    assert_refused({**BASE, "dbname": name}, "dbname")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"password": ""}, "password"),
        ({"password": f"{MARK}\x00{PASSWORD}"}, "password"),
        ({"password": f"{MARK}\ud800{PASSWORD}"}, "password"),
        ({"password": 12345678}, "password"),
        ({"engine": f"{MARK}; rm -rf"}, "engine"),
        ({"engine": True}, "engine"),
        ({"masterarn": f"{MARK}\n"}, "masterarn"),
        ({"replicas": {"host": "h", "port": 1}}, "replicas"),
        ({"replicas": [{"host": "h"}]}, "replicas.0.port"),
        ({"replicas": [{"host": "h", "port": n} for n in range(1, 40)]}, "replicas"),
        ({"extra": {"deep": [f"{MARK}\udc00"]}}, "extra.deep[0]"),
    ],
)
def test_other_invalid_values_are_refused_naming_the_field(override: dict[str, Any], field: str) -> None:
    assert_refused({**BASE, **override}, field)


# --- 3. no input makes parsing raise anything but SecretInvalid / InvalidEvent ----------------------------------
def parses_or_refuses(text: str) -> None:
    try:
        secret = parse(text)
    except SecretInvalid as exc:
        message = str(exc)
    else:  # whatever was accepted round-trips
        assert parse(secret.with_password(SecretStr("Another-pw-123")).to_secret_string().get_secret_value())
        return
    assert PASSWORD not in message and "\n" not in message


def deep(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


@FAST
@given(st.text(any_char, max_size=200))
@example(deep(30_000))
@example('{"a": ' + deep(30_000) + "}")
@example(deep(MAX_DEPTH + 1))
@example("[" * 70_000)
@example('{"port": ' + "9" * 5000 + "}")
@example('{"x": 1e999999, "y": -' + "1" * 10_000 + "}")
@example('{"x": NaN}')
@example('{"password": "\\ud800"}')
@example('{"password": "\ud800"}')
@example('{"k\\udfff": 1}')
@example("\ufeff{}")
@example('{"a": 1, "a": 2}')
@example(" " * 70_000)
@example("é" * 40_000)
def test_arbitrary_text_only_ever_parses_or_raises_secret_invalid(text: str) -> None:
    parses_or_refuses(text)


@FAST
@given(json_values, dump_styles)
def test_arbitrary_json_only_ever_parses_or_raises_secret_invalid(value: Any, style: dict[str, Any]) -> None:
    parses_or_refuses(json.dumps(value, **style))


@FAST
@given(valid_secrets(), st.sampled_from([*sorted(BASE), "port", "dbname", "ssl", "replicas", "masterarn"]))
def test_any_value_in_any_key_only_ever_parses_or_raises_secret_invalid(secret: dict[str, Any], key: str) -> None:
    for value in (True, 1.5, -1, 10**30, "", [], {}, None, "\ud800", "a" * 300, [[[[[]]]]], {"host": 1}):
        parses_or_refuses(json.dumps({**secret, key: value}))


@FAST
@given(st.integers(1, 200).flatmap(lambda n: st.lists(st.sampled_from('[]{}",: 1a\\'), min_size=n, max_size=n)))
def test_bracket_soup_only_ever_parses_or_raises_secret_invalid(chars: list[str]) -> None:
    parses_or_refuses("".join(chars))


event_values = json_values | text_with_anything | st.just("\ud800" * 3) | st.integers(-(10**40), 10**40)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["Step", "SecretId", "ClientRequestToken", "RotationToken", "Extra", "step"]), event_values
    )
)
def test_any_rotation_event_is_parsed_or_refused_as_invalid_event(event: dict[str, Any]) -> None:
    message = ""
    try:
        parse_model(RotationEvent, event, InvalidEvent, "rotation event")
    except InvalidEvent as exc:
        message = str(exc)
    assert "\n" not in message


@FAST
@given(
    st.dictionaries(
        st.sampled_from(
            ["secretId", "token", "step", "state", "executionArn", "endpoint", "recoverySince", "execution"]
        ),
        event_values | st.fixed_dictionaries({"host": event_values, "port": event_values, "role": event_values}),
    ),
    st.sampled_from([TaskInput, RollbackInput]),
)
def test_any_task_input_is_parsed_or_refused_as_invalid_event(event: dict[str, Any], model: type[TaskInput]) -> None:
    message = ""
    try:
        parse_model(model, event, InvalidEvent, "task input")
    except InvalidEvent as exc:
        message = str(exc)
    assert "\n" not in message


@FAST
@given(st.one_of(st.booleans(), st.floats(), st.integers(max_value=0), st.integers(min_value=65536), st.text()))
def test_a_task_endpoint_port_is_a_strict_integer(port: Any) -> None:
    assume(not (isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535))
    event = {
        "secretId": "rotator/app",
        "token": "a" * 32,
        "step": "setSecret",
        "endpoint": {"host": "10.0.0.1", "port": port, "role": "primary"},
    }
    with pytest.raises(InvalidEvent, match=r"endpoint\.port"):
        parse_model(TaskInput, event, InvalidEvent, "task input")
