"""Integration tests for the local PostgreSQL rig (real primary + 2 streaming replicas on loopback ports)."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from rotator.local.rig import (
    PgCluster,
    PgNode,
    RigError,
    load_cluster,
    node_is_running,
    start_cluster,
    start_node,
    stop_cluster,
    stop_node,
    wait_replicas_caught_up,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    base = tmp_path_factory.mktemp("pgrig") / "pg"
    c = start_cluster(base, replicas=2)
    try:
        yield c
    finally:
        stop_cluster(c, remove=True)


def _scalar(dsn: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(query, params).fetchone()
        assert row is not None
        return row[0]


def _create_login_role(c: PgCluster, password: str) -> str:
    """Create a LOGIN role on the primary, sending only a client-side SCRAM verifier."""
    name = f"app_{secrets.token_hex(4)}"
    with psycopg.connect(c.dsn(c.primary), autocommit=True) as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(verifier)))
    return name


def _login_with_retry(c: PgCluster, node: PgNode, user: str, password: str, timeout: float = 5.0) -> str:
    """Log in as user/password on node; a login right after replication can fail transiently, so retry."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(_scalar(c.dsn(node, user=user, password=password), "SELECT current_user"))
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_cluster_has_a_primary_and_two_streaming_read_only_replicas(cluster: PgCluster) -> None:
    # Given a freshly started rig with two replicas
    # When we ask each node and the primary's replication view
    in_recovery = {n.name: _scalar(cluster.dsn(n), "SELECT pg_is_in_recovery()") for n in cluster.nodes}
    streaming = _scalar(
        cluster.dsn(cluster.primary), "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
    )
    # Then the primary is writable, both replicas are hot standbys, and both stream from the primary
    assert in_recovery == {"primary": False, "replica1": True, "replica2": True}
    assert streaming == 2
    assert cluster.primary.port != 5432
    assert all(r.port != 5432 for r in cluster.replicas)
    assert all(node_is_running(cluster, n) for n in cluster.nodes)


def test_base_dir_holds_the_documented_layout(cluster: PgCluster) -> None:
    # Given a running rig (as root under pytest's 0700 tmp root, node dirs may be symlinks into a runtime dir)
    # When we look into its base dir
    entries = {p.name for p in cluster.base_dir.iterdir()}
    # Then it has the cluster file, one data dir per node, the logs and the socket dir
    assert {"cluster.json", "primary", "replica1", "replica2", "logs"} <= entries
    for node in cluster.nodes:
        assert (cluster.base_dir / node.name / "PG_VERSION").is_file()
        assert cluster.log_file(node).is_file()
    assert any(cluster.sock_dir.glob(".s.PGSQL.*"))


def test_cluster_json_round_trips(cluster: PgCluster) -> None:
    # Given a running rig
    # When it is loaded back from its cluster.json
    loaded = load_cluster(cluster.base_dir)
    # Then it describes the same cluster, and the file is private to its owner
    assert loaded == cluster
    assert (cluster.base_dir / "cluster.json").stat().st_mode & 0o077 == 0


def test_role_created_on_primary_logs_in_on_every_replica(cluster: PgCluster) -> None:
    # Given a role created on the primary with a SCRAM verifier
    password = secrets.token_urlsafe(16)
    name = _create_login_role(cluster, password)
    # When the replicas have replayed the change
    wait_replicas_caught_up(cluster)
    # Then the role exists on both replicas and can log in there with its password
    for replica in cluster.replicas:
        assert _scalar(cluster.dsn(replica), "SELECT count(*) FROM pg_roles WHERE rolname = %s", (name,)) == 1
        assert _login_with_retry(cluster, replica, name, password) == name
    # And a wrong password is refused
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _scalar(cluster.dsn(cluster.replicas[0], user=name, password="wrong-" + password), "SELECT 1")


def test_alter_role_on_a_replica_is_rejected_as_read_only(cluster: PgCluster) -> None:
    # Given a role that exists everywhere
    name = _create_login_role(cluster, secrets.token_urlsafe(16))
    wait_replicas_caught_up(cluster)
    # When we try to change it on a replica
    with (
        psycopg.connect(cluster.dsn(cluster.replicas[0]), autocommit=True) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as excinfo,
    ):
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(name)))
    # Then the server refuses with SQLSTATE 25006
    assert excinfo.value.sqlstate == "25006"


def test_failed_statements_are_not_logged_with_their_text(cluster: PgCluster) -> None:
    # Given a marker that would only reach the log through a statement's text
    marker = f"marker_{secrets.token_hex(8)}"
    # When a statement containing it fails on the primary
    with (
        psycopg.connect(cluster.dsn(cluster.primary), autocommit=True) as conn,
        pytest.raises(psycopg.errors.UndefinedObject),
    ):
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier("no_such_role"), sql.Literal(marker)))
    # Then the server log does not contain it
    assert marker not in cluster.log_file(cluster.primary).read_text()


def test_stopped_replica_restarts_and_catches_up(cluster: PgCluster) -> None:
    # Given replica1 stopped (fast) and replica2 crashed (immediate)
    r1, r2 = cluster.replicas
    stop_node(cluster, r1)
    stop_node(cluster, r2, immediate=True)
    assert not node_is_running(cluster, r1)
    assert not node_is_running(cluster, r2)
    stop_node(cluster, r1)  # stopping a stopped node is a no-op
    # And a role created on the primary while they were down
    password = secrets.token_urlsafe(16)
    name = _create_login_role(cluster, password)
    # When both are started again
    start_node(cluster, r1)
    start_node(cluster, r2)
    wait_replicas_caught_up(cluster)
    # Then they are running standbys again and have the new role
    for replica in (r1, r2):
        assert node_is_running(cluster, replica)
        assert _scalar(cluster.dsn(replica), "SELECT pg_is_in_recovery()") is True
        assert _login_with_retry(cluster, replica, name, password) == name


def test_start_cluster_refuses_a_base_dir_with_a_running_cluster(cluster: PgCluster) -> None:
    # Given a running rig
    # When another start is attempted on the same base dir
    # Then it is refused and the running rig is untouched
    with pytest.raises(RigError, match="running cluster"):
        start_cluster(cluster.base_dir, replicas=1)
    assert all(node_is_running(cluster, n) for n in cluster.nodes)


def test_stop_cluster_stops_every_node_and_removes_everything(tmp_path: Path) -> None:
    # Given a separate rig with two replicas
    base = tmp_path / "pg"
    c = start_cluster(base, replicas=2)
    ports = [n.port for n in c.nodes]
    assert all(_port_open(p) for p in ports)
    # When it is stopped with remove=True
    stop_cluster(c)
    # Then no node listens any more and the base dir is gone
    assert not any(_port_open(p) for p in ports)
    assert not base.exists()
    assert not c.run_dir.exists()
    assert not c.sock_dir.exists()
    assert load_cluster(base) is None
    # And stopping again is harmless
    stop_cluster(c)
