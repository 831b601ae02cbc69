"""Strict YAML configs: read, apply dotted overrides, validate, report every bad key at once.

Shared by the model config (``models.config``) and the pipeline config (``rankflow.config``):
both must turn a typo into an error that names the file and the dotted key.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

M = TypeVar("M", bound=BaseModel)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (an empty section stays a value)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(flatten(child, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def set_dotted(
    data: dict[str, Any], dotted: str, value: Any, error: type[Exception] = ValueError
) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted="a.b"``, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise error(f"override {dotted}: {part} is not a section")
    node[leaf] = value


def parse_overrides(
    items: list[str] | tuple[str, ...] | None, error: type[Exception] = ValueError
) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as dotted keys to YAML-parsed values (``a.b=[1, 2]``)."""
    overrides: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(raw)
    return overrides


def _step(annotation: Any, part: str | int) -> Any:
    """The annotation of the value at ``part`` inside a value annotated ``annotation`` (a
    model's field, a dict's value, a list's item), or None when it cannot be told."""
    for option in _options(annotation):
        if isinstance(option, type) and issubclass(option, BaseModel):
            field = option.model_fields.get(str(part))
            if field is not None:
                return field.annotation
        elif get_origin(option) in (dict, Mapping) and get_args(option):
            return get_args(option)[-1]
        elif get_origin(option) in (list, tuple, set) and get_args(option):
            return get_args(option)[0]
    return None


def _options(annotation: Any) -> list[Any]:
    """``A | B | None`` -> ``[A, B]``; ``Annotated[A, ...]`` -> ``[A]``; else ``[annotation]``."""
    if get_origin(annotation) is Annotated:
        return _options(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return [o for arg in get_args(annotation) for o in _options(arg) if o is not type(None)]
    return [annotation]


def keys_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys the section at ``loc`` of ``model`` accepts (``[]``: not a section known)."""
    annotation: Any = model
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    return [
        name
        for option in _options(annotation)
        if isinstance(option, type) and issubclass(option, BaseModel)
        for name in option.model_fields
    ]


def did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    """The choice closest to ``word`` by :mod:`difflib`, if one is close enough."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def origin_of(key: str, origins: Mapping[str, str]) -> str | None:
    """Where the value at dotted ``key`` came from: the override of the key itself, of a
    section holding it (``a={...}``), or of a key inside it (a section's own check)."""
    for set_key, origin in origins.items():
        if key == set_key or key.startswith(f"{set_key}.") or set_key.startswith(f"{key}."):
            return origin
    return None


def _shown_input(value: Any) -> str:
    """The offending value, unless it is a whole section (printing it buries the message)."""
    text = repr(value)
    return "" if isinstance(value, dict | list) or len(text) > 80 else f" (got {text})"


def _problem(model: type[BaseModel], item: ErrorDetails) -> str:
    loc = tuple(item["loc"])
    key = ".".join(str(part) for part in loc) or "<root>"
    if item["type"] == "extra_forbidden":
        text = f"{key}: unknown key"
        keys = keys_at(model, loc[:-1])
        close = did_you_mean(str(loc[-1]), keys)
        if close:
            return f"{text}; did you mean {'.'.join([*map(str, loc[:-1]), close])}?"
        # a long list buries the line: the section's keys are in the file and its docs
        return f"{text} (expected one of {', '.join(keys)})" if 0 < len(keys) <= 12 else text
    if item["type"] == "missing":
        return f"{key}: required, not given"
    return f"{key}: {item['msg']}{_shown_input(item.get('input'))}"


def describe(
    model: type[BaseModel],
    error: ValidationError,
    source: str,
    what: str = "configuration",
    origins: Mapping[str, str] | None = None,
) -> str:
    """One line per problem, each naming its dotted key and, for an overridden value, where it
    came from (``origins``: dotted key -> ``--set a.b``); a mistyped key gets the nearest
    valid one."""
    origins = origins or {}
    problems = [
        (_problem(model, item), origin_of(".".join(map(str, item["loc"])), origins))
        for item in error.errors()
    ]
    blamed = {came_from for _, came_from in problems}
    if None in blamed:
        header = f"{source}: invalid {what}"
    else:  # the file is fine: the overrides are not
        header = f"invalid {what} from {', '.join(sorted(map(str, blamed)))}"
    tagged = len(blamed) > 1  # one source: the header has said it
    lines = [
        f"  {line}" + (f" (from {came_from})" if tagged and came_from else "")
        for line, came_from in problems
    ]
    return "\n".join([header, *lines])


def validate(
    model: type[M],
    data: dict[str, Any] | None,
    source: str,
    error: type[Exception],
    what: str = "configuration",
    origins: Mapping[str, str] | None = None,
) -> M:
    """``data`` as ``model``, or ``error`` naming every bad key (``origins``: see describe)."""
    try:
        return model.model_validate(data or {})
    except ValidationError as problem:
        raise error(describe(model, problem, source, what, origins)) from None


def read_yaml(
    path: Path,
    error: type[Exception],
    what: str = "config",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The YAML mapping at ``path`` with ``overrides`` (dotted keys) applied."""
    if not path.is_file():
        raise error(f"{path}: {what} file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value, error)
    return data
