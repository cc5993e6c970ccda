"""How the new password reaches the database. Single user today; alternating users plugs in beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rotator_core.engines import ConnectionTarget, Credentials, DatabaseEngine
from rotator_core.errors import (
    AuthenticationFailed,
    EndpointUnreachable,
    RotatorError,
    SecretInvalid,
    WriteRefusedOnReplica,
)
from rotator_core.models import (
    DatabaseSecret,
    EndpointRestore,
    SetPasswordReport,
    TopologyEndpoint,
)


@dataclass(frozen=True)
class SecretVersions:
    current: DatabaseSecret
    pending: DatabaseSecret | None = None
    previous: DatabaseSecret | None = None


def credentials(secret: DatabaseSecret) -> Credentials:
    return Credentials(secret.username, secret.password)


class RotationStrategy(Protocol):
    name: str

    def set_on_primary(
        self, engine: DatabaseEngine, target: ConnectionTarget, versions: SecretVersions
    ) -> SetPasswordReport: ...

    def restore_primary(
        self, engine: DatabaseEngine, target: ConnectionTarget, endpoint: TopologyEndpoint, versions: SecretVersions
    ) -> EndpointRestore: ...


class SingleUserStrategy:
    """The user changes its own password. Idempotent: a retry that finds the new password already set does nothing."""

    name = "single-user"

    def set_on_primary(
        self, engine: DatabaseEngine, target: ConnectionTarget, versions: SecretVersions
    ) -> SetPasswordReport:
        pending = versions.pending
        assert pending is not None, "setSecret always has a pending version"
        if pending.username != versions.current.username:
            raise SecretInvalid("single-user rotation cannot change the user name between versions")
        candidates = [("AWSCURRENT", versions.current), ("AWSPENDING", pending), ("AWSPREVIOUS", versions.previous)]
        for label, secret in candidates:
            if secret is None:
                continue
            try:
                with engine.session(target, credentials(secret)) as session:
                    if label == "AWSPENDING":
                        return SetPasswordReport(endpoint=target.endpoint.address, changed=False, logged_in_with=label)
                    if session.is_replica():
                        raise WriteRefusedOnReplica(
                            "refusing to change a password on a replicating replica", endpoint=target.endpoint.address
                        )
                    session.set_password(pending.username, pending.password)
                    return SetPasswordReport(endpoint=target.endpoint.address, changed=True, logged_in_with=label)
            except AuthenticationFailed:
                continue
        raise AuthenticationFailed(
            "none of AWSCURRENT, AWSPENDING or AWSPREVIOUS logs in on the primary", endpoint=target.endpoint.address
        )

    def restore_primary(
        self, engine: DatabaseEngine, target: ConnectionTarget, endpoint: TopologyEndpoint, versions: SecretVersions
    ) -> EndpointRestore:
        address = target.endpoint.address
        try:
            with engine.session(target, credentials(versions.current)) as session:
                session.run_test_query()
            return EndpointRestore(endpoint=address, role=endpoint.role, outcome="unchanged")
        except AuthenticationFailed:
            pass
        except RotatorError as exc:
            return _not_restored(address, endpoint, exc)
        if versions.pending is None:
            return EndpointRestore(
                endpoint=address, role=endpoint.role, outcome="cannot_restore", detail="AWSCURRENT does not log in"
            )
        try:
            with engine.session(target, credentials(versions.pending)) as session:
                session.set_password(versions.current.username, versions.current.password)
        except AuthenticationFailed:
            return EndpointRestore(
                endpoint=address,
                role=endpoint.role,
                outcome="cannot_restore",
                detail="neither AWSCURRENT nor AWSPENDING logs in: the password was changed outside the rotation",
            )
        except RotatorError as exc:
            return _not_restored(address, endpoint, exc)
        return EndpointRestore(endpoint=address, role=endpoint.role, outcome="restored")


def _not_restored(address: str, endpoint: TopologyEndpoint, exc: RotatorError) -> EndpointRestore:
    outcome = "unreachable" if isinstance(exc, EndpointUnreachable) else "cannot_restore"
    return EndpointRestore(endpoint=address, role=endpoint.role, outcome=outcome, detail=exc.detail)


def strategy_for(secret: DatabaseSecret) -> RotationStrategy:
    if secret.masterarn:
        raise SecretInvalid("the secret names 'masterarn' (alternating users), which this version does not rotate yet")
    return SingleUserStrategy()
