"""Request-time features: transformations of the request context and of stored features.

``mode="python"`` runs the UDF on a dict of columns (lists) both online and offline; online it
avoids building a DataFrame per request. The UDF is serialized with dill into the registry, so it
imports what it needs inside its body. Inputs can be ``None`` (no stored row for the entity, a
null in parquet) or NaN, and outputs are ``None`` where they are undefined, so the online and the
offline paths agree value for value (tests/integration/test_feature_store.py checks this).
"""

from typing import Any

from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int32, String

if __package__:  # imported as the package feature_repo (rankflow.features.store)
    from . import features
else:  # imported by `feast apply` as top-level modules of the repo folder
    import features

request_context = RequestSource(
    name="request_context",
    schema=[
        Field(name="position", dtype=Int32, description="1 = top slot"),
        Field(name="device", dtype=String),
        Field(name="hour_of_day", dtype=Int32, description="UTC hour of the request, 0..23"),
    ],
    description="Known when the ranking request arrives, never stored",
)


@on_demand_feature_view(
    sources=[
        request_context,
        features.user_daily_stats[["user_ctr_28d"]],
        features.user_category_affinity[["uc_ctr_28d"]],
    ],
    # No per-field descriptions here: Feast 0.67 checks this schema against fields it infers
    # by calling the UDF, and that comparison includes the (empty) inferred descriptions.
    schema=[
        Field(name="log_position", dtype=Float64),
        Field(name="hour_sin", dtype=Float64),
        Field(name="hour_cos", dtype=Float64),
        Field(name="uc_ctr_lift", dtype=Float64),
    ],
    mode="python",
    description=(
        "log_position = ln(1 + position); hour_sin, hour_cos = sin, cos(2 pi hour_of_day / 24); "
        "uc_ctr_lift = uc_ctr_28d / user_ctr_28d, null when either is missing or zero"
    ),
)
def request_features(inputs: dict[str, Any]) -> dict[str, Any]:
    import math

    def present(value: Any) -> bool:
        return value is not None and not (isinstance(value, float) and math.isnan(value))

    def lift(uc_ctr: Any, user_ctr: Any) -> float | None:
        if present(uc_ctr) and present(user_ctr) and user_ctr > 0:
            return float(uc_ctr) / float(user_ctr)
        return None

    angles = [2.0 * math.pi * float(hour) / 24.0 for hour in inputs["hour_of_day"]]
    return {
        "log_position": [math.log1p(float(p)) for p in inputs["position"]],
        "hour_sin": [math.sin(a) for a in angles],
        "hour_cos": [math.cos(a) for a in angles],
        "uc_ctr_lift": [
            lift(uc, u) for uc, u in zip(inputs["uc_ctr_28d"], inputs["user_ctr_28d"], strict=True)
        ],
    }
