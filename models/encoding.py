"""How each fitted feature turns raw values into model inputs: the transform of training and
serving alike.

A column arrives either as a pandas Series (a training or scoring frame) or as a plain sequence
(one scoring request's values, ``None`` or NaN for null). Both go through the functions below;
the only difference is how the distinct values of a column are found (:func:`factorize`:
``pd.factorize`` for arrays, one dict for a plain sequence, which gives the same codes without
building a pandas array per request). Every value -> id rule and every numeric operation exists
once, here, so training and serving cannot disagree on a tensor.

Each rule works on the distinct values of a column, not on its rows: a training column of a
million rows hashes its few thousand distinct ids once, and a request of 100 candidates hashes
each item id once. An :class:`IdCache` (what the scoring service keeps per model) remembers the
ids of values seen before, so a warm request hashes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pandas as pd
import torch

from models.hashing import CROSS_SEPARATOR, NULL_TOKEN, canonical_strings, hash_buckets

# Reserved ids of a categorical feature (hashed features of specs older than trained_buckets
# reserve only NULL_ID).
NULL_ID = 0
OOV_ID = 1

# A raw column: a Series or array (frames), or a plain sequence (a request's values).
ColumnValues = pd.Series | np.ndarray | Sequence[object]

# A feature's rule from canonical values to ids (CategoricalSpec.ids).
IdRule = Callable[[Sequence[str]], np.ndarray]

# A value cache stops growing here (hashed ids keep arriving); values beyond it are computed.
CACHE_LIMIT = 200_000


class FeatureSpecError(ValueError):
    """Raw data or a schema that does not fit the spec; the message names column and key."""


@dataclass(frozen=True)
class CategoricalSpec:
    name: str
    value_type: str
    encoding: str  # "vocab" | "hash"
    embedding_dim: int
    wide: bool
    vocab: tuple[str, ...] = ()
    buckets: int | None = None
    # Hash only: the buckets that some value seen >= min_count times in train fell into. Ids of
    # every other bucket go to the shared unseen row (OOV_ID), so a new user or item scores as
    # "unknown" instead of with a never-trained random row. None: a spec from before this
    # existed (no unseen row; bucket b is id b + 1).
    trained_buckets: tuple[int, ...] | None = None

    @property
    def has_unseen_row(self) -> bool:
        return self.encoding == "vocab" or self.trained_buckets is not None

    @property
    def num_embeddings(self) -> int:
        if self.encoding == "vocab":
            return len(self.vocab) + 2  # + null and out-of-vocabulary rows
        assert self.buckets is not None
        return self.buckets + (2 if self.trained_buckets is not None else 1)

    def row_keys(self) -> list[str] | None:
        """What each embedding row stands for (vocab only): lets warm start remap rows. A hash
        bucket means something else once the bucket count changes, so those match by index."""
        if self.encoding != "vocab":
            return None
        return ["\x00<null>", "\x00<oov>", *self.vocab]

    def ids(self, canonical: Sequence[str]) -> np.ndarray:
        """The id of each canonical value: its vocabulary row (OOV_ID when not in the
        vocabulary), or its hash bucket (OOV_ID when no frequent training value fell into it)."""
        if self.encoding == "vocab":
            rows = self._vocab_rows
            return np.fromiter(
                (rows.get(text, OOV_ID) for text in canonical), np.int64, len(canonical)
            )
        assert self.buckets is not None
        bucket = hash_buckets(canonical, self.buckets, salt=self.name)
        if self.trained_buckets is None:
            return bucket + 1
        return np.where(self._trained_mask[bucket], bucket + 2, OOV_ID).astype(np.int64)

    def encode(self, column: Factorized, cache: IdCache | None = None) -> np.ndarray:
        """The id of each row of a factorized column (NULL_ID for a null)."""
        if cache is None:
            per_unique = self.ids(column.canonical)
        else:
            per_unique = cache.ids(self.name, column.canonical, self.ids)
        if not len(per_unique):
            return np.full(len(column.codes), NULL_ID, np.int64)
        return np.where(column.codes < 0, NULL_ID, per_unique[np.maximum(column.codes, 0)])

    # Derived once per spec (a frozen dataclass has a __dict__ for cached_property to fill).
    @functools.cached_property
    def _vocab_rows(self) -> dict[str, int]:
        return {text: i + 2 for i, text in enumerate(self.vocab)}

    @functools.cached_property
    def _trained_mask(self) -> np.ndarray:
        assert self.buckets is not None and self.trained_buckets is not None
        trained = np.zeros(self.buckets, dtype=bool)
        trained[list(self.trained_buckets)] = True
        return trained


@dataclass(frozen=True)
class NumericSpec:
    name: str
    value_type: str
    fill_value: float
    clip_low: float | None
    clip_high: float | None
    log1p: bool
    standardize: bool
    mean: float
    std: float
    missing_indicator: bool

    @property
    def columns(self) -> list[str]:
        return [self.name, f"{self.name}__missing"] if self.missing_indicator else [self.name]

    def encode(self, column: ColumnValues) -> tuple[np.ndarray, np.ndarray]:
        """(float32 model values, float32 0/1 missing flags) of a raw column: fill, clip,
        signed log1p, then standardise with the train statistics."""
        values = numeric_values(column, self.name)
        missing = np.isnan(values)
        values = clip_log(
            np.where(missing, self.fill_value, values), self.clip_low, self.clip_high, self.log1p
        )
        values = (values - self.mean) / self.std
        return values.astype(np.float32), missing.astype(np.float32)


@dataclass(frozen=True)
class CrossSpec:
    name: str
    features: tuple[str, ...]
    value_types: tuple[str, ...]
    buckets: int

    @property
    def num_embeddings(self) -> int:
        return self.buckets

    def ids(self, texts: Sequence[str]) -> np.ndarray:
        """The hash bucket of each combined key (CROSS_SEPARATOR-joined canonical values)."""
        return hash_buckets(texts, self.buckets, salt=self.name)

    def encode(self, parts: Sequence[Factorized], cache: IdCache | None = None) -> np.ndarray:
        """The hash bucket of each row's combined canonical values (one factorized column per
        feature); a null part is spelt NULL_TOKEN, so such a row still gets a bucket."""
        combined = _combined_codes(parts)
        keys, first_row, inverse = np.unique(combined, return_index=True, return_inverse=True)
        if not len(keys):
            return np.zeros(len(combined), np.int64)
        # Each combination's parts as text (index -1, a null, is the appended NULL_TOKEN).
        tokens = [
            list(map([*part.canonical, NULL_TOKEN].__getitem__, part.codes[first_row].tolist()))
            for part in parts
        ]
        texts = list(map(CROSS_SEPARATOR.join, zip(*tokens, strict=True)))
        per_key = self.ids(texts) if cache is None else cache.ids(self.name, texts, self.ids)
        return per_key[inverse].astype(np.int64)


def _combined_codes(parts: Sequence[Factorized]) -> np.ndarray:
    """One int64 code per row that differs exactly when some part's value (or nullness)
    differs: mixed radix over the parts' codes, re-factorised when it could overflow."""
    combined = np.zeros(len(parts[0].codes), np.int64)
    size = 1  # combined < size
    for part in parts:
        width = len(part.canonical) + 1  # + null, spelt 0
        if size * width >= 2**62:
            combined = pd.factorize(combined)[0].astype(np.int64)
            size = int(combined.max()) + 1
        combined = combined * width + (part.codes + 1)
        size *= width
    return combined


