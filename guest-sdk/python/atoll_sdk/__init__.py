"""The atoll guest SDK for Python: write a storage plugin as a plain class,
build it as a WebAssembly component with componentize-py, and unit-test it
natively with pytest.

A plugin is a class with ``NAME``, ``VERSION``, ``DESCRIPTION``, a config
dataclass ``Config`` and three static methods, mirroring the Rust SDK's
``Plugin`` trait::

    class Echo(Plugin):
        NAME, VERSION, DESCRIPTION = "echo", "0.1.0", "A Service per partition."
        Config = EchoConfig

        @staticmethod
        def render(db, config, out): ...
        @staticmethod
        def status(db, config, observed): ...

Guarantees, as in Rust: ``render`` and ``status`` only see a config that
parsed (unknown fields refused) and passed ``check``; every violation's
field is rooted at the Database (``spec.storage.config.…``); objects are
written as the Rust SDK writes them, byte for byte.
"""

from __future__ import annotations

from typing import Any, List

from .config import i32, i64, option, u16, u32
from .output import Observed, Output
from .types import (
    NOWHERE,
    Database,
    Failed,
    Invalid,
    Level,
    Metadata,
    Nowhere,
    PartitionBinding,
    Placement,
    Rendered,
    RenderFailed,
    StatusReport,
    Violation,
    Workload,
    statefulset,
)


class Plugin:
    """Base class of a storage plugin: domain logic only. The SDK does config
    parsing, JSON encoding and the component ABI."""

    #: The name Databases use in ``spec.storage.plugin``.
    NAME: str = ""
    #: Semantic version of the plugin.
    VERSION: str = "0.0.0"
    #: One line for humans.
    DESCRIPTION: str = ""
    #: The config dataclass (``spec.storage.config``).
    Config: Any = None

    @staticmethod
    def check(db: Database, config: Any) -> List[Violation]:
        """Checks beyond what the config type expresses (ranges, relations);
        return every violation, not just the first."""
        return []

    @staticmethod
    def render(db: Database, config: Any, out: Output) -> None:
        """Push the desired objects and one binding per partition. Raise
        :class:`RenderFailed` when the Database cannot be rendered."""
        raise NotImplementedError

    @staticmethod
    def status(db: Database, config: Any, observed: Observed) -> StatusReport:
        """Which partitions are ready, judged from the observed objects."""
        raise NotImplementedError


__all__ = [
    "NOWHERE", "Database", "Failed", "Invalid", "Level", "Metadata", "Nowhere", "Observed", "Output",
    "PartitionBinding", "Placement", "Plugin", "Rendered", "RenderFailed", "StatusReport", "Violation",
    "Workload", "i32", "i64", "option", "statefulset", "u16", "u32",
]
