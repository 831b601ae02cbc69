"""Point-in-time training sets from the feature store, split by time.

The entity dataframe is the ``labelled_impressions`` export: one row per impression with its
click label, the join keys and the request context. Feast joins every feature view of the
feature service to each row as of the impression's timestamp (the newest feature row stamped
``<=`` it, within the view's TTL) and computes the on-demand features; nothing stamped after an
impression can reach it. The rows are then split by UTC calendar day: the last ``test_days`` days
are the test split, the ``valid_days`` before them validation, the rest training. Never at
random: a model is judged on days after the ones it learned from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pandas as pd

from models import schema
from rankflow.config import SplitConfig
from rankflow.errors import RankflowError
from rankflow.features.store import (
    check_export,
    coerce_features,
    export_path,
    feature_service_schema,
    open_store,
)
from rankflow.paths import StatePaths
from rankflow.settings import Settings

SplitName = Literal["train", "valid", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "valid", "test")

ENTITY_EXPORT = "labelled_impressions"
# The entity/label columns every split carries, in this order, before the features.
ENTITY_COLUMNS: tuple[str, ...] = schema.TRAINING_FRAME_COLUMNS
LABEL = schema.LABEL


class TrainingSetError(RankflowError, ValueError):
    """The training set cannot be built as configured; the message names the file or key."""


class DateWindow(NamedTuple):
    """An inclusive range of UTC calendar days."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def __str__(self) -> str:
        return f"{self.start}..{self.end}"


def plan_split(window: DateWindow, split: SplitConfig) -> dict[SplitName, DateWindow]:
    """The day range of each split: test last, validation before it, training the rest.

    Raises :class:`TrainingSetError` when the window cannot give every split at least a day.
    """
    needed = split.valid_days + split.test_days + 1
    if window.days < needed:
        raise TrainingSetError(
            f"training set window {window} has {window.days} day(s); valid_days="
            f"{split.valid_days} + test_days={split.test_days} leave the train split empty "
            f"(need at least {needed} days)"
        )
    test_start = window.end - timedelta(days=split.test_days - 1)
    valid_start = test_start - timedelta(days=split.valid_days)
    return {
        "train": DateWindow(window.start, valid_start - timedelta(days=1)),
        "valid": DateWindow(valid_start, test_start - timedelta(days=1)),
        "test": DateWindow(test_start, window.end),
    }


@dataclass
class TrainingSet:
    """Time-ordered train / valid / test frames with the entity/label columns and the features."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    feature_service: str
    feature_names: list[str]
    # Feature name -> Feast value type, as feature_service_schema() returns it.
    feature_types: dict[str, str]
    window: DateWindow
    # The calendar days of each split (a split's rows may not cover every day).
    split_windows: dict[SplitName, DateWindow]

    def split(self, name: SplitName) -> pd.DataFrame:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]

    def describe(self) -> dict[str, Any]:
        """Shape, positive rate and day range per split (JSON-ready)."""
        splits = {}
        for name in SPLITS:
            frame = self.split(name)
            days = self.split_windows[name]
            splits[name] = {
                "rows": len(frame),
                "columns": frame.shape[1],
                "positive_rate": float(frame[LABEL].mean()) if len(frame) else float("nan"),
                "start": days.start.isoformat(),
                "end": days.end.isoformat(),
            }
        return {
            "feature_service": self.feature_service,
            "window": {"start": self.window.start.isoformat(), "end": self.window.end.isoformat()},
            "n_features": len(self.feature_names),
            "splits": splits,
        }


def load_entity_df(paths: StatePaths) -> pd.DataFrame:
    """The labelled impressions as Feast's entity dataframe: UTC timestamps, unique event ids."""
    check_export(paths, ENTITY_EXPORT)
    path = export_path(paths, ENTITY_EXPORT)
    frame = pd.read_parquet(path, columns=list(ENTITY_COLUMNS))
    timestamps = frame["event_timestamp"]
    if timestamps.isna().any():
        raise TrainingSetError(
            f"{path}: column 'event_timestamp' has {int(timestamps.isna().sum())} null value(s)"
        )
    # Naive timestamps are UTC by the data contract; Feast would read them as UTC too.
    frame["event_timestamp"] = (
        timestamps.dt.tz_localize("UTC")
        if timestamps.dt.tz is None
        else timestamps.dt.tz_convert("UTC")
    )
    duplicated = frame["event_id"].duplicated(keep=False)
    if duplicated.any():
        examples = sorted(frame.loc[duplicated, "event_id"].astype(str).unique())[:5]
        raise TrainingSetError(
            f"{path}: column 'event_id' must be unique; {int(duplicated.sum())} rows share an id, "
            f"e.g. {examples}"
        )
    return frame


