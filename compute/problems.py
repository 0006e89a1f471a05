"""Pydantic's validation errors as one-line problems: `(path, message)` pairs whose path is
dotted with `[i]` for list items and whose message is a short sentence that says what to do.
Used for proposals, policies and every model a user writes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError


def describe(error: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """Each of pydantic's errors as `(path, message)`: the path dotted with `[i]` for list
    items (`committee[1]`), the message a short sentence."""
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        problems.append((_path(loc) or model.__name__.lower(), _message(item, loc, model)))
    return problems


def _path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(item: Any, loc: tuple[str | int, ...], model: type[BaseModel]) -> str:
    kind, ctx = item["type"], item.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        hint = f" (expected: {', '.join(allowed)})" if allowed else ""
        return f"unknown field{hint}"
    if kind == "missing":
        return "required field missing"
    if kind == "literal_error":
        name = next((str(p) for p in reversed(loc) if isinstance(p, str)), "value")
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"unknown {name.replace('_', ' ')} {_short(item['input'])} (use {expected})"
    if kind == "value_error":
        return str(ctx.get("error", item["msg"]))
    if kind == "proposal":
        return str(item["msg"])
    if kind == "json_invalid":
        return f"not valid JSON ({ctx.get('error', item['msg'])})"
    message = str(item["msg"])
    if message.startswith("Input should be "):
        message = "must be " + message[len("Input should be ") :]
    return f"{message}, got {_short(item['input'])}"


def _fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The field names of the model found at `loc` inside `model`, if one is."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(part)
        if info is None:
            return []
        current = _model_in(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside `X`, `X | None` or `list[X]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
