"""Typed builders for the objects storage plugins emit, mirroring the Rust
SDK's ``atoll_guest::k8s``: the same objects, field for field, so a Python
plugin renders byte-identical JSON (see :mod:`atoll_sdk.canonical`).

Builders return plain dicts (the Kubernetes JSON shape); push them into an
:class:`~atoll_sdk.Output`. They set only what a plugin asked for plus the
Rust SDK's defaults; the host adds namespace, owner references and atoll's
labels. Every container passes through :meth:`ContainerBuilder.build`, every
pod through :meth:`PodBuilder.build` and every workload through
:meth:`StatefulSetBuilder.build` or :func:`deployment`: defaults that the
Rust SDK gains (a security context) belong there, once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from . import quantity
from .config import option
from .types import Violation

Labels = Dict[str, str]
Obj = Dict[str, Any]


def labels(pairs: Iterable[Tuple[str, str]]) -> Labels:
    """A label map from pairs."""
    return {k: v for k, v in pairs}


def meta(name: str, labels: Labels) -> Obj:
    """``metadata`` with a name and labels; namespace and owner are the host's job."""
    return {"name": name, "labels": dict(labels)}


def selector(labels: Labels) -> Obj:
    """A ``LabelSelector`` matching ``labels``."""
    return {"matchLabels": dict(labels)}


