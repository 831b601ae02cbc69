"""Online feature lookup for one request: Feast's ``get_online_features`` through the feature
service, read straight from the response proto (values, statuses, event timestamps), plus the
item -> category lookup the user x category view needs.

Why not ``online_features`` of rankflow.features.store: that builds a DataFrame per call and
drops the statuses and timestamps, which the served-feature log records and the TTL rule needs.

**The TTL rule** (the known online/offline difference, removed here): the online store keeps an
entity's last materialized row however old it is, while the point-in-time join of training
returns null for a row older than the view's TTL at the impression's time. With
``serving.enforce_ttl`` (the default) the service treats such a value as missing (status
``OUTSIDE_MAX_AGE``) and recomputes the on-demand features of the affected rows, so it serves
what training saw; with it off, the gap check's feature-skew check reports the difference.

**Point in time.** The online store holds only each entity's latest row. A request that names
its ``time`` is answered with those rows only when none is stamped after that time (give or take
``serving.point_in_time_tolerance_seconds``); otherwise the value valid then is an older row the
online store no longer has, and :class:`PointInTimeError` says so (a 422), instead of serving
a value from the request's future.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rankflow.errors import RankflowError

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore
    from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto
    from google.protobuf.timestamp_pb2 import Timestamp

# feast.serving.FieldStatus values, as the Feast log schema's ``__status`` columns carry them.
PRESENT, NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE = 1, 2, 3, 4
UNKNOWN_CATEGORY = ""  # looked up for an item without a stored category: matches nothing
REQUEST_FIELDS = ("position", "device", "hour_of_day")
JOIN_KEYS = ("user_id", "item_id", "category")


class ServingError(RankflowError):
    """The service cannot serve: feature service not applied, no champion, bad state."""


class OnlineStoreUnavailable(ServingError):
    """The online store cannot be read now (locked by a writer, missing, unreachable): not the
    caller's error, and likely gone on a retry."""


class PointInTimeError(ServingError):
    """The request's time is before the online rows it would be served: the online store only
    holds the latest values, so it cannot answer that time."""


@dataclass(frozen=True)
class FeatureSlot:
    """Where a bare feature name comes from."""

    name: str
    view: str
    ttl: timedelta | None  # None: no TTL (attributes, on-demand)
    on_demand: bool


@dataclass
class Served:
    """One request's rows: feature values and, for the log, their statuses and timestamps."""

    values: dict[str, list[Any]]
    statuses: dict[str, list[int]]
    timestamps: dict[str, list[datetime | None]]
    unknown_users: int = 0
    unknown_items: int = 0
    missing: dict[tuple[str, str], int] = field(default_factory=dict)  # (view, reason) -> count


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def stamped_after(
    timestamps: Mapping[str, Sequence[datetime | None]],
    views: Mapping[str, str],
    limit: datetime,
) -> dict[str, datetime]:
    """Feature view -> its newest served timestamp, for the views with a value stamped after
    ``limit``. ``timestamps``: feature -> one timestamp per row (None: no value or on-demand);
    ``views``: feature -> its feature view."""
    late: dict[str, datetime] = {}
    for name, stamps in timestamps.items():
        newest = max((t for t in stamps if t is not None), default=None)
        if newest is not None and newest > limit:
            view = views[name]
            late[view] = max(newest, late.get(view, newest))
    return late


def point_in_time_error(request_time: datetime, late: Mapping[str, datetime]) -> PointInTimeError:
    """The 422 for :func:`stamped_after`'s views: names each view and its newest timestamp."""
    views = ", ".join(f"{view!r} (stamped {_iso(stamp)})" for view, stamp in sorted(late.items()))
    noun = "feature view" if len(late) == 1 else "feature views"
    return PointInTimeError(
        f"time: {_iso(request_time)} is before the online store's values of {noun} "
        f"{views}; the online store holds only the latest values, so it cannot answer that "
        f"time. Send a time at or after {_iso(max(late.values()))}, or none (now)"
    )


def _value(proto: ValueProto) -> Any:
    kind = proto.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    return getattr(proto, kind)


def _timestamp(proto: Timestamp) -> datetime | None:
    if not proto.seconds and not proto.nanos:
        return None
    return datetime.fromtimestamp(proto.seconds + proto.nanos / 1e9, tz=UTC)


def _unavailable_errors(store_type: str) -> tuple[type[Exception], ...]:
    """What a read raises when the store, not the request, is at fault: SQLite's locked, busy,
    missing-table or unopenable database; Redis' refused or timed-out connection."""
    if store_type == "redis":
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        return (RedisConnectionError, RedisTimeoutError)
    return (sqlite3.DatabaseError,)


