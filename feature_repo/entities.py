"""Entities of the rankflow feature store: the join keys every feature view hangs off.

The value types are declared, not inferred, so `feast apply` does not have to open the parquet
exports to guess them and the online store's entity-key serialization never depends on what
pandas happened to read.
"""

from feast import Entity, Project, ValueType

# Matches `project:` in feature_store.yaml; declaring it here gives the project a description
# in the registry (and in `feast ui`).
project = Project(
    name="rankflow",
    description="CTR ranking features built by dbt from impression logs",
)

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A person who is shown ranked items",
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.INT64,
    description="A rankable item",
)

# The item's category is an entity of its own so that user x category affinity can be joined
# on (user_id, category); the labelled impressions carry the category of the shown item.
category = Entity(
    name="category",
    join_keys=["category"],
    value_type=ValueType.STRING,
    description="An item category",
)
