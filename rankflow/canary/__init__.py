"""Canary retraining: the statistics that decide (offline non-inferiority with paired bootstrap
intervals, an always-valid online test of the CTR difference) as pure functions over arrays,
and the flow steps that apply them."""
