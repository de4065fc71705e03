"""``spec.storage.config``: parsed into a dataclass with serde's rules and
messages, and described as the JSON Schema schemars derives for the same
Rust type, so a Python plugin validates and documents its config exactly as
a Rust one does.

A config type is a dataclass whose every field has a default (the Rust
``#[serde(default)]`` on the struct) or none (required); JSON names are the
camelCase of the field names; unknown fields are refused. Field types:
``str``, ``bool``, :class:`u32`/:class:`u16`/:class:`i32`/:class:`i64`
(plain ``int`` is ``i64``), ``Optional[T]``, ``List[T]``, ``Dict[str, T]``,
an ``Enum`` with string values, or another config dataclass. Document a
field with :func:`option` (the text becomes its schema description).

>>> from dataclasses import dataclass
>>> @dataclass
... class Config:
...     \"\"\"My plugin's config.\"\"\"
...     replicas: u32 = option(3, "How many replicas.")
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import typing
from typing import Any, Dict, List, Tuple

from .types import Database, Violation


class u32(int):
    """An unsigned 32-bit integer field (Rust ``u32``)."""

    lo, hi, fmt = 0, 2**32 - 1, "uint32"


class u16(int):
    """An unsigned 16-bit integer field (Rust ``u16``)."""

    lo, hi, fmt = 0, 2**16 - 1, "uint16"


class i32(int):
    """A signed 32-bit integer field (Rust ``i32``)."""

    lo, hi, fmt = -(2**31), 2**31 - 1, "int32"


class i64(int):
    """A signed 64-bit integer field (Rust ``i64``)."""

    lo, hi, fmt = -(2**63), 2**63 - 1, "int64"


def option(default: Any = dataclasses.MISSING, doc: str = "", **kw: Any) -> Any:
    """A config field with a default (a dict, list or dataclass default is
    copied per instance) and a description for the schema."""
    meta = {"doc": doc}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta, **kw)
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        import copy

        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


class ConfigError(Exception):
    """The config does not decode; ``path`` is the field (``a.b[0]``)."""

    def __init__(self, path: List[str], message: str):
        super().__init__(message)
        self.path = path
        self.message = message

    def field(self) -> str:
        out = ""
        for seg in self.path:
            out += seg if seg.startswith("[") or not out else "." + seg
        return out


def camel(name: str) -> str:
    """``partitions_per_node`` → ``partitionsPerNode`` (serde's camelCase)."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def parse_config(cls: type, db: Database) -> Any:
    """Parse ``db.config`` into ``cls``; absent, empty or ``null`` config is
    ``{}``. Raises :class:`ConfigError` naming the field;
    :func:`parse_or_violation` turns it into a :class:`Violation`."""
    text = db.config.strip()
    if text in ("", "null"):
        text = "{}"
    value = json.loads(text, object_pairs_hook=_Pairs)
    return _decode(cls, value, [])


def parse_or_violation(cls: type, db: Database) -> Tuple[Any, List[Violation]]:
    """``(config, [])`` or ``(None, [violation naming the field])``."""
    try:
        return parse_config(cls, db), []
    except ConfigError as e:
        return None, [Violation.config(e.field(), e.message)]


class _Pairs(list):
    """A JSON object with its entries in document order (duplicates kept)."""


def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _rust_str(s: str) -> str:
    """``s`` as Rust's ``{:?}`` writes it (serde quotes strings that way)."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\0")
        elif code < 0x20 or code == 0x7F:
            out.append("\\u{%x}" % code)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _unexpected(value: Any) -> str:
    """serde's ``Unexpected`` for a JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        text = repr(value)
        if value.is_integer() and abs(value) < 1e16:
            text = f"{int(value)}.0"
        return f"floating point `{text}`"
    if isinstance(value, str):
        return f"string {_rust_str(value)}"
    if isinstance(value, list) and not isinstance(value, _Pairs):
        return "sequence"
    return "map"


def _expecting(tp: Any) -> str:
    """What serde says it expected for type ``tp``."""
    origin = typing.get_origin(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "a boolean"
    if isinstance(tp, type) and issubclass(tp, int) and hasattr(tp, "fmt"):
        return {"uint32": "u32", "uint16": "u16", "int32": "i32", "int64": "i64"}[tp.fmt]
    if tp is int:
        return "i64"
    if origin in (list, List):
        return "a sequence"
    if origin in (dict, Dict):
        return "a map"
    if dataclasses.is_dataclass(tp):
        return f"struct {tp.__name__}"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return f"enum {tp.__name__}"
    return "a value"


def _invalid_type(value: Any, tp: Any, path: List[str]) -> ConfigError:
    return ConfigError(path, f"invalid type: {_unexpected(value)}, expected {_expecting(tp)}")


def _decode(tp: Any, value: Any, path: List[str]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return None if value is None else _decode(inner, value, path)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _invalid_type(value, tp, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _invalid_type(value, tp, path)
    if tp is int or (isinstance(tp, type) and issubclass(tp, int) and hasattr(tp, "fmt")):
        lo, hi = (getattr(tp, "lo", i64.lo), getattr(tp, "hi", i64.hi))
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid_type(value, tp, path)
        if not lo <= value <= hi:
            raise ConfigError(path, f"invalid value: {_unexpected(value)}, expected {_expecting(tp)}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if not isinstance(value, str):
            # serde_json reads a unit enum only from a string and says this
            # of anything else.
            raise ConfigError(path, "expected value")
        for member in tp:
            if member.value == value:
                return member
        names = ", ".join(f"`{m.value}`" for m in tp)
        raise ConfigError(path, f"unknown variant `{value}`, expected one of {names}")
    if origin in (list, List):
        if not isinstance(value, list) or isinstance(value, _Pairs):
            raise _invalid_type(value, tp, path)
        return [_decode(args[0], v, path + [f"[{i}]"]) for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, _Pairs):
            raise _invalid_type(value, tp, path)
        out = {}
        for k, v in value:
            out[k] = _decode(args[1], v, path + [k])
        return dict(sorted(out.items(), key=lambda kv: kv[0].encode()))
    if dataclasses.is_dataclass(tp):
        return _decode_struct(tp, value, path)
    raise TypeError(f"config field type {tp!r} is not supported")


def _decode_struct(cls: type, value: Any, path: List[str]) -> Any:
    if isinstance(value, list) and not isinstance(value, _Pairs):
        return _decode_struct_seq(cls, value, path)
    if not isinstance(value, _Pairs):
        raise _invalid_type(value, cls, path)
    hints = _hints(cls)
    fields = {camel(f.name): f for f in dataclasses.fields(cls)}
    seen: Dict[str, Any] = {}
    for key, v in value:
        f = fields.get(key)
        if f is None:
            names = list(fields)
            if not names:
                expected = "there are no fields"
            elif len(names) == 1:
                expected = f"expected `{names[0]}`"
            elif len(names) == 2:
                expected = f"expected `{names[0]}` or `{names[1]}`"
            else:
                expected = "expected one of " + ", ".join(f"`{n}`" for n in names)
            raise ConfigError(path + [key], f"unknown field `{key}`, {expected}")
        if key in seen:
            raise ConfigError(path, f"duplicate field `{key}`")
        seen[key] = _decode(hints[f.name], v, path + [key])
    kwargs = {}
    for key, f in fields.items():
        if key in seen:
            kwargs[f.name] = seen[key]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if typing.get_origin(hints[f.name]) is typing.Union:
                kwargs[f.name] = None  # serde: a missing Option is None
            else:
                raise ConfigError(path, f"missing field `{key}`")
    return cls(**kwargs)


def _decode_struct_seq(cls: type, value: list, path: List[str]) -> Any:
    """serde also reads a struct from a sequence: its fields in order, absent
    ones defaulted (so ``[2]`` is ``{"partitionsPerNode": 2}`` for cache)."""
    hints = _hints(cls)
    fields = dataclasses.fields(cls)
    kwargs = {}
    for i, f in enumerate(fields):
        if i < len(value):
            kwargs[f.name] = _decode(hints[f.name], value[i], path + [f"[{i}]"])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(
                path, f"invalid length {len(value)}, expected struct {cls.__name__} with {len(fields)} elements"
            )
    if len(value) > len(fields):
        raise ConfigError(path, "trailing characters")
    return cls(**kwargs)


# ---------------------------------------------------------------- schema


def config_schema(cls: type) -> str:
    """The JSON Schema of config type ``cls`` as JSON text, in the shape and
    bytes schemars writes for the equivalent Rust type."""
    defs: Dict[str, Any] = {}
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": cls.__name__}
    schema.update(_struct_schema(cls, defs))
    if defs:
        schema["$defs"] = defs
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _doc(cls: type) -> str:
    doc = cls.__dict__.get("__doc__")
    if not doc or (dataclasses.is_dataclass(cls) and doc.startswith(cls.__name__ + "(")):
        return ""
    return inspect.cleandoc(doc)


def _struct_schema(cls: type, defs: Dict[str, Any]) -> Dict[str, Any]:
    hints = _hints(cls)
    props: Dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        s = _type_schema(hints[f.name], defs)
        if f.metadata.get("doc"):
            s["description"] = f.metadata["doc"]
        if f.default is not dataclasses.MISSING:
            s["default"] = to_json(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            s["default"] = to_json(f.default_factory())
        elif typing.get_origin(hints[f.name]) is not typing.Union:
            required.append(camel(f.name))
        props[camel(f.name)] = s
    out: Dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    doc = _doc(cls)
    if doc:
        out["description"] = doc
    return out


def _type_schema(tp: Any, defs: Dict[str, Any]) -> Dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        inner = _type_schema(next(a for a in args if a is not type(None)), defs)
        if isinstance(inner.get("type"), str):
            inner["type"] = [inner["type"], "null"]
            return inner
        return {"anyOf": [inner, {"type": "null"}]}
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if isinstance(tp, type) and issubclass(tp, int) and hasattr(tp, "fmt"):
        s = {"type": "integer", "format": tp.fmt}
        if tp.lo == 0:
            s["minimum"] = 0
        return s
    if tp is int:
        return {"type": "integer", "format": "int64"}
    if origin in (list, List):
        return {"type": "array", "items": _type_schema(args[0], defs)}
    if origin in (dict, Dict):
        return {"type": "object", "additionalProperties": _type_schema(args[1], defs)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if tp.__name__ not in defs:
            d: Dict[str, Any] = {"type": "string", "enum": [m.value for m in tp]}
            if _doc(tp):
                d["description"] = _doc(tp)
            defs[tp.__name__] = d
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if dataclasses.is_dataclass(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}
            defs[tp.__name__] = _struct_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    raise TypeError(f"config field type {tp!r} is not supported")


def to_json(value: Any) -> Any:
    """A config value as serde would serialize it (for schema defaults)."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {camel(f.name): to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value
