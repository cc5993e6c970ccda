"""Where the secret's user lives: the primary that takes the write and the replicas that receive it."""

from __future__ import annotations

from rotator_core.engines import EngineFamily
from rotator_core.errors import SecretInvalid
from rotator_core.models import DatabaseSecret, Topology, TopologyEndpoint


def topology_of(secret: DatabaseSecret, family: EngineFamily) -> Topology:
    """The secret's own endpoints: ``host``/``port`` is the primary, ``replicas`` its read replicas."""
    primary = TopologyEndpoint(host=secret.host, port=secret.port or family.default_port, role="primary")
    replicas = [TopologyEndpoint(host=r.host, port=r.port, role="replica") for r in secret.replicas]
    seen = {primary.address}
    for replica in replicas:
        if replica.address in seen:
            raise SecretInvalid(f"endpoint {replica.address} is listed twice")
        seen.add(replica.address)
    return Topology(engine=family.name, primary=primary, replicas=replicas)
