"""The four contract functions over plain Python types. The component
exports (:mod:`atoll_sdk.component`) and the native harness
(:mod:`atoll_sdk.testing`) both go through these, so a native test runs the
code the component runs: config parsing, checks, JSON encoding."""

from __future__ import annotations

from typing import Any, List, Tuple, Type, Union

from .config import config_schema, parse_or_violation
from .output import Observed, Output
from .types import Database, Failed, Invalid, Metadata, Rendered, RenderFailed, StatusReport, Violation


def metadata(plugin: Type[Any]) -> Metadata:
    """``metadata()``."""
    return Metadata(plugin.NAME, plugin.VERSION, plugin.DESCRIPTION, config_schema(plugin.Config))


def _parsed(plugin: Type[Any], db: Database) -> Tuple[Any, List[Violation]]:
    config, violations = parse_or_violation(plugin.Config, db)
    if violations:
        return None, violations
    if db.partitions == 0:
        violations.append(Violation.spec("partitions", "must be at least 1"))
    violations.extend(plugin.check(db, config))
    return (None, violations) if violations else (config, [])


def validate(plugin: Type[Any], db: Database) -> List[Violation]:
    """``validate(db)``: config parsing plus ``check``; empty when valid."""
    return _parsed(plugin, db)[1]


def render(plugin: Type[Any], db: Database) -> Union[Rendered, Invalid, Failed]:
    """``render(db)``: refuses an invalid Database before rendering anything."""
    config, violations = _parsed(plugin, db)
    if violations:
        return Invalid(violations)
    out = Output()
    try:
        plugin.render(db, config, out)
    except RenderFailed as e:
        return Failed(str(e))
    return out.finish()


def status(plugin: Type[Any], db: Database, observed: List[str]) -> StatusReport:
    """``status(db, observed)``: with an invalid config, nothing is ready."""
    config, violations = _parsed(plugin, db)
    if violations:
        return StatusReport([], [], "invalid config: " + "; ".join(str(v) for v in violations))
    return plugin.status(db, config, Observed.parse(observed))
