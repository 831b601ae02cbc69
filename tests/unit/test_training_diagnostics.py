"""Warnings where data and config disagree (rankflow/training/diagnostics.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankflow.training.diagnostics import (
    positive_rate_vs_prior,
    render,
    segment_counts,
    small_segments,
    uninformative_features,
)


def test_a_positive_rate_far_from_the_ctr_prior_is_named_with_both_numbers() -> None:
    labels = np.r_[np.ones(55), np.zeros(45)]  # a ratings log: 55% positives
    (warning,) = positive_rate_vs_prior(labels, 0.045)
    assert warning.subject == "warehouse.ctr_prior"
    assert (
        "0.5500" in warning.message and "0.045" in warning.message and "55 of 100" in str(warning)
    )
    # Within 2x either way: silent; far below the prior warns too.
    assert positive_rate_vs_prior(np.r_[np.ones(6), np.zeros(94)], 0.045) == []
    assert len(positive_rate_vs_prior(np.r_[np.ones(1), np.zeros(999)], 0.045)) == 1
    assert positive_rate_vs_prior(np.array([]), 0.045) == []


def test_constant_and_almost_always_null_train_features_are_reported() -> None:
    n = 1000
    train = pd.DataFrame(
        {
            "device": ["mobile"] * n,  # one device
            "position": [1] * (n - 3) + [None] * 3,  # constant where not null
            "price": [0.0] * n,
            "rare": [np.nan] * (n - 5) + [1.0, 2.0, 3.0, 4.0, 5.0],  # 99.5% null
            "good": np.arange(n, dtype=float),
        }
    )
    warnings = uninformative_features(train, ["device", "position", "price", "rare", "good", "x"])
    by_subject = {w.subject: w for w in warnings}
    assert set(by_subject) == {"device", "position", "price", "rare"}
    assert by_subject["device"].check == "constant_feature" and "'mobile'" in str(
        by_subject["device"]
    )
    assert "997" in by_subject["position"].message
    assert by_subject["rare"].check == "mostly_null_feature" and "995 of 1,000" in str(
        by_subject["rare"]
    )


def test_small_or_one_class_segments_are_flagged_with_their_counts() -> None:
    segments = pd.Series(["a"] * 2000 + ["b"] * 7 + ["c"] * 1500, name="user_segment")
    labels = np.r_[np.tile([0, 1], 1000), [1, 0, 0, 0, 0, 0, 0], np.zeros(1500)]
    warnings = small_segments(segments, labels, min_rows=1000)
    assert [w.subject for w in warnings] == ["user_segment=b", "user_segment=c"]
    assert "7 rows with 1 positives" in warnings[0].message
    assert "1,500 rows with 0 positives" in warnings[1].message
    counts = segment_counts(segments, labels)
    assert counts["n_by_user_segment/b"] == 7 and counts["positives_by_user_segment/a"] == 1000
    assert "3 data/config warning(s)" in render(warnings + positive_rate_vs_prior(np.ones(10), 0.1))
    assert render([]) == ""
