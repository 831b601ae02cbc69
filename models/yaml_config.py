"""Strict YAML configs: read, apply dotted overrides, validate, report every bad key at once.

Shared by the model config (``models.config``) and the pipeline config (``rankflow.config``):
both must turn a typo into an error that names the file and the dotted key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

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


def describe(error: ValidationError, source: str, what: str = "configuration") -> str:
    """One line per problem, each naming its dotted key."""
    lines = [f"{source}: invalid {what}"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling)")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def validate(
    model: type[M],
    data: dict[str, Any] | None,
    source: str,
    error: type[Exception],
    what: str = "configuration",
) -> M:
    try:
        return model.model_validate(data or {})
    except ValidationError as problem:
        raise error(describe(problem, source, what)) from None


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
