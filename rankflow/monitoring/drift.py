"""The drift check: the served rows against a comparable reference, at a declared false-alarm rate.

**The reference** (:func:`reference_window`) is, by default, the ``monitoring.
drift_reference_days`` days just before the served day: features at maturity, a week of
weekdays, and as far from the served day whatever the champion's age. A champion kept for weeks
(canaries that stay inconclusive) would otherwise be judged against days ever further back, and
windowed counters of head entities drift apart with the distance even when nothing changed.
``monitoring.drift_reference: training_window`` compares with the last days of the champion's
training window instead (the same days while champions are retrained weekly). Never the whole
window: its first days have truncated 28-day counters (the data starts there), which a served
day, whose counters are mature, never has. The reference's rows are looked up **as served**
(:func:`as_served`): at the start of their day plus a second, which is what the daily
materialization had published when the day was served; at their own time, users who signed up
that day already have their attributes, which the service, reading the store materialized at
midnight, cannot have. A served log that covers part of a day is compared with the same hours
of the reference days (:func:`served_hours`).

**The tests**: PSI per feature, KS per numeric feature, and an adversarial classifier whose AUC
is measured on users and items it did not learn from (rows of one entity on one day share its
daily snapshot, so a classifier that saw some of them recognises the rest). Each threshold is
the largest of three:

- the configured one, calibrated on simulated drift-free days (``bench/
  bench_drift_false_alarms.py``; method in docs/operations.md, figures in docs/benchmarks.md):
  at thousands of rows, day-to-day variation of the traffic decides, not sampling noise;
- the statistic's null quantile at ``alpha / tests``, ``alpha`` being
  ``monitoring.drift_false_alarm_rate``: sampling noise alone fails the check at most at that
  rate (Bonferroni over the tests) from ``MIN_ROWS`` rows a side;
- the reference days' own spread, by the configured thresholds' rule (warn from the most one
  day differs from the others, fail from ``DAY_MARGIN`` times it; :func:`day_to_day`): where
  a head entity's daily value moves PSI more than the simulated days showed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from rankflow.monitoring.checks import CheckResult
from rankflow.monitoring.config import MonitoringConfig, ReferenceMode, Threshold
from rankflow.monitoring.stats import (
    Adversarial,
    Binned,
    Verdict,
    adversarial_validation,
    binned,
    chi2_psi,
    grade,
    ks,
    null_auc_lift,
    null_ks,
    null_psi,
    worst,
)

# Entities whose rows share a daily snapshot: the classifier is measured on the ones it did not
# learn from. The user x category features are keyed by the user, so the user covers them.
ENTITY_KEYS = ("user_id", "item_id")
# Fewest rows a side for a verdict: below it an empty bin decides PSI, and no null quantile of
# the statistics holds (tests/unit/test_drift_statistics.py checks the rate from here up).
MIN_ROWS = 200
# Reference rows are looked up just after midnight: a daily view's row of the day (stamped
# 00:00) is found, the day before's (one TTL back) is not, as the service's TTL rule serves it.
AS_SERVED_OFFSET = pd.Timedelta(seconds=1)
NULL_BOUND_FACTOR = 4.0  # see _psi_null
# The reference's own days are drift-free by assumption: a served day fails from this many
# times the most one of them differs from the others (the rule the configured thresholds were
# calibrated by), and warns from that much (see day_to_day).
DAY_MARGIN = 1.5
MIN_DAY_ROWS = 100  # fewer rows on a reference day: left out of its spread
# An entity whose share of the rows changes by this much is named in the drift summary.
ENTITY_SHIFT = 0.02
# Rows at either end of the served log's time span that do not count for it (served_span).
SPAN_TAIL = 0.005


# ------------------------------------------------------------------------- the reference
def reference_window(
    mode: ReferenceMode,
    days: int,
    data_end: date,
    *,
    served_from: date | None = None,
    training_window: str | None = None,
) -> tuple[date, date]:
    """The reference's days (inclusive), ``days`` of them, by ``mode``:

    - ``days_before_served``: the days just before ``served_from`` (the served log's first
      day), or the last days up to ``data_end`` when the warehouse does not reach it yet;
    - ``training_window``: the last days of ``training_window`` (``start..end``, the
      champion's ``rankflow.data_window`` tag); without one, the last days up to ``data_end``.
    """
    end = data_end
    if mode == "days_before_served" and served_from is not None:
        end = min(data_end, served_from - timedelta(days=1))
    start = end - timedelta(days=days - 1)
    if mode == "training_window" and training_window and ".." in training_window:
        first, last = (date.fromisoformat(p.strip()) for p in training_window.split(".."))
        start, end = max(first, last - timedelta(days=days - 1)), last
    return start, end


def served_span(stamps: pd.Series) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """When the served log begins and ends, leaving out ``SPAN_TAIL`` of its rows at either
    end: a client's request with an explicit time days back moves neither the served day nor
    the hours it covers. None for an empty log."""
    stamps = pd.to_datetime(stamps, utc=True).dropna()
    if stamps.empty:
        return None
    return stamps.quantile(SPAN_TAIL), stamps.quantile(1 - SPAN_TAIL)


def served_hours(stamps: pd.Series) -> tuple[int, ...] | None:
    """The UTC hours of the day that the :func:`served_span` of ``stamps`` covers, or None
    when it covers a whole day. A log that holds part of a day (a service started at noon, a
    log folder removed and recreated) is compared with the reference's same hours: its
    time-of-day features would otherwise differ from a whole day's by construction. A whole
    day whose traffic moved to other hours still covers every hour, so that change is still
    caught."""
    span = served_span(stamps)
    if span is None:
        return None
    first, last = span[0].floor("h"), span[1].floor("h")
    if last - first >= pd.Timedelta(hours=23):
        return None
    return tuple(t.hour for t in pd.date_range(first, last, freq="h"))


def as_served(entity: pd.DataFrame, column: str = "event_timestamp") -> pd.DataFrame:
    """``entity`` with each row's time moved to the start of its UTC day (plus a second): the
    point-in-time join then returns what the daily materialization published for the day,
    which is what the service served (the module docstring says why)."""
    out = entity.copy()
    stamps = pd.to_datetime(out[column], utc=True)
    out[column] = stamps.dt.floor("D") + AS_SERVED_OFFSET
    return out


def reference_entities(
    impressions: pd.DataFrame,
    window: tuple[date, date],
    rows: int,
    seed: int,
    hours: tuple[int, ...] | None = None,
) -> pd.DataFrame:
    """A seeded sample of ``rows`` impressions of ``window`` (inclusive days; only ``hours`` of
    the day when given, :func:`served_hours`) as an entity frame for the point-in-time join,
    looked up :func:`as_served`. Labels and ids are dropped: the join needs only the keys, the
    request columns and the time."""
    stamps = pd.to_datetime(impressions["event_timestamp"], utc=True)
    keep = (stamps.dt.date >= window[0]) & (stamps.dt.date <= window[1])
    if hours is not None:
        keep &= stamps.dt.hour.isin(hours)
    chosen = impressions[keep]
    sample = chosen.sample(min(rows, len(chosen)), random_state=seed)
    entity = sample.drop(columns=[c for c in ("label", "event_id", "event_date") if c in sample])
    return as_served(entity).reset_index(drop=True)


def describe_reference(
    mode: ReferenceMode, window: tuple[date, date], hours: tuple[int, ...] | None
) -> str:
    """The line that names the reference's rows in the check's summary."""
    which = (
        "the days before the served day"
        if mode == "days_before_served"
        else "the end of the champion's training window"
    )
    text = f"{window[0]}..{window[1]} ({which}, as served)"
    if hours is not None:
        text += f", UTC hours {hours[0]:02d}-{hours[-1]:02d} only, as the served log covers"
    return text


# ------------------------------------------------------------------------- the statistics
@dataclass(frozen=True)
class FeatureDrift:
    """One feature's statistics and the thresholds they met (configured, or the null quantile
    when that is higher)."""

    psi: float
    psi_warn: float
    psi_fail: float
    ks: float
    ks_pvalue: float
    ks_warn: float
    ks_fail: float
    verdict: Verdict
    # how far one reference day is from the others (day_to_day): PSI, KS
    reference_spread: tuple[float, float] = (0.0, 0.0)

    def line(self, name: str) -> str:
        text = f"{name} PSI {_fmt(self.psi)} (fail from {_fmt(self.psi_fail)})"
        if np.isfinite(self.ks) and self.ks >= self.ks_warn:
            text += f", KS {_fmt(self.ks)} (fail from {_fmt(self.ks_fail)})"
        if self.reference_spread[0] > 0:
            text += f"; the reference's days differ by up to PSI {_fmt(self.reference_spread[0])}"
        return text


def _fmt(value: float) -> str:
    return "nan" if value is None or not np.isfinite(value) else f"{value:.3g}"


def _guarded(threshold: Threshold, null: float, spread: float = 0.0) -> tuple[float, float]:
    """(warn, fail): the configured ones, raised to the null quantile and to the reference's
    own day-to-day spread (times ``DAY_MARGIN`` for fail)."""
    return max(threshold.warn, null, spread), max(threshold.fail, null, DAY_MARGIN * spread)


def day_to_day(reference: pd.Series, days: np.ndarray | None) -> tuple[float, float]:
    """The largest PSI (and KS, for numbers) of one reference day against the other days.

    Rows are not independent: an entity that carries much of the traffic (a head item with an
    eighth of the impressions) brings one snapshot value a day, and that value falling on
    either side of a quantile edge moves its whole share between bins, far past any threshold
    for independent rows. The reference's days, drift-free by assumption, show how much days
    differ for such reasons; a served day is judged against that too.
    """
    if days is None or len(pd.unique(days)) < 2:
        return 0.0, 0.0
    spread_psi, spread_ks = 0.0, 0.0
    numeric = pd.api.types.is_numeric_dtype(reference)
    for day in pd.unique(days):
        one = days == day
        if min(one.sum(), (~one).sum()) < MIN_DAY_ROWS:
            continue
        spread_psi = max(spread_psi, binned(reference[~one], reference[one]).psi())
        if numeric:
            spread_ks = max(spread_ks, np.nan_to_num(ks(reference[~one], reference[one])[0]))
    return spread_psi, spread_ks


def _numeric(reference: pd.Series, current: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(reference) and pd.api.types.is_numeric_dtype(current)


def count_tests(reference: pd.DataFrame, current: pd.DataFrame, features: list[str]) -> int:
    """How many tests share the false-alarm rate: PSI per feature, KS per numeric feature and
    the adversarial classifier."""
    numeric = sum(_numeric(reference[f], current[f]) for f in features)
    return len(features) + numeric + 1


def _psi_null(shares: Binned, alpha: float, cfg: MonitoringConfig) -> float:
    """:func:`null_psi`, or 0 where it cannot exceed the configured warn threshold: its
    bootstrap costs ~0.5 s a feature at thousands of rows, where the null is a few hundredths
    and the configured thresholds decide. The chi-square approximation times
    ``NULL_BOUND_FACTOR`` bounds it there (its tail was at most ~2x too thin, on small bins)."""
    if NULL_BOUND_FACTOR * chi2_psi(shares, alpha) < cfg.psi.warn:
        return 0.0
    return null_psi(shares, alpha, seed=cfg.seed)


def feature_drift(
    reference: pd.Series,
    current: pd.Series,
    cfg: MonitoringConfig,
    alpha: float,
    days: np.ndarray | None = None,
) -> FeatureDrift:
    """PSI (and KS for numbers) of one feature, graded against thresholds no lower than the
    statistics' null quantiles at ``alpha`` nor than the reference days' own spread
    (:func:`day_to_day`; ``days``: each reference row's day, None without)."""
    shares = binned(reference, current)
    value = shares.psi()
    spread = day_to_day(reference, days)
    psi_warn, psi_fail = _guarded(cfg.psi, _psi_null(shares, alpha, cfg), spread[0])
    verdicts = [grade(value, psi_warn, psi_fail)]
    stat, pvalue, ks_warn, ks_fail = (float("nan"),) * 4
    if _numeric(reference, current):
        stat, pvalue = ks(reference, current)
        sizes = int(reference.notna().sum()), int(current.notna().sum())
        ks_warn, ks_fail = _guarded(cfg.ks, null_ks(*sizes, alpha), spread[1])
        verdicts.append(grade(stat, ks_warn, ks_fail) if np.isfinite(stat) else "pass")
    return FeatureDrift(
        value, psi_warn, psi_fail, stat, pvalue, ks_warn, ks_fail, worst(verdicts), spread
    )


def reference_days(reference: pd.DataFrame) -> np.ndarray | None:
    """Each reference row's UTC day, from the point-in-time join's ``event_timestamp``."""
    if "event_timestamp" not in reference.columns:
        return None
    return pd.to_datetime(reference["event_timestamp"], utc=True).dt.date.to_numpy()


def features_drift(
    reference: pd.DataFrame, current: pd.DataFrame, features: list[str], cfg: MonitoringConfig
) -> dict[str, FeatureDrift]:
    """:func:`feature_drift` of every feature, each at its share of the false-alarm rate."""
    alpha = cfg.drift_false_alarm_rate / count_tests(reference, current, features)
    days = reference_days(reference)
    return {f: feature_drift(reference[f], current[f], cfg, alpha, days) for f in features}


def adversarial_verdict(
    adversarial: Adversarial, cfg: MonitoringConfig, alpha: float
) -> tuple[Verdict, float]:
    """The classifier's verdict and the AUC lift it fails from (configured, or the null
    quantile on its held-out rows when higher)."""
    null = null_auc_lift(*adversarial.held_out_rows, alpha)
    warn, fail = _guarded(cfg.adversarial_auc_lift, null)
    return grade(adversarial.lift, warn, fail), fail


# ------------------------------------------------------------------------------ the check
def drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[str],
    cfg: MonitoringConfig,
    reference_label: str = "the reference",
) -> CheckResult:
    """The drift check (module docstring); ``reference_label`` names the reference's days."""
    features = [f for f in features if f in reference.columns and f in current.columns]
    sizes = f"{len(current):,} served rows against {len(reference):,} of {reference_label}"
    if min(len(reference), len(current)) < MIN_ROWS:
        return _not_judged(len(reference), len(current), sizes)
    per_feature = features_drift(reference, current, features, cfg)
    alpha = cfg.drift_false_alarm_rate / count_tests(reference, current, features)
    keys = tuple(k for k in ENTITY_KEYS if k in reference.columns and k in current.columns)
    columns = [*features, *keys]
    adversarial = adversarial_validation(
        reference[columns], current[columns], keys=keys, seed=cfg.seed
    )
    adv_verdict, adv_fail = adversarial_verdict(adversarial, cfg, alpha)
    verdict = worst([adv_verdict, *(d.verdict for d in per_feature.values())])
    shifts = entity_shifts(reference, current, keys)
    if shifts:
        sizes += "; traffic that moved between entities: " + ", ".join(shifts)
    summary = _summary(per_feature, adversarial, adv_verdict, adv_fail, sizes, verdict)
    details: dict[str, Any] = {
        "features": {name: asdict(d) for name, d in per_feature.items()},
        "adversarial": {
            "auc": adversarial.auc,
            "lift": adversarial.lift,
            "fail_from": adv_fail,
            "held_out_rows": list(adversarial.held_out_rows),
            "held_out_by": list(keys) or "row",
            "top_features": adversarial.top_features,
            "verdict": adv_verdict,
        },
        "false_alarm_rate": cfg.drift_false_alarm_rate,
        "reference": reference_label,
        "entity_shifts": shifts,
        "reference_rows": len(reference),
        "current_rows": len(current),
    }
    return CheckResult("drift", verdict, summary, details)


