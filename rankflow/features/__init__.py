"""Feast glue: the feature repo applied and materialized for a state directory, online reads,
and point-in-time training sets through the ``ctr_ranker_v1`` feature service."""