class PullPolicy(enum.Enum):
    """`imagePullPolicy`, as users write it in config."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


@dataclass
class Resources:
    """Container `resources` as users write them in config: quantities by
    resource name, e.g. `requests: {cpu: 500m, memory: 1Gi}`."""

    requests: Dict[str, str] = option({})
    limits: Dict[str, str] = option({})

    def check(self, path: str) -> List[Violation]:
        """Violations for quantities that are not Kubernetes quantities;
        ``path`` is the config path of this field, e.g. ``resources``."""
        out = []
        for kind, m in (("requests", self.requests), ("limits", self.limits)):
            for name in sorted(m, key=str.encode):
                problem = quantity.check(m[name])
                if problem:
                    out.append(Violation.config(f"{path}.{kind}.{name}", problem))
        return out

    def to_k8s(self) -> Optional[Obj]:
        """``ResourceRequirements``, or ``None`` when nothing is set."""
        if not self.requests and not self.limits:
            return None
        out: Obj = {}
        if self.requests:
            out["requests"] = dict(self.requests)
        if self.limits:
            out["limits"] = dict(self.limits)
        return out


DEFAULT_USER = 1000
"""The user (and group) pods run as unless ``PodBuilder.run_as`` says
otherwise, as in the Rust SDK: pods meet Pod Security ``restricted``."""


def _restricted_container() -> Obj:
    """A container's ``restricted`` security context: non-root, no privilege
    escalation, no capabilities, the runtime's seccomp profile."""
    return {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


@dataclass
class ContainerBuilder:
    """Builds a ``Container`` running ``image``, ``restricted`` by default."""

    name: str
    image: str
    _c: Obj = field(default_factory=dict, repr=False)

    def pull_policy(self, policy: PullPolicy) -> "ContainerBuilder":
        self._c["imagePullPolicy"] = policy.value
        return self

    def command(self, command: Iterable[str]) -> "ContainerBuilder":
        self._c["command"] = list(command)
        return self

    def args(self, args: Iterable[str]) -> "ContainerBuilder":
        self._c["args"] = list(args)
        return self

    def port(self, name: str, port: int) -> "ContainerBuilder":
        """A named TCP port."""
        self._c.setdefault("ports", []).append({"name": name, "containerPort": port, "protocol": "TCP"})
        return self

    def env(self, name: str, value: str) -> "ContainerBuilder":
        """An environment variable with a literal value."""
        self._c.setdefault("env", []).append({"name": name, "value": value})
        return self

    def env_from_field(self, name: str, field_path: str) -> "ContainerBuilder":
        """An environment variable from the pod's own fields, e.g. ``metadata.name``."""
        self._c.setdefault("env", []).append(
            {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}
        )
        return self

    def mount(self, volume: str, path: str, read_only: bool = False) -> "ContainerBuilder":
        """Mount volume ``volume`` at ``path``."""
        mount: Obj = {"name": volume, "mountPath": path}
        if read_only:
            mount["readOnly"] = True
        self._c.setdefault("volumeMounts", []).append(mount)
        return self

    def readiness(self, probe: Obj) -> "ContainerBuilder":
        self._c["readinessProbe"] = probe
        return self

    def liveness(self, probe: Obj) -> "ContainerBuilder":
        self._c["livenessProbe"] = probe
        return self

    def resources(self, resources: Resources) -> "ContainerBuilder":
        r = resources.to_k8s()
        if r is None:
            self._c.pop("resources", None)
        else:
            self._c["resources"] = r
        return self

    def build(self) -> Obj:
        return {"name": self.name, "image": self.image, "securityContext": _restricted_container(), **self._c}


def _probe(action: Tuple[str, Obj], initial_delay_seconds: int, period_seconds: int) -> Obj:
    return {
        action[0]: action[1],
        "initialDelaySeconds": initial_delay_seconds,
        "periodSeconds": period_seconds,
        "failureThreshold": 3,
    }


def tcp_probe(port: str, initial_delay_seconds: int, period_seconds: int) -> Obj:
    """A probe that succeeds when the named port accepts TCP connections."""
    return _probe(("tcpSocket", {"port": port}), initial_delay_seconds, period_seconds)


def exec_probe(command: Iterable[str], initial_delay_seconds: int, period_seconds: int) -> Obj:
    """A probe that runs ``command`` in the container."""
    return _probe(("exec", {"command": list(command)}), initial_delay_seconds, period_seconds)


def anti_affinity(selector_labels: Labels, topology_key: str, required: bool) -> Obj:
    """Spread pods matching ``selector_labels`` across ``topology_key``
    domains; ``required`` makes it a scheduling constraint, not a preference."""
    term = {"labelSelector": selector(selector_labels), "topologyKey": topology_key}
    if required:
        anti = {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    else:
        anti = {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]}
    return {"podAntiAffinity": anti}


@dataclass
class PodBuilder:
    """Builds the pod template shared by StatefulSets and Deployments; pods
    carry ``labels`` (which must include the workload's selector)."""

    labels: Labels
    _spec: Obj = field(default_factory=lambda: {"containers": [], "automountServiceAccountToken": False}, repr=False)
    _user: Tuple[int, int] = field(default=(DEFAULT_USER, DEFAULT_USER), repr=False)

    def run_as(self, uid: int, gid: int) -> "PodBuilder":
        """Run as ``uid``:``gid`` (non-zero), the user an image's files belong
        to; volumes get group ``gid``."""
        self._user = (uid, gid)
        return self

    def container(self, container: Obj) -> "PodBuilder":
        self._spec["containers"].append(container)
        return self

    def config_map_volume(self, name: str, config_map: str) -> "PodBuilder":
        """Volume ``name`` holding ConfigMap ``config_map``'s keys as files."""
        self._spec.setdefault("volumes", []).append({"name": name, "configMap": {"name": config_map}})
        return self

    def empty_dir_volume(self, name: str) -> "PodBuilder":
        """Volume ``name`` that lives as long as the pod."""
        self._spec.setdefault("volumes", []).append({"name": name, "emptyDir": {}})
        return self

    def affinity(self, affinity: Obj) -> "PodBuilder":
        self._spec["affinity"] = affinity
        return self

    def termination_grace_period(self, seconds: int) -> "PodBuilder":
        """Grace period for shutdown, so replicas can leave a quorum cleanly."""
        self._spec["terminationGracePeriodSeconds"] = seconds
        return self

    def build(self) -> Obj:
        uid, gid = self._user
        # On each container too, so a Database's spec.pod.securityContext
        # (which replaces the pod's) leaves the user in place.
        for container in self._spec["containers"]:
            context = container.setdefault("securityContext", {})
            context.setdefault("runAsUser", uid)
            context.setdefault("runAsGroup", gid)
        spec = dict(self._spec)
        spec["securityContext"] = {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "fsGroup": gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        return {"metadata": {"labels": dict(self.labels)}, "spec": spec}


def statefulset_strategy() -> Obj:
    """``RollingUpdate`` over every ordinal (``partition: 0``), one pod at a time."""
    return {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}


def deployment_strategy() -> Obj:
    """``RollingUpdate`` with ``maxUnavailable: 0`` and ``maxSurge: 1``."""
    return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


@dataclass
class StatefulSetBuilder:
    """A StatefulSet with parallel pod management, rolling updates one pod at
    a time and PVCs retained on deletion and scale-down, governed by headless
    Service ``service_name``."""

    name: str
    selector: Labels
    service_name: str
    pod: Obj
    _replicas: int = 1
    _claims: List[Obj] = field(default_factory=list, repr=False)

    def replicas(self, replicas: int) -> "StatefulSetBuilder":
        self._replicas = replicas
        return self

    def volume_claim(self, claim: Obj) -> "StatefulSetBuilder":
        """A PersistentVolumeClaim template, one claim per replica."""
        self._claims.append(claim)
        return self

    def build(self) -> Obj:
        spec: Obj = {
            "replicas": self._replicas,
            "selector": selector(self.selector),
            "serviceName": self.service_name,
            "podManagementPolicy": "Parallel",
            "updateStrategy": statefulset_strategy(),
            "template": self.pod,
        }
        if self._claims:
            spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Retain", "whenScaled": "Retain"}
            spec["volumeClaimTemplates"] = list(self._claims)
        return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta(self.name, self.selector), "spec": spec}


def deployment(name: str, selector_labels: Labels, replicas: int, pod: Obj) -> Obj:
    """A Deployment of ``replicas`` stateless pods, rolled out surge-first."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name, selector_labels),
        "spec": {
            "replicas": replicas,
            "selector": selector(selector_labels),
            "template": pod,
            "strategy": deployment_strategy(),
        },
    }


@dataclass
class ServiceBuilder:
    """Service ``name`` routing to pods matching ``selector``; the Service
    carries the selector labels too."""

    name: str
    selector: Labels
    _labels: Labels = field(default_factory=dict, repr=False)
    _ports: List[Obj] = field(default_factory=list, repr=False)
    _headless: bool = False

    def label(self, key: str, value: str) -> "ServiceBuilder":
        """An extra label on the Service itself (not part of the selector)."""
        self._labels[key] = str(value)
        return self

    def port(self, name: str, port: int) -> "ServiceBuilder":
        """A TCP port forwarding to the pods' port of the same name."""
        self._ports.append({"name": name, "port": port, "targetPort": name, "protocol": "TCP"})
        return self

    def headless(self) -> "ServiceBuilder":
        """Headless (``clusterIP: None``) and publishing not-ready addresses,
        so replicas find each other by DNS before they are ready."""
        self._headless = True
        return self

    def build(self) -> Obj:
        spec: Obj = {"selector": dict(self.selector), "ports": list(self._ports)}
        if self._headless:
            spec["clusterIP"] = "None"
            spec["publishNotReadyAddresses"] = True
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(self.name, {**self.selector, **self._labels}),
            "spec": spec,
        }


