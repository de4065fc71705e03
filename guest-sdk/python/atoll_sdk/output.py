"""What a plugin renders, and what it observes."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from . import canonical
from .types import PartitionBinding, Placement, Rendered


class Output:
    """Collects rendered objects (as canonical JSON text) and partition bindings."""

    def __init__(self) -> None:
        self.objects: List[str] = []
        self.partitions: List[PartitionBinding] = []

    def push(self, obj: Dict[str, Any]) -> None:
        """Add a Kubernetes object (a dict with ``apiVersion``, ``kind`` and
        ``metadata.name``, as the :mod:`atoll_sdk.k8s` builders return)."""
        self.objects.append(canonical.compact(obj))

    def push_raw(self, text: str) -> None:
        """Add an object as JSON text, unchecked; prefer :meth:`push`."""
        self.objects.append(text)

    def label_all(self, key: str, value: str) -> None:
        """Set label ``key=value`` on every object pushed so far."""
        for i, text in enumerate(self.objects):
            try:
                obj = json.loads(text)
            except ValueError:
                continue  # push_raw() text that is not JSON stays as it is
            obj.setdefault("metadata", {}).setdefault("labels", {})[key] = value
            self.objects[i] = canonical.compact(obj)

    def bind(self, partition: int, service: str, port: int, placement: Placement) -> None:
        """Say where clients reach ``partition`` and where its data lives.
        Bind every partition exactly once."""
        self.partitions.append(PartitionBinding(partition, service, port, placement))

    def finish(self) -> Rendered:
        return Rendered(list(self.objects), list(self.partitions))


class Observed:
    """The objects atoll observed in the cluster for one Database."""

    def __init__(self, objects: List[Dict[str, Any]]):
        self.objects = objects

    @staticmethod
    def parse(texts: List[str]) -> "Observed":
        """Parse observed objects; entries that are not JSON objects are
        ignored, since readiness must never fail on something unreadable."""
        objects = []
        for text in texts:
            try:
                obj = json.loads(text)
            except ValueError:
                continue
            if isinstance(obj, dict):
                objects.append(obj)
        return Observed(objects)

    def find(self, kind: str, name: str) -> Optional[Dict[str, Any]]:
        """The raw observed object of ``kind`` named ``name``."""
        for obj in self.objects:
            if obj.get("kind") == kind and _get(obj, "metadata", "name") == name:
                return obj
        return None

    def statefulset_ready(self, name: str, want: int) -> int:
        """Ready replicas of StatefulSet ``name``, checked against ``want``: a
        StatefulSet whose spec still has another replica count counts as
        having none ready, so readiness is never claimed early."""
        sts = self.find("StatefulSet", name)
        if sts is None:
            return 0
        spec_replicas = _int(_get(sts, "spec", "replicas"), 1)
        ready = _int(_get(sts, "status", "readyReplicas"), 0)
        return ready if spec_replicas == want else 0

    def deployment_ready(self, name: str) -> int:
        """Ready replicas of Deployment ``name``, ``0`` if absent."""
        d = self.find("Deployment", name)
        return 0 if d is None else _int(_get(d, "status", "readyReplicas"), 0)


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _int(value: Any, default: int) -> int:
    """serde_json's ``as_i64``: integers only (not booleans, not floats)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return default
