"""A native harness for plugin unit tests (pytest, no wasm): runs a plugin
through the same :mod:`~atoll_sdk.dispatch` functions the component
exports, and decodes the JSON it produced so tests assert on objects."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Type

from . import dispatch
from .types import Database, Failed, Invalid, PartitionBinding, StatusReport, Violation


class RenderRefused(AssertionError):
    """``render`` returned an error instead of objects."""

    def __init__(self, error: Any):
        super().__init__(repr(error))
        self.error = error


@dataclass
class Objects:
    """A render's output, decoded."""

    objects: List[Dict[str, Any]]
    partitions: List[PartitionBinding]
    #: The objects' JSON text as the plugin wrote it.
    texts: List[str]

    def names(self, kind: str) -> List[str]:
        """Names of the objects of ``kind``, in render order."""
        return [o["metadata"]["name"] for o in self.objects if o.get("kind") == kind]

    def get(self, kind: str, name: str) -> Dict[str, Any]:
        """The object of ``kind`` named ``name``; fails listing what exists."""
        for o in self.objects:
            if o.get("kind") == kind and o.get("metadata", {}).get("name") == name:
                return o
        raise AssertionError(f"no {kind} {name}; have {self.names(kind)}")


def render(plugin: Type[Any], db: Database) -> Objects:
    """Render ``db``; raises :class:`RenderRefused` (with ``.error`` an
    :class:`~atoll_sdk.types.Invalid` or :class:`~atoll_sdk.types.Failed`)."""
    result = dispatch.render(plugin, db)
    if isinstance(result, (Invalid, Failed)):
        raise RenderRefused(result)
    return Objects([json.loads(t) for t in result.objects], result.partitions, result.objects)


def violations(plugin: Type[Any], db: Database) -> List[Violation]:
    """The violations ``plugin`` reports for ``db`` (empty if valid)."""
    return dispatch.validate(plugin, db)


def status(plugin: Type[Any], db: Database, observed: List[Dict[str, Any]]) -> StatusReport:
    """``plugin``'s status over ``observed`` objects."""
    return dispatch.status(plugin, db, [json.dumps(o) for o in observed])


def with_status(obj: Dict[str, Any], status: Dict[str, Any]) -> Dict[str, Any]:
    """``obj`` as the API server would report it with ``status`` set."""
    out = copy.deepcopy(obj)
    out["status"] = status
    return out
