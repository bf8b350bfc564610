"""Decoding JSON answers into the dataclass models, driven by their type annotations.

Unknown fields are kept in a model's ``raw`` only (a newer server may add fields), unless
:data:`strict` is set, as the test suite does to catch a model that fell behind the API. A
field the model needs that the answer lacks becomes ``None`` when its type allows it and is a
:class:`~mistersmith.errors.ProtocolError` otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from typing import Any, TypeVar, Union

from .errors import ProtocolError

T = TypeVar("T")

#: Refuse fields a model does not declare (the test suite turns this on).
strict = False

_hints_cache: dict[type, dict[str, Any]] = {}


def parse_time(value: str) -> dt.datetime:
    """An RFC 3339 timestamp (``2025-11-27T12:20:00.123456Z``) as an aware datetime."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return dt.datetime.fromisoformat(text)


def _hints(cls: type) -> dict[str, Any]:
    hints = _hints_cache.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _hints_cache[cls] = hints
    return hints


def _allows_none(tp: Any) -> bool:
    if tp is Any or tp is type(None):
        return True
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return any(_allows_none(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return None in typing.get_args(tp)
    return False


def decode(cls: type[T], value: Any) -> T:
    """``value`` (decoded JSON) as an instance of the dataclass ``cls``."""
    result: T = _value(cls, value, cls.__name__)
    return result


def _value(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ProtocolError(f"{where}: null where a value is required")
        for arg in args:
            if arg is type(None):
                continue
            return _value(arg, value, where)
    if origin is typing.Literal:
        # values are not checked: a newer server may add a status or an event kind
        return value
    if value is None:
        if _allows_none(tp):
            return None
        raise ProtocolError(f"{where}: null where a value is required")
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object, got {type(value).__name__}")
        args = typing.get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {k: _value(item, v, f"{where}.{k}") for k, v in value.items()}
    if tp is dt.datetime:
        if not isinstance(value, str):
            raise ProtocolError(f"{where}: expected a timestamp, got {value!r}")
        try:
            return parse_time(value)
        except ValueError as e:
            raise ProtocolError(f"{where}: {e}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ProtocolError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _object(tp, value, where)
    raise TypeError(f"{where}: no decoder for {tp!r}")


def _object(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected an object, got {type(value).__name__}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    known = set()
    for f in dataclasses.fields(cls):
        if f.name == "raw":
            continue
        key = f.metadata.get("json", f.name)
        known.add(key)
        tp = hints[f.name]
        if key in value:
            kwargs[f.name] = _value(tp, value[key], f"{where}.{key}")
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        elif _allows_none(tp):
            kwargs[f.name] = None
        else:
            raise ProtocolError(f"{where}: the answer has no {key!r}")
    if strict:
        unknown = sorted(set(value) - known)
        if unknown:
            raise ProtocolError(f"{where}: fields the model does not declare: {unknown}")
    if any(f.name == "raw" for f in dataclasses.fields(cls)):
        kwargs["raw"] = value
    return cls(**kwargs)
