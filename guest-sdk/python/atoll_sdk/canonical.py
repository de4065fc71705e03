"""JSON text exactly as the Rust SDK writes it (serde_json over
k8s-openapi types), so a Python plugin's output is byte-identical to a Rust
plugin's for the same objects.

- :func:`compact` writes a Kubernetes object: no whitespace, keys in
  ascending order, except that an object having ``apiVersion``, ``kind`` and
  ``metadata`` starts with ``apiVersion`` then ``kind`` (k8s-openapi writes
  every type's fields sorted, resources' identity first).
- :func:`pretty` writes a document for humans (a ConfigMap's file), keeping
  the dict's order like serde_json does for a struct: two-space indent.

Strings are escaped as serde_json escapes them (which is what ``json`` does
with ``ensure_ascii=False``). See ``guest-sdk/vectors/README.md``.
"""

from __future__ import annotations

import json
from typing import Any, List

_RESOURCE = ("apiVersion", "kind", "metadata")


def ordered_keys(obj: dict) -> List[str]:
    """The keys of ``obj`` in canonical order."""
    keys = sorted(obj, key=lambda k: k.encode("utf-8"))
    if all(k in obj for k in _RESOURCE):
        keys = ["apiVersion", "kind"] + [k for k in keys if k not in ("apiVersion", "kind")]
    return keys


def compact(value: Any) -> str:
    """``value`` as canonical compact JSON."""
    out: List[str] = []
    _write(value, None, 0, "canonical", out)
    return "".join(out)


def pretty(value: Any, order: str = "kept") -> str:
    """``value`` pretty-printed as serde_json's ``to_string_pretty`` does.
    ``order``: ``"kept"`` (dict order: a Rust struct's field order),
    ``"sorted"`` (a ``serde_json::Value``'s map) or ``"canonical"``."""
    out: List[str] = []
    _write(value, "  ", 0, order, out)
    return "".join(out)


def _string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _write(value: Any, indent: Any, depth: int, order: str, out: List[str]) -> None:
    def newline(d: int) -> None:
        if indent is not None:
            out.append("\n" + indent * d)

    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        raise TypeError("plugins render no floating-point numbers; use an int or a string")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            newline(depth + 1)
            _write(item, indent, depth + 1, order, out)
        newline(depth)
        out.append("]")
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{")
        if order == "canonical":
            keys = ordered_keys(value)
        elif order == "sorted":
            keys = sorted(value, key=lambda k: k.encode("utf-8"))
        else:
            keys = list(value)
        for i, key in enumerate(keys):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys are strings, not {type(key).__name__} ({key!r})")
            if i:
                out.append(",")
            newline(depth + 1)
            out.append(_string(key))
            out.append(": " if indent is not None else ":")
            _write(value[key], indent, depth + 1, order, out)
        newline(depth)
        out.append("}")
    else:
        raise TypeError(f"cannot write a {type(value).__name__} as JSON: {value!r}")
