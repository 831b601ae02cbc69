"""Gap checks between the offline and the online path: feature skew, score skew, drift, metric
gap and freshness, as pure functions over arrays (stats.py), checks over the served log
(checks.py), and the report logged to MLflow (report.py)."""
