"""The feature layer's user-facing error."""

from __future__ import annotations

from rankflow.errors import RankflowError


class FeatureStoreError(RankflowError, RuntimeError):
    """The feature repo, its configuration or its inputs are not usable; the message says why."""
