"""The declarative model config (``configs/model.yaml``), validated on load.

Every section forbids unknown keys, so a typo is an error naming the file and the dotted key
(``features.numeric.item_price.log1pp: unknown key``) instead of a silently ignored setting.
The config is saved with every checkpoint and is all, together with the fitted
``FeatureSpec``, that is needed to rebuild a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.yaml_config import flatten, read_yaml, set_dotted, validate

ModelKind = Literal["wide_deep", "dcn"]
MODEL_KINDS: tuple[str, ...] = ("wide_deep", "dcn")


class ModelConfigError(ValueError):
    """A model config that does not match the schema; the message names the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CategoricalFeature(_Strict):
    """A categorical column turned into an id, then an embedding (and a wide weight).

    ``vocab``: a vocabulary fitted on the train split (id 0 = null, 1 = out of vocabulary,
    2.. = values seen at least ``min_count`` times, most frequent first, at most ``max_vocab``).
    ``hash``: a stable hash of the value into ``buckets`` (id 0 = null, 1 = unseen, 2.. =
    buckets); a bucket that no value seen at least ``min_count`` times in train fell into maps
    to the unseen row, so a new user or a rare hashed id falls back to the shared "unknown" row
    rather than to a never-trained one.
    """

    encoding: Literal["vocab", "hash"] = "vocab"
    buckets: int | None = Field(None, ge=1, description="Hash buckets (encoding: hash only)")
    min_count: int = Field(
        1,
        ge=1,
        description="Minimum train count to get an own row (vocab) or a trained bucket (hash); "
        "rarer values share the unseen row, which trains it",
    )
    max_vocab: int | None = Field(None, ge=1, description="Keep only the most frequent values")
    embedding_dim: int = Field(8, ge=1, description="Embedding width in the deep / cross part")
    wide: bool = Field(True, description="Also a one-hot input of the Wide & Deep linear part")

    @model_validator(mode="after")
    def _buckets_match_encoding(self) -> CategoricalFeature:
        if self.encoding == "hash" and self.buckets is None:
            raise ValueError("encoding 'hash' needs 'buckets'")
        if self.encoding == "vocab" and self.buckets is not None:
            raise ValueError("'buckets' is only used with encoding 'hash'")
        return self


class NumericFeature(_Strict):
    """A numeric column: fill nulls, clip, signed log1p, standardise, plus a missing indicator.

    Applied in that order. ``fill`` is a value in raw units: a constant or a statistic of the
    non-null train values. Standardisation statistics are fitted on the train split after clip
    and log1p, and are stored in the spec.
    """

    fill: Literal["mean", "median", "zero"] | float = "median"
    missing_indicator: bool = Field(True, description="Add a 0/1 'is null' dense column")
    clip: tuple[float | None, float | None] | None = Field(
        None, description="[low, high] in raw units; null for an open side"
    )
    log1p: bool = Field(False, description="sign(x) * log(1 + |x|), for counts and prices")
    standardize: bool = Field(True, description="(x - mean) / std with train statistics")

    @field_validator("clip")
    @classmethod
    def _clip_ordered(
        cls, value: tuple[float | None, float | None] | None
    ) -> tuple[float | None, float | None] | None:
        if value is not None and None not in value and value[0] > value[1]:  # type: ignore[operator]
            raise ValueError(f"clip low {value[0]} is above high {value[1]}")
        return value


class CrossFeature(_Strict):
    """A wide-part feature cross: the raw values of ``features`` hashed together into buckets."""

    features: list[str] = Field(min_length=2)
    buckets: int = Field(ge=1)
    name: str | None = Field(None, description="Default: the feature names joined by '_x_'")

    @property
    def resolved_name(self) -> str:
        return self.name or "_x_".join(self.features)


class FeaturesConfig(_Strict):
    """Which columns the models read and how.

    Declaration order is the column order of the model inputs (and so of a fresh model's
    initialisation); reordering the YAML changes a newly trained model, not a checkpoint.
    """

    label: str = "label"
    categorical: dict[str, CategoricalFeature] = Field(default_factory=dict)
    numeric: dict[str, NumericFeature] = Field(default_factory=dict)
    crosses: list[CrossFeature] = Field(default_factory=list)
    undeclared: Literal["ignore", "error"] = Field(
        "ignore",
        description="What to do with feature-service features the config does not declare "
        "('ignore' logs them and records them in the spec)",
    )

    @model_validator(mode="after")
    def _unique_cross_names(self) -> FeaturesConfig:
        names = [cross.resolved_name for cross in self.crosses]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate cross names {dupes}; set 'name' to tell them apart")
        clash = sorted(set(names) & set(self.categorical))
        if clash:
            raise ValueError(f"cross names {clash} clash with categorical feature names")
        if not self.categorical and not self.numeric:
            raise ValueError("declare at least one categorical or numeric feature")
        return self


_INIT_STD = Field(
    None,
    gt=0,
    description="Std of the embedding rows at initialisation (null = 1 / sqrt(dim), rows of "
    "norm ~1). The shared unseen row always starts at zero, and unseen ids map to it, so this "
    "only sets how fast known ids move; measured in configs/model.yaml",
)


class WideDeepConfig(_Strict):
    hidden_units: list[int] = Field(default_factory=lambda: [256, 128])
    dropout: float = Field(0.0, ge=0, lt=1)
    embedding_init_std: float | None = _INIT_STD
    weight_decay: float | None = Field(
        None,
        ge=0,
        description="L2 on this network's dense parameters (MLP and output layer); null = training.weight_decay",
    )

    @field_validator("hidden_units")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        return _positive_units(value)


