"""A small type system for JSON bodies, written once as data: request validation and JSON Schema both come
from it.

A `Model` is a list of `Field`s, each with a type built from a few small classes (`Str`, `Int`, `Num`, `Bool`,
`Obj`, `ListOf`, `MapOf`, `Ref`, `OneOf`, `NdArrayT`). `validate(model, value)` checks a request body the way a
Jina HTTP gateway's pydantic (v1) models do, and answers with the cleaned value or a list of FastAPI-style
errors (`{"loc": ["body", "data", 0, "text"], "msg": "str type expected", "type": "type_error.str"}`) that name
the field; `Model.schema()` gives the JSON Schema (2020-12) of the same definition. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

UINT32_MAX = 2**32 - 1
SCHEMA_PREFIX = "#/components/schemas/"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# ---- types ---------------------------------------------------------------------------------------


Error = dict[str, Any]
Loc = tuple[str | int, ...]


def _error(loc: Loc, msg: str, type_: str, **ctx: Any) -> Error:
    out: Error = {"loc": list(loc), "msg": msg, "type": type_}
    if ctx:
        out["ctx"] = ctx
    return out


class Type:
    """A value's type: checks (and cleans) a value, and describes itself as JSON Schema."""

    json_type: str = ""  # the JSON type a value must have for this type ("" for several)

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def nullable_schema(self) -> dict[str, Any]:
        s = self.schema()
        t = s.get("type")
        if isinstance(t, str):
            return {**s, "type": [t, "null"]}
        if "anyOf" in s:
            return {**s, "anyOf": [*s["anyOf"], {"type": "null"}]}
        if "$ref" in s:
            return {"anyOf": [s, {"type": "null"}]}
        return s  # already admits null (any value)


@dataclass(frozen=True)
class Str(Type):
    """A string; numbers are taken as their text (as pydantic v1 and the WebSocket door do)."""

    format: str | None = None
    content_encoding: str | None = None
    json_type = "string"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        errors.append(_error(loc, "str type expected", "type_error.str"))
        return None

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "string"}
        if self.format:
            s["format"] = self.format
        if self.content_encoding:
            s["contentEncoding"] = self.content_encoding
        return s


# What base64.b64decode(validate=True) accepts: the alphabet, in groups of four, padded.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


@dataclass(frozen=True)
class Base64(Str):
    """A base64 string (a document's `blob`)."""

    content_encoding: str | None = "base64"

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "pattern": BASE64_PATTERN}

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if not isinstance(value, str):
            errors.append(_error(loc, "str type expected", "type_error.str"))
            return None
        import base64
        import binascii

        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            errors.append(_error(loc, "value is not valid base64", "value_error.base64"))
            return None
        return value


@dataclass(frozen=True)
class Int(Type):
    minimum: int | None = None
    maximum: int | None = None
    json_type = "integer"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(_error(loc, "value is not a valid integer", "type_error.integer"))
            return None
        if isinstance(value, float):
            if not value.is_integer():
                errors.append(_error(loc, "value is not a valid integer", "type_error.integer"))
                return None
            value = int(value)
        if self.minimum is not None and value < self.minimum:
            errors.append(
                _error(
                    loc,
                    f"ensure this value is greater than or equal to {self.minimum}",
                    "value_error.number.not_ge",
                    limit_value=self.minimum,
                )
            )
            return None
        if self.maximum is not None and value > self.maximum:
            errors.append(
                _error(
                    loc,
                    f"ensure this value is less than or equal to {self.maximum}",
                    "value_error.number.not_le",
                    limit_value=self.maximum,
                )
            )
            return None
        return value

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            s["minimum"] = self.minimum
        if self.maximum is not None:
            s["maximum"] = self.maximum
        return s


@dataclass(frozen=True)
class Num(Type):
    json_type = "number"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        errors.append(_error(loc, "value is not a valid float", "type_error.float"))
        return None

    def schema(self) -> dict[str, Any]:
        return {"type": "number"}


@dataclass(frozen=True)
class Enum(Type):
    """One of a few integers (a status code)."""

    values: tuple[int, ...] = ()
    json_type = "integer"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if value not in self.values or isinstance(value, bool):
            allowed = ", ".join(str(v) for v in self.values)
            msg = f"value is not a valid enumeration member; permitted: {allowed}"
            errors.append(_error(loc, msg, "type_error.enum"))
            return None
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "enum": list(self.values)}


@dataclass(frozen=True)
class Obj(Type):
    """A free-form JSON object (`parameters`, `tags`)."""

    json_type = "object"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if not isinstance(value, dict):
            errors.append(_error(loc, "value is not a valid dict", "type_error.dict"))
            return None
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": True}


@dataclass(frozen=True)
class ListOf(Type):
    item: Type
    json_type = "array"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if not isinstance(value, list):
            errors.append(_error(loc, "value is not a valid list", "type_error.list"))
            return None
        item = self.item
        return [item.check(v, (*loc, i), errors) for i, v in enumerate(value)]

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.item.schema()}


@dataclass(frozen=True)
class MapOf(Type):
    value: Type
    json_type = "object"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if not isinstance(value, dict):
            errors.append(_error(loc, "value is not a valid dict", "type_error.dict"))
            return None
        inner = self.value
        return {k: inner.check(v, (*loc, k), errors) for k, v in value.items()}

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": self.value.schema()}


# Models by name, for `Ref` to look up: filled by the module that defines them (relay.doors.openapi.models).
MODELS: dict[str, Model] = {}


@dataclass(frozen=True)
class Ref(Type):
    """Another model, by name (models may refer to themselves: a Document's chunks are Documents)."""

    name: str
    json_type = "object"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        return MODELS[self.name].check(value, loc, errors)

    def schema(self) -> dict[str, Any]:
        return {"$ref": SCHEMA_PREFIX + self.name}


