"""Which stored (Arrow) types a raw column may have for its contract type, and the value checks
behind the verdicts: how many values cannot be cast, and timestamps as UTC microseconds.
Used by ``rankflow.data.contract``'s check.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def is_text(arrow_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(arrow_type):
        return is_text(arrow_type.value_type)
    return (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    )


def type_verdict(logical: str, t: pa.DataType) -> tuple[Literal["ok", "cast", "no"], str | None]:
    """``ok``: readable as the contract type as is; ``cast``: check each value; ``no``: not castable.
    The note says what a reader should know about an accepted but unusual type."""
    if pa.types.is_null(t):
        return "ok", "holds only nulls"
    if logical in ("int64", "int32", "int8"):
        # The contract allows any integer width; clicked may also be boolean.
        if pa.types.is_integer(t) or (logical == "int8" and pa.types.is_boolean(t)):
            return "ok", None
        if pa.types.is_floating(t) or pa.types.is_decimal(t) or is_text(t):
            return "cast", None
        return "no", None
    if logical == "float64":
        if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
            return "ok", None
        return ("cast", None) if is_text(t) else ("no", None)
    if logical == "string":
        if is_text(t):
            return "ok", None
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            return "ok", f"has type {t}; read as string"
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return "cast", None
        return "no", None
    if logical == "timestamp":
        if pa.types.is_timestamp(t):
            return "ok", None if t.tz else "holds naive timestamps; read as UTC"
        if pa.types.is_date(t):
            return "ok", f"has type {t}; read as midnight UTC"
        # Integers are refused on purpose: epoch seconds and epoch milliseconds look alike.
        return ("cast", None) if is_text(t) else ("no", None)
    raise ValueError(f"unknown logical type {logical!r}")


def decoded_values(values: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(values.type):
        return pa.chunked_array([chunk.dictionary_decode() for chunk in values.chunks])
    return values


def count_uncastable(values: pa.ChunkedArray, logical: str) -> int:
    """How many non-null values cannot be cast to ``logical`` (nulls are row-level, not here)."""
    values = decoded_values(values)
    valid = ~pc.is_null(values).to_numpy(zero_copy_only=False)
    if logical == "string":  # binary: valid UTF-8 or not
        bad = 0
        for value in values.to_pylist():
            try:
                if value is not None:
                    value.decode("utf-8")
            except UnicodeDecodeError:
                bad += 1
        return bad
    if logical == "timestamp":
        parsed = pd.to_datetime(
            pd.Series(values.to_numpy(zero_copy_only=False)),
            errors="coerce",
            utc=True,
            format="ISO8601",
        )
        return int((valid & parsed.isna().to_numpy()).sum())
    if is_text(values.type):
        numbers = pd.to_numeric(
            pd.Series(values.to_numpy(zero_copy_only=False)), errors="coerce"
        ).to_numpy(float)
    else:
        numbers = pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(numbers)
        if logical != "float64":
            ok &= (np.mod(numbers, 1) == 0) & (numbers >= _INT64_MIN) & (numbers <= _INT64_MAX)
    return int((valid & ~ok).sum())


def timestamps_utc_us(values: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Epoch microseconds (UTC) of a timestamp-like column and the mask of parsed values."""
    values = decoded_values(values)
    t = values.type
    if pa.types.is_timestamp(t):
        # Arrow stores instants as UTC epochs whatever the tz; naive values are read as UTC.
        micros = pc.cast(pc.cast(values, pa.timestamp("us", tz=t.tz), safe=False), pa.int64())
    elif pa.types.is_date(t):
        micros = pc.multiply(pc.cast(pc.cast(values, pa.date32()), pa.int64()), 86_400_000_000)
    elif is_text(t):
        parsed = pd.to_datetime(
            pd.Series(values.to_numpy(zero_copy_only=False)),
            errors="coerce",
            utc=True,
            format="ISO8601",
        )
        valid = parsed.notna().to_numpy()
        micros_np = np.zeros(len(parsed), dtype=np.int64)
        naive_utc = parsed[valid].dt.tz_localize(None).to_numpy()
        micros_np[valid] = naive_utc.astype("datetime64[us]").astype(np.int64)
        return micros_np, valid
    else:
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    valid = ~pc.is_null(micros).to_numpy(zero_copy_only=False)
    return pc.fill_null(micros, 0).to_numpy(zero_copy_only=False).astype(np.int64), valid
