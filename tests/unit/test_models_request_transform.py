"""The scoring service's transform (plain Python columns, as it builds them from a Feast response)
gives exactly the training transform's tensors, nulls, missing features and unseen values
included: both are ``FeatureSpec.transform_columns``, the service's with an id cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.config import load_model_config
from models.encoding import IdCache
from models.spec import FeatureSpec, FeatureSpecError, RequestTransform
from rankflow.paths import REPO_ROOT
from tests.fixtures.synthetic import CTR_RANKER_V1_SCHEMA, make_splits


@pytest.fixture(scope="module")
def fitted() -> tuple[FeatureSpec, pd.DataFrame]:
    splits = make_splits(3000, seed=11)
    config = load_model_config(REPO_ROOT / "configs" / "model.yaml")
    spec = FeatureSpec.fit(CTR_RANKER_V1_SCHEMA, splits.train, config)
    return spec, splits.test.reset_index(drop=True)


def _columns(frame: pd.DataFrame) -> dict[str, list]:
    """Python lists as a Feast response gives them: None for nulls, ints stay ints."""
    out = {}
    for name in frame.columns:
        values = frame[name].astype(object).where(frame[name].notna(), None).tolist()
        out[name] = values
    return out


def _assert_same(spec: FeatureSpec, frame: pd.DataFrame) -> None:
    expected = spec.transform(frame)
    fast = RequestTransform(spec)
    for columns in (_columns(frame), _columns(frame)):  # second pass: answered from the caches
        got = fast(columns)
        assert torch.equal(got.sparse, expected.sparse)
        assert torch.equal(got.cross, expected.cross)
        assert torch.equal(got.dense, expected.dense)  # bit-identical, not just close


def test_same_tensors_as_the_spec_on_held_out_rows(fitted) -> None:
    spec, test = fitted
    _assert_same(spec, test)


def test_same_tensors_with_nulls_unseen_values_and_one_row(fitted) -> None:
    spec, test = fitted
    frame = test.head(50).copy()
    numeric = [n.name for n in spec.numeric]
    rng = np.random.default_rng(0)
    for name in numeric[:6]:
        frame.loc[rng.random(len(frame)) < 0.4, name] = np.nan
    frame.loc[0:9, "category"] = None
    frame.loc[10:19, "device"] = "smart-fridge"  # never seen in training: out of vocabulary
    frame.loc[20:29, "item_id"] = 10**12  # a hashed id never seen
    frame.loc[30:34, "user_segment"] = None  # a null inside a cross
    _assert_same(spec, frame)
    _assert_same(spec, frame.iloc[[7]].reset_index(drop=True))


def test_same_tensors_for_a_new_user_and_unknown_items(fitted) -> None:
    # What the online store answers for a user and items it has no features of: None for
    # every feature of theirs; the ids themselves were never seen in training.
    spec, test = fitted
    frame = test.head(40).copy()
    user_features = [n for n in frame.columns if n.startswith(("user_", "uc_"))]
    frame[user_features] = None
    frame["user_id"] = 10**12 + 1
    unknown = frame.index[:15]
    item_features = [n for n in frame.columns if n.startswith("item_") and n != "item_id"]
    frame.loc[unknown, item_features] = None
    frame.loc[unknown, "item_id"] = np.arange(10**12 + 10, 10**12 + 25)
    frame.loc[unknown, "category"] = None
    _assert_same(spec, frame)
    tensors = spec.transform(frame)
    missing_flags = [i for i, name in enumerate(spec.dense_columns) if name.endswith("__missing")]
    assert tensors.dense[:, missing_flags].sum() > 0  # the nulls did reach the missing flags


def test_the_cache_changes_no_id_and_stops_growing_at_its_limit(fitted) -> None:
    spec, test = fitted
    frame = test.head(300)
    cache = IdCache(limit=5)
    for part in (frame.iloc[:100], frame.iloc[100:], frame):
        got = spec.transform_columns(_columns(part.reset_index(drop=True)), cache=cache)
        expected = spec.transform(part)
        assert torch.equal(got.sparse, expected.sparse)
        assert torch.equal(got.cross, expected.cross)
    assert cache.size("item_id") == 5  # hundreds of distinct items: it stopped at its limit
    assert cache.size("device") == 3  # every device


def test_columns_of_different_lengths_are_named(fitted) -> None:
    spec, test = fitted
    columns = _columns(test.head(4))
    columns["device"] = columns["device"][:3]
    with pytest.raises(FeatureSpecError, match=r"different lengths.*'device': 3"):
        RequestTransform(spec)(columns)


def test_none_pandas_na_and_nat_are_nulls_like_nan(fitted) -> None:
    # Feast answers a missing value as None; other clients may send pandas' NA or NaT.
    spec, test = fitted
    frame = test.head(6).copy()
    name = spec.numeric[0].name
    frame[name] = frame[name].astype("float64")
    frame.loc[[1, 3, 4], name] = np.nan
    expected = spec.transform(frame)
    for null in (None, pd.NA, pd.NaT, float("nan")):
        columns = _columns(frame)
        columns[name] = [null if i in (1, 3, 4) else v for i, v in enumerate(columns[name])]
        assert torch.equal(RequestTransform(spec)(columns).dense, expected.dense), null


def test_same_tensors_for_float_spelt_integer_ids(fitted) -> None:
    # pandas widens an int column with nulls to float; 42 and 42.0 must map to one id.
    spec, test = fitted
    frame = test.head(20).copy()
    columns = _columns(frame)
    columns["item_id"] = [float(v) for v in columns["item_id"]]
    assert torch.equal(RequestTransform(spec)(columns).sparse, spec.transform(frame).sparse)


def test_bad_values_name_the_column(fitted) -> None:
    spec, test = fitted
    columns = _columns(test.head(3))
    numeric = spec.numeric[0].name
    columns[numeric] = ["many", 1.0, 2.0]
    with pytest.raises(FeatureSpecError, match=numeric):
        RequestTransform(spec)(columns)
    columns[numeric] = [[1.0, 2.0], 1.0, 2.0]  # a sequence where a number belongs
    with pytest.raises(FeatureSpecError, match=f"{numeric}.*not numeric"):
        RequestTransform(spec)(columns)
    columns = _columns(test.head(3))
    del columns["device"]
    with pytest.raises(FeatureSpecError, match="device"):
        RequestTransform(spec)(columns)
