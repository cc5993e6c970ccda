"""Domain errors, and the context suffix that says where a task's error happened.

The class name of each error is its Step Functions ``errorType``: the state machine's Retry and Catch rules match on
these names, so renaming one is a change to statemachines/rotation.asl.json too. That is why they live in one module
(grouped by the code that raises them) rather than beside it: the database errors are raised by the adapters in
``rotator_db`` but caught by the domain and the ASL. Messages are built from identifiers only (secret ARN, step,
endpoint, user name) and never carry a password or token.

A task's error leaves its Lambda as ``errorType`` + ``errorMessage`` only; the state and endpoint travel as a suffix
of the message, ``detail [state=…; endpoint=…]``, written by ``format_context`` and read back by ``parse_context``.
Values are percent-encoded where they could be mistaken for the suffix's own punctuation, so whatever text a detail,
a state name or an endpoint holds, parsing returns exactly what was formatted (``tests/unit/test_errors.py``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

_CONTEXT_KEYS = ("state", "endpoint")
_ENCODE = re.compile(r"[%;=\[\]\x00-\x1f\x7f]")
_DECODE = re.compile(r"%([0-9A-F]{2})")


class ErrorContext(NamedTuple):
    detail: str
    state: str | None = None
    endpoint: str | None = None


def _encode(value: str) -> str:
    return _ENCODE.sub(lambda match: f"%{ord(match.group()):02X}", value)


def format_context(detail: str, state: str | None, endpoint: str | None) -> str:
    pairs = [f"{key}={_encode(value)}" for key, value in zip(_CONTEXT_KEYS, (state, endpoint), strict=True) if value]
    return f"{detail} [{'; '.join(pairs)}]"


def parse_context(message: str) -> ErrorContext:
    """The inverse of ``format_context``; a message without a well-formed suffix is all detail."""
    start = message.rfind(" [")
    if start < 0 or not message.endswith("]"):
        return ErrorContext(message)
    body = message[start + 2 : -1]
    found: dict[str, str] = {}
    for pair in body.split("; ") if body else []:
        key, sep, value = pair.partition("=")
        if not sep or key not in _CONTEXT_KEYS or key in found or not value or "[" in value or "=" in value:
            return ErrorContext(message)
        found[key] = _DECODE.sub(lambda match: chr(int(match.group(1), 16)), value)
    return ErrorContext(message[:start], found.get("state"), found.get("endpoint"))


class RotatorError(Exception):
    """Base for every error the rotator raises on purpose."""

    # Set by the thin function when it gave back the AWSPENDING label before raising (the alert says so).
    released_pending = False

    def __init__(self, detail: str, *, endpoint: str | None = None, state: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.endpoint = endpoint
        self.state = state
        self._from_task = False

    def with_context(self, *, state: str | None = None, endpoint: str | None = None) -> RotatorError:
        """Mark the error as leaving a task: its message then always ends in a context suffix."""
        self.state = self.state or state
        self.endpoint = self.endpoint or endpoint
        self._from_task = True
        return self

    def __str__(self) -> str:
        if self._from_task or self.state or self.endpoint:
            return format_context(self.detail, self.state, self.endpoint)
        return self.detail


def error_class(name: str) -> type[RotatorError] | None:
    """The rotator error whose class name is ``name`` (a Lambda ``errorType``), if any."""
    pending: list[type[RotatorError]] = [RotatorError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls
        pending.extend(cls.__subclasses__())
    return None


# --- configuration: raised by the handlers' wiring ---------------------------------------------------------------
class ConfigurationError(RotatorError):
    """The function's environment (set by template.yaml) is missing a variable or has an invalid value."""


# --- input: raised while parsing; a malformed event or secret changes nothing ----------------------------------
class InvalidEvent(RotatorError):
    """The Lambda event (Secrets Manager's, or a task's input) does not have the expected shape."""


class SecretNotFound(RotatorError):
    """The secret id names no secret (a wrong ARN or name)."""


class SecretInvalid(RotatorError):
    """The secret's JSON lacks a key the rotation needs, or a value has the wrong type."""


class UnsupportedEngine(RotatorError):
    """The secret names an engine no adapter handles."""


# --- the Secrets Manager entry gate: raised by the thin function (coordinator) -----------------------------------
class RotationNotEnabled(RotatorError):
    """DescribeSecret says rotation is not enabled on the secret."""


class TokenNotFound(RotatorError):
    """The ClientRequestToken is not a version of the secret."""


class TokenNotPending(RotatorError):
    """The token's version is neither AWSCURRENT nor AWSPENDING."""


class RotationRolledBack(TokenNotPending):
    """Secrets Manager retried a rotation whose failure the rotator already rolled back (and alerted): AWSPENDING was
    released, so there is nothing left to do for this token; the next rotation starts clean."""


class RotationBusy(RotatorError):
    """Another execution of the same rotation is still running (a rollback waiting out an outage): no step may act
    on the database until it has finished. Secrets Manager's retry runs the step later."""


# --- the tasks (rotator_core.tasks, strategies) ------------------------------------------------------------------
class PendingValueExists(RotatorError):
    """PutSecretValue found a different value already under the token (a concurrent createSecret put it first)."""


class PendingValueMissing(RotatorError):
    """A step after createSecret found no AWSPENDING value for the token."""


class ReplicaNotInSync(RotatorError):
    """A replica does not yet accept the pending password (replication lag). Retried with backoff."""


class TopologyMismatch(RotatorError):
    """An endpoint's role differs from what the secret says (a 'primary' in recovery, a 'replica' that is not)."""


class SecretChangedDuringRotation(RotatorError):
    """AWSCURRENT was rewritten after the rotation began: the rotation stops rather than overwrite the change."""


class RecoveryPending(RotatorError):
    """The rollback cannot reach the primary yet and its recovery period has not run out: retried with capped backoff
    by the state machine until the database is back or the period ends."""


class ServiceUnavailable(RotatorError):
    """An AWS API kept throttling or failing (5xx) after the SDK's own retries. Retried by the state machine."""


# --- database endpoints: raised by the adapters in rotator_db ----------------------------------------------------
class EndpointUnreachable(RotatorError):
    """TCP connect failed or timed out, or the server is not accepting connections. Retried by the state machine."""


class InsecureAuthentication(EndpointUnreachable):
    """The server did not authenticate with SCRAM: it asked for a cleartext or MD5 password, or let the login in
    without one, so nothing was sent and the endpoint is not verified. Not the credentials' fault: a misconfigured
    server (``pg_hba.conf``), a secret's ``authentication`` not allowing its method, or something impersonating it.

    An EndpointUnreachable because, like one, it leaves what the server holds unknown (the rollback treats it so:
    never a password sent there, AWSPENDING kept while the primary may hold it), but its own name: the state
    machine's Retry lists do not name it, so it fails at once instead of retrying something that will not change."""


class AuthenticationFailed(RotatorError):
    """The server rejected the credentials."""


class WriteRefusedOnReplica(RotatorError):
    """The endpoint that should be written to is a replicating replica: writing there would break replication."""


class DatabaseError(RotatorError):
    """Any other database failure, with a sanitized message."""


# --- the thin function's wait on its execution (coordinator) ------------------------------------------------------
class RotationStepFailed(RotatorError):
    """The step's execution failed (after its own retries and rollback)."""

    def __init__(self, detail: str, *, execution_alerted: bool = True) -> None:
        super().__init__(detail)
        self.execution_alerted = execution_alerted  # False: the execution ended before its alert (it was refused)


class ExecutionStillRunning(RotatorError):
    """The execution outlived this invocation's time budget; a re-invocation resumes waiting on the same execution."""
