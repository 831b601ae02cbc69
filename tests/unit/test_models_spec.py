"""Feature spec: stable hashing, vocabularies, numeric transforms, nulls, JSON, clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from models.config import parse_model_config
from models.encoding import NULL_ID, OOV_ID
from models.hashing import bucket_of, canonical_strings, stable_hash
from models.spec import FeatureSpec, FeatureSpecError, infer_schema
from rankflow.paths import REPO_ROOT
from tests.fixtures.synthetic import CTR_RANKER_V1_SCHEMA, make_splits, small_model_config

# ------------------------------------------------------------------------------ hashing


@pytest.mark.parametrize(
    ("value", "salt", "expected_hash", "bucket_1000"),
    [
        ("42", "user_id", 11020887964710486196, 196),
        ("hello", "", 4738296374946553126, 126),
        ("cat_3", "category", 30590645990162281, 281),
        ("日本", "x", 11043042582942595392, 392),
    ],
)
def test_hash_values_are_pinned(
    value: str, salt: str, expected_hash: int, bucket_1000: int
) -> None:
    # Changing these breaks every hashed embedding of every saved model: do not.
    assert stable_hash(value, salt) == expected_hash
    assert bucket_of(value, 1000, salt) == bucket_1000
    digest = hashlib.blake2b(f"{salt}\x1f{value}".encode(), digest_size=8).digest()
    assert int.from_bytes(digest, "little") == expected_hash


def test_hashing_is_the_same_in_another_process_with_another_hash_seed() -> None:
    values = ["1", "2", "999999", "mobile", "cat_7"]
    here = [bucket_of(v, 50000, "user_id") for v in values]
    code = (
        "import json, sys; from models.hashing import bucket_of; "
        f"print(json.dumps([bucket_of(v, 50000, 'user_id') for v in {values!r}]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == here


def test_integer_values_canonicalise_whatever_the_dtype() -> None:
    assert canonical_strings([42, np.int32(42), 42.0, "42"], "Int64") == ["42"] * 4
    with pytest.raises(ValueError, match="not a whole number"):
        canonical_strings([4.5], "INT64")


# --------------------------------------------------------------------------------- spec


@pytest.fixture(scope="module")
def splits():
    return make_splits(2000, seed=3)


def _config(features: dict):
    return parse_model_config({"features": features})


def test_transform_shapes_and_dtypes(splits) -> None:
    config = small_model_config()
    spec = FeatureSpec.fit(splits.schema, splits.train, config)
    tensors = spec.transform(splits.valid)
    n = len(splits.valid)
    assert tensors.sparse.shape == (n, len(config.features.categorical))
    assert tensors.sparse.dtype == torch.int64
    assert tensors.dense.shape == (n, len(spec.dense_columns))
    assert tensors.dense.dtype == torch.float32
    assert tensors.cross.shape == (n, 2)
    assert tensors.label is not None and set(tensors.label.unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(tensors.dense).all()
    for j, c in enumerate(spec.categorical):
        assert int(tensors.sparse[:, j].max()) < c.num_embeddings
    assert spec.ignored_features == ()


def test_hashed_ids_do_not_depend_on_dtype_or_nulls() -> None:
    config = _config({"categorical": {"user_id": {"encoding": "hash", "buckets": 100}}})
    train = pd.DataFrame({"user_id": [7, 8, 3]})
    spec = FeatureSpec.fit({}, train, config)
    as_int = spec.transform(pd.DataFrame({"user_id": [7, 8]})).sparse[:, 0]
    # The same ids in a float column (pandas' int-with-nulls), a nullable Int64 and objects.
    as_float = spec.transform(pd.DataFrame({"user_id": [7.0, 8.0, np.nan]})).sparse[:, 0]
    as_nullable = spec.transform(
        pd.DataFrame({"user_id": pd.array([7, 8, None], dtype="Int64")})
    ).sparse[:, 0]
    assert as_float[:2].tolist() == as_int.tolist() == as_nullable[:2].tolist()
    assert as_float[2] == NULL_ID == as_nullable[2]
    assert as_int.tolist() == [
        bucket_of("7", 100, "user_id") + 2,
        bucket_of("8", 100, "user_id") + 2,
    ]


def test_hashed_ids_unseen_or_rare_in_train_share_the_unseen_row() -> None:
    config = _config({"categorical": {"user_id": {"encoding": "hash", "buckets": 1000}}})
    train = pd.DataFrame({"user_id": [1, 1, 2, 3, 3]})
    spec = FeatureSpec.fit({}, train, config)
    (user,) = spec.categorical
    assert user.num_embeddings == 1002 and user.trained_buckets == tuple(
        sorted({bucket_of(v, 1000, "user_id") for v in "123"})
    )
    new = [
        v for v in range(100, 200) if bucket_of(str(v), 1000, "user_id") not in user.trained_buckets
    ][:3]
    ids = spec.transform(pd.DataFrame({"user_id": [1, *new, None]})).sparse[:, 0].tolist()
    assert ids == [bucket_of("1", 1000, "user_id") + 2, OOV_ID, OOV_ID, OOV_ID, NULL_ID]
    # min_count: a user seen once in train is rare, so it trains the shared unseen row.
    rare = FeatureSpec.fit(
        {},
        train,
        _config(
            {"categorical": {"user_id": {"encoding": "hash", "buckets": 1000, "min_count": 2}}}
        ),
    )
    assert rare.transform(pd.DataFrame({"user_id": [2]})).sparse[0, 0] == OOV_ID
    assert rare.transform(pd.DataFrame({"user_id": [3]})).sparse[0, 0] != OOV_ID
    # A spec saved before unseen rows existed still loads and encodes as it did.
    legacy = spec.to_dict()
    legacy["categorical"][0].pop("trained_buckets")
    old = FeatureSpec.from_dict(legacy)
    assert old.categorical[0].num_embeddings == 1001
    assert (
        old.transform(pd.DataFrame({"user_id": [1]})).sparse[0, 0]
        == bucket_of("1", 1000, "user_id") + 1
    )


def test_vocabulary_is_fitted_on_train_by_frequency() -> None:
    config = _config({"categorical": {"device": {"min_count": 2}}})
    train = pd.DataFrame({"device": ["mobile"] * 3 + ["desktop"] * 2 + ["tablet", None]})
    spec = FeatureSpec.fit({}, train, config)
    assert spec.categorical[0].vocab == ("mobile", "desktop")  # tablet seen once < min_count
    ids = spec.transform(pd.DataFrame({"device": ["desktop", "tablet", "tv", None, "mobile"]}))
    assert ids.sparse[:, 0].tolist() == [3, OOV_ID, OOV_ID, NULL_ID, 2]
    capped = FeatureSpec.fit({}, train, _config({"categorical": {"device": {"max_vocab": 1}}}))
    assert capped.categorical[0].vocab == ("mobile",)


def test_numeric_fill_clip_log_standardise_and_missing_indicator() -> None:
    config = _config({"numeric": {"x": {"fill": "median", "clip": [None, 100], "log1p": True}}})
    train = pd.DataFrame({"x": [0.0, 1.0, 3.0, np.nan, 1000.0]})
    spec = FeatureSpec.fit({"x": "FLOAT64"}, train, config)
    (x,) = spec.numeric
    assert x.fill_value == 2.0  # median of the non-null values, in raw units
    expected = np.log1p(np.array([0.0, 1.0, 3.0, 2.0, 100.0]))
    assert x.mean == pytest.approx(expected.mean())
    assert x.std == pytest.approx(expected.std())
    out = spec.transform(train).dense.numpy()
    assert spec.dense_columns == ["x", "x__missing"]
    assert out[:, 0].mean() == pytest.approx(0.0, abs=1e-6)
    assert out[:, 0].std() == pytest.approx(1.0, abs=1e-5)
    assert out[:, 1].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]
    # Unseen extremes are clipped like train; negatives go through the signed log1p.
    more = spec.transform(pd.DataFrame({"x": [1e9, -3.0]})).dense.numpy()[:, 0]
    assert more[0] == pytest.approx(out[4, 0], abs=1e-6)
    assert more[1] == pytest.approx((-np.log1p(3.0) - x.mean) / x.std, abs=1e-5)


def test_crosses_hash_the_combined_raw_values_nulls_included() -> None:
    config = _config(
        {
            "categorical": {"device": {}},
            "crosses": [{"features": ["device", "position"], "buckets": 1000}],
        }
    )
    frame = pd.DataFrame(
        {"device": ["mobile", "mobile", "desktop", None], "position": [1, 1, 1, 1]}
    )
    spec = FeatureSpec.fit({}, frame, config)
    ids = spec.transform(frame).cross[:, 0].tolist()
    assert ids[0] == ids[1] == bucket_of("mobile\x1f1", 1000, "device_x_position")
    assert ids[2] == bucket_of("desktop\x1f1", 1000, "device_x_position")
    assert ids[3] == bucket_of("\x00null\x1f1", 1000, "device_x_position")


def test_json_round_trip_gives_identical_tensors(splits) -> None:
    spec = FeatureSpec.fit(splits.schema, splits.train, small_model_config())
    again = FeatureSpec.from_json(spec.to_json())
    assert again == spec
    assert again.fingerprint() == spec.fingerprint()
    a, b = spec.transform(splits.test), again.transform(splits.test)
    for name in ("sparse", "dense", "cross", "label"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_feast_type_names_in_either_spelling_are_accepted(splits) -> None:
    feast_style = {
        name: {"INT64": "Int64", "FLOAT64": "Float64", "STRING": "String"}[t]
        for name, t in CTR_RANKER_V1_SCHEMA.items()
    }
    a = FeatureSpec.fit(feast_style, splits.train, small_model_config())
    b = FeatureSpec.fit(CTR_RANKER_V1_SCHEMA, splits.train, small_model_config())
    assert torch.equal(a.transform(splits.valid).dense, b.transform(splits.valid).dense)


# ------------------------------------------------------------------------------- errors


def test_undeclared_features_are_an_error_when_asked(splits) -> None:
    config = small_model_config()
    schema = {**splits.schema, "brand_new_feature": "FLOAT64"}
    with pytest.raises(FeatureSpecError, match="brand_new_feature"):
        FeatureSpec.fit(schema, splits.train, config)
    relaxed = config.with_overrides({"features.undeclared": "ignore"})
    spec = FeatureSpec.fit(schema, splits.train, relaxed)
    assert spec.ignored_features == ("brand_new_feature",)


def test_declared_feature_unknown_to_schema_names_the_key(splits) -> None:
    config = _config({"numeric": {"user_ctr_99d": {}}})
    with pytest.raises(FeatureSpecError, match=r"features.numeric: 'user_ctr_99d'"):
        FeatureSpec.fit(splits.schema, splits.train, config)


def test_string_declared_numeric_is_rejected(splits) -> None:
    with pytest.raises(FeatureSpecError, match=r"features\.numeric\.user_segment.*not numeric"):
        FeatureSpec.fit(splits.schema, splits.train, _config({"numeric": {"user_segment": {}}}))


def test_missing_and_malformed_columns_are_named(splits) -> None:
    spec = FeatureSpec.fit(splits.schema, splits.train, small_model_config())
    with pytest.raises(FeatureSpecError, match=r"missing column\(s\) \['item_price'\]"):
        spec.transform(splits.valid.drop(columns=["item_price"]))
    bad = splits.valid.copy()
    bad["user_ctr_7d"] = bad["user_ctr_7d"].astype(object)
    bad.loc[bad.index[:2], "user_ctr_7d"] = "n/a"
    with pytest.raises(FeatureSpecError, match="column 'user_ctr_7d': 2 value"):
        spec.transform(bad)
    labels = splits.valid.copy()
    labels.loc[labels.index[0], "label"] = 2
    with pytest.raises(FeatureSpecError, match="label column 'label': 1 value"):
        spec.transform(labels)


def test_all_null_train_column_with_statistic_fill_is_an_error() -> None:
    config = _config({"numeric": {"x": {"fill": "mean"}}})
    with pytest.raises(FeatureSpecError, match="every train value of column 'x' is null"):
        FeatureSpec.fit({"x": "FLOAT64"}, pd.DataFrame({"x": [np.nan, np.nan]}), config)


def test_spec_json_version_mismatch_is_named() -> None:
    with pytest.raises(FeatureSpecError, match="format_version 99"):
        FeatureSpec.from_json(json.dumps({"format_version": 99}), "some/spec.json")


def test_infer_schema_from_dtypes(splits) -> None:
    schema = infer_schema(splits.train, exclude=("event_id", "label"))
    assert schema["user_segment"] == "STRING"
    assert schema["item_price"] == "FLOAT64"
    assert schema["position"] == "INT64"
    assert "event_id" not in schema
