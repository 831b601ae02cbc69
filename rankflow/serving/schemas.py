"""The /score request and response bodies (pydantic): bounded, strict, and named in errors.

Every field has a bound, unknown fields are refused, and types are strict where a silent
coercion would change the answer (an item id sent as ``"12"`` or ``12.5`` is a 422 naming
``item_ids``, not a lookup of some other item). The request model is built per service by
:func:`score_request_model`, because ``max_candidates`` comes from the YAML config; its hard
ceiling is :data:`~rankflow.serving.config.HARD_MAX_CANDIDATES`.

``time`` is bounded to :data:`EARLIEST_TIME` .. :data:`LATEST_TIME` (UTC): any representable
ISO 8601 time is either accepted or a 422 naming ``time`` and that range, never a 5xx.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    create_model,
    field_validator,
    model_validator,
)

from rankflow.serving.config import HARD_MAX_CANDIDATES

INT64_MAX = 2**63 - 1
Id = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
Position = Annotated[StrictInt, Field(ge=1, le=100)]

# Request times every reader of the served log can hold: the gap check reads it with pandas,
# whose nanosecond timestamps end in April 2262; nothing rankflow serves predates the epoch.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2261, 12, 31, 23, 59, 59, tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def bounded_utc(value: datetime) -> datetime:
    """``value`` in UTC (naive = UTC); ValueError naming the accepted range when outside it.

    Converting first can itself overflow: ``0001-01-01T00:00:00+05:00`` is in year 0 in UTC.
    """
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST_TIME <= utc <= LATEST_TIME:
        raise ValueError(
            f"{value.isoformat()} is outside the accepted range "
            f"{_iso(EARLIEST_TIME)} .. {_iso(LATEST_TIME)} (UTC)"
        )
    return utc


class ScoreRequestBase(BaseModel):
    """What a caller knows about one ranking request."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    request_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Caller's id for the request (logged as __request_id); default a UUID",
    )
    user_id: Id
    item_ids: list[Id]
    device: str = Field(
        ..., min_length=1, max_length=32, description="mobile, desktop, tablet (others: unseen)"
    )
    time: datetime | None = Field(
        None,
        description="When the request happens (ISO 8601; naive = UTC), "
        "1970-01-01T00:00:00Z .. 2261-12-31T23:59:59Z; default now",
    )
    positions: list[Position] | None = Field(
        None,
        description="Positions the items will be shown at, when already decided (log replay); "
        "default every item at serving.score_position",
    )

    @field_validator("time")
    @classmethod
    def _time_in_range(cls, value: datetime | None) -> datetime | None:
        return None if value is None else bounded_utc(value)

    @model_validator(mode="after")
    def _consistent(self) -> ScoreRequestBase:
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError("item_ids: each candidate may appear once")
        if self.positions is not None and len(self.positions) != len(self.item_ids):
            raise ValueError(
                f"positions: {len(self.positions)} given for {len(self.item_ids)} item_ids"
            )
        return self

    def request_time(self) -> datetime:
        """The request's time in UTC (the validator already converted an explicit one)."""
        return datetime.now(UTC) if self.time is None else self.time


def score_request_model(max_candidates: int) -> type[ScoreRequestBase]:
    """The request model with ``item_ids`` bounded to 1..``max_candidates``."""
    if not 1 <= max_candidates <= HARD_MAX_CANDIDATES:
        raise ValueError(f"max_candidates must be in 1..{HARD_MAX_CANDIDATES}")
    items = Annotated[list[Id], Field(min_length=1, max_length=max_candidates)]
    return create_model(
        "ScoreRequest",
        __base__=ScoreRequestBase,
        item_ids=(items, Field(..., description=f"Candidate item ids, 1..{max_candidates}")),
    )


class ScoredItem(BaseModel):
    item_id: int
    p_click: float
    rank: int


class ModelRef(BaseModel):
    name: str
    version: str
    kind: str


class ScoreResponse(BaseModel):
    """Candidates ranked by P(click), with the model and arm that scored them."""

    request_id: str
    arm: str
    model: ModelRef
    items: list[ScoredItem]
    unknown_user: bool
    unknown_items: int
    missing_features: int
