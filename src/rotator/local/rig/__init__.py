"""Real database servers on loopback ports for the local stack, the tests, the demo and the benchmark.

``process`` holds what any rig needs (commands as the server's OS user, reachable directories, free ports, polling,
atomic JSON files); ``postgres`` is a PostgreSQL primary with streaming replicas.
"""

from rotator.local.rig.postgres import (
    PgCluster,
    PgNode,
    load_cluster,
    node_is_running,
    start_cluster,
    start_node,
    stop_cluster,
    stop_node,
    wait_replicas_caught_up,
)
from rotator.local.rig.process import RigError

__all__ = [
    "PgCluster",
    "PgNode",
    "RigError",
    "load_cluster",
    "node_is_running",
    "start_cluster",
    "start_node",
    "stop_cluster",
    "stop_node",
    "wait_replicas_caught_up",
]
