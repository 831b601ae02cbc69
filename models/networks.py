"""The two ranking models, composed from ``models.layers``; both return logits [B].

Both take the tensors ``FeatureSpec.transform`` produces: ``forward(sparse, dense, cross)`` with
sparse [B, S] int64, dense [B, n_dense] float32, cross [B, C] int64. x0 = concat(embeddings of
the S categorical features, dense) is [B, D]. Both keep their embedding tables under
``embeddings.tables.<feature>``, so either model can warm-start the other's embeddings.

``param_axes()`` tells the warm start what each axis of a parameter is indexed by (a list of
keys, e.g. x0 column names or vocabulary tokens), so rows and columns are matched by meaning
when the feature set or a vocabulary changes, not by position.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from models.config import DCNConfig, ModelConfig, WideDeepConfig
from models.encoding import OOV_ID
from models.layers import (
    MLP,
    CrossLayerV1,
    CrossLayerV2,
    CrossNetwork,
    EmbeddingCollection,
    TableConfig,
    WideLinear,
)
from models.spec import FeatureSpec, FeatureTensors

AxisKeys = list[str] | None  # None: rows/columns matched by index


class RankingModel(nn.Module):
    """Common surface: ``forward(sparse, dense, cross) -> logits [B]`` and ``param_axes``."""

    kind: str = ""

    def __init__(self, spec: FeatureSpec, embedding_init_std: float | None = None) -> None:
        super().__init__()
        self.embeddings = EmbeddingCollection(
            [
                TableConfig(
                    c.name,
                    c.num_embeddings,
                    c.embedding_dim,
                    zero_rows=(OOV_ID,) if c.has_unseen_row else (),
                )
                for c in spec.categorical
            ],
            embedding_init_std,
        )
        self.input_dim = self.embeddings.output_dim + len(spec.dense_columns)
        self._spec = spec
        self.wide: WideLinear | None = None
        self._wide_crosses = False

    def _add_wide_part(self, with_crosses: bool) -> None:
        """A linear part over the ids of the categorical features declared ``wide`` (one weight
        per id) and, ``with_crosses``, the declared crosses; read by ``wide_logit``."""
        spec = self._spec
        tables = [
            (spec.categorical[i].name, spec.categorical[i].num_embeddings)
            for i in spec.wide_sparse_index
        ]
        if with_crosses:
            tables += [(c.name, c.num_embeddings) for c in spec.crosses]
        self.wide = WideLinear(tables)
        self._wide_crosses = with_crosses
        self.register_buffer(
            "wide_index", torch.tensor(spec.wide_sparse_index, dtype=torch.long), persistent=False
        )

    def wide_logit(self, sparse: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
        """The wide part's contribution to the logit: [B]."""
        assert self.wide is not None
        ids = sparse.index_select(1, cast(torch.Tensor, self.wide_index))
        return self.wide(torch.cat([ids, cross], 1) if self._wide_crosses else ids)

    def output_bias(self) -> nn.Parameter:
        """The bias added to every logit (set to the base-rate logit before training)."""
        raise NotImplementedError

    def embed(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """x0 = [embeddings | dense]: [B, D]."""
        return torch.cat([self.embeddings(sparse), dense], dim=1)

    def x0_keys(self) -> list[str]:
        keys = [f"emb:{c.name}#{k}" for c in self._spec.categorical for k in range(c.embedding_dim)]
        return keys + [f"dense:{name}" for name in self._spec.dense_columns]

    def param_axes(self) -> dict[str, tuple[AxisKeys, ...]]:
        axes: dict[str, tuple[AxisKeys, ...]] = {}
        for c in self._spec.categorical:
            axes[f"embeddings.tables.{c.name}.weight"] = (c.row_keys(), None)
        if self.wide is not None:  # wide rows are matched by id too (crosses: by index)
            for i in self._spec.wide_sparse_index:
                c = self._spec.categorical[i]
                axes[f"wide.tables.{c.name}.weight"] = (c.row_keys(), None)
        return axes


def _first_linear(mlp: MLP, prefix: str) -> str | None:
    return f"{prefix}.layers.0.weight" if len(mlp.layers) else None


class WideAndDeep(RankingModel):
    """Wide & Deep (Cheng et al. 2016): ``logit = wide(ids, crosses) + head(MLP(x0))``.

    wide: ``WideLinear`` over the ids of categorical features declared ``wide`` plus the
    declared crosses ([B] logit). deep: MLP over x0 [B, D] -> [B, H], then a linear head -> [B].
    """

    kind = "wide_deep"

    def __init__(self, spec: FeatureSpec, config: WideDeepConfig) -> None:
        super().__init__(spec, config.embedding_init_std)
        self._add_wide_part(with_crosses=True)
        self.deep = MLP(self.input_dim, config.hidden_units, config.dropout)
        self.head = nn.Linear(self.deep.output_dim, 1)

    def output_bias(self) -> nn.Parameter:
        return self.head.bias

    def forward(
        self, sparse: torch.Tensor, dense: torch.Tensor, cross: torch.Tensor
    ) -> torch.Tensor:
        deep = self.head(self.deep(self.embed(sparse, dense))).squeeze(-1)
        return deep + self.wide_logit(sparse, cross)

    def param_axes(self) -> dict[str, tuple[AxisKeys, ...]]:
        axes = super().param_axes()
        first = _first_linear(self.deep, "deep") or "head.weight"
        axes[first] = (None, self.x0_keys())
        return axes


class DCN(RankingModel):
    """DCN-V2 (Wang et al. 2021) with a cross network and an MLP, returning logits [B].

    x0 [B, D] -> cross network (``num_cross_layers`` cross layers) -> x_L [B, D].
    stacked:  logit = head(MLP(x_L))               head: [H] -> 1
    parallel: logit = head([x_L | MLP(x0)])        head: [D + H] -> 1
    ``wide: ids`` adds a linear part over the ids of the features declared wide (one weight per
    id: a per-user / per-item bias the network need not squeeze through an embedding), and
    ``wide: ids_and_crosses`` also over the declared crosses, as in Wide & Deep:
    logit = head(...) + wide(ids [, crosses]). With ``wide: none`` (default) declared crosses are
    not used: the cross network learns its own.
    """

    kind = "dcn"

    def __init__(self, spec: FeatureSpec, config: DCNConfig) -> None:
        super().__init__(spec, config.embedding_init_std)
        self.structure = config.structure
        self.cross = CrossNetwork(
            self.input_dim, config.num_cross_layers, config.cross_type, config.low_rank
        )
        self.mlp = MLP(self.input_dim, config.hidden_units, config.dropout)
        head_in = self.mlp.output_dim + (self.input_dim if self.structure == "parallel" else 0)
        self.head = nn.Linear(head_in, 1)
        if config.wide != "none":
            self._add_wide_part(with_crosses=config.wide == "ids_and_crosses")

    def output_bias(self) -> nn.Parameter:
        return self.head.bias

    def forward(
        self, sparse: torch.Tensor, dense: torch.Tensor, cross: torch.Tensor
    ) -> torch.Tensor:
        x0 = self.embed(sparse, dense)
        if self.structure == "stacked":
            logit = self.head(self.mlp(self.cross(x0))).squeeze(-1)
        else:
            logit = self.head(torch.cat([self.cross(x0), self.mlp(x0)], dim=1)).squeeze(-1)
        return logit if self.wide is None else logit + self.wide_logit(sparse, cross)

    def param_axes(self) -> dict[str, tuple[AxisKeys, ...]]:
        axes = super().param_axes()
        x0 = self.x0_keys()
        for index, layer in enumerate(self.cross.layers):
            prefix = f"cross.layers.{index}"
            if isinstance(layer, CrossLayerV1):
                axes[f"{prefix}.weight"] = (x0,)
                axes[f"{prefix}.bias"] = (x0,)
            elif isinstance(layer, CrossLayerV2) and layer.low_rank is None:
                axes[f"{prefix}.linear.weight"] = (x0, x0)
                axes[f"{prefix}.linear.bias"] = (x0,)
            else:
                axes[f"{prefix}.down.weight"] = (None, x0)
                axes[f"{prefix}.up.weight"] = (x0, None)
                axes[f"{prefix}.up.bias"] = (x0,)
        first = _first_linear(self.mlp, "mlp")
        if first:
            axes[first] = (None, x0)
        mlp_keys = [f"mlp#{k}" for k in range(self.mlp.output_dim)]
        if self.structure == "parallel":
            axes["head.weight"] = (None, x0 + (mlp_keys if first else [f"mlp:{k}" for k in x0]))
        elif not first:
            axes["head.weight"] = (None, x0)
        return axes


def build_model(kind: str, spec: FeatureSpec, config: ModelConfig) -> RankingModel:
    """A freshly initialised model of ``kind`` ("wide_deep" or "dcn") for ``spec``."""
    if kind == "wide_deep":
        return WideAndDeep(spec, config.wide_deep)
    if kind == "dcn":
        return DCN(spec, config.dcn)
    raise ValueError(f"unknown model kind {kind!r}; expected 'wide_deep' or 'dcn'")


@torch.no_grad()
def predict_logits(
    model: nn.Module, tensors: FeatureTensors, batch_size: int = 16384
) -> torch.Tensor:
    """Logits [N] in eval mode, in batches (restores the previous train/eval mode)."""
    was_training = model.training
    model.eval()
    try:
        n = tensors.sparse.shape[0]
        out = [
            model(
                tensors.sparse[start : start + batch_size],
                tensors.dense[start : start + batch_size],
                tensors.cross[start : start + batch_size],
            )
            for start in range(0, n, batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0)
    finally:
        model.train(was_training)