class OnlineLookup:
    """Feature service lookups against one ``FeatureStore`` (thread-safe)."""

    def __init__(
        self,
        store: FeatureStore,
        service_name: str,
        *,
        enforce_ttl: bool = True,
        point_in_time_tolerance: timedelta = timedelta(0),
        category_cache_seconds: float = 300.0,
        serialize_reads: bool = True,
        on_demand_in_process: bool = True,
    ) -> None:
        from rankflow.features.store import feature_service_schema

        self.store = store
        try:
            self.service: FeatureService = store.get_feature_service(service_name)
        except Exception as error:  # Feast's FeatureServiceNotFoundException and registry errors
            raise ServingError(
                f"feature service {service_name!r} is not in the registry "
                f"({store.config.registry.path}): build the state first (`rankflow run`; "
                f"`rankflow features` if its warehouse is built) ({error})"
            ) from error
        self.schema = feature_service_schema(store, service_name)
        self.slots = self._slots()
        self.enforce_ttl = enforce_ttl
        self.point_in_time_tolerance = point_in_time_tolerance
        self.category_cache_seconds = category_cache_seconds
        self._categories: dict[int, tuple[float, str | None]] = {}
        # SQLite: one shared connection; Feast does not lock it. Redis clients are thread-safe.
        self._lock = threading.Lock() if serialize_reads else None
        self._store_type = str(store.config.online_store.type)
        self._unavailable = _unavailable_errors(self._store_type)
        self.on_demand_in_process = on_demand_in_process
        self._odfv_inputs: dict[str, list[str]] = {}
        # Stored features by reference: Feast reads only these when the on-demand views run here.
        self._stored_refs = [
            f"{slot.view}:{name}" for name, slot in self.slots.items() if not slot.on_demand
        ]
        self._odfv_udfs = {
            view.name: view.feature_transformation.udf
            for view in store.list_on_demand_feature_views()
            if view.name in {s.view for s in self.slots.values() if s.on_demand}
        }

    def _slots(self) -> dict[str, FeatureSlot]:
        views = {v.name: v for v in self.store.list_feature_views()}
        slots: dict[str, FeatureSlot] = {}
        for projection in self.service.feature_view_projections:
            view = views.get(projection.name)
            ttl = view.ttl if view is not None and view.ttl and view.ttl > timedelta(0) else None
            for feature in projection.features:
                slots[feature.name] = FeatureSlot(
                    feature.name, projection.name_to_use(), ttl, view is None
                )
        return slots

    # ---------------------------------------------------------------------------- reads
    def _read(
        self, features: list[str] | FeatureService, rows: Mapping[str, Sequence[Any]]
    ) -> GetOnlineFeaturesResponse:
        try:
            if self._lock is None:
                return self._read_unlocked(features, rows)
            with self._lock:
                return self._read_unlocked(features, rows)
        except self._unavailable as error:
            raise OnlineStoreUnavailable(
                f"the online store ({self._store_type}) cannot be read now: {error}; retry shortly"
            ) from error

    def _read_unlocked(
        self, features: list[str] | FeatureService, rows: Mapping[str, Sequence[Any]]
    ) -> GetOnlineFeaturesResponse:
        return self.store.get_online_features(features=features, entity_rows=dict(rows)).proto

    def categories(self, item_ids: Sequence[int]) -> list[str | None]:
        """Each item's stored category (None: unknown item), from a short-lived cache."""
        now = time.monotonic()
        out: list[str | None] = []
        wanted = []
        for item in item_ids:
            hit = self._categories.get(item)
            if hit is None or now - hit[0] > self.category_cache_seconds:
                wanted.append(item)
        if wanted:
            proto = self._read(["item_attributes:item_category"], {"item_id": wanted})
            names = list(proto.metadata.feature_names.val)
            vector = proto.results[names.index("item_category")]
            for item, value in zip(wanted, vector.values, strict=True):
                self._categories[item] = (now, _value(value))
        for item in item_ids:
            out.append(self._categories[item][1])
        return out

    def fetch(
        self,
        rows: Mapping[str, Sequence[Any]],
        request_time: datetime,
        n_items: int,
        *,
        point_in_time: bool = True,
    ) -> Served:
        """The service's features for ``rows`` (join keys + request fields, one row per item).

        ``point_in_time``: refuse (:class:`PointInTimeError`) when a stored value is stamped
        after ``request_time`` (see the module docstring). Off for a request without a time:
        "now" is answered with the latest values even when a clock or a simulation put them
        ahead of the service's clock.

        With ``on_demand_in_process`` (the default) Feast reads the stored views and the
        on-demand view's own UDF (from the registry) runs here on values already converted
        once: Feast's python-mode augmentation converts every feature of the response back to
        Python to run it, about half of a 100-row read (docs/benchmarks.md, "Serving").
        """
        if self.on_demand_in_process:
            keys = {k: rows[k] for k in JOIN_KEYS if k in rows}
            proto = self._read(self._stored_refs, keys)
        else:
            proto = self._read(self.service, rows)
        names = list(proto.metadata.feature_names.val)
        served = Served({}, {}, {})
        # The features of one view share each row's event timestamp: convert each once.
        stamps: dict[tuple[int, int], datetime | None] = {}
        for name, vector in zip(names, proto.results, strict=True):
            if name not in self.slots:
                continue
            served.values[name] = [_value(v) for v in vector.values]
            served.statuses[name] = list(vector.statuses)
            row_stamps = []
            for t in vector.event_timestamps:
                key = (t.seconds, t.nanos)
                if key not in stamps:
                    stamps[key] = _timestamp(t)
                row_stamps.append(stamps[key])
            served.timestamps[name] = row_stamps
        if point_in_time:
            self._check_point_in_time(served, request_time)
        if self.on_demand_in_process:
            self._recompute_on_demand(served, rows, list(range(n_items)), fill=True)
        self._count_missing(served)
        if self.enforce_ttl:
            self._expire(served, rows, request_time)
        user_status = served.statuses.get("user_segment")
        if user_status and user_status[0] == NOT_FOUND:
            served.unknown_users = 1
        return served

    def _check_point_in_time(self, served: Served, request_time: datetime) -> None:
        views = {name: self.slots[name].view for name in served.timestamps}
        limit = request_time + self.point_in_time_tolerance
        late = stamped_after(served.timestamps, views, limit)
        if late:
            raise point_in_time_error(request_time, late)

    def _count_missing(self, served: Served) -> None:
        for name, statuses in served.statuses.items():
            view = self.slots[name].view
            for status, value in zip(statuses, served.values[name], strict=True):
                if status == NOT_FOUND:
                    key = (view, "not_found")
                elif value is None:
                    key = (view, "null")
                else:
                    continue
                served.missing[key] = served.missing.get(key, 0) + 1

    def _expire(
        self, served: Served, rows: Mapping[str, Sequence[Any]], request_time: datetime
    ) -> None:
        """Null values older than their view's TTL at ``request_time``; redo on-demand rows."""
        touched: set[int] = set()
        for name, slot in self.slots.items():
            if slot.ttl is None or name not in served.values:
                continue
            oldest = request_time - slot.ttl
            stamps = served.timestamps[name]
            for i, stamp in enumerate(stamps):
                if stamp is not None and stamp < oldest and served.values[name][i] is not None:
                    served.values[name][i] = None
                    served.statuses[name][i] = OUTSIDE_MAX_AGE
                    key = (slot.view, "outside_max_age")
                    served.missing[key] = served.missing.get(key, 0) + 1
                    touched.add(i)
        if touched:
            self._recompute_on_demand(served, rows, sorted(touched))

    def _recompute_on_demand(
        self,
        served: Served,
        rows: Mapping[str, Sequence[Any]],
        index: list[int],
        *,
        fill: bool = False,
    ) -> None:
        """Run the on-demand UDFs on rows ``index``; ``fill``: create their columns (status
        PRESENT and no timestamp, as Feast reports on-demand outputs)."""
        for view, udf in self._odfv_udfs.items():
            inputs = {
                name: [(rows[name] if name in rows else served.values[name])[i] for i in index]
                for name in self._udf_inputs(view, rows, served)
            }
            outputs = udf(inputs)
            for name, values in outputs.items():
                if fill and name in self.slots:
                    served.values[name] = list(values)
                    served.statuses[name] = [PRESENT] * len(index)
                    served.timestamps[name] = [None] * len(index)
                elif name in served.values:
                    for i, value in zip(index, values, strict=True):
                        served.values[name][i] = value

    def _udf_inputs(self, view: str, rows: Mapping[str, Any], served: Served) -> list[str]:
        names = self._odfv_inputs.get(view)
        if names is None:
            names = self._odfv_inputs[view] = self._inputs_of(view)
        return [n for n in names if n in rows or n in served.values]

    def _inputs_of(self, view: str) -> list[str]:
        odfv = self.store.get_on_demand_feature_view(view)
        names = [f.name for source in odfv.source_request_sources.values() for f in source.schema]
        for projection in odfv.source_feature_view_projections.values():
            names += [f.name for f in projection.features]
        return names
