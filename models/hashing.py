"""Stable hashing of categorical values into buckets.

Python's ``hash()`` of a string is salted per process (PYTHONHASHSEED), so a model trained in
one process would look up different embedding rows when scoring in another. We use BLAKE2b
(stdlib, keyed by nothing but the bytes) so a value maps to the same bucket in every process,
on every machine and in every Python version. Values are first turned into a canonical string
(``canonical_strings``) so that ``42``, ``42.0`` (an int column that pandas widened to float
because of a null) and ``"42"`` all hash alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

# The separator between the parts of a crossed key; a control character no id contains.
CROSS_SEPARATOR = "\x1f"
# How a null part of a cross is spelt; a cross with a null part still gets a bucket.
NULL_TOKEN = "\x00null"


def stable_hash(value: str, salt: str = "") -> int:
    """An unsigned 64-bit hash of ``salt + value`` (UTF-8), equal across processes and machines.

    The salt (the feature name) makes collisions of different features independent.
    """
    data = f"{salt}{CROSS_SEPARATOR}{value}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def bucket_of(value: str, buckets: int, salt: str = "") -> int:
    """The bucket in ``[0, buckets)`` of one canonical value."""
    return stable_hash(value, salt) % buckets


def hash_buckets(values: Iterable[str], buckets: int, salt: str = "") -> np.ndarray:
    """Buckets of many canonical values (call it on the unique values, then index)."""
    return np.fromiter((bucket_of(v, buckets, salt) for v in values), dtype=np.int64)


def canonical_strings(values: Sequence[object] | pd.Index, value_type: str) -> list[str]:
    """Canonical text of non-null values: integers without a decimal point, strings as is.

    ``value_type`` is the Feast value type of the column ("INT64", "STRING", ...). Integer
    types accept floats only when they are whole numbers (pandas stores an int column with
    nulls as float64); anything else is a ``ValueError`` naming the value.
    """
    kind = value_kind(value_type)
    out: list[str] = []
    for value in values:
        if kind == "int":
            if isinstance(value, float | np.floating):
                if not float(value).is_integer():
                    raise ValueError(f"value {value!r} is not a whole number ({value_type})")
                value = int(value)
            out.append(str(int(value)))  # type: ignore[call-overload]
        elif kind == "bool":
            out.append("true" if bool(value) else "false")
        elif isinstance(value, bytes):
            out.append(value.decode("utf-8", errors="backslashreplace"))
        else:
            out.append(str(value))
    return out


_INT_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
_FLOAT_TYPES = {"FLOAT", "FLOAT32", "FLOAT64", "DOUBLE"}
_STRING_TYPES = {"STRING", "BYTES"}
_BOOL_TYPES = {"BOOL"}


def value_kind(value_type: str) -> str:
    """'int', 'float', 'string' or 'bool' for a Feast value type name (case-insensitive)."""
    name = value_type.upper().removeprefix("VALUETYPE.")
    if name in _INT_TYPES:
        return "int"
    if name in _FLOAT_TYPES:
        return "float"
    if name in _STRING_TYPES:
        return "string"
    if name in _BOOL_TYPES:
        return "bool"
    raise ValueError(
        f"unsupported Feast value type {value_type!r}; expected one of "
        f"{sorted(_INT_TYPES | _FLOAT_TYPES | _STRING_TYPES | _BOOL_TYPES)}"
    )
