"""``serving:`` in configs/rankflow.yaml: what the scoring service does with a request.

Plain pydantic, no heavy imports: ``rankflow.config`` imports it for every CLI command.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# The request schema's own ceiling: the configured limit may be lower, never higher, so one
# request can never ask for an unbounded Feast read.
HARD_MAX_CANDIDATES = 1000


class LogConfig(BaseModel):
    """The served-feature log (Feast's logging schema, written in batches off the request path)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Write the served-feature and score logs")
    buffer_rows: int = Field(
        200_000, ge=1, description="Rows held in memory at most; beyond it rows are dropped"
    )
    flush_rows: int = Field(5_000, ge=1, description="Flush when this many rows are waiting")
    flush_seconds: float = Field(2.0, gt=0, description="Flush at least this often")


class ServingConfig(BaseModel):
    """The scoring service (``rankflow serve``)."""

    model_config = ConfigDict(extra="forbid")

    max_candidates: int = Field(
        200, ge=1, le=HARD_MAX_CANDIDATES, description="Most candidate items per /score request"
    )
    canary_share: float = Field(
        0.0, ge=0, le=1, description="Share of users (stable hash of user_id) sent to @challenger"
    )
    score_position: int = Field(
        1, ge=1, le=100, description="Position candidates are scored at when the caller gives none"
    )
    alias_poll_seconds: float = Field(
        10.0, gt=0, description="How often the service re-reads @champion / @challenger"
    )
    online_timeout_seconds: float = Field(
        1.0,
        gt=0,
        le=30,
        description="How long a read waits for a locked SQLite online store before /score "
        "answers 503 with Retry-After (sqlite3's own wait is 5 s)",
    )
    category_cache_seconds: float = Field(
        300.0, ge=0, description="How long an item's category is cached (0 = read every time)"
    )
    enforce_ttl: bool = Field(
        True,
        description="Serve a stored value older than its view's TTL at request time as missing, "
        "as the point-in-time join of training does",
    )
    point_in_time_tolerance_seconds: float = Field(
        0.0,
        ge=0,
        le=86_400,
        description="A request's explicit time may be this much earlier than the online values "
        "it is served (a client's clock skew) before it is refused as a time the online store "
        "cannot answer; those requests are served values training would not have seen then",
    )
    on_demand_in_process: bool = Field(
        True,
        description="Run the on-demand view's registered UDF in the service on the stored "
        "values Feast read (same code, half the 100-row read time) instead of Feast's "
        "augmentation",
    )
    scoring_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="Requests scored at once; the rest wait their turn in arrival order. A "
        "request is CPU under the GIL, so more threads only interleave them and stretch the "
        "tail (bench_serving, 8 clients)",
    )
    max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=64 * 1_048_576,
        description="Largest request body accepted; a larger one is a 413 before it is parsed "
        "(a /score body with max_candidates items is a few KB)",
    )
    log: LogConfig = Field(default_factory=LogConfig)
