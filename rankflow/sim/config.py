"""The simulator's settings (``simulation:`` in configs/rankflow.yaml) and its fixed vocabularies.

Kept apart from the generator (rankflow/sim/population.py, rankflow/sim/simulate.py) so the
pipeline config can validate a simulation block without importing numpy-heavy code paths, and
so each module stays small. Every field is documented in docs/data-contract.md ("Simulator").
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Vocabularies. Shares are the population mix; effects that depend on them are documented in
# docs/data-contract.md ("Simulator").
SEGMENTS: Final = ("casual", "power", "deal_seeker", "explorer", "loyal")
SEGMENT_SHARES: Final = (0.35, 0.12, 0.20, 0.18, 0.15)
# Slope of the logit on standardised log price, per segment, before ``segment_price_strength``:
# deal seekers shy away from expensive items, power users do not mind them.
SEGMENT_PRICE_SLOPES: Final = (-0.3, 0.5, -1.5, 0.0, -0.5)
AGE_BUCKETS: Final = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_SHARES: Final = (0.18, 0.30, 0.24, 0.16, 0.12)
REGIONS: Final = ("na-east", "na-west", "eu-west", "eu-north", "apac", "latam")
REGION_SHARES: Final = (0.22, 0.18, 0.20, 0.10, 0.20, 0.10)
DEVICE_SHARES: Final = (0.60, 0.30, 0.10)  # preferred device of users, in DEVICES order
# Hour (UTC) at which each device's click propensity peaks: phones late evening, desktops at
# work, tablets after dinner. ``device_hour_strength`` is the amplitude.
DEVICE_PEAK_HOURS: Final = (22.0, 11.0, 19.0)
CATEGORY_NAMES: Final = (
    "electronics",
    "fashion",
    "home",
    "beauty",
    "sports",
    "books",
    "toys",
    "grocery",
    "garden",
    "automotive",
    "pets",
    "music",
    "games",
    "health",
    "jewelry",
    "office",
    "baby",
    "travel",
    "outdoor",
    "crafts",
)
# Day-of-week click effect (Monday..Sunday), times ``seasonality_strength``: weekends click more.
DAY_OF_WEEK_EFFECT: Final = (-0.3, -0.2, 0.0, 0.0, 0.2, 0.8, 0.6)
CTR_PEAK_HOUR: Final = 21.0  # the hour-of-day CTR curve peaks in the evening

# Cohort 0 of users and items arrives on this day; ids count from it. It never moves, so an
# entity's id, attributes and dates do not depend on the simulated window.
ANCHOR_DATE: Final = date(1990, 1, 1)
# Lifetimes are cut at this many means (exp(-8): 0.03% of entities would live longer). The
# population is stationary from ANCHOR_DATE + LIFETIME_CAP * the longest mean lifetime on.
LIFETIME_CAP: Final = 8.0


def category_names(n: int) -> list[str]:
    """Category vocabulary: readable names first, then ``category_20``, ``category_21``, ..."""
    return [CATEGORY_NAMES[k] if k < len(CATEGORY_NAMES) else f"category_{k:02d}" for k in range(n)]


class SimulationConfig(BaseModel):
    """Sizes, time range, population dynamics and truth strengths (``simulation:`` in YAML).

    Strengths are in logit units; 0 switches a component off.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(7, description="Seed of every random draw: same config, same data")
    n_users: int = Field(
        10_000, ge=1, description="Users alive on a typical day (arrivals balance departures)"
    )
    n_items: int = Field(2_000, ge=1, description="Items in the catalogue on a typical day")
    n_categories: int = Field(20, ge=1, description="Item categories (the first 20 have names)")
    n_impressions: int = Field(
        1_000_000,
        ge=1,
        description="Total over `days` days: each day gets n_impressions / days, weekends more "
        "(exact over whole weeks; a day's count never depends on the window)",
    )
    days: int = Field(30, ge=1, description="Days in the window; a later end_date drops the oldest")
    end_date: date | None = Field(
        None, description="Exclusive end day (UTC); None = today UTC, so no data lies in the future"
    )
    target_ctr: float = Field(
        0.045, gt=0, lt=0.5, description="Overall CTR the base logit is solved for"
    )

    # Population dynamics (cold start and growth)
    user_lifetime_days: float = Field(
        120.0,
        ge=1,
        le=1000,
        description="Mean days a user stays (exponential); n_users / this = signups per day",
    )
    item_lifetime_days: float = Field(
        365.0,
        ge=1,
        le=1000,
        description="Mean days an item stays listed; n_items / this = new items per day",
    )
    new_user_traffic_share: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of each day's requests made by users in their first new_user_days "
        "days: the knob for test traffic from users unseen in training",
    )
    new_user_days: int = Field(3, ge=1, description="How long a user counts as new")

    # Traffic shape
    slots_min: int = Field(4, ge=1, le=100, description="Fewest slots of a request")
    slots_max: int = Field(10, ge=1, le=100, description="Most slots of a request")
    user_activity_sigma: float = Field(
        1.0, ge=0, description="Log-normal sigma of per-user activity (heavy tail)"
    )
    item_popularity_exponent: float = Field(
        0.8, ge=0, lt=1, description="Item exposure weight U^-exponent: Zipf-like with this slope"
    )
    device_loyalty: float = Field(
        0.8, ge=0, le=1, description="Share of requests on the preferred device"
    )
    weekend_traffic_lift: float = Field(
        0.15, ge=0, description="Extra traffic on Saturdays and Sundays"
    )
    attribute_null_rate: float = Field(
        0.02, ge=0, le=1, description="Share of null age_bucket / region"
    )

    # Truth strengths
    user_bias_std: float = Field(0.3, ge=0, description="Std of the per-user logit offset")
    item_quality_std: float = Field(0.4, ge=0, description="Std of the per-item logit offset")
    position_bias_strength: float = Field(
        0.5, ge=0, description="Logit falls by this times ln(position)"
    )
    seasonality_strength: float = Field(
        0.2, ge=0, description="Amplitude of the hour and day-of-week curves"
    )
    segment_category_strength: float = Field(
        0.6, ge=0, description="Std of segment x category weights"
    )
    segment_price_strength: float = Field(
        0.3, ge=0, description="Scale of the per-segment price slopes"
    )
    age_category_strength: float = Field(
        0.15, ge=0, description="Std of age_bucket x category weights"
    )
    device_hour_strength: float = Field(
        0.3, ge=0, description="Amplitude of the device x hour curves"
    )
    segment_category_device_strength: float = Field(
        0.35, ge=0, description="Std of the 3rd-order segment x category x device weights"
    )
    latent_strength: float = Field(
        0.5, ge=0, description="Std of the user-taste . item-vector term"
    )
    latent_dim: int = Field(8, ge=1, description="Dimension of tastes and item vectors")
    latent_category_share: float = Field(
        0.5, ge=0, le=1, description="Share of an item vector's variance shared by its category"
    )

    # Concept drift
    drift_day: int | None = Field(
        None, ge=0, description="0-based day from which the truth drifts; None = never"
    )
    drift_strength: float = Field(
        0.5, ge=0, le=1, description="0 = no change, 1 = drifted parts replaced by fresh draws"
    )
    drift_user_share: float = Field(
        0.5, ge=0, le=1, description="Share of users whose taste drifts"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SimulationConfig:
        if self.slots_min > self.slots_max:
            raise ValueError(
                f"slots_min ({self.slots_min}) must be <= slots_max ({self.slots_max})"
            )
        if self.n_items < self.slots_max:
            raise ValueError(
                f"n_items ({self.n_items}) must be >= slots_max ({self.slots_max}): "
                "a request never shows the same item twice"
            )
        if self.n_impressions < self.days:
            raise ValueError(f"n_impressions ({self.n_impressions}) must be >= days ({self.days})")
        if self.drift_day is not None and self.drift_day >= self.days:
            raise ValueError(f"drift_day ({self.drift_day}) must be < days ({self.days})")
        if self.end_date is not None and self.end_date - timedelta(days=self.days) < (
            earliest := self.stationary_from()
        ):
            raise ValueError(
                f"end_date ({self.end_date}) minus days must be on or after {earliest}: the "
                "simulated population (which arrives from 1990-01-01) is stationary from then"
            )
        return self

    def stationary_from(self) -> date:
        """First day whose population no longer depends on the anchor (entities from before
        ANCHOR_DATE would be needed earlier); also the day the base logit is calibrated on."""
        longest = max(self.user_lifetime_days, self.item_lifetime_days)
        return ANCHOR_DATE + timedelta(days=int(LIFETIME_CAP * longest) + 1)

    def resolved_end_date(self) -> date:
        """The exclusive end day: ``end_date`` or today (UTC)."""
        return self.end_date or datetime.now(UTC).date()

    def resolved_start_date(self) -> date:
        return self.resolved_end_date() - timedelta(days=self.days)

    def mean_impressions_per_day(self) -> float:
        """A weekday's share before the weekend lift; see ``day_impressions``."""
        week = (5 + 2 * (1 + self.weekend_traffic_lift)) / 7
        return self.n_impressions / self.days / week

    def day_impressions(self, day: date) -> int:
        """Impressions on ``day``: a function of the date alone, so days never change when the
        window moves (over whole weeks the window total is n_impressions up to rounding)."""
        lift = 1 + self.weekend_traffic_lift * (day.weekday() >= 5)
        return max(1, round(self.mean_impressions_per_day() * lift))
