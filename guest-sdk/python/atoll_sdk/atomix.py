"""Atomix storage nodes: the shared shape of a replicated node group and the
``cluster.json`` config Atomix nodes read (the Rust SDK's ``atomix``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from . import canonical, k8s
from .k8s import ContainerBuilder, Labels, PodBuilder, PullPolicy, Resources, ServiceBuilder, StatefulSetBuilder
from .output import Observed, Output
from .types import Database, Placement, StatusReport, Violation

#: Port clients use (the Atomix API).
API_PORT = 5678
#: Port replicas use among themselves.
PROTOCOL_PORT = 5679
#: Where the config ConfigMap is mounted in each node.
CONFIG_DIR = "/etc/atomix"
#: Where a node keeps its data.
DATA_DIR = "/var/lib/atomix"


def labels(db: Database, plugin: str, component: str) -> Labels:
    """The standard labels of a plugin's pods and objects."""
    return k8s.labels(
        [
            ("app.kubernetes.io/name", plugin),
            ("app.kubernetes.io/instance", db.name),
            ("app.kubernetes.io/component", component),
            ("atoll.dev/database", db.name),
        ]
    )


@dataclass
class NodeGroup:
    """A replicated group of Atomix storage nodes: ConfigMap and StatefulSet
    ``name``, headless Service ``<name>-hs``, optionally a PodDisruptionBudget."""

    name: str
    labels: Labels
    replicas: int
    image: str
    pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    resources: Resources = field(default_factory=Resources)
    #: Partition ids this group serves.
    partitions: List[int] = field(default_factory=list)
    #: Contents of ``protocol.json`` (written with keys sorted, as the Rust
    #: SDK writes a ``serde_json::Value``).
    protocol: Any = field(default_factory=dict)
    #: Persistent data: a claim template named ``data``; ``None`` means emptyDir.
    data: Optional[dict] = None
    #: Spread replicas across this topology key; ``True`` makes it required.
    spread: Optional[Tuple[str, bool]] = None
    #: Render a PodDisruptionBudget with this ``minAvailable``.
    min_available: Optional[int] = None

    def headless_service(self) -> str:
        return f"{self.name}-hs"

    def cluster_config(self, db: Database) -> dict:
        """``cluster.json``: every replica's id and DNS name, and the partitions
        (``atomix.database.DatabaseConfig`` in proto3 JSON, fields in order)."""
        hs = self.headless_service()
        replicas = []
        for i in range(self.replicas):
            pod = f"{self.name}-{i}"
            replicas.append(
                {"id": pod, "host": db.pod_host(pod, hs), "apiPort": API_PORT, "protocolPort": PROTOCOL_PORT}
            )
        return {"replicas": replicas, "partitions": [{"partition": p} for p in self.partitions]}

    def render(self, db: Database, out: Output) -> None:
        """Push the ConfigMap, headless Service, StatefulSet and (if asked)
        the PodDisruptionBudget."""
        hs = self.headless_service()
        out.push(
            k8s.config_map(
                self.name,
                self.labels,
                [
                    ("cluster.json", canonical.pretty(self.cluster_config(db))),
                    ("protocol.json", canonical.pretty(self.protocol, order="sorted")),
                ],
            )
        )
        out.push(
            ServiceBuilder(hs, self.labels).port("api", API_PORT).port("protocol", PROTOCOL_PORT).headless().build()
        )
        node = (
            ContainerBuilder("node", self.image)
            .pull_policy(self.pull_policy)
            .args(
                [
                    "--config", f"{CONFIG_DIR}/cluster.json",
                    "--protocol", f"{CONFIG_DIR}/protocol.json",
                    "--node", "$(POD_NAME)",
                ]
            )
            .env_from_field("POD_NAME", "metadata.name")
            .env_from_field("POD_NAMESPACE", "metadata.namespace")
            .port("api", API_PORT)
            .port("protocol", PROTOCOL_PORT)
            .mount("config", CONFIG_DIR, True)
            .mount("data", DATA_DIR, False)
            .readiness(k8s.tcp_probe("api", 5, 10))
            .liveness(k8s.tcp_probe("api", 30, 10))
            .resources(self.resources)
            .build()
        )
        pod = PodBuilder(self.labels).container(node).config_map_volume("config", self.name).termination_grace_period(30)
        if self.data is None:
            pod = pod.empty_dir_volume("data")
        if self.spread is not None:
            key, required = self.spread
            pod = pod.affinity(k8s.anti_affinity(self.labels, key, required))
        sts = StatefulSetBuilder(self.name, self.labels, hs, pod.build()).replicas(self.replicas)
        if self.data is not None:
            sts = sts.volume_claim(self.data)
        out.push(sts.build())
        if self.min_available is not None:
            out.push(k8s.pod_disruption_budget(self.name, self.labels, self.min_available))


def partition_service(db: Database, partition: int, selector: Labels, placement: Placement, out: Output) -> None:
    """Push Service ``<db>-p<partition>`` routing the API port to pods matching
    ``selector``, and bind the partition to it, its data living at ``placement``."""
    name = db.child(f"p{partition}")
    out.push(ServiceBuilder(name, selector).label("atoll.dev/partition", str(partition)).port("api", API_PORT).build())
    out.bind(partition, name, API_PORT, placement)


def check_quorum_replicas(path: str, replicas: int) -> Optional[Violation]:
    """A replica count for a majority-based group: odd, 1..=9."""
    if not 1 <= replicas <= 9 or replicas % 2 == 0:
        return Violation.config(
            path,
            f"must be odd and between 1 and 9 (got {replicas}): use 1, 3, 5, 7 or 9 so a majority survives failures",
        )
    return None


def single_group_status(db: Database, observed: Observed, statefulset: str, want: int, serving: int) -> StatusReport:
    """Readiness of a Database whose partitions are all served by one
    StatefulSet: ready once all ``want`` replicas are, available while at
    least ``serving`` are."""
    ready = observed.statefulset_ready(statefulset, want)
    every = list(db.partition_ids())
    if ready >= want:
        return StatusReport(every, list(every), f"all {want} replicas ready")
    if ready >= serving:
        return StatusReport([], every, f"{ready}/{want} replicas ready (serving: {serving} needed)")
    return StatusReport([], [], f"{ready}/{want} replicas ready ({serving} needed to serve)")


def quorum(replicas: int) -> int:
    """Majority of ``replicas``."""
    return replicas // 2 + 1