def entity_shifts(
    reference: pd.DataFrame, current: pd.DataFrame, keys: tuple[str, ...], top: int = 3
) -> list[str]:
    """The entities whose share of the rows changed most (at least ``ENTITY_SHIFT`` of all
    rows), as ``item_id 73295 8.1% -> 0%``. One head item leaving the catalog (or coming
    back) moves every feature of its view by its share at once; naming it says why."""
    lines = []
    for key in keys:
        before = reference[key].value_counts(normalize=True)
        after = current[key].value_counts(normalize=True)
        change = after.sub(before, fill_value=0.0)
        for entity in change.abs().sort_values(ascending=False).index[:top]:
            if abs(change[entity]) < ENTITY_SHIFT:
                break
            lines.append(
                f"{key} {entity} {before.get(entity, 0.0):.1%} -> {after.get(entity, 0.0):.1%}"
            )
    return lines


def _not_judged(reference_rows: int, current_rows: int, sizes: str) -> CheckResult:
    """Too few rows on a side for any threshold to hold: a warning that says which side."""
    remedies = []
    if current_rows < MIN_ROWS:
        remedies.append("serve more traffic")
    if reference_rows < MIN_ROWS:
        remedies.append(
            "the warehouse no longer holds the reference days' impressions (a champion older "
            "than the data?): retrain it on the current window (`rankflow canary`)"
        )
    return CheckResult(
        "drift",
        "warn",
        f"not judged: {sizes}, fewer than {MIN_ROWS} a side; {'; '.join(remedies)}",
        {"reference_rows": reference_rows, "current_rows": current_rows},
    )


