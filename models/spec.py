"""The feature spec: fitted on the train split, it turns raw feature rows into model tensors.

``FeatureSpec.fit(schema, train_df, config)`` combines the feature service schema (feature
name -> Feast value type), the entity columns of the training set and the declarative
``features`` section of the model config:

- categorical columns -> integer ids per column (``sparse``, one column per feature), by a
  vocabulary fitted on train or by a stable hash into a fixed number of buckets;
- numeric columns -> float columns (``dense``): fill, clip, signed log1p, standardise with
  train statistics, and an optional 0/1 missing indicator after each;
- declared crosses -> hashed ids of the combined raw values (``cross``), for the wide part.

The spec is plain data (JSON via ``to_json``), saved with every checkpoint, and is all that
scoring needs: ``spec.transform(raw_df)`` gives the same tensors in any process. A scoring
service calls ``spec.transform_columns`` (through :class:`RequestTransform`) on one request's
plain columns: the same code as ``transform``, without a DataFrame; how each feature encodes a
value is models.encoding's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from models import schema
from models.config import CategoricalFeature, FeaturesConfig, ModelConfig, NumericFeature
from models.encoding import (
    CategoricalSpec,
    ColumnValues,
    CrossSpec,
    Factorized,
    FeatureSpecError,
    FeatureTensors,
    IdCache,
    NumericSpec,
    clip_log,
    factorize,
    numeric_values,
)
from models.hashing import hash_buckets, value_kind

log = logging.getLogger(__name__)

SPEC_FORMAT_VERSION = 1

# Entity and request columns (models.schema): usable as features when the config declares them;
# the feature service schema does not list them (they are join keys or request data).
ENTITY_SCHEMA = schema.ENTITY_SCHEMA


@dataclass(frozen=True)
class FeatureSpec:
    categorical: tuple[CategoricalSpec, ...]
    numeric: tuple[NumericSpec, ...]
    crosses: tuple[CrossSpec, ...]
    label: str = "label"
    ignored_features: tuple[str, ...] = ()
    n_train_rows: int = 0
    format_version: int = SPEC_FORMAT_VERSION

    # ----------------------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        schema: Mapping[str, str],
        train_df: pd.DataFrame,
        config: ModelConfig | FeaturesConfig,
        *,
        scaling_from: FeatureSpec | None = None,
    ) -> FeatureSpec:
        """Fit vocabularies, fill values and standardisation statistics on ``train_df``.

        ``scaling_from``: a warm start's source spec. A numeric feature it has with the same
        transform (type, clip, log1p, standardize, missing indicator) keeps the source's fill
        value, mean and std instead of refitting them, so that the source's weights read each
        value as they were trained to: refitted on a new window, a mean that moved by half a
        std shifts every copied weight's input by as much. Vocabularies are refitted either
        way; the warm start copies embedding rows by token.
        """
        features = config.features if isinstance(config, ModelConfig) else config
        types = _merged_schema(schema)
        _check_declared(features, types, schema)
        needed = sorted(
            set(features.categorical)
            | set(features.numeric)
            | {name for cross in features.crosses for name in cross.features}
        )
        _require_columns(train_df, needed, "training frame")
        if len(train_df) == 0:
            raise FeatureSpecError("training frame is empty; cannot fit the feature spec")

        categorical = tuple(
            _fit_categorical(name, types[name], decl, train_df[name])
            for name, decl in features.categorical.items()
        )
        numeric = tuple(
            _fit_numeric(name, types[name], decl, train_df[name])
            for name, decl in features.numeric.items()
        )
        if scaling_from is not None:
            numeric = tuple(_kept_scaling(spec, scaling_from) for spec in numeric)
        crosses = tuple(
            CrossSpec(
                name=cross.resolved_name,
                features=tuple(cross.features),
                value_types=tuple(types[name] for name in cross.features),
                buckets=cross.buckets,
            )
            for cross in features.crosses
        )
        used = set(needed) | {features.label}
        ignored = tuple(sorted(name for name in schema if name not in used))
        if ignored:
            log.warning("feature spec ignores undeclared features: %s", ", ".join(ignored))
        return cls(
            categorical=categorical,
            numeric=numeric,
            crosses=crosses,
            label=features.label,
            ignored_features=ignored,
            n_train_rows=len(train_df),
        )

    # -------------------------------------------------------------------------- transform
    @property
    def input_columns(self) -> list[str]:
        """Raw columns ``transform`` reads (the label is optional)."""
        names = [c.name for c in self.categorical] + [n.name for n in self.numeric]
        names += [name for cross in self.crosses for name in cross.features]
        return list(dict.fromkeys(names))

    @property
    def dense_columns(self) -> list[str]:
        return [column for spec in self.numeric for column in spec.columns]

    @property
    def wide_sparse_index(self) -> list[int]:
        """Positions (in ``sparse``) of the categorical features that feed the wide part."""
        return [i for i, spec in enumerate(self.categorical) if spec.wide]

    def transform(self, df: pd.DataFrame, *, require_label: bool = False) -> FeatureTensors:
        """Raw feature rows -> tensors. Extra columns are ignored; missing ones are an error."""
        tensors = self.transform_columns(df, what="raw feature frame")
        if self.label in df.columns:
            tensors.label = torch.from_numpy(_encode_label(df[self.label], self.label))
        elif require_label:
            raise FeatureSpecError(f"raw feature frame has no label column {self.label!r}")
        return tensors

    def transform_columns(
        self,
        columns: pd.DataFrame | Mapping[str, ColumnValues],
        *,
        cache: IdCache | None = None,
        what: str = "request rows",
    ) -> FeatureTensors:
        """The transform (no label) of a frame or of plain columns ``{name: values}`` (None or
        NaN for null): what ``transform`` runs on a frame and a scoring service on each request,
        so the two give identical tensors. ``cache`` remembers the ids of values already seen
        (a long-lived scorer's); ``what`` names the input in errors."""
        n = _row_count(columns, self.input_columns, what)
        factorized = self._factorized(columns)
        sparse = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, spec in enumerate(self.categorical):
            sparse[:, j] = spec.encode(factorized[spec.name, spec.value_type], cache)
        dense = np.zeros((n, len(self.dense_columns)), dtype=np.float32)
        j = 0
        for spec in self.numeric:
            values, missing = spec.encode(columns[spec.name])
            dense[:, j] = values
            j += 1
            if spec.missing_indicator:
                dense[:, j] = missing
                j += 1
        cross = np.zeros((n, len(self.crosses)), dtype=np.int64)
        for j, spec in enumerate(self.crosses):
            keys = zip(spec.features, spec.value_types, strict=True)
            cross[:, j] = spec.encode([factorized[key] for key in keys], cache)
        return FeatureTensors(
            torch.from_numpy(sparse), torch.from_numpy(dense), torch.from_numpy(cross)
        )

    def _factorized(
        self, columns: pd.DataFrame | Mapping[str, ColumnValues]
    ) -> dict[tuple[str, str], Factorized]:
        """Each categorical and crossed column factorized once (a crossed feature is usually a
        categorical one too), keyed by (name, value type)."""
        keys = [(c.name, c.value_type) for c in self.categorical]
        keys += [key for c in self.crosses for key in zip(c.features, c.value_types, strict=True)]
        return {key: factorize(columns[key[0]], *key) for key in dict.fromkeys(keys)}

    # ------------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "label": self.label,
            "n_train_rows": self.n_train_rows,
            "ignored_features": list(self.ignored_features),
            "categorical": [asdict(spec) for spec in self.categorical],
            "numeric": [asdict(spec) for spec in self.numeric],
            "crosses": [asdict(spec) for spec in self.crosses],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<spec>") -> FeatureSpec:
        version = data.get("format_version")
        if version != SPEC_FORMAT_VERSION:
            raise FeatureSpecError(
                f"{source}: feature spec format_version {version!r}, this code reads "
                f"{SPEC_FORMAT_VERSION}"
            )
        try:
            return cls(
                categorical=tuple(
                    CategoricalSpec(
                        **{
                            **c,
                            "vocab": tuple(c["vocab"]),
                            "trained_buckets": None
                            if c.get("trained_buckets") is None
                            else tuple(c["trained_buckets"]),
                        }
                    )
                    for c in data["categorical"]
                ),
                numeric=tuple(NumericSpec(**n) for n in data["numeric"]),
                crosses=tuple(
                    CrossSpec(
                        **{
                            **c,
                            "features": tuple(c["features"]),
                            "value_types": tuple(c["value_types"]),
                        }
                    )
                    for c in data["crosses"]
                ),
                label=data["label"],
                ignored_features=tuple(data["ignored_features"]),
                n_train_rows=int(data["n_train_rows"]),
            )
        except (KeyError, TypeError) as error:
            raise FeatureSpecError(f"{source}: malformed feature spec: {error}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "<spec>") -> FeatureSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise FeatureSpecError(f"{source}: feature spec is not valid JSON: {error}") from None
        return cls.from_dict(data, source)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> FeatureSpec:
        return cls.from_json(Path(path).read_text(), str(path))

    def fingerprint(self) -> str:
        return hashlib.blake2b(self.to_json().encode(), digest_size=16).hexdigest()


class RequestTransform:
    """``spec.transform_columns`` for a long-lived scorer: one request's plain columns in,
    tensors out, identical to ``spec.transform`` on the same rows. Keeps the ids of values it
    has encoded, so that a warm request hashes nothing."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.cache = IdCache()

    def __call__(self, columns: Mapping[str, ColumnValues]) -> FeatureTensors:
        return self.spec.transform_columns(columns, cache=self.cache)


# ------------------------------------------------------------------------------- helpers
def infer_schema(df: pd.DataFrame, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """Feast-style value types from pandas dtypes, for when no feature service is at hand."""
    out: dict[str, str] = {}
    for name, dtype in df.dtypes.items():
        if name in exclude:
            continue
        if pd.api.types.is_bool_dtype(dtype):
            out[str(name)] = "BOOL"
        elif pd.api.types.is_integer_dtype(dtype):
            out[str(name)] = "INT64"
        elif pd.api.types.is_float_dtype(dtype):
            out[str(name)] = "FLOAT64"
        elif pd.api.types.is_string_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
            out[str(name)] = "STRING"
    return out


def _merged_schema(schema: Mapping[str, str]) -> dict[str, str]:
    merged = dict(ENTITY_SCHEMA)
    merged.update(schema)
    for name, value_type in merged.items():
        try:
            value_kind(value_type)
        except ValueError as error:
            raise FeatureSpecError(f"schema feature {name!r}: {error}") from None
    return merged


def _check_declared(
    features: FeaturesConfig, types: Mapping[str, str], schema: Mapping[str, str]
) -> None:
    known = sorted(types)
    problems: list[str] = []
    declared = [("categorical", name) for name in features.categorical]
    declared += [("numeric", name) for name in features.numeric]
    declared += [
        (f"crosses.{cross.resolved_name}", name)
        for cross in features.crosses
        for name in cross.features
    ]
    for section, name in declared:
        if name not in types:
            problems.append(
                f"features.{section}: {name!r} is neither in the feature service schema nor an "
                f"entity column (known: {', '.join(known)})"
            )
    for name in features.numeric:
        if name in types and value_kind(types[name]) == "string":
            problems.append(
                f"features.numeric.{name}: column type {types[name]} is not numeric; declare it "
                "under features.categorical"
            )
    if features.label in set(features.categorical) | set(features.numeric):
        problems.append(f"features: the label {features.label!r} cannot also be a feature")
    if features.undeclared == "error":
        used = set(features.categorical) | set(features.numeric)
        used |= {name for cross in features.crosses for name in cross.features}
        missing = sorted(set(schema) - used - {features.label})
        if missing:
            problems.append(
                "features.undeclared is 'error' and the feature service has features the config "
                f"does not declare: {', '.join(missing)}"
            )
    if problems:
        raise FeatureSpecError("model config does not fit the schema:\n  " + "\n  ".join(problems))


def _require_columns(
    columns: pd.DataFrame | Mapping[str, ColumnValues], required: list[str], what: str
) -> None:
    missing = [name for name in required if name not in columns]
    if missing:
        names = [str(name) for name in columns]
        raise FeatureSpecError(
            f"{what} is missing column(s) {missing} required by the feature spec "
            f"(it has {len(names)} columns: {', '.join(names[:12])}"
            f"{', ...' if len(names) > 12 else ''})"
        )


def _row_count(
    columns: pd.DataFrame | Mapping[str, ColumnValues], required: list[str], what: str
) -> int:
    """The number of rows of ``columns``, once every required column is there with as many."""
    _require_columns(columns, required, what)
    if isinstance(columns, pd.DataFrame):
        return len(columns)
    lengths = {name: len(columns[name]) for name in required}
    n = next(iter(lengths.values()), 0)
    uneven = {name: length for name, length in lengths.items() if length != n}
    if uneven:
        raise FeatureSpecError(
            f"{what}: columns of different lengths ({required[0]!r} has {n} values, {uneven})"
        )
    return n


def _fit_categorical(
    name: str, value_type: str, decl: CategoricalFeature, column: pd.Series
) -> CategoricalSpec:
    factorized = factorize(column, name, value_type)
    codes, canon = factorized.codes, factorized.canonical
    per_code = np.bincount(codes[codes >= 0], minlength=len(canon))
    counts: dict[str, int] = {}
    for text, count in zip(canon, per_code.tolist(), strict=True):
        counts[text] = counts.get(text, 0) + count  # 42 and 42.0 are one value
    if decl.encoding == "hash":
        frequent = [text for text, count in counts.items() if count >= decl.min_count]
        trained = np.unique(hash_buckets(frequent, decl.buckets, salt=name)) if frequent else []
        return CategoricalSpec(
            name=name,
            value_type=value_type,
            encoding="hash",
            embedding_dim=decl.embedding_dim,
            wide=decl.wide,
            buckets=decl.buckets,
            trained_buckets=tuple(int(b) for b in trained),
        )
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # deterministic order
    vocab = [text for text, count in ranked if count >= decl.min_count]
    if decl.max_vocab is not None:
        vocab = vocab[: decl.max_vocab]
    return CategoricalSpec(
        name=name,
        value_type=value_type,
        encoding="vocab",
        embedding_dim=decl.embedding_dim,
        wide=decl.wide,
        vocab=tuple(vocab),
    )


def _fit_numeric(
    name: str, value_type: str, decl: NumericFeature, column: pd.Series
) -> NumericSpec:
    values = numeric_values(column, name)
    present = values[~np.isnan(values)]
    if isinstance(decl.fill, float | int):
        fill = float(decl.fill)
    elif decl.fill == "zero":
        fill = 0.0
    else:
        if present.size == 0:
            raise FeatureSpecError(
                f"features.numeric.{name}: every train value of column {name!r} is null; "
                f"cannot fit fill '{decl.fill}' (use a constant fill or drop the feature)"
            )
        fill = float(np.mean(present) if decl.fill == "mean" else np.median(present))
    low, high = decl.clip if decl.clip is not None else (None, None)
    transformed = clip_log(np.where(np.isnan(values), fill, values), low, high, decl.log1p)
    mean, std = 0.0, 1.0
    if decl.standardize:
        mean = float(np.mean(transformed))
        std = float(np.std(transformed))
        if not std > 1e-12:
            std = 1.0  # a constant column: centre it, do not blow it up
    return NumericSpec(
        name=name,
        value_type=value_type,
        fill_value=fill,
        clip_low=None if low is None else float(low),
        clip_high=None if high is None else float(high),
        log1p=decl.log1p,
        standardize=decl.standardize,
        mean=mean,
        std=std,
        missing_indicator=decl.missing_indicator,
    )


def _kept_scaling(fitted: NumericSpec, source: FeatureSpec) -> NumericSpec:
    """``fitted`` with the source's fill, mean and std if the source transforms it alike."""
    old = next((n for n in source.numeric if n.name == fitted.name), None)
    if old is None:
        return fitted
    same = ("value_type", "clip_low", "clip_high", "log1p", "standardize", "missing_indicator")
    if any(getattr(old, key) != getattr(fitted, key) for key in same):
        return fitted
    return dataclasses.replace(fitted, fill_value=old.fill_value, mean=old.mean, std=old.std)


def _encode_label(column: pd.Series, name: str) -> np.ndarray:
    if column.isna().any():
        raise FeatureSpecError(f"label column {name!r} has {int(column.isna().sum())} null(s)")
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        raise FeatureSpecError(
            f"label column {name!r}: {int(bad.sum())} value(s) are not 0/1 "
            f"(e.g. {column[bad].unique()[:3].tolist()})"
        )
    return values.astype(np.float32)
