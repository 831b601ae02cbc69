"""The training-set contract: the columns every training, validation, test or scoring frame
carries besides the feature service's features.

One declaration, used by the Feast glue (the ``labelled_impressions`` export it checks), the
training set (its column order), the feature spec (entity columns usable as features) and the
test-data generators. Types are Feast value type names; the feature service's own features get
theirs from the registry.
"""

from __future__ import annotations

from typing import Final

# Join keys and request context: known when a request is scored; usable as model features.
ENTITY_SCHEMA: Final[dict[str, str]] = {
    "user_id": "INT64",
    "item_id": "INT64",
    "category": "STRING",
    "position": "INT32",
    "device": "STRING",
    "hour_of_day": "INT32",
    "day_of_week": "INT32",
}
EVENT_ID: Final = "event_id"
EVENT_TIMESTAMP: Final = "event_timestamp"
LABEL: Final = "label"
LABEL_TYPE: Final = "INT32"

# The entity / label columns every split carries, in this order, before the features.
TRAINING_FRAME_COLUMNS: Final[tuple[str, ...]] = (
    EVENT_ID,
    EVENT_TIMESTAMP,
    *ENTITY_SCHEMA,
    LABEL,
)