def _summary(
    per_feature: dict[str, FeatureDrift],
    adversarial: Adversarial,
    adv_verdict: Verdict,
    adv_fail: float,
    sizes: str,
    verdict: Verdict,
) -> str:
    """Which features moved and by how much, the classifier, what was compared and, on a
    failure, what to do."""
    moved = sorted(
        (n for n, d in per_feature.items() if d.verdict != "pass"),
        key=lambda n: -per_feature[n].psi,
    )
    held_out = "held-out users and items" if adversarial.by_entity else "held-out rows"
    top = ", ".join(f"{n} {_fmt(v)}" for n, v in adversarial.top_features[:3])
    classifier = (
        f"adversarial AUC {_fmt(adversarial.auc)} on {held_out} (chance 0.5, fail from "
        f"{_fmt(0.5 + adv_fail)}; top: {top})"
    )
    head = (
        f"{len(moved)} of {len(per_feature)} features moved: "
        + "; ".join(per_feature[n].line(n) for n in moved[:6])
        if moved
        else f"none of {len(per_feature)} features moved"
    )
    text = f"{head}; {classifier}; {sizes}"
    if verdict == "fail":
        text += (
            ". If the traffic changed (new users or items, a season, a campaign), a canary "
            "retrains on the fresh window; if a named feature changed upstream (a pipeline "
            "change, a broken source), fix the data first: a retrain would learn the break"
        )
    elif adv_verdict != "pass" and not moved:
        text += ". No single feature moved: the classifier's top features say what did"
    return text