@dataclass
class FeatureTensors:
    """Model inputs for N rows: ``sparse`` [N, S] int64, ``dense`` [N, D] float32,
    ``cross`` [N, C] int64 and, when the frame had one, ``label`` [N] float32."""

    sparse: torch.Tensor
    dense: torch.Tensor
    cross: torch.Tensor
    label: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.sparse.shape[0])

    def take(self, index: torch.Tensor) -> FeatureTensors:
        """Rows ``index`` (a gather: one copy, done once per epoch rather than per batch)."""
        return FeatureTensors(
            self.sparse[index],
            self.dense[index],
            self.cross[index],
            None if self.label is None else self.label[index],
        )

    def slice(self, start: int, stop: int) -> FeatureTensors:
        """Rows ``start:stop`` as views (no copy)."""
        return FeatureTensors(
            self.sparse[start:stop],
            self.dense[start:stop],
            self.cross[start:stop],
            None if self.label is None else self.label[start:stop],
        )


# ------------------------------------------------------------------------------- columns
@dataclass(frozen=True)
class Factorized:
    """A column as codes into its distinct values: ``codes[i]`` indexes ``uniques`` (-1 for a
    null); ``canonical`` is the canonical text of each unique (models.hashing)."""

    name: str
    codes: np.ndarray
    uniques: list[object]
    canonical: list[str]


