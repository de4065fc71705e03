"""Kubernetes resource quantities (``1Gi``, ``500m``, ``64Mi``), checked
early so a typo is a validation error naming the field, with the Rust SDK's
rules and message."""

from __future__ import annotations

from typing import Optional

_SUFFIXES = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "", "k", "M", "G", "T", "P", "E")
_UNITS = (
    ("Ki", 1024.0), ("Mi", 1048576.0), ("Gi", 1073741824.0), ("Ti", 1099511627776.0),
    ("Pi", 1125899906842624.0), ("Ei", 1152921504606846976.0), ("n", 1e-9), ("u", 1e-6),
    ("m", 1e-3), ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15), ("E", 1e18),
)


def check(s: str) -> Optional[str]:
    """``None`` if ``s`` is a Kubernetes quantity (``10Gi``, ``1.5``, ``500m``,
    ``1e3``), else a message quoting it and showing valid forms."""
    bad = (
        f"`{s}` is not a Kubernetes quantity; use a number with an optional unit "
        "such as 512Mi, 10Gi or 500m"
    )
    end = len(s)
    for i, c in enumerate(s):
        if not (("0" <= c <= "9") or c == "." or (i == 0 and c == "+")):
            end = i
            break
    number, suffix = s[:end], s[end:]
    number = number.lstrip("+")
    if number in ("", ".") or number.count(".") > 1:
        return bad
    exponent = False
    if suffix[:1] in ("e", "E"):
        e = suffix[1:]
        if e[:1] in ("+", "-"):
            e = e[1:]
        exponent = e != "" and all("0" <= c <= "9" for c in e)
    return None if suffix in _SUFFIXES or exponent else bad


def value(s: str) -> float:
    """The value of quantity ``s`` (``64Mi`` → 67108864.0, ``500m`` → 0.5).
    Raises ``ValueError`` with :func:`check`'s message if it is not one."""
    problem = check(s)
    if problem:
        raise ValueError(problem)
    s = s.lstrip("+")
    for suffix, multiplier in _UNITS:
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * multiplier
    return float(s)
