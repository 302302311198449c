"""Typed spec model ↔ OpenAPI v3: the single source of truth for the TTSDeployment schema.

The frozen dataclasses in :mod:`spec` carry their documentation, defaults, bounds and CEL rules
as field metadata. This module turns them into the CRD's ``openAPIV3Schema`` and parses API
objects back into the dataclasses, so the CRD YAML and the operator cannot drift apart: the
YAML in ``crds/`` is generated from the model, and a unit test checks it is up to date.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from typing import Any, ClassVar, Protocol, TypeVar, Union

# Free-form Kubernetes objects (affinity, tolerations) that we pass through untouched.
JSON = dict[str, Any]


class SpecError(ValueError):
    """A spec that does not match the model; the API server's schema normally prevents it."""


@dataclass(frozen=True)
class Rule:
    """One CEL ``x-kubernetes-validations`` entry."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def to_openapi(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


IMMUTABLE = Rule("self == oldSelf", "is immutable: changing it would orphan the model caches on the PVCs")


@dataclass(frozen=True)
class Prop:
    """Schema facts about one field that Python's type alone cannot say."""

    doc: str
    name: str | None = None  # JSON name when camelCase of the Python name is wrong
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    max_length: int | None = None
    min_length: int | None = None
    max_properties: int | None = None
    min_items: int | None = None
    max_items: int | None = None
    list_map_keys: tuple[str, ...] | None = None
    rules: tuple[Rule, ...] = ()
    # OpenAPI for each element of a list or value of a map: merged into the generic schema, or
    # replacing it when it names a type (e.g. a typed core/v1 object instead of free-form JSON).
    item_schema: dict[str, Any] | None = None
    # Omit the field's default from the schema (e.g. when the server must not invent a value).
    server_default: bool = True


class _DataclassType(Protocol):
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


D = TypeVar("D", bound=_DataclassType)


def prop(doc: str, default: Any = MISSING, *, factory: Any = MISSING, **facts: Any) -> Any:
    """A dataclass field with schema metadata; ``factory`` for mutable/nested defaults."""
    meta = {"prop": Prop(doc=doc, **facts)}
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if default is not MISSING:
        return dataclasses.field(default=default, metadata=meta)
    return dataclasses.field(metadata=meta)


def opt(doc: str, **facts: Any) -> Any:
    """An optional field: absent from the object unless set."""
    return prop(doc, None, **facts)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def json_name(f: dataclasses.Field[Any]) -> str:
    meta = _prop(f)
    return meta.name or camel(f.name)


def _prop(f: dataclasses.Field[Any]) -> Prop:
    meta = f.metadata.get("prop")
    if not isinstance(meta, Prop):
        raise TypeError(f"field {f.name} has no schema metadata")
    return meta


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not MISSING or f.default_factory is not MISSING


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def _split_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) != len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return Union[tuple(args)], optional  # noqa: UP007 - rebuilding a runtime union
    return tp, False


