"""The createSecret preflight refuses a replica of another cluster, on real PostgreSQL: a second rig cluster whose
replica has the same user and password is listed as a replica of the first cluster's primary."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.rig import PgCluster, PgNode, start_cluster, stop_cluster
from rotator.local.seed import create_login_role, secret_value
from rotator_core.models import Endpoint, SslPolicy
from rotator_core.ports import ConnectionTarget, Credentials
from rotator_db.postgres import PostgresEngine
from tests.conftest import alerts_for, stages_of
from tests.integration.conftest import endpoint, logs_in, logs_in_eventually, rotate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def other_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    """A separate cluster (its own initdb, so its own system identifier) with one streaming replica."""
    cluster = start_cluster(tmp_path_factory.mktemp("pg-other") / "cluster", replicas=1)
    try:
        yield cluster
    finally:
        stop_cluster(cluster, remove=True)


def identifier(cluster: PgCluster, node: PgNode, user: str, password: str) -> str:
    plain = SslPolicy(use_tls=False, fall_back=False)
    target = ConnectionTarget(Endpoint(host=node.host, port=node.port), cluster.dbname, plain)
    with PostgresEngine().session(target, Credentials(user, SecretStr(password))) as session:
        return session.system_identifier()


def test_an_ordinary_login_role_reads_the_system_identifier_and_replicas_share_their_primarys(
    healthy_cluster: PgCluster, other_cluster: PgCluster
) -> None:
    # Given an ordinary login role (no pg_monitor, no superuser) on both clusters
    user, password = f"ident_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}"
    for cluster in (healthy_cluster, other_cluster):
        create_login_role(cluster.dsn(cluster.primary), user, password)
        assert logs_in_eventually(cluster, cluster.replicas[0], user, password)
    # Then it reads the identifier everywhere; a cluster's nodes share one, the two clusters differ
    ours = {identifier(healthy_cluster, node, user, password) for node in healthy_cluster.nodes}
    theirs = {identifier(other_cluster, node, user, password) for node in other_cluster.nodes}
    assert len(ours) == 1 and len(theirs) == 1 and ours != theirs


def test_a_replica_of_another_cluster_is_refused_at_the_preflight_with_nothing_changed(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, other_cluster: PgCluster
) -> None:
    # Given the same user and password on both clusters
    user, password = f"foreign_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}"
    for cluster in (healthy_cluster, other_cluster):
        create_login_role(cluster.dsn(cluster.primary), user, password)
        for node in cluster.replicas:
            assert logs_in_eventually(cluster, node, user, password)
    # And a secret that lists one of ours and the other cluster's replica as replicas of our primary
    foreign = other_cluster.replicas[0]
    replicas = [endpoint(healthy_cluster.replicas[0]), endpoint(foreign)]
    value = secret_value(endpoint(healthy_cluster.primary), replicas, healthy_cluster.dbname, user, password)
    name = f"rotator/it/{user}"
    arn = secrets_client.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]
    started = time.monotonic()
    # When it is rotated
    with pytest.raises(ClientError) as caught:
        rotate(aws_stack, secrets_client, arn)
    elapsed = time.monotonic() - started
    # Then createSecret's preflight refused it, saying why and where, quickly (no replication-lag wait)
    message = caught.value.response["Error"]["Message"]
    assert "createSecret" in message and "TopologyMismatch" in message, message
    assert "replicates from a different primary" in message and str(foreign.port) in message
    assert elapsed < 15, elapsed
    # And nothing changed: the password still logs in everywhere, AWSCURRENT is as it was, no AWSPENDING
    for cluster in (healthy_cluster, other_cluster):
        for node in cluster.nodes:
            assert logs_in(cluster, node, user, password), node.name
    assert json.loads(secrets_client.get_secret_value(SecretId=arn)["SecretString"])["password"] == password
    assert all("AWSPENDING" not in stages for stages in stages_of(secrets_client, arn).values())
    (alert,) = alerts_for(aws_stack, name)
    assert alert["errorType"] == "TopologyMismatch" and alert["pendingRemoved"] is True
