"""cache, in Python: partitions held in memory by single-replica Atomix
cache nodes. A port of the built-in ``plugins/cache`` that renders the same
bytes (checked by the shared vectors in ``guest-sdk/vectors/cache``).

Per node ``n`` (1..=ceil(partitions / partitionsPerNode)): ConfigMap and
StatefulSet ``<db>-<n>`` (one replica, emptyDir), headless Service
``<db>-<n>-hs``. Node ``n`` serves the contiguous partitions
``(n-1)*partitionsPerNode+1 ..= min(n*partitionsPerNode, partitions)``. Per
partition ``p``: Service ``<db>-p<p>`` selecting its node. A partition is
ready when its node's pod is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from atoll_sdk import NOWHERE, Database, Observed, Output, Plugin, StatusReport, Violation, option, u32
from atoll_sdk import atomix
from atoll_sdk.atomix import NodeGroup
from atoll_sdk.k8s import PullPolicy, Resources


@dataclass
class Config:
    """`spec.storage.config` of a cache Database."""

    partitions_per_node: u32 = option(
        1,
        "Partitions each cache node serves, at least 1; the Database runs\n"
        "ceil(partitions / partitionsPerNode) nodes.",
    )
    image: str = option("atomix/cache-storage-node:v0.5.1", "Cache node image.")
    image_pull_policy: PullPolicy = option(PullPolicy.IF_NOT_PRESENT, "When to pull the image.")
    resources: Resources = option(
        Resources(),
        "Container resource requests and limits of each node; the cache lives in\n"
        "memory, so size the memory limit for the data.",
    )


def node_count(partitions: int, per_node: int) -> int:
    """How many nodes serve ``partitions`` at ``per_node`` partitions each."""
    return -(-partitions // per_node)


def node_of(partition: int, per_node: int) -> int:
    """The node serving partition ``partition`` (both 1-based)."""
    return (partition - 1) // per_node + 1


#: How many not-ready nodes the status message names before summarising.
MESSAGE_NODES = 5


class Cache(Plugin):
    NAME = "cache"
    VERSION = "0.1.0"
    DESCRIPTION = "In-memory cache partitions on single-replica nodes (Atomix cache storage nodes)"
    Config = Config

    @staticmethod
    def node(db: Database, config: Config, node: int) -> NodeGroup:
        per_node = config.partitions_per_node
        labels = atomix.labels(db, Cache.NAME, "node")
        labels["atoll.dev/node"] = str(node)
        return NodeGroup(
            name=db.child(node),
            labels=labels,
            replicas=1,
            image=config.image,
            pull_policy=config.image_pull_policy,
            resources=config.resources,
            partitions=list(range((node - 1) * per_node + 1, min(node * per_node, db.partitions) + 1)),
            protocol={},
            data=None,
            spread=None,
            # A budget on a single replica would block every node drain.
            min_available=None,
        )

    @staticmethod
    def check(db: Database, config: Config) -> List[Violation]:
        v = []
        if config.partitions_per_node == 0:
            v.append(
                Violation.config(
                    "partitionsPerNode",
                    "must be at least 1 (got 0): use 1 for a node per partition, "
                    "or more to pack partitions onto fewer nodes",
                )
            )
        if not config.image.strip():
            v.append(Violation.config("image", "must name a container image"))
        v.extend(config.resources.check("resources"))
        return v

    @staticmethod
    def render(db: Database, config: Config, out: Output) -> None:
        per_node = config.partitions_per_node
        nodes = [Cache.node(db, config, n) for n in range(1, node_count(db.partitions, per_node) + 1)]
        for node in nodes:
            node.render(db, out)
        for p in db.partition_ids():
            node = nodes[node_of(p, per_node) - 1]
            # In memory only: a cache keeps nothing that a move could lose.
            atomix.partition_service(db, p, node.labels, NOWHERE, out)

    @staticmethod
    def status(db: Database, config: Config, observed: Observed) -> StatusReport:
        per_node = config.partitions_per_node
        nodes = node_count(db.partitions, per_node)
        ready_nodes = [observed.statefulset_ready(db.child(n), 1) >= 1 for n in range(1, nodes + 1)]
        ready = [p for p in db.partition_ids() if ready_nodes[node_of(p, per_node) - 1]]
        waiting = [f"node {n}" for n in range(1, nodes + 1) if not ready_nodes[n - 1]]
        if not waiting:
            message = f"all {nodes} nodes ready"
        else:
            named = ", ".join(waiting[:MESSAGE_NODES])
            if len(waiting) > MESSAGE_NODES:
                named += f" and {len(waiting) - MESSAGE_NODES} more"
            message = f"{nodes - len(waiting)}/{nodes} nodes ready; not ready: {named}"
        # One node per partition and no replicas: available is ready.
        return StatusReport(ready, list(ready), message)
