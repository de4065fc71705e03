"""Python mirrors of the WIT records (``wit/storage.wit``), used by plugins
and the native harness. The component glue (:mod:`atoll_sdk.component`)
converts them to and from the generated bindings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Union


@dataclass
class Database:
    """The Database being handled (WIT ``database``)."""

    name: str
    partitions: int
    namespace: str = "default"
    uid: str = ""
    generation: int = 1
    labels: Dict[str, str] = field(default_factory=dict)
    #: ``spec.storage.config`` as JSON text.
    config: str = "{}"
    cluster_domain: str = "cluster.local"

    def in_namespace(self, namespace: str) -> "Database":
        self.namespace = namespace
        return self

    def with_config(self, config: Any) -> "Database":
        """Set ``spec.storage.config`` from a JSON value, as the host sends it
        (compact, keys sorted)."""
        self.config = json.dumps(config, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        return self

    def partition_ids(self) -> range:
        """Partition ids, ``1..=partitions``."""
        return range(1, self.partitions + 1)

    def child(self, suffix: object) -> str:
        """``<name>-<suffix>``: the only shape of name the output policy
        accepts besides the Database's own name."""
        return f"{self.name}-{suffix}"

    def pod_host(self, pod: str, headless_service: str) -> str:
        """Stable DNS name of a pod behind a headless Service."""
        return f"{pod}.{headless_service}.{self.namespace}.svc.{self.cluster_domain}"


@dataclass
class Metadata:
    """What a plugin says about itself (WIT ``metadata``)."""

    name: str
    version: str
    description: str
    #: JSON Schema of ``spec.storage.config``, as JSON text.
    config_schema: str


@dataclass
class Violation:
    """One thing wrong with a Database (WIT ``violation``)."""

    #: Path from the Database root, e.g. ``spec.storage.config.replicas``.
    field: str
    message: str

    @staticmethod
    def config(path: str, message: str) -> "Violation":
        """A violation of ``spec.storage.config.<path>``."""
        return Violation("spec.storage.config" + (f".{path}" if path else ""), message)

    @staticmethod
    def spec(path: str, message: str) -> "Violation":
        """A violation of ``spec.<path>``, e.g. ``partitions``."""
        return Violation(f"spec.{path}", message)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Nowhere:
    """Nowhere durable: the partition lives in memory only (a cache)."""


@dataclass(frozen=True)
class Workload:
    """The pods of this workload hold the partition's data."""

    kind: str
    name: str


#: Where a partition's data lives (WIT ``placement``). atoll refuses a render
#: that moves a partition away from a workload that holds data, unless approved.
Placement = Union[Nowhere, Workload]

NOWHERE = Nowhere()


def statefulset(name: str) -> Workload:
    """The partition lives in StatefulSet ``name``."""
    return Workload("StatefulSet", name)


@dataclass
class PartitionBinding:
    """Where one partition is served, and where its data lives."""

    partition: int
    service: str
    port: int
    placement: Placement


@dataclass
class Rendered:
    """The desired state: objects as JSON text."""

    objects: List[str]
    partitions: List[PartitionBinding]


class RenderFailed(Exception):
    """Raise from ``render`` when the Database cannot be rendered for a reason
    other than an invalid spec (reported as ``RenderFailed``)."""


@dataclass
class Invalid:
    """``render`` refused an invalid Database (WIT ``render-error.invalid``)."""

    violations: List[Violation]


@dataclass
class Failed:
    """``render`` failed (WIT ``render-error.failed``)."""

    message: str


RenderError = Union[Invalid, Failed]


@dataclass
class StatusReport:
    """Readiness and availability judged from observed objects."""

    ready_partitions: List[int] = field(default_factory=list)
    #: Partitions that can serve now, perhaps with replicas missing. The host
    #: counts every ready partition as available too.
    available_partitions: List[int] = field(default_factory=list)
    message: str = ""


class Level(Enum):
    """Log severity (WIT ``level``)."""

    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