class DCNConfig(_Strict):
    """DCN-V2 (Wang et al. 2021); ``cross_type: v1`` is the vector cross of DCN (2017)."""

    cross_type: Literal["v2", "v1"] = "v2"
    num_cross_layers: int = Field(3, ge=1)
    low_rank: int | None = Field(None, ge=1, description="Rank r of W = U V^T; null = full rank")
    structure: Literal["stacked", "parallel"] = "parallel"
    hidden_units: list[int] = Field(default_factory=lambda: [256, 128])
    dropout: float = Field(0.0, ge=0, lt=1)
    embedding_init_std: float | None = _INIT_STD
    weight_decay: float | None = Field(
        None,
        ge=0,
        description="L2 on this network's dense parameters (cross network, MLP and output layer); null = training.weight_decay",
    )
    wide: Literal["none", "ids", "ids_and_crosses"] = Field(
        "none",
        description="A linear part added to the logit, as in Wide & Deep: 'ids' = one weight per "
        "id of the categorical features declared wide (a per-user / per-item bias), "
        "'ids_and_crosses' = also the declared feature crosses",
    )

    @field_validator("hidden_units")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        return _positive_units(value)

    @model_validator(mode="after")
    def _low_rank_v2_only(self) -> DCNConfig:
        if self.low_rank is not None and self.cross_type == "v1":
            raise ValueError("low_rank applies to cross_type 'v2' only")
        return self


class TrainingConfig(_Strict):
    seed: int = 42
    batch_size: int = Field(1024, ge=1)
    max_epochs: int = Field(10, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="L2 on the dense (non-id) parameters")
    embedding_learning_rate: float | None = Field(
        None, gt=0, description="Learning rate of id embeddings and wide id weights (null: lr)"
    )
    embedding_weight_decay: float = Field(
        0.0, ge=0, description="L2 on id embeddings and wide id weights (their own group)"
    )
    patience: int = Field(2, ge=0, description="Evaluations without improvement before stopping")
    patience_epochs: float | None = Field(
        None,
        gt=0,
        description="Stop after this many epochs of training without improvement; replaces "
        "'patience' (which counts evaluations, so its length depends on eval_every_*)",
    )
    min_delta: float = Field(1e-4, ge=0, description="Valid logloss improvement that counts")
    eval_every_steps: int | None = Field(
        None, ge=1, description="Also evaluate every N steps (null: once per epoch)"
    )
    eval_every_epochs: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Evaluate every this fraction of an epoch; replaces eval_every_steps",
    )
    min_valid_positives: int = Field(
        0,
        ge=0,
        description="A valid split with fewer positives is too noisy to pick a stopping point: "
        "train small_valid_epochs epochs and keep the last weights (with a warning)",
    )
    small_valid_epochs: float = Field(
        1.0, gt=0, description="Epochs trained when the valid split is small (see above)"
    )
    checkpoint_every_steps: int = Field(500, ge=1)
    eval_batch_size: int = Field(16384, ge=1)
    num_threads: int | None = Field(None, ge=1, description="torch threads; null: min(2, cpus)")
    progress: bool = Field(True, description="tqdm progress bar with the live loss")


class WarmStartConfig(_Strict):
    distill_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Weight of the production model's predictions as soft targets "
        "(loss = (1 - w) * BCE(label) + w * BCE(teacher)); needs warm_start_from",
    )
    learning_rate_scale: float = Field(
        1.0,
        gt=0,
        le=10,
        description="Both learning rates times this when training starts from a checkpoint "
        "(a cold start is unaffected)",
    )
    keep_scaling: bool = Field(
        True,
        description="A warm start keeps the checkpoint's fill values and standardisation of "
        "the numeric features it shares (same transform), so the copied weights read the "
        "inputs they were trained on; false: refit them on the new window",
    )


class BaselineConfig(_Strict):
    """scikit-learn logistic regression on the same spec (one-hot ids + dense columns)."""

    C: float = Field(1.0, gt=0)
    max_iter: int = Field(
        1000, ge=1, description="lbfgs iterations; it stops earlier once converged"
    )
    use_crosses: bool = False


class ModelConfig(_Strict):
    features: FeaturesConfig
    wide_deep: WideDeepConfig = Field(default_factory=WideDeepConfig)
    dcn: DCNConfig = Field(default_factory=DCNConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    def dense_weight_decay(self, kind: str) -> float:
        """L2 on the dense (non-id) parameters of network ``kind``: its own setting, else the
        training section's."""
        network = {"wide_deep": self.wide_deep, "dcn": self.dcn}.get(kind)
        own = network.weight_decay if network is not None else None
        return self.training.weight_decay if own is None else own

    def flat(self) -> dict[str, Any]:
        """Dotted-key view, for logging as run parameters."""
        return flatten(self.to_dict())

    def fingerprint(self, *sections: str) -> str:
        """Hash of the given sections (all if none), to detect a resumed run's config change."""
        data = self.to_dict()
        if sections:
            data = {key: data[key] for key in sections}
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.blake2b(blob, digest_size=16).hexdigest()

    def with_overrides(self, overrides: dict[str, Any]) -> ModelConfig:
        """A copy with dotted keys replaced (``{"training.max_epochs": 3}``), re-validated."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            set_dotted(data, dotted, value, ModelConfigError)
        return parse_model_config(data, "<overrides>")


def _positive_units(value: list[int]) -> list[int]:
    if any(width < 1 for width in value):
        raise ValueError(f"hidden units must be >= 1, got {value}")
    return value


def parse_model_config(data: dict[str, Any] | None, source: str = "<dict>") -> ModelConfig:
    return validate(ModelConfig, data, source, ModelConfigError, "model configuration")


def load_model_config(path: Path | str, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """Read and validate a model config YAML; ``overrides`` are dotted keys."""
    path = Path(path)
    return parse_model_config(
        read_yaml(path, ModelConfigError, "model config", overrides), str(path)
    )