def factorize(column: ColumnValues, name: str, value_type: str) -> Factorized:
    """``column``'s distinct non-null values in order of appearance, as ``pd.factorize`` finds
    them: equal values share a code (42 and 42.0 too); None, NaN, NA and NaT are null."""
    if isinstance(column, pd.Series | pd.Index | np.ndarray):
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        codes, distinct = np.asarray(codes, dtype=np.int64), list(uniques)
    else:
        codes, distinct = _factorize_sequence(column, name)
    try:
        canonical = canonical_strings(distinct, value_type)
    except (ValueError, TypeError) as error:
        raise FeatureSpecError(f"column {name!r}: {error}") from None
    return Factorized(name, codes, distinct, canonical)


def _factorize_sequence(values: Sequence[object], name: str) -> tuple[np.ndarray, list[object]]:
    """pd.factorize of a plain sequence without a pandas array: Python's equality (the one
    pandas uses for objects), and per-value work only in C loops (dict.fromkeys, map)."""
    try:
        distinct = dict.fromkeys(values)
    except TypeError:  # an unhashable value: a list or dict where one value belongs
        bad = next(v for v in values if not _hashable(v))
        raise FeatureSpecError(f"column {name!r}: value {bad!r} is not a single value") from None
    code: dict[object, int] = {}
    uniques: list[object] = []
    for value in distinct:
        # Each NaN object is its own key (NaN != NaN); a dict finds it again by identity.
        if is_null(value):
            code[value] = -1
        else:
            code[value] = len(uniques)
            uniques.append(value)
    return np.fromiter(map(code.__getitem__, values), np.int64, len(values)), uniques


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def is_null(value: object) -> bool:
    """None, NaN, pandas' NA and NaT are null, as ``pd.isna`` sees a scalar."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(value != value)  # NaN is the one value unequal to itself
    return value.__class__.__name__ in ("NAType", "NaTType")


def numeric_values(column: ColumnValues, name: str) -> np.ndarray:
    """float64 values of a raw column, NaN for null; a value that is not a number (or is
    infinite) is an error naming the column."""
    try:
        # The common case in one call: numbers, NaN and None (numpy reads None as NaN).
        values = np.asarray(column, dtype=np.float64)
    except (TypeError, ValueError):  # pandas' NA / NaT, or a value that is not numeric
        values = _coerced_numbers(column, name)
    if values.ndim != 1:  # a sequence of sequences
        values = _coerced_numbers(column, name)
    if np.isinf(values).any():
        raise FeatureSpecError(f"column {name!r}: {int(np.isinf(values).sum())} infinite value(s)")
    return values


def _coerced_numbers(column: ColumnValues, name: str) -> np.ndarray:
    """Value by value through pandas: nulls of any kind as NaN, a non-numeric value named."""
    series = column if isinstance(column, pd.Series) else pd.Series(list(column), dtype=object)
    numbers = pd.to_numeric(series, errors="coerce")
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values) & ~series.isna().to_numpy()
    if bad.any():
        examples = series[bad].astype(str).unique()[:3].tolist()
        raise FeatureSpecError(
            f"column {name!r}: {int(bad.sum())} value(s) are not numeric (e.g. {examples})"
        )
    return values


def clip_log(values: np.ndarray, low: float | None, high: float | None, log1p: bool) -> np.ndarray:
    """Clip to ``[low, high]`` (either may be None), then a signed log1p if asked."""
    if low is not None or high is not None:
        values = np.clip(values, low, high)
    if log1p:
        # Signed, so negative values (a lift below zero, a refund) stay finite and ordered.
        values = np.sign(values) * np.log1p(np.abs(values))
    return values


class IdCache:
    """Ids already computed, per feature and canonical value: what a long-lived scorer keeps,
    so that a value seen in an earlier request costs a dict lookup instead of a hash. Features
    are told apart by name (models.config keeps cross and categorical names distinct)."""

    def __init__(self, limit: int = CACHE_LIMIT) -> None:
        self.limit = limit
        self._ids: dict[str, dict[str, int]] = {}

    def size(self, feature: str) -> int:
        """How many values of ``feature`` the cache holds."""
        return len(self._ids.get(feature, {}))

    def ids(self, feature: str, canonical: Sequence[str], rule: IdRule) -> np.ndarray:
        """``rule(canonical)``, computing only the values this cache has not seen."""
        known = self._ids.setdefault(feature, {})
        out = np.fromiter(map(known.get, canonical, repeat(-1)), np.int64, len(canonical))
        new = np.flatnonzero(out < 0)
        if len(new):
            out[new] = rule([canonical[i] for i in new])
            for i in new[: max(self.limit - len(known), 0)]:
                known[canonical[i]] = int(out[i])
        return out
