"""The PostgreSQL adapter (rotator_db.postgres) against the rig's real primary and streaming replica."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from rotator.local.rig import PgCluster, PgNode
from rotator.local.seed import create_login_role
from rotator_core.errors import AuthenticationFailed, WriteRefusedOnReplica
from rotator_core.models import Endpoint, SslPolicy
from rotator_core.ports import Account, ConnectionTarget, Credentials
from rotator_db.postgres import PostgresEngine
from tests.integration.conftest import logs_in, logs_in_eventually

pytestmark = pytest.mark.integration


def target(cluster: PgCluster, node: PgNode) -> ConnectionTarget:
    return ConnectionTarget(
        Endpoint(host=node.host, port=node.port),
        cluster.dbname,
        SslPolicy.model_validate({"use_tls": False, "fall_back": False}),
    )


def test_a_session_knows_its_account_and_its_role(healthy_cluster: PgCluster) -> None:
    # Given a login role
    user, password = f"eng_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}"
    create_login_role(healthy_cluster.dsn(healthy_cluster.primary), user, password)
    assert logs_in_eventually(healthy_cluster, healthy_cluster.replicas[0], user, password)
    engine, login = PostgresEngine(), Credentials(user, SecretStr(password))
    # Then a session on the primary is that account and not a replica; one on a replica is a replica
    with engine.session(target(healthy_cluster, healthy_cluster.primary), login) as session:
        assert session.current_account() == Account(user)
        assert not session.is_replica()
        assert session.account_exists(Account(user)) and not session.account_exists(Account(f"{user}_none"))
    with engine.session(target(healthy_cluster, healthy_cluster.replicas[0]), login) as session:
        assert session.is_replica()
        # And a write there is refused as a replica's, not as a generic database error
        with pytest.raises(WriteRefusedOnReplica):
            session.set_password(Account(user), SecretStr("Other-pw-1234567890"))


def test_set_password_and_create_account_like_reach_the_replicas(healthy_cluster: PgCluster) -> None:
    admin = Credentials(healthy_cluster.admin_user, SecretStr(healthy_cluster.admin_password))
    user = f"eng_{uuid.uuid4().hex[:8]}"
    clone = f"{user}_clone"
    create_login_role(healthy_cluster.dsn(healthy_cluster.primary), user, "Initial-pw-1234567890")
    engine = PostgresEngine()
    with engine.session(target(healthy_cluster, healthy_cluster.primary), admin) as session:
        # When the user's password is changed and a clone of it is created
        session.set_password(Account(user), SecretStr("Changed-pw-1234567890"))
        session.create_account_like(Account(clone), SecretStr("Clone-pw-1234567890"), Account(user))
        assert session.account_exists(Account(clone))
    # Then both log in everywhere with their new passwords, and the old one is refused
    for node in healthy_cluster.nodes:
        assert logs_in_eventually(healthy_cluster, node, user, "Changed-pw-1234567890"), node.name
        assert logs_in_eventually(healthy_cluster, node, clone, "Clone-pw-1234567890"), node.name
    assert not logs_in(healthy_cluster, healthy_cluster.primary, user, "Initial-pw-1234567890")
    # And the clone has the user's privileges (membership in the user's role)
    with engine.session(target(healthy_cluster, healthy_cluster.primary), admin) as session:
        assert session._execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (clone, user))
    # And a wrong password is an authentication failure naming the user, never the password
    wrong = Credentials(user, SecretStr("wrong-pw-123"))
    with (
        pytest.raises(AuthenticationFailed, match=user) as caught,
        engine.session(target(healthy_cluster, healthy_cluster.primary), wrong),
    ):
        pass
    assert "wrong-pw-123" not in str(caught.value)
