"""A hung server (its postmaster SIGSTOPped: the kernel still accepts the TCP connection, nobody answers) is declared
unreachable after one connect timeout: with the secret's ssl absent, a timed-out TLS attempt is not retried in plain."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from rotator.local.rig import PgCluster, PgNode
from rotator.local.seed import create_login_role
from rotator_core.errors import EndpointUnreachable
from rotator_core.models import Endpoint, SslPolicy
from rotator_core.ports import ConnectionTarget, Credentials
from rotator_db.postgres import PostgresEngine
from tests.integration.conftest import logs_in_eventually

pytestmark = pytest.mark.integration


def postmaster_pid(node: PgNode) -> int:
    return int((node.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip())


@pytest.fixture
def hung_replica(healthy_cluster: PgCluster) -> Iterator[PgNode]:
    node = healthy_cluster.replicas[1]
    pid = postmaster_pid(node)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield node
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_hung_server_fails_after_one_connect_timeout(healthy_cluster: PgCluster, hung_replica: PgNode) -> None:
    # Given a login role (created while the replica's postmaster is stopped: its startup process still replays)
    user, password = f"hung_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}"
    create_login_role(healthy_cluster.dsn(healthy_cluster.primary), user, password)
    target = ConnectionTarget(
        Endpoint(host=hung_replica.host, port=hung_replica.port),
        healthy_cluster.dbname,
        SslPolicy(use_tls=True, fall_back=True),  # the secret has no "ssl": TLS first, plain only after a refusal
        connect_timeout=2,
    )
    started = time.monotonic()
    # When the adapter logs in to the hung replica
    with pytest.raises(EndpointUnreachable, match="timeout expired"):
        PostgresEngine().session(target, Credentials(user, SecretStr(password))).__enter__()
    elapsed = time.monotonic() - started
    # Then it gave up after one timeout (2 s), not one per transport (4 s)
    assert 1.5 < elapsed < 3.5, elapsed
    # And once the replica is resumed, the same login works
    os.kill(postmaster_pid(hung_replica), signal.SIGCONT)
    assert logs_in_eventually(healthy_cluster, hung_replica, user, password)