def config_map(name: str, labels: Labels, data: Iterable[Tuple[str, str]]) -> Obj:
    """A ConfigMap holding ``data`` (file name → contents)."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(name, labels), "data": dict(data)}


def pod_disruption_budget(name: str, selector_labels: Labels, min_available: int) -> Obj:
    """Keep at least ``min_available`` pods matching the selector up during
    voluntary disruptions."""
    return _budget(name, selector_labels, {"minAvailable": min_available})


def pod_disruption_budget_max_unavailable(name: str, selector_labels: Labels, max_unavailable: int) -> Obj:
    """Let at most ``max_unavailable`` pods matching the selector be down at once."""
    return _budget(name, selector_labels, {"maxUnavailable": max_unavailable})


def _budget(name: str, selector_labels: Labels, spec: Obj) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(name, selector_labels),
        "spec": {**spec, "selector": selector(selector_labels)},
    }


def volume_claim(name: str, size: str, storage_class: Optional[str] = None) -> Obj:
    """A ReadWriteOnce PersistentVolumeClaim template requesting ``size``, in
    ``storage_class`` or the cluster default."""
    spec: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec}


@dataclass
class VolumeClaimConfig:
    """`volumeClaimTemplate` as users write it in config."""

    size: str = option(doc="Requested size, a Kubernetes quantity such as `10Gi`.")
    storage_class_name: Optional[str] = option(None, "StorageClass name; the cluster default when absent.")

    def check(self, path: str) -> List[Violation]:
        """Violations of this field at config path ``path``."""
        problem = quantity.check(self.size)
        return [Violation.config(f"{path}.size", problem)] if problem else []

    def claim(self, name: str) -> Obj:
        """The claim template named ``name``."""
        return volume_claim(name, self.size, self.storage_class_name)
