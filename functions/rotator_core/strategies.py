"""How a rotation changes credentials: what the AWSPENDING version holds, how it reaches the database, and how a failed
rotation is undone. Single user today; alternating users is one more class and one registry line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import SecretStr

from rotator_core.errors import (
    AuthenticationFailed,
    SecretInvalid,
    WriteRefusedOnReplica,
)
from rotator_core.models import (
    STAGE_CURRENT,
    STAGE_PENDING,
    STAGE_PREVIOUS,
    DatabaseSecret,
    SetPasswordReport,
)
from rotator_core.ports import ConnectionTarget, Credentials, DatabaseEngine, DatabaseSession


@dataclass(frozen=True)
class SecretVersions:
    """The versions a step works with. ``master`` is the secret named by ``masterarn`` (alternating users)."""

    current: DatabaseSecret
    pending: DatabaseSecret | None = None
    previous: DatabaseSecret | None = None
    master: DatabaseSecret | None = None


def credentials(secret: DatabaseSecret) -> Credentials:
    """A version logs in as its own user with its own password."""
    return Credentials(secret.username, secret.password)


# Which version's credentials log in on the primary (probed by the rollback). Unreachable is an error, not a probe.
Probe = Literal["current", "pending", "neither"]


class RotationStrategy(Protocol):
    name: str

    def pending_secret(self, current: DatabaseSecret, password: SecretStr) -> DatabaseSecret:
        """The AWSPENDING value: the current one with the new password (and, for alternating users, the other user).
        Raises SecretInvalid when the current value cannot be rotated this way."""

    def is_pending_of(self, current: DatabaseSecret, pending: DatabaseSecret) -> bool:
        """Whether ``pending`` is what ``pending_secret`` makes of ``current`` (any password): False means the secret
        was rewritten after the rotation began."""

    def set_on_primary(
        self, engine: DatabaseEngine, target: ConnectionTarget, versions: SecretVersions
    ) -> SetPasswordReport: ...

    def probe_primary(
        self, engine: DatabaseEngine, target: ConnectionTarget, base: DatabaseSecret | None, pending: DatabaseSecret
    ) -> Probe:
        """Which of ``base`` (the version the rotation started from; None: don't try it) and ``pending`` logs in.
        Raises EndpointUnreachable (or DatabaseError) when the primary cannot answer."""

    def restore_primary(
        self, engine: DatabaseEngine, target: ConnectionTarget, base: DatabaseSecret, pending: DatabaseSecret
    ) -> None:
        """Put the primary back on ``base``'s credentials, logged in with ``pending``'s."""


class SingleUserStrategy:
    """The user changes its own password. Idempotent: a retry that finds the new password already set does nothing."""

    name = "single-user"

    def pending_secret(self, current: DatabaseSecret, password: SecretStr) -> DatabaseSecret:
        return current.with_password(password)

    def is_pending_of(self, current: DatabaseSecret, pending: DatabaseSecret) -> bool:
        return current.with_password(pending.password).to_secret_string() == pending.to_secret_string()

    def set_on_primary(
        self, engine: DatabaseEngine, target: ConnectionTarget, versions: SecretVersions
    ) -> SetPasswordReport:
        pending = versions.pending
        if pending is None:
            raise SecretInvalid("setSecret has no AWSPENDING value to set")
        if pending.username != versions.current.username:
            raise SecretInvalid("single-user rotation cannot change the user name between versions")
        address = target.endpoint.address
        # AWSCURRENT first (the normal path); AWSPENDING means a retry finds the change made; AWSPREVIOUS covers a
        # password restored by hand after a half-finished rotation. Only a login that is not the pending one writes.
        attempts = ((STAGE_CURRENT, versions.current), (STAGE_PENDING, pending), (STAGE_PREVIOUS, versions.previous))
        for label, secret in attempts:
            if secret is None:
                continue
            try:
                with engine.session(target, credentials(secret)) as session:
                    changed = label != STAGE_PENDING
                    if changed:
                        _write_password(session, address, pending.password)
                    return SetPasswordReport(endpoint=address, changed=changed, logged_in_with=label)
            except AuthenticationFailed:
                continue
        raise AuthenticationFailed(
            "none of AWSCURRENT, AWSPENDING or AWSPREVIOUS logs in on the primary", endpoint=address
        )

    def probe_primary(
        self, engine: DatabaseEngine, target: ConnectionTarget, base: DatabaseSecret | None, pending: DatabaseSecret
    ) -> Probe:
        candidates: tuple[tuple[Probe, DatabaseSecret | None], ...] = (("current", base), ("pending", pending))
        for probe, secret in candidates:
            if secret is None:
                continue
            try:
                with engine.session(target, credentials(secret)) as session:
                    session.run_test_query()
                return probe
            except AuthenticationFailed:
                continue
        return "neither"

    def restore_primary(
        self, engine: DatabaseEngine, target: ConnectionTarget, base: DatabaseSecret, pending: DatabaseSecret
    ) -> None:
        with engine.session(target, credentials(pending)) as session:
            _write_password(session, target.endpoint.address, base.password)


def _write_password(session: DatabaseSession, address: str, password: SecretStr) -> None:
    """The logged-in user's own password, never on a replicating replica (the change would break replication)."""
    if session.is_replica():
        raise WriteRefusedOnReplica("refusing to change a password on a replicating replica", endpoint=address)
    session.set_password(session.current_account(), password)


# A secret naming ``masterarn`` is rotated with alternating users, as by AWS's multi-user functions.
STRATEGIES: dict[str, Callable[[], RotationStrategy]] = {
    SingleUserStrategy.name: SingleUserStrategy,
}


def strategy_name(secret: DatabaseSecret) -> str:
    return "alternating-users" if secret.masterarn else SingleUserStrategy.name


def strategy_for(secret: DatabaseSecret) -> RotationStrategy:
    name = strategy_name(secret)
    factory = STRATEGIES.get(name)
    if factory is None:
        raise SecretInvalid(f"the secret names 'masterarn' ({name}), which this version does not rotate yet")
    return factory()