def _day(frame: pd.DataFrame) -> pd.Series:
    return frame["event_timestamp"].dt.tz_convert("UTC").dt.date


def _window(split: SplitConfig, data: DateWindow, last_days: int | None) -> DateWindow:
    """The configured window (default: the data's), cut to its last ``last_days`` days."""
    window = DateWindow(split.start_date or data.start, split.end_date or data.end)
    if last_days is None:
        return window
    return DateWindow(max(window.start, window.end - timedelta(days=last_days - 1)), window.end)


def _check_splits_have_rows(
    days: pd.Series,
    split_windows: dict[SplitName, DateWindow],
    source: Path,
    data_window: DateWindow,
) -> None:
    for name, days_range in split_windows.items():
        if not ((days >= days_range.start) & (days <= days_range.end)).any():
            raise TrainingSetError(
                f"{source}: the {name} split ({days_range}) has no impressions; the data covers "
                f"{data_window} (check training_set.valid_days / test_days / start_date / end_date)"
            )


def _retrieve(
    settings: Settings, feature_service: str, entity_df: pd.DataFrame, source: Path
) -> tuple[pd.DataFrame, dict[str, str]]:
    """``feature_service``'s features of ``entity_df``'s rows, point in time, and its schema."""
    with open_store(settings, offline=True) as store:
        schema = feature_service_schema(store, feature_service)
        clash = sorted(set(schema) & set(ENTITY_COLUMNS))
        if clash:
            raise TrainingSetError(
                f"feature service {feature_service!r}: features {clash} clash with entity columns"
            )
        retrieved = store.get_historical_features(
            entity_df=entity_df,
            features=store.get_feature_service(feature_service),
            full_feature_names=False,
        ).to_df()
    # A point-in-time join is a left join: one output row per entity row, none lost or added.
    if len(retrieved) != len(entity_df) or set(retrieved["event_id"]) != set(entity_df["event_id"]):
        raise TrainingSetError(
            f"feature retrieval returned {len(retrieved)} rows for {len(entity_df)} impressions "
            f"from {source}; expected exactly one row per event_id"
        )
    return retrieved, schema


def build_training_set(
    settings: Settings,
    split: SplitConfig,
    *,
    feature_service: str,
    last_days: int | None = None,
) -> TrainingSet:
    """Retrieve ``feature_service`` for the labelled impressions in the window and split by day.

    ``last_days``: keep only the window's most recent days (the canary's fresh window).

    Rows are sorted by ``(event_timestamp, event_id)`` so the result does not depend on how the
    export or the join happened to order them. Raises :class:`TrainingSetError` if the window
    has no impressions or a split would be empty.
    """
    paths = settings.paths
    source = export_path(paths, ENTITY_EXPORT)
    impressions = load_entity_df(paths)
    if impressions.empty:
        raise TrainingSetError(f"{source}: no labelled impressions")
    days = _day(impressions)
    data_window = DateWindow(days.min(), days.max())
    window = _window(split, data_window, last_days)
    in_window = (days >= window.start) & (days <= window.end)
    if not in_window.any():
        raise TrainingSetError(
            f"{source}: no impressions in the window {window} (training_set.start_date / "
            f"end_date); the data covers {data_window}"
        )
    split_windows = plan_split(window, split)
    entity_df = impressions.loc[in_window].reset_index(drop=True)
    _check_splits_have_rows(_day(entity_df), split_windows, source, data_window)
    retrieved, schema = _retrieve(settings, feature_service, entity_df, source)
    frame = coerce_features(retrieved, schema)[[*ENTITY_COLUMNS, *schema]]
    frame["event_timestamp"] = frame["event_timestamp"].dt.tz_convert("UTC")
    frame = frame.sort_values(["event_timestamp", "event_id"], kind="stable").reset_index(drop=True)

    frame_days = _day(frame)
    parts = {
        name: frame.loc[(frame_days >= r.start) & (frame_days <= r.end)].reset_index(drop=True)
        for name, r in split_windows.items()
    }
    return TrainingSet(
        train=parts["train"],
        valid=parts["valid"],
        test=parts["test"],
        feature_service=feature_service,
        feature_names=list(schema),
        feature_types=dict(schema),
        window=window,
        split_windows=split_windows,
    )
