"""The feature spec's transform for one request's rows, without pandas.

``FeatureSpec.transform`` takes a DataFrame: right for a training set, but for one request of
1-100 rows building the frame and factorising each column costs more than the Feast lookup
itself (docs/benchmarks.md, "Serving"). :class:`RequestTransform` computes the same tensors from
plain columns (``{name: [values]}``, ``None`` or NaN for null) with per-value caches of the
categorical and cross ids, so a value seen before costs one dict lookup. It reads only the
spec's fitted data, so the two paths cannot disagree on a statistic; the numeric part runs the
same numpy operations in the same order, so the outputs are bit-identical (tests/unit/
test_serving_transform.py checks equality on training-set rows, nulls and unseen values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from models.hashing import CROSS_SEPARATOR, NULL_TOKEN, bucket_of, canonical_strings
from models.spec import (
    NULL_ID,
    OOV_ID,
    CategoricalSpec,
    CrossSpec,
    FeatureSpec,
    FeatureSpecError,
    FeatureTensors,
    NumericSpec,
    _clip_log,
)

# A cache stops growing here (hashed ids keep arriving); lookups beyond it are computed.
_CACHE_LIMIT = 200_000


def is_null(value: Any) -> bool:
    """None, NaN and pandas' NA/NaT are null, as ``pd.isna`` sees a scalar."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return value.__class__.__name__ in ("NAType", "NaTType")


class _CategoricalEncoder:
    def __init__(self, spec: CategoricalSpec) -> None:
        self.spec = spec
        self.index = {text: i + 2 for i, text in enumerate(spec.vocab)}
        # Hash buckets no frequent training value fell into share the unseen row (OOV_ID), as
        # in models.spec; None: a spec from before trained_buckets (bucket b is id b + 1).
        self.trained = None if spec.trained_buckets is None else frozenset(spec.trained_buckets)
        self.cache: dict[Any, int] = {}

    def encode_value(self, value: Any) -> int:
        if is_null(value):
            return NULL_ID
        key = (value.__class__, value)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        spec = self.spec
        try:
            (text,) = canonical_strings([value], spec.value_type)
        except (ValueError, TypeError) as error:
            raise FeatureSpecError(f"column {spec.name!r}: {error}") from None
        if spec.encoding == "vocab":
            out = self.index.get(text, OOV_ID)
        else:
            assert spec.buckets is not None
            bucket = bucket_of(text, spec.buckets, salt=spec.name)
            if self.trained is None:
                out = bucket + 1
            else:
                out = bucket + 2 if bucket in self.trained else OOV_ID
        if len(self.cache) < _CACHE_LIMIT:
            self.cache[key] = out
        return out


class _CrossEncoder:
    def __init__(self, spec: CrossSpec) -> None:
        self.spec = spec
        self.cache: dict[tuple[Any, ...], int] = {}

    def encode_row(self, values: tuple[Any, ...]) -> int:
        key = tuple(
            None if is_null(v) else (v.__class__, v) for v in values
        )  # NaN != NaN: normalise nulls
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        spec = self.spec
        tokens = []
        for name, value_type, value in zip(spec.features, spec.value_types, values, strict=True):
            if is_null(value):
                tokens.append(NULL_TOKEN)
                continue
            try:
                tokens.extend(canonical_strings([value], value_type))
            except (ValueError, TypeError) as error:
                raise FeatureSpecError(f"column {name!r}: {error}") from None
        out = bucket_of(CROSS_SEPARATOR.join(tokens), spec.buckets, salt=spec.name)
        if len(self.cache) < _CACHE_LIMIT:
            self.cache[key] = out
        return out


def _numeric_column(spec: NumericSpec, values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(standardised float32 values, float32 missing flags), exactly as the spec computes them."""
    try:
        # The common case in one call: numbers and None (numpy reads None as NaN, as is_null).
        raw = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):  # pandas' NA / NaT, or a value that is not numeric
        raw = None
    if raw is None or raw.ndim != 1:  # value by value (a nested sequence is named there too)
        raw = _numeric_values(spec, values)
    missing = np.isnan(raw)
    if np.isinf(raw).any():
        raise FeatureSpecError(
            f"column {spec.name!r}: {int(np.isinf(raw).sum())} infinite value(s)"
        )
    # The spec's own fill -> clip -> signed log1p, then its standardisation: same operations.
    out = _clip_log(
        np.where(missing, spec.fill_value, raw), spec.clip_low, spec.clip_high, spec.log1p
    )
    out = (out - spec.mean) / spec.std
    return out.astype(np.float32), missing.astype(np.float32)


def _numeric_values(spec: NumericSpec, values: Sequence[Any]) -> np.ndarray:
    """Value by value: nulls (see :func:`is_null`) as NaN, a non-numeric value named."""
    raw = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if is_null(value):
            raw[i] = np.nan
            continue
        try:
            raw[i] = float(value)
        except (TypeError, ValueError):
            raise FeatureSpecError(
                f"column {spec.name!r}: value {value!r} is not numeric"
            ) from None
    return raw


class RequestTransform:
    """``spec.transform`` for plain columns: same tensors, no DataFrame (see module docstring)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._categorical = [_CategoricalEncoder(c) for c in spec.categorical]
        self._crosses = [_CrossEncoder(c) for c in spec.crosses]
        self._n_dense = len(spec.dense_columns)

    @property
    def input_columns(self) -> list[str]:
        return self.spec.input_columns

    def __call__(self, columns: Mapping[str, Sequence[Any]]) -> FeatureTensors:
        missing = [name for name in self.spec.input_columns if name not in columns]
        if missing:
            raise FeatureSpecError(
                f"request rows are missing column(s) {missing} required by the feature spec"
            )
        n = len(columns[self.spec.input_columns[0]]) if self.spec.input_columns else 0
        sparse = np.zeros((n, len(self._categorical)), dtype=np.int64)
        for j, encoder in enumerate(self._categorical):
            column = columns[encoder.spec.name]
            sparse[:, j] = [encoder.encode_value(v) for v in column]
        dense = np.zeros((n, self._n_dense), dtype=np.float32)
        j = 0
        for spec in self.spec.numeric:
            values, flags = _numeric_column(spec, columns[spec.name])
            dense[:, j] = values
            j += 1
            if spec.missing_indicator:
                dense[:, j] = flags
                j += 1
        cross = np.zeros((n, len(self._crosses)), dtype=np.int64)
        for j, encoder in enumerate(self._crosses):
            parts = [columns[name] for name in encoder.spec.features]
            cross[:, j] = [encoder.encode_row(row) for row in zip(*parts, strict=True)]
        return FeatureTensors(
            torch.from_numpy(sparse), torch.from_numpy(dense), torch.from_numpy(cross)
        )
