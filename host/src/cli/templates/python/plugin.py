"""{{name}}: one StatefulSet of ``replicas`` pods, a headless Service for
their DNS names, and one Service per partition in front of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from atoll_sdk import NOWHERE, Database, Observed, Output, Plugin, StatusReport, Violation, option, u32
from atoll_sdk import k8s
from atoll_sdk.k8s import ContainerBuilder, PodBuilder, ServiceBuilder, StatefulSetBuilder


@dataclass
class Config:
    """`spec.storage.config` of a {{name}} Database."""

    replicas: u32 = option(1, "Pods serving every partition, at least 1.")
    image: str = option("registry.example/{{name}}:0.1.0", "Container image of the pods.")


class ThePlugin(Plugin):
    NAME = "{{name}}"
    VERSION = "0.1.0"
    DESCRIPTION = "{{name}}: a StatefulSet and a Service per partition"
    Config = Config

    @staticmethod
    def check(db: Database, config: Config) -> List[Violation]:
        if config.replicas == 0:
            return [Violation.config("replicas", "must be at least 1 (got 0)")]
        return []

    @staticmethod
    def render(db: Database, config: Config, out: Output) -> None:
        labels = k8s.labels([("app.kubernetes.io/name", ThePlugin.NAME), ("atoll.dev/database", db.name)])
        hs = db.child("hs")
        out.push(ServiceBuilder(hs, labels).port("api", 5678).headless().build())
        container = ContainerBuilder("server", config.image).port("api", 5678).readiness(k8s.tcp_probe("api", 5, 10)).build()
        pod = PodBuilder(labels).container(container).build()
        out.push(StatefulSetBuilder(db.name, labels, hs, pod).replicas(config.replicas).build())
        for p in db.partition_ids():
            name = db.child(f"p{p}")
            out.push(ServiceBuilder(name, labels).port("api", 5678).build())
            # Nothing on disk: say so, or name the StatefulSet that holds data.
            out.bind(p, name, 5678, NOWHERE)

    @staticmethod
    def status(db: Database, config: Config, observed: Observed) -> StatusReport:
        want = config.replicas
        ready = observed.statefulset_ready(db.name, want)
        every = list(db.partition_ids()) if ready >= want else []
        return StatusReport(every, list(every), f"{ready}/{want} replicas ready")