def _is_int_or_string(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and set(typing.get_args(tp)) == {int, str}


def _type_schema(tp: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return object_schema(tp)
    if _is_int_or_string(tp):
        return {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer", "format": "int32"}
    if tp is float:
        return {"type": "number"}
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is dict and args[0] is str:
        if args[1] is Any:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object", "additionalProperties": _type_schema(args[1])}
    raise TypeError(f"no OpenAPI mapping for {tp!r}")


# Prop attributes copied as-is into the OpenAPI keyword of the same meaning, when set.
_BOUND_KEYWORDS = (
    ("minimum", "minimum"),
    ("maximum", "maximum"),
    ("pattern", "pattern"),
    ("max_length", "maxLength"),
    ("min_length", "minLength"),
    ("max_properties", "maxProperties"),
    ("min_items", "minItems"),
    ("max_items", "maxItems"),
)


def _field_schema(f: dataclasses.Field[Any], tp: Any) -> dict[str, Any]:
    meta = _prop(f)
    inner, _ = _split_optional(tp)
    schema: dict[str, Any] = {"description": meta.doc, **_type_schema(inner)}
    if meta.enum is not None:
        schema["enum"] = list(meta.enum)
    for attribute, keyword in _BOUND_KEYWORDS:
        value = getattr(meta, attribute)
        if value is not None:
            schema[keyword] = value
    if meta.item_schema is not None:
        key = "items" if "items" in schema else "additionalProperties"
        if "type" in meta.item_schema:
            schema[key] = dict(meta.item_schema)
        else:
            schema[key] = {**schema[key], **meta.item_schema}
    if meta.list_map_keys is not None:
        schema["x-kubernetes-list-type"] = "map"
        schema["x-kubernetes-list-map-keys"] = list(meta.list_map_keys)
    if meta.rules:
        schema["x-kubernetes-validations"] = [r.to_openapi() for r in meta.rules]
    if meta.server_default and _has_default(f):
        # Nested objects default to their full default value, not {}: the API server checks
        # defaults against the CEL rules without defaulting inside them first.
        value = dump(_default(f))
        if value is not None:
            schema["default"] = value
    return schema


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Resolving the string annotations is most of a parse otherwise (every pass of a new spec).
    return typing.get_type_hints(cls)


def object_schema(cls: type) -> dict[str, Any]:
    """OpenAPI v3 schema of a spec dataclass, with its class-level CEL rules."""
    hints = _hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        properties[json_name(f)] = _field_schema(f, hints[f.name])
        if not _has_default(f):
            required.append(json_name(f))
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    doc = (cls.__doc__ or "").strip()
    if doc:
        schema["description"] = " ".join(doc.split())
    rules: tuple[Rule, ...] = getattr(cls, "RULES", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.to_openapi() for r in rules]
    return schema


def dump(value: Any) -> Any:
    """JSON form of a model value (camelCase keys, None fields left out)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = dump(getattr(value, f.name))
            if item is not None:
                out[json_name(f)] = item
        return out
    if isinstance(value, tuple | list):
        return [dump(v) for v in value]
    if isinstance(value, Mapping):
        return {k: dump(v) for k, v in value.items()}
    return value


def _parse_value(tp: Any, raw: Any, path: str) -> Any:
    inner, optional = _split_optional(tp)
    if raw is None:
        if optional:
            return None
        raise SpecError(f"{path}: required")
    if dataclasses.is_dataclass(inner) and isinstance(inner, type):
        return parse(inner, raw, path)
    if _is_int_or_string(inner):
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise SpecError(f"{path}: expected integer or string, got {raw!r}")
        return raw
    if inner in (str, bool, int, float):
        if inner is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if not isinstance(raw, inner) or (inner is int and isinstance(raw, bool)):
            raise SpecError(f"{path}: expected {inner.__name__}, got {raw!r}")
        return raw
    origin = typing.get_origin(inner)
    args = typing.get_args(inner)
    if origin is tuple:
        if not isinstance(raw, list | tuple):
            raise SpecError(f"{path}: expected a list")
        return tuple(_parse_value(args[0], item, f"{path}[{i}]") for i, item in enumerate(raw))
    if origin is dict:
        if not isinstance(raw, Mapping):
            raise SpecError(f"{path}: expected an object")
        if args[1] is Any:
            return dict(raw)
        return {str(k): _parse_value(args[1], v, f"{path}.{k}") for k, v in raw.items()}
    raise TypeError(f"cannot parse {inner!r}")


def parse(cls: type[D], raw: Any, path: str = "spec") -> D:
    """Build a frozen spec dataclass from API JSON, filling in the model's defaults."""
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path}: expected an object")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = json_name(f)
        if key in raw and raw[key] is not None:
            kwargs[f.name] = _parse_value(hints[f.name], raw[key], f"{path}.{key}")
        elif not _has_default(f):
            _, optional = _split_optional(hints[f.name])
            if not optional:
                raise SpecError(f"{path}.{key}: required")
            kwargs[f.name] = None
    return cls(**kwargs)
