"""Domain errors.

The class name of each error is its Step Functions ``errorType``: the state machine's Retry and Catch rules match on
these names, so renaming one is a change to statemachines/rotation.asl.json too. Messages are built by this code from
identifiers only (secret ARN, step, endpoint, user name) and never carry a password or token.
"""

from __future__ import annotations


class RotatorError(Exception):
    """Base for every error the rotator raises on purpose."""

    def __init__(self, detail: str, *, endpoint: str | None = None, state: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.endpoint = endpoint
        self.state = state

    def with_context(self, *, state: str | None = None, endpoint: str | None = None) -> RotatorError:
        self.state = self.state or state
        self.endpoint = self.endpoint or endpoint
        return self

    def __str__(self) -> str:
        context = [f"{key}={value}" for key, value in (("state", self.state), ("endpoint", self.endpoint)) if value]
        return f"{self.detail} [{'; '.join(context)}]" if context else self.detail


# --- input: a malformed event or secret changes nothing ---------------------------------------------------------
class InvalidEvent(RotatorError):
    """The Lambda event does not have the expected shape."""


class SecretInvalid(RotatorError):
    """The secret's JSON lacks a key the rotation needs, or a value has the wrong type."""


class UnsupportedEngine(RotatorError):
    """The secret names an engine no adapter handles."""


# --- the Secrets Manager entry gate -----------------------------------------------------------------------------
class RotationNotEnabled(RotatorError):
    """DescribeSecret says rotation is not enabled on the secret."""


class TokenNotFound(RotatorError):
    """The ClientRequestToken is not a version of the secret."""


class TokenNotPending(RotatorError):
    """The token's version is neither AWSCURRENT nor AWSPENDING."""


class PendingValueMissing(RotatorError):
    """A step after createSecret found no AWSPENDING value for the token."""


# --- database endpoints -----------------------------------------------------------------------------------------
class EndpointUnreachable(RotatorError):
    """TCP connect failed or timed out, or the server is not accepting connections. Retried by the state machine."""


class AuthenticationFailed(RotatorError):
    """The server rejected the credentials."""


class ReplicaNotInSync(RotatorError):
    """A replica does not yet accept the pending password (replication lag). Retried with backoff."""


class WriteRefusedOnReplica(RotatorError):
    """The endpoint that should be written to is a replicating replica: writing there would break replication."""


class TopologyMismatch(RotatorError):
    """An endpoint's role differs from what the secret says (a 'primary' in recovery, a 'replica' that is not)."""


class DatabaseError(RotatorError):
    """Any other database failure, with a sanitized message."""


# --- the thin function's wait on its execution ------------------------------------------------------------------
class RotationStepFailed(RotatorError):
    """The step's execution failed (after its own retries and rollback)."""


class ExecutionStillRunning(RotatorError):
    """The execution outlived this invocation's time budget; a re-invocation resumes waiting on the same execution."""
