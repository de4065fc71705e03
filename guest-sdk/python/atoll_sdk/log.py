"""Structured logging to the host: in a component, lines go to the host's
``log`` import (tagged with the plugin's name); natively, to stderr."""

from __future__ import annotations

import sys

from .types import Level


def log(level: Level, message: str) -> None:
    """Write one log line."""
    try:
        from wit_world.imports import host, types  # only inside the component
    except ImportError:
        print(f"[{level.name.title()}] {message}", file=sys.stderr)
        return
    host.log(types.Level(level.value), message)


def info(message: str) -> None:
    log(Level.INFO, message)


def warn(message: str) -> None:
    log(Level.WARN, message)


def debug(message: str) -> None:
    log(Level.DEBUG, message)
