"""The component glue: the bindings componentize-py generates from
``wit/storage.wit`` (module ``wit_world``, never written by hand) ↔ SDK
types. Imported only when building the component::

    # app.py, the module componentize-py builds
    from atoll_sdk.component import export
    from my_plugin import MyPlugin

    WitWorld = export(MyPlugin)
"""

from __future__ import annotations

from typing import Any, List, Type

from wit_world import WitWorld as _Protocol  # generated at build time
from wit_world.imports import types as wit
from componentize_py_types import Err

from . import dispatch
from .types import Database, Failed, Invalid, Nowhere, Violation, Workload


def _database(db: "wit.Database") -> Database:
    return Database(
        name=db.name,
        partitions=db.partitions,
        namespace=db.namespace,
        uid=db.uid,
        generation=db.generation,
        labels=dict(db.labels),
        config=db.config,
        cluster_domain=db.cluster_domain,
    )


def _violations(vs: List[Violation]) -> List["wit.Violation"]:
    return [wit.Violation(v.field, v.message) for v in vs]


def _placement(p: Any) -> Any:
    if isinstance(p, Nowhere):
        return wit.Placement_Nowhere()
    if isinstance(p, Workload):
        return wit.Placement_Workload(wit.WorkloadRef(p.kind, p.name))
    raise TypeError(f"a placement is NOWHERE or a Workload, not {p!r}")


def export(plugin: Type[Any]) -> type:
    """The ``WitWorld`` class componentize-py exports for ``plugin``."""

    class WitWorld(_Protocol):
        def metadata(self) -> "wit.Metadata":
            m = dispatch.metadata(plugin)
            return wit.Metadata(m.name, m.version, m.description, m.config_schema)

        def validate(self, db: "wit.Database") -> None:
            violations = dispatch.validate(plugin, _database(db))
            if violations:
                raise Err(_violations(violations))

        def render(self, db: "wit.Database") -> "wit.Rendered":
            result = dispatch.render(plugin, _database(db))
            if isinstance(result, Invalid):
                raise Err(wit.RenderError_Invalid(_violations(result.violations)))
            if isinstance(result, Failed):
                raise Err(wit.RenderError_Failed(result.message))
            bindings = [
                wit.PartitionBinding(b.partition, b.service, b.port, _placement(b.placement))
                for b in result.partitions
            ]
            return wit.Rendered(result.objects, bindings)

        def status(self, db: "wit.Database", observed: List[str]) -> "wit.StatusReport":
            r = dispatch.status(plugin, _database(db), observed)
            return wit.StatusReport(list(r.ready_partitions), list(r.available_partitions), r.message)

    return WitWorld