@dataclass(frozen=True)
class OneOf(Type):
    """One of several types that differ in their JSON type (`data`: a list of documents, or `{"docs": [...]}`).
    A value is checked against the option of its JSON type only, so errors point inside it; a value of no
    option's type gets every option's type error, as pydantic reports a Union."""

    options: tuple[Type, ...]

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        kind = _json_type(value)
        for option in self.options:
            if option.json_type == kind:
                return option.check(value, loc, errors)
        for option in self.options:
            option.check(value, loc, errors)
        return None

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [o.schema() for o in self.options]}


@dataclass(frozen=True)
class NdArrayT(Type):
    """An array as JSON carries it: a number, or a list (nested for more dimensions) of numbers or booleans,
    rectangular. Checked here for types and shape, so that the error names the field."""

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if _is_number(value):
            return value
        if not isinstance(value, list):
            errors.append(_error(loc, "value is not a valid list", "type_error.list"))
            return None
        shape: list[int] = []
        probe: Any = value
        while isinstance(probe, list):
            shape.append(len(probe))
            if not probe:
                break
            probe = probe[0]
        # Iterative walk: every leaf at the same depth, every list at a depth of the length its shape says.
        stack: list[tuple[Any, int]] = [(value, 0)]
        while stack:
            node, depth = stack.pop()
            if depth == len(shape):
                if isinstance(node, list):
                    errors.append(
                        _error(loc, f"ragged nested list: not an array of shape {tuple(shape)}", "value_error.ndarray")
                    )
                    return None
                if not _is_number(node) and not isinstance(node, bool):
                    errors.append(_error(loc, "array values must be numbers or booleans", "type_error.ndarray"))
                    return None
                continue
            if not isinstance(node, list) or len(node) != shape[depth]:
                errors.append(
                    _error(loc, f"ragged nested list: not an array of shape {tuple(shape)}", "value_error.ndarray")
                )
                return None
            stack.extend((child, depth + 1) for child in node)
        return value

    def schema(self) -> dict[str, Any]:
        return {"$ref": SCHEMA_PREFIX + "NdArray"}

    def nullable_schema(self) -> dict[str, Any]:
        return {"anyOf": [self.schema(), {"type": "null"}]}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# ---- models --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One key of a model. `name` is the key the schema shows (camelCase in Jina's HTTP models); `key` is the
    key of the cleaned value; `also` lists other spellings a request may use (snake_case)."""

    name: str
    type: Type
    key: str = ""
    also: tuple[str, ...] = ()
    nullable: bool = True
    required: bool = False
    default: Any = MISSING
    description: str = ""
    example: Any = MISSING
    title: str = ""

    @property
    def out_key(self) -> str:
        return self.key or self.name

    def schema(self) -> dict[str, Any]:
        s = self.type.nullable_schema() if self.nullable else self.type.schema()
        s = dict(s)
        s["title"] = self.title or _title(self.name)
        if self.description:
            s["description"] = self.description
        if self.default is not MISSING:
            s["default"] = self.default
        if self.example is not MISSING:
            s["examples"] = [self.example]
        return s


@dataclass(frozen=True)
class Model:
    name: str
    fields: tuple[Field, ...]
    description: str = ""
    example: Any = MISSING
    json_type = "object"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> dict[str, Any] | None:
        """The cleaned value (keys `Field.out_key`; absent or null fields as their default or None)."""
        if not isinstance(value, dict):
            errors.append(_error(loc, "value is not a valid dict", "type_error.dict"))
            return None
        out: dict[str, Any] = {}
        for f in self.fields:
            used, raw = f.name, value.get(f.name)
            if raw is None:
                used, raw = next(((k, value[k]) for k in f.also if value.get(k) is not None), (used, None))
            if raw is not None:
                out[f.out_key] = f.type.check(raw, (*loc, used), errors)
                continue
            present = any(k in value for k in (f.name, *f.also))
            if f.required and not present:
                errors.append(_error((*loc, f.name), "field required", "value_error.missing"))
            elif not f.nullable and present:
                errors.append(_error((*loc, f.name), "none is not an allowed value", "type_error.none.not_allowed"))
            out[f.out_key] = None if f.default is MISSING else f.default
        return out

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "type": "object",
            "title": self.name,
            "properties": {f.name: f.schema() for f in self.fields},
        }
        # A field's other names (`target_executor` for `targetExecutor`) are read and checked like the field, so
        # the document says so: as extra keys they would otherwise be schema-valid with any value, and the door
        # would refuse schema-valid bodies. Pattern properties, because Jina's schema lists only the main names.
        aliases = {
            f"^{re.escape(k)}$": {**{a: v for a, v in f.schema().items() if a != "default"}, "title": _title(k)}
            for f in self.fields
            for k in f.also
        }
        if aliases:
            s["patternProperties"] = aliases
        required = [f.name for f in self.fields if f.required]
        if required:
            s["required"] = required
        if self.description:
            s["description"] = self.description
        if self.example is not MISSING:
            s["examples"] = [self.example]
        return s


def _title(name: str) -> str:
    # pydantic's titles: "parent_id" -> "Parent Id", "execEndpoint" -> "Execendpoint".
    return " ".join(part.capitalize() for part in name.split("_"))


def validate(model: Model, body: Any) -> tuple[dict[str, Any] | None, list[Error]]:
    """Check a request body against `model`: (the cleaned value, []) or (None, errors with `loc` from "body")."""
    errors: list[Error] = []
    cleaned = model.check(body, ("body",), errors)
    return (None, errors) if errors else (cleaned, [])


